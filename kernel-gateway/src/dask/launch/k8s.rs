//! [`KubeDaskLauncher`]: a cluster's scheduler and each worker as pods in the Kubernetes
//! launcher's namespace (its client and settings: namespace, gateway id, uid/gid, node
//! selector, tolerations, pull policy).
//!
//! - The cluster's Secret `dask-<cluster>` holds its certificate, key and token; pods mount it
//!   read-only at `/etc/dask-gateway` (the scheduler all three, workers only certificate and
//!   key): no secret is in a pod spec or its environment.
//! - Labels: `app.kubernetes.io/managed-by=stackhub`, `app.kubernetes.io/component=dask`,
//!   `stackhub.io/gateway`, `stackhub.io/dask-cluster`, `stackhub.io/dask-role`
//!   (`scheduler`/`worker`), `stackhub.io/user`, and the Data Lake's `eodc.dask/username` and
//!   `eodc.dask/group` (the quota role); annotations carry gateway, user and cluster exactly.
//! - Resources: requests = limits, the workers' from the cluster's `worker_cores` /
//!   `worker_memory`, the scheduler's from `dask.scheduler_cores` / `scheduler_memory_gib`.
//! - Addresses: the scheduler listens on all interfaces and reports its pod IP in its
//!   heartbeats; workers connect there and the gateway (in the cluster network) proxies there.
//! - Network: the cluster's NetworkPolicy `dask-<cluster>` (see `policy`) admits only the
//!   gateway's pods and the cluster's own; it is created before the scheduler pod and removed
//!   with the cluster. No cluster starts without `dask.gateway_pod_labels`.
//! - [`DaskProcess::exited`] reads one pod list per launcher (every 2 s while pods run; see
//!   `pods`): a failed, finished or deleted pod, or one whose image cannot be pulled, has
//!   exited.

mod pods;
mod policy;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, KeyToPath, Pod, PodSecurityContext, PodSpec, SeccompProfile,
    Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

use self::pods::{DaskPod, PodBoard};
use self::policy::{GatewayPeer, network_policy};
use super::{ClusterSpec, DaskLaunchError, DaskLauncher, DaskProcess, IsLiveCluster, Role};
use crate::dask::DaskConfig;
use crate::launcher::ResourceLimits;
use crate::launcher::k8s::{
    ANNOTATION_GATEWAY, ANNOTATION_USER, KubeLauncherConfig, LABEL_GATEWAY, by_uid, is_status,
    label_value, resources,
};

/// Label and annotation: the cluster's name.
pub const LABEL_CLUSTER: &str = "stackhub.io/dask-cluster";
/// Label: `scheduler` or `worker`.
pub const LABEL_ROLE: &str = "stackhub.io/dask-role";
/// Where pods mount the cluster's Secret.
const SECRETS_DIR: &str = "/etc/dask-gateway";
/// Scheduler, dashboard and gateway-API ports of the scheduler pod.
const PORTS: [(&str, u16); 3] = [("scheduler", 8786), ("dashboard", 8787), ("dg-api", 8788)];

/// Clusters as pods; see the module docs.
pub struct KubeDaskLauncher {
    client: Client,
    config: KubeLauncherConfig,
    image: Option<String>,
    scheduler_cores: u32,
    scheduler_memory_bytes: u64,
    /// The gateway's pods, which clusters' NetworkPolicies admit; `None`: unset, no cluster
    /// starts.
    gateway: Option<GatewayPeer>,
    board: OnceLock<Arc<PodBoard>>,
}

impl std::fmt::Debug for KubeDaskLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDaskLauncher")
            .field("namespace", &self.config.namespace)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// A Kubernetes object name from `parts` (lower-case alphanumerics and `-`, at most 63).
fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-").to_ascii_lowercase();
    let name: String = joined
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    name.trim_end_matches('-').to_owned()
}

/// The Secret of `cluster`.
pub fn secret_name(cluster: &str) -> String {
    object_name(&["dask", cluster])
}

/// The pod of `cluster`'s scheduler (`member` = `scheduler`) or worker `member`.
pub fn pod_name(cluster: &str, member: &str) -> String {
    if member == "scheduler" {
        object_name(&["dask-scheduler", cluster])
    } else {
        object_name(&["dask-worker", cluster, member])
    }
}

