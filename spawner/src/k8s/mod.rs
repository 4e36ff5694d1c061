//! The Kubernetes spawner: each server is a pod (plus the user's PersistentVolumeClaim, kept
//! across stops), found again after a hub restart by its labels.
//!
//! # Layout
//! - `config`: settings (image, namespace mode, storage, profiles).
//! - `names`: Kubernetes-safe names and label values.
//! - `manifest`: the pure function from a [`SpawnRequest`] to the manifests.
//! - `progress`: events and pod status read as messages and failures.
//! - `watch`: waiting for the pod with watches, reporting progress.

mod config;
mod manifest;
mod names;
mod progress;
mod watch;

pub use self::config::{KubeSpawnerConfig, NamespaceMode, Profile, StorageConfig};
pub use self::manifest::{
    ANNOTATION_SERVER, ANNOTATION_USER, LABEL_COMPONENT, LABEL_HUB, LABEL_MANAGED_BY, LABEL_SERVER,
    LABEL_USER, MANAGED_BY, ManifestError, Manifests, build, choose_profile, claim_name,
    hub_labels, is_secret_env, namespace_for, pod_name, resources, selector, server_labels,
};
pub use self::progress::{PodCheck, Reading, check_pod, read_event};

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::{
    ProgressEvent, ProgressSink, ServerId, SpawnError, SpawnRequest, Spawned, Spawner, State,
    Status,
};

/// What the hub persists about a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The pod's uid: a pod of the same name created later is not ours.
    pub uid: String,
    /// The claim mounted as `user_data`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

impl KubeState {
    fn parse(server: &ServerId, state: &State) -> Result<Self, SpawnError> {
        serde_json::from_value(state.0.clone()).map_err(|e| SpawnError::BadState {
            server: server.clone(),
            reason: format!("not a Kubernetes pod state: {e}"),
        })
    }
}

/// Spawns single-user servers as pods.
#[derive(Clone)]
pub struct KubeSpawner {
    client: Client,
    config: KubeSpawnerConfig,
}

impl std::fmt::Debug for KubeSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSpawner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn launch(server: &ServerId, reason: impl Into<String>) -> SpawnError {
    SpawnError::Launch {
        server: server.clone(),
        reason: reason.into(),
        source: None,
    }
}

impl KubeSpawner {
    /// A spawner talking to the cluster through `client`.
    pub fn new(client: Client, config: KubeSpawnerConfig) -> Self {
        Self { client, config }
    }

    /// A spawner with the in-cluster (or `KUBECONFIG`) client.
    ///
    /// # Errors
    /// When no cluster configuration is found.
    pub async fn from_environment(config: KubeSpawnerConfig) -> Result<Self, kube::Error> {
        Ok(Self::new(Client::try_default().await?, config))
    }

