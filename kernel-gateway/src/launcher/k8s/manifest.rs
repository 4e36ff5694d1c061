//! The pure part of the Kubernetes launcher: a [`LaunchRequest`] → the kernel's Secret (its
//! HMAC key) and Pod (image per kernelspec, resources from the quota, `restartPolicy: Never`,
//! no volumes, non-root).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::launcher::{LaunchRequest, ResourceLimits};

/// Label: the gateway that owns a kernel pod.
pub const LABEL_GATEWAY: &str = "stackhub.io/gateway";
/// Label: the kernel id.
pub const LABEL_KERNEL: &str = "stackhub.io/kernel-id";
/// Annotation: the kernel id, exactly.
pub const ANNOTATION_KERNEL: &str = "stackhub.io/kernel-id";
/// Annotation: the gateway's id, exactly (the label is a lossy label value).
pub const ANNOTATION_GATEWAY: &str = "stackhub.io/gateway";
/// Annotation: the kernel's user (`KERNEL_USERNAME`), exactly.
pub const ANNOTATION_USER: &str = "stackhub.io/user";
/// Where the kernel-side launcher writes the connection file in the pod.
pub const CONNECTION_FILE: &str = "/tmp/stackhub-kernel/connection.json";
/// The kernel-side launcher in the kernel images (`images/kernel-launcher`).
pub const KERNEL_LAUNCHER: &str = "stackhub-kernel-launcher";

/// Settings of the Kubernetes launcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeLauncherConfig {
    /// Namespace of kernel pods.
    pub namespace: String,
    /// This gateway's id (a label value): its orphan cleanup touches only its own pods.
    pub gateway_id: String,
    /// Image per kernelspec name.
    pub images: BTreeMap<String, String>,
    /// Image for kernelspecs not in `images`; such kernels are refused when unset.
    pub default_image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: Option<String>,
    /// Node selector of kernel pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of kernel pods.
    pub tolerations: Vec<Toleration>,
    /// User id kernels run as (never 0).
    pub uid: i64,
    /// Group id.
    pub gid: i64,
    /// The five ports (shell, iopub, stdin, control, hb) kernels listen on in their pod.
    pub ports: [u16; 5],
    /// Seconds from pod creation to running before the launch fails.
    pub launch_timeout_secs: u64,
    /// Extended resource name for GPUs.
    pub gpu_resource: String,
}

impl Default for KubeLauncherConfig {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            gateway_id: "stackhub-gateway".to_owned(),
            images: BTreeMap::new(),
            default_image: None,
            image_pull_policy: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            uid: 1000,
            gid: 100,
            ports: [52700, 52701, 52702, 52703, 52704],
            launch_timeout_secs: 300,
            gpu_resource: "nvidia.com/gpu".to_owned(),
        }
    }
}

/// A label value from free text: `[A-Za-z0-9._-]`, ≤ 63, alphanumeric at both ends.
pub(crate) fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

/// The pod's (and Secret's) name.
pub fn pod_name(kernel_id: &str) -> String {
    let id: String = kernel_id
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(55)
        .collect();
    format!("kernel-{}", id.trim_end_matches('-'))
}

/// The annotations that name a kernel object's owner: this gateway, the kernel id and the
/// user. An existing pod or Secret of the kernel's name is replaced only when all match.
pub fn owner_annotations(
    config: &KubeLauncherConfig,
    req: &LaunchRequest,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_KERNEL.to_owned(), req.kernel_id.clone()),
        (ANNOTATION_GATEWAY.to_owned(), config.gateway_id.clone()),
        (
            ANNOTATION_USER.to_owned(),
            req.env.get("KERNEL_USERNAME").cloned().unwrap_or_default(),
        ),
    ])
}

/// Labels of every object of this gateway's kernels.
pub fn gateway_labels(config: &KubeLauncherConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "stackhub".to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "kernel".to_owned(),
        ),
        (LABEL_GATEWAY.to_owned(), label_value(&config.gateway_id)),
    ])
}

fn cpu_quantity(cores: f64) -> Quantity {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let milli = (cores * 1000.0).round().max(1.0) as u64;
    Quantity(format!("{milli}m"))
}