impl KubeDaskLauncher {
    /// Pods through `client` with the kernel launcher's `config`, sized and imaged by `dask`.
    pub fn new(client: Client, config: KubeLauncherConfig, dask: &DaskConfig) -> Self {
        let gateway = (!dask.gateway_pod_labels.is_empty()).then(|| GatewayPeer {
            namespace: dask
                .gateway_namespace
                .clone()
                .unwrap_or_else(|| config.namespace.clone()),
            labels: dask.gateway_pod_labels.clone(),
        });
        if gateway.is_none() && dask.enabled {
            tracing::error!(
                "dask.gateway_pod_labels is not set: no Dask cluster can start as pods (their \
                 NetworkPolicy must admit the gateway's pods and no others)"
            );
        }
        KubeDaskLauncher {
            client,
            gateway,
            image: dask.image.clone().or_else(|| config.default_image.clone()),
            config,
            scheduler_cores: dask.scheduler_cores,
            scheduler_memory_bytes: ((dask.scheduler_memory_gib * 1024.0).round() as u64) << 20,
            board: OnceLock::new(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// The labels of `cluster`'s pods (and the other objects it has).
    fn cluster_labels(&self, cluster: &str) -> BTreeMap<String, String> {
        let mut labels = self.gateway_labels();
        labels.insert(LABEL_CLUSTER.to_owned(), label_value(cluster));
        labels
    }

    /// The cluster's NetworkPolicy (see `policy`).
    ///
    /// # Errors
    /// `dask.gateway_pod_labels` is unset.
    pub(crate) fn network_policy(&self, spec: &ClusterSpec) -> Result<NetworkPolicy, String> {
        let gateway = self.gateway.as_ref().ok_or_else(|| {
            "dask.gateway_pod_labels is not set: the cluster's NetworkPolicy must admit the \
             gateway's pods (their labels) and no others"
                .to_owned()
        })?;
        let ports: Vec<u16> = PORTS.iter().map(|(_, p)| *p).collect();
        Ok(network_policy(
            self.meta(spec, secret_name(&spec.name), None),
            &self.cluster_labels(&spec.name),
            gateway,
            &ports,
        ))
    }

    /// Labels of every Dask object of this gateway.
    fn gateway_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "stackhub".to_owned(),
            ),
            ("app.kubernetes.io/component".to_owned(), "dask".to_owned()),
            (
                LABEL_GATEWAY.to_owned(),
                label_value(&self.config.gateway_id),
            ),
        ])
    }

    fn selector(labels: &BTreeMap<String, String>) -> String {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn board(&self) -> &Arc<PodBoard> {
        self.board
            .get_or_init(|| PodBoard::start(self.pods(), Self::selector(&self.gateway_labels())))
    }

    fn meta(&self, spec: &ClusterSpec, name: String, role: Option<Role>) -> ObjectMeta {
        let mut labels = self.gateway_labels();
        labels.insert(LABEL_CLUSTER.to_owned(), label_value(&spec.name));
        if let Some(r) = role {
            labels.insert(LABEL_ROLE.to_owned(), r.as_str().to_owned());
        }
        labels.insert("stackhub.io/user".to_owned(), label_value(&spec.user));
        labels.insert("eodc.dask/username".to_owned(), label_value(&spec.user));
        if let Some(g) = &spec.group {
            labels.insert("eodc.dask/group".to_owned(), label_value(g));
        }
        let annotations = BTreeMap::from([
            (
                ANNOTATION_GATEWAY.to_owned(),
                self.config.gateway_id.clone(),
            ),
            (ANNOTATION_USER.to_owned(), spec.user.clone()),
            (LABEL_CLUSTER.to_owned(), spec.name.clone()),
        ]);
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.config.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }
    }

    /// The cluster's Secret: certificate, key and token.
    pub(crate) fn secret(&self, spec: &ClusterSpec) -> Secret {
        let data = spec
            .secret_files(Role::Scheduler)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Secret {
            metadata: self.meta(spec, secret_name(&spec.name), None),
            string_data: Some(data),
            type_: Some("Opaque".to_owned()),
            ..Default::default()
        }
    }

    /// The pod of `member` (`scheduler` or a worker's name) running `dask <role> args`.
    ///
    /// # Errors
    /// No image is configured.
    pub(crate) fn pod(
        &self,
        spec: &ClusterSpec,
        role: Role,
        member: &str,
        args: Vec<String>,
    ) -> Result<Pod, String> {
        let image = self.image.clone().ok_or_else(|| {
            "no image for Dask pods: set dask.image (or the Kubernetes launcher's default_image)"
                .to_owned()
        })?;
        let secret_files = spec.secret_files(role);
        let path = |f: &str| format!("{SECRETS_DIR}/{f}");
        let upper = role.as_str().to_ascii_uppercase();
        let mut env = vec![
            ("DASK_GATEWAY_API_URL".to_owned(), spec.api_url.clone()),
            ("DASK_GATEWAY_CLUSTER_NAME".to_owned(), spec.name.clone()),
            (
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION".to_owned(),
                "True".to_owned(),
            ),
            (
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE".to_owned(),
                path("dask.crt"),
            ),
            (
                format!("DASK_DISTRIBUTED__COMM__TLS__{upper}__CERT"),
                path("dask.crt"),
            ),
            (
                format!("DASK_DISTRIBUTED__COMM__TLS__{upper}__KEY"),
                path("dask.pem"),
            ),
        ];
        if role == Role::Scheduler {
            env.push(("DASK_GATEWAY_API_TOKEN".to_owned(), path("api-token")));
        }
        let (cpus, memory) = match role {
            Role::Scheduler => (self.scheduler_cores, self.scheduler_memory_bytes),
            Role::Worker => (spec.worker_cores, spec.worker_memory_bytes),
        };
        let limits = ResourceLimits {
            cpus: Some(f64::from(cpus)),
            memory_bytes: Some(memory),
            ..Default::default()
        };
        let mut command = vec![
            "python".to_owned(),
            "-m".to_owned(),
            "dask".to_owned(),
            role.as_str().to_owned(),
        ];
        command.extend(args);
        let ports = (role == Role::Scheduler).then(|| {
            PORTS
                .iter()
                .map(|(n, p)| ContainerPort {
                    name: Some((*n).to_owned()),
                    container_port: i32::from(*p),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                })
                .collect()
        });
        Ok(Pod {
            metadata: self.meta(spec, pod_name(&spec.name, member), Some(role)),
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_owned()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                node_selector: (!self.config.node_selector.is_empty())
                    .then(|| self.config.node_selector.clone()),
                tolerations: (!self.config.tolerations.is_empty())
                    .then(|| self.config.tolerations.clone()),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(self.config.uid),
                    run_as_group: Some(self.config.gid),
                    // The Secret's files are group-readable by the pod's group only.
                    fs_group: Some(self.config.gid),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                volumes: Some(vec![Volume {
                    name: "dask-secrets".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name(&spec.name)),
                        default_mode: Some(0o440),
                        items: Some(
                            secret_files
                                .iter()
                                .map(|(k, _)| KeyToPath {
                                    key: (*k).to_owned(),
                                    path: (*k).to_owned(),
                                    mode: None,
                                })
                                .collect(),
                        ),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]),
                containers: vec![Container {
                    name: role.as_str().to_owned(),
                    image: Some(image),
                    image_pull_policy: self.config.image_pull_policy.clone(),
                    command: Some(command),
                    env: Some(
                        env.into_iter()
                            .map(|(name, value)| EnvVar {
                                name,
                                value: Some(value),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ports,
                    resources: Some(resources(&self.config, &limits)),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "dask-secrets".to_owned(),
                        mount_path: SECRETS_DIR.to_owned(),
                        read_only: Some(true),
                        ..Default::default()
                    }]),
                    security_context: Some(crate::launcher::k8s::container_security()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn create_pod(
        &self,
        spec: &ClusterSpec,
        role: Role,
        member: &str,
        args: Vec<String>,
        what: String,
    ) -> Result<Box<dyn DaskProcess>, DaskLaunchError> {
        let fail = |detail: String| DaskLaunchError::Platform {
            what: what.clone(),
            detail,
        };
        let pod = self.pod(spec, role, member, args).map_err(fail)?;
        let name = pod.name_any();
        let board = self.board().clone();
        let created = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| fail(format!("cannot create pod {name}: {e}")))?;
        board.tracked.lock().insert(name.clone());
        let since_tick = *board.ticks.borrow();
        tracing::info!(
            cluster = spec.name,
            user = spec.user,
            pod = name,
            namespace = self.config.namespace,
            role = role.as_str(),
            "dask pod created"
        );
        Ok(Box::new(DaskPod {
            api: self.pods(),
            board,
            name,
            uid: created.uid().unwrap_or_default(),
            since_tick,
        }))
    }

    /// Deletes this gateway's Dask pods, Secrets and NetworkPolicies matching `labels` whose
    /// cluster `keep` says not to keep (pods first: a cluster's pods stay isolated until they
    /// are deleted); returns the clusters whose objects were deleted.
    async fn delete_where(
        &self,
        labels: &BTreeMap<String, String>,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, kube::Error> {
        let lp = ListParams::default().labels(&Self::selector(labels));
        let mut removed = Vec::new();
        self.delete_listed(self.pods(), "pod", &lp, Some(0), keep, &mut removed)
            .await?;
        self.delete_listed(self.secrets(), "Secret", &lp, None, keep, &mut removed)
            .await?;
        let policies = self.policies();
        self.delete_listed(policies, "NetworkPolicy", &lp, None, keep, &mut removed)
            .await?;
        Ok(removed)
    }

    /// Deletes the objects `api` lists for `lp` that this gateway made (by annotation) for a
    /// cluster `keep` does not keep, each by uid (with `grace` seconds); notes their
    /// clusters in `removed`.
    async fn delete_listed<K>(
        &self,
        api: Api<K>,
        kind: &str,
        lp: &ListParams,
        grace: Option<u32>,
        keep: &(dyn Fn(&str) -> bool + Sync),
        removed: &mut Vec<String>,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for obj in api.list(lp).await?.items {
            let Some(cluster) = obj.annotations().get(LABEL_CLUSTER).cloned() else {
                continue;
            };
            if obj.annotations().get(ANNOTATION_GATEWAY) != Some(&self.config.gateway_id)
                || keep(&cluster)
            {
                continue;
            }
            let mut dp = by_uid(&obj.uid().unwrap_or_default());
            dp.grace_period_seconds = grace;
            match api.delete(&obj.name_any(), &dp).await {
                Ok(_) if !removed.contains(&cluster) => removed.push(cluster),
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => tracing::warn!(
                    kind,
                    name = obj.name_any(),
                    error = %e,
                    "cannot delete a Dask object"
                ),
            }
        }
        Ok(())
    }
}

impl DaskLauncher for KubeDaskLauncher {
    fn start_scheduler<'a>(
        &'a self,
        spec: &'a ClusterSpec,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let what = format!("the scheduler of cluster {}", spec.name);
            let fail = |detail: String| DaskLaunchError::Platform {
                what: what.clone(),
                detail,
            };
            // The policy first: no pod of the cluster is ever reachable by other pods.
            let policy = self.network_policy(spec).map_err(fail)?;
            self.policies()
                .create(&PostParams::default(), &policy)
                .await
                .map_err(|e| {
                    fail(format!(
                        "cannot create NetworkPolicy {}: {e}",
                        policy.name_any()
                    ))
                })?;
            let secret = self.secret(spec);
            self.secrets()
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| DaskLaunchError::Platform {
                    what: what.clone(),
                    detail: format!("cannot create Secret {}: {e}", secret.name_any()),
                })?;
            let args = spec.scheduler_args("8786", ":8787", ":8788");
            // A failed start leaves nothing: `cleanup` removes the Secret when the cluster
            // is stopped (as FAILED).
            self.create_pod(spec, Role::Scheduler, "scheduler", args, what)
                .await
        })
    }

    fn start_worker<'a>(
        &'a self,
        spec: &'a ClusterSpec,
        worker: &'a str,
        scheduler_address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let args = vec![
                scheduler_address.to_owned(),
                "--name".to_owned(),
                worker.to_owned(),
                "--nthreads".to_owned(),
                spec.worker_cores.to_string(),
                "--memory-limit".to_owned(),
                spec.worker_memory_bytes.to_string(),
                "--dashboard-address".to_owned(),
                ":8789".to_owned(),
            ];
            let what = format!("worker {worker} of cluster {}", spec.name);
            self.create_pod(spec, Role::Worker, worker, args, what)
                .await
        })
    }

    fn cleanup<'a>(&'a self, spec: &'a ClusterSpec) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let labels = self.cluster_labels(&spec.name);
            let name = spec.name.clone();
            if let Err(e) = self.delete_where(&labels, &|c| c != name).await {
                tracing::warn!(cluster = spec.name, error = %e, "cannot remove a Dask cluster's Secret and pods");
            }
        })
    }

    fn remove_orphans<'a>(&'a self, is_live: &'a IsLiveCluster<'a>) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let removed = match self
                .delete_where(&self.gateway_labels(), &|c| is_live(c))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list Dask pods to clean up");
                    return Vec::new();
                }
            };
            for cluster in &removed {
                tracing::warn!(
                    cluster,
                    "removed the pods and Secret of an orphaned Dask cluster"
                );
            }
            removed
        })
    }
}