    /// The settings.
    pub fn config(&self) -> &KubeSpawnerConfig {
        &self.config
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Pods of this hub: in its namespace, or in every namespace in per-user mode.
    fn hub_pods(&self) -> Api<Pod> {
        match &self.config.namespace {
            NamespaceMode::Hub { namespace } => self.pods(namespace),
            NamespaceMode::PerUser { .. } => Api::all(self.client.clone()),
        }
    }

    /// Find the running pod of `server` by its labels (a restarted hub that lost the state).
    ///
    /// # Errors
    /// The API error.
    pub async fn find(&self, server: &ServerId) -> Result<Option<(Spawned, Pod)>, SpawnError> {
        let ns = namespace_for(&self.config, &server.user);
        let lp = ListParams::default().labels(&selector(&server_labels(&self.config, server)));
        let list = self
            .pods(&ns)
            .list(&lp)
            .await
            .map_err(|e| SpawnError::BadState {
                server: server.clone(),
                reason: format!("cannot list pods in namespace {ns}: {e}"),
            })?;
        for pod in list.items {
            if !self.owns(&pod, server) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let PodCheck::Ready(ip) = check_pod(&pod) {
                let state = KubeState {
                    namespace: ns.clone(),
                    pod: pod.name_any(),
                    uid: pod.uid().unwrap_or_default(),
                    claim: claim_of(&pod),
                };
                let spawned = Spawned {
                    url: format!("http://{ip}:{}", self.config.port),
                    state: State(serde_json::to_value(state).unwrap_or_default()),
                };
                return Ok(Some((spawned, pod)));
            }
        }
        Ok(None)
    }

    /// Whether `pod` belongs to `server` of this hub (exact names from the annotations).
    fn owns(&self, pod: &Pod, server: &ServerId) -> bool {
        owner_of(pod).as_ref() == Some(server)
            && pod.labels().get(LABEL_HUB) == hub_labels(&self.config).get(LABEL_HUB)
    }

    /// Delete this hub's pods whose server is not in `known` (servers the hub believes run).
    /// Returns the servers whose pods were removed. Claims are never touched.
    ///
    /// # Errors
    /// Listing failed; a failed delete is logged and the others go on.
    pub async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        let known: HashSet<&ServerId> = known.iter().collect();
        let lp = ListParams::default().labels(&format!(
            "{},app.kubernetes.io/component=singleuser-server",
            selector(&hub_labels(&self.config))
        ));
        let pods = self
            .hub_pods()
            .list(&lp)
            .await
            .map_err(|e| SpawnError::Stop {
                server: ServerId {
                    user: String::new(),
                    name: String::new(),
                },
                reason: format!("cannot list this hub's pods: {e}"),
            })?;
        let mut removed = Vec::new();
        for pod in pods.items {
            let Some(owner) = owner_of(&pod) else {
                continue;
            };
            if known.contains(&owner) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            match self
                .pods(&ns)
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(user = %owner.user, server = %owner.name, pod = %pod.name_any(), "removed orphaned pod");
                    let _ = self.delete_secret(&ns, &pod.name_any()).await;
                    removed.push(owner);
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot remove orphaned pod")
                }
            }
        }
        Ok(removed)
    }

    async fn ensure_namespace(&self, server: &ServerId, ns: &Namespace) -> Result<(), SpawnError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), ns).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(launch(
                server,
                format!("cannot create namespace {}: {e}", ns.name_any()),
            )),
        }
    }

    async fn ensure_claim(
        &self,
        server: &ServerId,
        claim: &PersistentVolumeClaim,
        progress: &ProgressSink,
    ) -> Result<(), SpawnError> {
        let ns = claim.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), claim).await {
            Ok(_) => {
                progress.send(ProgressEvent::new(10, "Created your storage volume"));
                Ok(())
            }
            Err(e) if is_status(&e, 409) => {
                progress.send(ProgressEvent::new(10, "Using your existing storage volume"));
                Ok(())
            }
            Err(e) => Err(launch(
                server,
                format!(
                    "cannot create the storage volume {}: {e}; check the spawner's \
                     `storage.storage_class` and `storage.size` settings",
                    claim.name_any()
                ),
            )),
        }
    }

    /// Create or replace the server's Secret (a new token each start).
    async fn put_secret(&self, server: &ServerId, secret: &Secret) -> Result<(), SpawnError> {
        let ns = secret.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let name = secret.name_any();
        let err =
            |e: kube::Error| launch(server, format!("cannot create the Secret {ns}/{name}: {e}"));
        match api.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(err(e)),
                }
                api.create(&PostParams::default(), secret)
                    .await
                    .map(|_| ())
                    .map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Delete the server's Secret (gone already is fine).
    async fn delete_secret(&self, ns: &str, name: &str) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Create the pod; a stale pod of the same name (left by a crash) is deleted first.
    async fn create_pod(&self, server: &ServerId, pod: &Pod) -> Result<Pod, SpawnError> {
        let ns = pod.namespace().unwrap_or_default();
        let api = self.pods(&ns);
        let name = pod.name_any();
        match api.create(&PostParams::default(), pod).await {
            Ok(p) => return Ok(p),
            Err(e) if is_status(&e, 409) => {
                tracing::info!(user = %server.user, server = %server.name, pod = %name, "deleting a stale pod of the same name");
            }
            Err(e) => return Err(launch(server, format!("cannot create pod {name}: {e}"))),
        }
        match api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(launch(
                    server,
                    format!("cannot replace stale pod {name}: {e}"),
                ));
            }
        }
        // Wait for the old pod to be gone (its deletion can take its grace period).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match api.get_opt(&name).await {
                Ok(None) => break,
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Some(_)) => {
                    return Err(launch(
                        server,
                        format!("the stale pod {name} is still terminating after 60 s"),
                    ));
                }
                Err(e) => return Err(launch(server, format!("cannot read pod {name}: {e}"))),
            }
        }
        api.create(&PostParams::default(), pod)
            .await
            .map_err(|e| launch(server, format!("cannot create pod {name}: {e}")))
    }
}

