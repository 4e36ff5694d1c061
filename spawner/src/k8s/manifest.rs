//! The pure part: (config, server, launch specification) → Pod, Secret, PersistentVolumeClaim
//! and Namespace manifests. No I/O here, so every manifest can be checked against the official
//! schemas in tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::{KubeSpawnerConfig, NamespaceMode};
use super::names::{dns_label, label_value};
use crate::{LaunchSpec, ServerId, SpawnRequest};

/// Label: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: which hub (its `hub_id`).
pub const LABEL_HUB: &str = "stackhub.io/hub";
/// Label: the owner (escaped).
pub const LABEL_USER: &str = "stackhub.io/user";
/// Label: the server name (escaped; empty for the default server).
pub const LABEL_SERVER: &str = "stackhub.io/server";
/// Label: what the object is.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Annotation: the owner's exact name.
pub const ANNOTATION_USER: &str = "stackhub.io/user";
/// Annotation: the server's exact name.
pub const ANNOTATION_SERVER: &str = "stackhub.io/server";
/// Annotation: the owner's exact name, as KubeSpawner (z2jh) writes it.
pub const ANNOTATION_HUB_USERNAME: &str = "hub.jupyter.org/username";
/// Annotation: the server's exact name, as KubeSpawner (z2jh) writes it.
pub const ANNOTATION_HUB_SERVERNAME: &str = "hub.jupyter.org/servername";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "stackhub";

/// Everything generated for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The namespace (created first in per-user mode).
    pub namespace: Namespace,
    /// The user's claim, when storage is on.
    pub claim: Option<PersistentVolumeClaim>,
    /// The server's pod.
    pub pod: Pod,
    /// The server's secrets (its API token), named like the pod; the pod reads them by
    /// `secretKeyRef`, so no token is in the pod spec.
    pub secret: Secret,
}

/// Environment variables that hold secrets and go into the server's Secret.
pub fn is_secret_env(name: &str) -> bool {
    name.ends_with("_TOKEN")
        || name.ends_with("_SECRET")
        || name.ends_with("_KEY")
        || name.ends_with("_PASSWORD")
}

/// The namespace a user's objects live in.
pub fn namespace_for(config: &KubeSpawnerConfig, user: &str) -> String {
    match &config.namespace {
        NamespaceMode::Hub { namespace } => namespace.clone(),
        NamespaceMode::PerUser { prefix } => {
            let base = prefix.trim_end_matches('-');
            dns_label(if base.is_empty() { "user" } else { base }, &[user])
        }
    }
}

/// The pod's name: `jupyter--{user}` or `jupyter--{user}--{server}`.
pub fn pod_name(server: &ServerId) -> String {
    if server.name.is_empty() {
        dns_label("jupyter", &[&server.user])
    } else {
        dns_label("jupyter", &[&server.user, &server.name])
    }
}

/// The annotations naming the owner of every object of `server` (ours and KubeSpawner's);
/// checked before an existing object of the same name is reused or deleted.
pub fn owner_annotations(server: &ServerId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_USER.to_owned(), server.user.clone()),
        (ANNOTATION_SERVER.to_owned(), server.name.clone()),
        (ANNOTATION_HUB_USERNAME.to_owned(), server.user.clone()),
        (ANNOTATION_HUB_SERVERNAME.to_owned(), server.name.clone()),
    ])
}

/// The labels every object of `server` carries (also the selector that finds it again).
pub fn server_labels(config: &KubeSpawnerConfig, server: &ServerId) -> BTreeMap<String, String> {
    let mut l = hub_labels(config);
    l.insert(LABEL_USER.to_owned(), label_value(&server.user));
    l.insert(LABEL_SERVER.to_owned(), label_value(&server.name));
    l
}

/// The labels of everything this hub manages.
pub fn hub_labels(config: &KubeSpawnerConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_HUB.to_owned(), label_value(&config.hub_id)),
    ])
}

/// A label selector string (`k=v,k2=v2`).
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The claim's name: per user, or per named server when the launch or config asks.
pub fn claim_name(config: &KubeSpawnerConfig, spec: &LaunchSpec, server: &ServerId) -> String {
    let per_server = spec
        .per_named_server_storage
        .unwrap_or(config.storage.per_named_server);
    if per_server && !server.name.is_empty() {
        dns_label("claim", &[&server.user, &server.name])
    } else {
        dns_label("claim", &[&server.user])
    }
}

/// CPU cores as a Kubernetes quantity (millicores).
fn cpu_quantity(cores: f64) -> Quantity {
    // Rounding to whole millicores is the API's own precision.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let milli = (cores * 1000.0).round().max(1.0) as u64;
    Quantity(format!("{milli}m"))
}