/// Requests = limits (the quota is what the user may use, and a kernel should get it).
pub fn resources(config: &KubeLauncherConfig, limits: &ResourceLimits) -> ResourceRequirements {
    let mut l = BTreeMap::new();
    if let Some(c) = limits.cpus {
        l.insert("cpu".to_owned(), cpu_quantity(c));
    }
    if let Some(m) = limits.memory_bytes {
        l.insert("memory".to_owned(), Quantity(m.to_string()));
    }
    if let Some(g) = limits.gpus.filter(|g| *g > 0) {
        l.insert(config.gpu_resource.clone(), Quantity(g.to_string()));
    }
    ResourceRequirements {
        limits: (!l.is_empty()).then(|| l.clone()),
        requests: (!l.is_empty()).then_some(l),
        ..Default::default()
    }
}

/// Why no manifest can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// No image configured for the kernelspec.
    #[error(
        "no kernel image for kernelspec {0:?}: add it to the Kubernetes launcher's `images` (or set `default_image`)"
    )]
    NoImage(String),
}

/// The kernel's Secret (HMAC key) and Pod.
///
/// # Errors
/// [`ManifestError`] when no image is configured for the kernelspec.
pub fn build(
    config: &KubeLauncherConfig,
    req: &LaunchRequest,
) -> Result<(Secret, Pod), ManifestError> {
    let image = config
        .images
        .get(&req.spec.name)
        .or(config.default_image.as_ref())
        .ok_or_else(|| ManifestError::NoImage(req.spec.name.clone()))?
        .clone();
    let name = pod_name(&req.kernel_id);
    let mut labels = gateway_labels(config);
    labels.insert(LABEL_KERNEL.to_owned(), label_value(&req.kernel_id));
    if let Some(user) = req.env.get("KERNEL_USERNAME") {
        labels.insert("stackhub.io/user".to_owned(), label_value(user));
    }
    let mut annotations = owner_annotations(config, req);
    annotations.insert("stackhub.io/kernelspec".to_owned(), req.spec.name.clone());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(config.namespace.clone()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta.clone(),
        string_data: Some(BTreeMap::from([("key".to_owned(), req.key.clone())])),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    };

    let [shell, iopub, stdin, control, hb] = config.ports;
    let mut env: BTreeMap<String, String> = req.env.clone();
    env.insert("KERNEL_ID".to_owned(), req.kernel_id.clone());
    env.insert(
        "STACKHUB_KERNEL_CONNECTION_FILE".to_owned(),
        CONNECTION_FILE.to_owned(),
    );
    env.insert(
        "STACKHUB_KERNEL_PORTS".to_owned(),
        format!("{shell},{iopub},{stdin},{control},{hb}"),
    );
    env.insert("STACKHUB_KERNEL_NAME".to_owned(), req.spec.name.clone());
    if let Some(c) = req.limits.cpus {
        // Thread pools sized to the quota, as the local launcher does.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (c.ceil() as u64).max(1).to_string();
        for k in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
            env.entry(k.to_owned()).or_insert_with(|| n.clone());
        }
    }
    let mut env: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        })
        .collect();
    env.push(EnvVar {
        name: "STACKHUB_KERNEL_KEY".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: "key".to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let argv: Vec<String> = req
        .spec
        .argv
        .iter()
        .map(|a| a.replace("{connection_file}", CONNECTION_FILE))
        .collect();
    let mut command = vec![KERNEL_LAUNCHER.to_owned(), "--".to_owned()];
    command.extend(argv);
    let ports = [
        ("shell", shell),
        ("iopub", iopub),
        ("stdin", stdin),
        ("control", control),
        ("hb", hb),
    ]
    .into_iter()
    .map(|(n, p)| ContainerPort {
        name: Some(n.to_owned()),
        container_port: i32::from(p),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    })
    .collect();
    let pod = Pod {
        metadata: meta,
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            node_selector: (!config.node_selector.is_empty()).then(|| config.node_selector.clone()),
            tolerations: (!config.tolerations.is_empty()).then(|| config.tolerations.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(config.uid),
                run_as_group: Some(config.gid),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "kernel".to_owned(),
                image: Some(image),
                image_pull_policy: config.image_pull_policy.clone(),
                command: Some(command),
                env: Some(env),
                ports: Some(ports),
                resources: Some(resources(config, &req.limits)),
                working_dir: req.working_dir.as_ref().map(|d| d.display().to_string()),
                security_context: Some(container_security()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((secret, pod))
}

/// What every container the launchers start runs with: no privilege escalation, no Linux
/// capabilities.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