/// The server a pod belongs to, from its annotations.
fn owner_of(pod: &Pod) -> Option<ServerId> {
    let a = pod.annotations();
    Some(ServerId {
        user: a.get(ANNOTATION_USER)?.clone(),
        name: a.get(ANNOTATION_SERVER).cloned().unwrap_or_default(),
    })
}

fn claim_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.volumes.iter().flatten().find_map(|v| {
        v.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.clone())
    })
}

#[async_trait::async_trait]
impl Spawner for KubeSpawner {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn start(
        &self,
        req: SpawnRequest,
        progress: ProgressSink,
    ) -> Result<Spawned, SpawnError> {
        let server = req.server.clone();
        let m = build(&self.config, &req).map_err(|e| launch(&server, e.to_string()))?;
        progress.send(ProgressEvent::new(5, "Preparing your server"));
        if matches!(self.config.namespace, NamespaceMode::PerUser { .. }) {
            self.ensure_namespace(&server, &m.namespace).await?;
        }
        if let Some(claim) = &m.claim {
            self.ensure_claim(&server, claim, &progress).await?;
        }
        self.put_secret(&server, &m.secret).await?;
        let pod = self.create_pod(&server, &m.pod).await?;
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        tracing::info!(user = %server.user, server = %server.name, pod = %name, namespace = %ns, "pod created");
        progress.send(ProgressEvent::new(15, "Server requested from the cluster"));
        let timeout = Duration::from_secs(self.config.start_timeout_secs);
        let waited = watch::wait_ready(&self.client, &ns, &name, &uid, timeout, &progress).await;
        match waited {
            Ok(ip) => {
                let state = KubeState {
                    namespace: ns,
                    pod: name,
                    uid,
                    claim: m.claim.as_ref().map(ResourceExt::name_any),
                };
                Ok(Spawned {
                    url: format!("http://{ip}:{}", self.config.port),
                    state: State(serde_json::to_value(state).unwrap_or_default()),
                })
            }
            Err(reason) => {
                // Do not leave a pod behind that the user cannot use; the claim stays.
                let _ = self
                    .pods(&ns)
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                let _ = self.delete_secret(&ns, &name).await;
                Err(launch(&server, reason))
            }
        }
    }

    async fn poll(&self, server: &ServerId, state: &State) -> Result<Status, SpawnError> {
        let st = KubeState::parse(server, state)?;
        let pod = self
            .pods(&st.namespace)
            .get_opt(&st.pod)
            .await
            .map_err(|e| SpawnError::BadState {
                server: server.clone(),
                reason: format!("cannot read pod {}/{}: {e}", st.namespace, st.pod),
            })?;
        let Some(pod) = pod else {
            return Ok(Status::Exited(None));
        };
        if pod.uid().as_deref() != Some(st.uid.as_str())
            || pod.metadata.deletion_timestamp.is_some()
        {
            return Ok(Status::Exited(None));
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Failed" | "Succeeded")) {
            let code = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            return Ok(Status::Exited(code));
        }
        Ok(Status::Running)
    }

    async fn stop(&self, server: &ServerId, state: &State, now: bool) -> Result<(), SpawnError> {
        let st = KubeState::parse(server, state)?;
        let mut dp = DeleteParams::default();
        if now {
            dp = dp.grace_period(0);
        }
        // Only our pod: a newer pod with the same name is left alone.
        dp.preconditions = Some(kube::api::Preconditions {
            uid: Some(st.uid.clone()),
            resource_version: None,
        });
        match self.pods(&st.namespace).delete(&st.pod, &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            // A newer pod of the same name: its Secret is its own.
            Err(e) if is_status(&e, 409) => return Ok(()),
            Err(e) => {
                return Err(SpawnError::Stop {
                    server: server.clone(),
                    reason: format!("cannot delete pod {}/{}: {e}", st.namespace, st.pod),
                });
            }
        }
        self.delete_secret(&st.namespace, &st.pod)
            .await
            .map_err(|e| SpawnError::Stop {
                server: server.clone(),
                reason: format!("cannot delete the Secret {}/{}: {e}", st.namespace, st.pod),
            })
    }

    async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        // The inherent method (same name) does the work.
        KubeSpawner::remove_orphans(self, known).await
    }
}