/// Requests and limits of the launch (limits within the user's quota, requests within the
/// limits, as the hub resolved them).
pub fn resources(config: &KubeSpawnerConfig, spec: &LaunchSpec) -> ResourceRequirements {
    let r = &spec.resources;
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(cpu) = r.cpu_limit {
        limits.insert("cpu".to_owned(), cpu_quantity(cpu));
    }
    if let Some(cpu) = r.cpu_request.or(r.cpu_limit) {
        requests.insert("cpu".to_owned(), cpu_quantity(cpu));
    }
    if let Some(mem) = r.memory_limit {
        limits.insert("memory".to_owned(), Quantity(mem.to_string()));
    }
    if let Some(mem) = r.memory_request.or(r.memory_limit) {
        requests.insert("memory".to_owned(), Quantity(mem.to_string()));
    }
    if r.gpus > 0 {
        let name = r
            .gpu_resource
            .clone()
            .unwrap_or_else(|| config.gpu_resource.clone());
        // Extended resources: requests must equal limits.
        limits.insert(name.clone(), Quantity(r.gpus.to_string()));
        requests.insert(name, Quantity(r.gpus.to_string()));
    }
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..Default::default()
    }
}

/// Build every manifest for `req`.
pub fn build(config: &KubeSpawnerConfig, req: &SpawnRequest) -> Manifests {
    let spec = &req.spec;
    let ns = namespace_for(config, &req.server.user);
    let labels = server_labels(config, &req.server);
    let annotations = owner_annotations(&req.server);

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(hub_labels(config)),
            annotations: matches!(config.namespace, NamespaceMode::PerUser { .. }).then(|| {
                BTreeMap::from([
                    (ANNOTATION_USER.to_owned(), req.server.user.clone()),
                    (ANNOTATION_HUB_USERNAME.to_owned(), req.server.user.clone()),
                ])
            }),
            ..Default::default()
        },
        ..Default::default()
    };

    let claim_name = claim_name(config, spec, &req.server);
    // A server without a home (remote kernels: files live in S3) mounts no volume.
    let storage = config.storage.enabled && !spec.no_home;
    let claim = storage.then(|| {
        let mut l = labels.clone();
        l.insert(LABEL_COMPONENT.to_owned(), "user-storage".to_owned());
        if claim_name == dns_label("claim", &[&req.server.user]) {
            // A per-user claim is shared by the user's servers.
            l.insert(LABEL_SERVER.to_owned(), String::new());
        }
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(l),
                annotations: Some(annotations.clone()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![config.storage.access_mode.clone()]),
                storage_class_name: config.storage.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(config.storage.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    });

    let mut env: BTreeMap<String, String> = req.env.clone();
    env.insert(
        "JUPYTERHUB_SERVICE_URL".to_owned(),
        format!("http://0.0.0.0:{}{}", config.port, req.prefix),
    );
    let secret_name = pod_name(&req.server);
    let mut secret_data = BTreeMap::new();
    let env: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, value)| {
            if is_secret_env(&name) {
                secret_data.insert(name.clone(), value);
                EnvVar {
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name.clone(),
                            key: name.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    name,
                    ..Default::default()
                }
            } else {
                EnvVar {
                    name,
                    value: Some(value),
                    ..Default::default()
                }
            }
        })
        .collect();
    let mut secret_labels = labels.clone();
    secret_labels.insert(LABEL_COMPONENT.to_owned(), "singleuser-secrets".to_owned());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name),
            namespace: Some(ns.clone()),
            labels: Some(secret_labels),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        string_data: Some(secret_data),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    };

    let mut pod_labels = labels;
    pod_labels.insert(LABEL_COMPONENT.to_owned(), "singleuser-server".to_owned());
    let mut pod_annotations = annotations;
    if let Some(slug) = spec.profile_slug() {
        pod_annotations.insert("stackhub.io/profile".to_owned(), slug.to_owned());
    }
    let image = spec.image.clone().unwrap_or_else(|| config.image.clone());
    let container = Container {
        name: "notebook".to_owned(),
        image: Some(image),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(spec.cmd.clone().unwrap_or_else(|| config.cmd.clone())),
        args: spec.args.clone().filter(|a| !a.is_empty()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("notebook".to_owned()),
            container_port: i32::from(config.port),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        resources: Some(resources(config, spec)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: storage.then(|| {
            vec![VolumeMount {
                name: "user-data".to_owned(),
                mount_path: config.storage.mount_path.clone(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&req.server)),
            namespace: Some(ns),
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("OnFailure".to_owned()),
            automount_service_account_token: Some(config.service_account.is_some()),
            service_account_name: config.service_account.clone(),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(config.uid),
                run_as_group: Some(config.gid),
                fs_group: Some(config.gid),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: storage.then(|| {
                vec![Volume {
                    name: "user-data".to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name,
                        read_only: None,
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Manifests {
        namespace,
        claim,
        pod,
        secret,
    }
}
