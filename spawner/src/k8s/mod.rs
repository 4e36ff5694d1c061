//! The Kubernetes spawner: each server is a pod (plus the user's PersistentVolumeClaim, kept
//! across stops), found again after a hub restart by its labels.
//!
//! Object names are unique per (user, server) (`names`), and every object carries its owner
//! in annotations (`stackhub.io/user`, `stackhub.io/server` and KubeSpawner's
//! `hub.jupyter.org/username`, `hub.jupyter.org/servername`): an existing pod, Secret, claim
//! or namespace is reused or deleted only when they name the server at hand (`owner`).
//!
//! A start runs in its own task with one deadline (`start_timeout_secs`): dropping the
//! [`Spawner::start`] future does not orphan a pod, and [`Spawner::cancel_start`] (or the
//! deadline) ends it with its pod and Secret deleted.
//!
//! # Layout
//! - `config`: settings (image, namespace mode, storage, profiles).
//! - `names`: Kubernetes-safe names and label values.
//! - `manifest`: the pure function from a [`SpawnRequest`] to the manifests.
//! - `owner`: whose an existing object is.
//! - `objects`: creating, replacing and deleting objects after that check.
//! - `progress`: events and pod status read as messages and failures.
//! - `watch`: waiting for the pod with watches, reporting progress.

mod config;
mod manifest;
mod names;
mod objects;
mod owner;
mod progress;
mod watch;

pub use self::config::{CLEANUP_ALLOWANCE, KubeSpawnerConfig, NamespaceMode, StorageConfig};
pub use self::manifest::{
    ANNOTATION_HUB_SERVERNAME, ANNOTATION_HUB_USERNAME, ANNOTATION_SERVER, ANNOTATION_USER,
    LABEL_COMPONENT, LABEL_HUB, LABEL_MANAGED_BY, LABEL_SERVER, LABEL_USER, MANAGED_BY, Manifests,
    build, claim_name, hub_labels, is_secret_env, namespace_for, owner_annotations, pod_name,
    resources, selector, server_labels,
};
pub use self::progress::{PodCheck, Reading, check_pod, read_event};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch as signal;
use tokio::time::Instant;

use self::objects::{Created, Made, by_uid, cancelled};
use self::owner::{Scope, foreign, owner_of};
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

/// Starts in progress, by server: the flag that cancels each.
type Starts = Arc<tokio::sync::Mutex<HashMap<ServerId, Arc<signal::Sender<bool>>>>>;

/// Spawns single-user servers as pods.
#[derive(Clone)]
pub struct KubeSpawner {
    client: Client,
    config: KubeSpawnerConfig,
    starts: Starts,
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
        Self {
            client,
            config,
            starts: Arc::default(),
        }
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

    /// Find the running pod of `server` (a restarted hub that lost the state): this hub's
    /// server pods in the user's namespace whose owner annotations name `server` (pods of
    /// earlier versions included, whatever their names).
    ///
    /// # Errors
    /// The API error.
    pub async fn find(&self, server: &ServerId) -> Result<Option<(Spawned, Pod)>, SpawnError> {
        let ns = namespace_for(&self.config, &server.user);
        let lp = ListParams::default().labels(&format!(
            "{},{LABEL_COMPONENT}=singleuser-server",
            selector(&hub_labels(&self.config))
        ));
        let list = self
            .pods(&ns)
            .list(&lp)
            .await
            .map_err(|e| SpawnError::BadState {
                server: server.clone(),
                reason: format!("cannot list pods in namespace {ns}: {e}"),
            })?;
        for pod in list.items {
            if foreign(&self.config, &pod.metadata, server, Scope::Server).is_some()
                || pod.metadata.deletion_timestamp.is_some()
            {
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

    /// Delete this hub's pods whose server is not in `known` (servers the hub believes run).
    /// Returns the servers whose pods were removed. Claims are never touched.
    ///
    /// # Errors
    /// Listing failed; a failed delete is logged and the others go on.
    pub async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        let known: HashSet<&ServerId> = known.iter().collect();
        let lp = ListParams::default().labels(&format!(
            "{},{LABEL_COMPONENT}=singleuser-server",
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
            let Some(owner) = owner_of(&pod.metadata) else {
                // This hub's labels, but no server it could be (no owner annotation, or ours
                // and KubeSpawner's disagree): not made by this hub as it is, left alone.
                tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), "a pod with this hub's labels has no consistent owner annotations; not removed as an orphan");
                continue;
            };
            if known.contains(&owner) || self.starting(&owner).await {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let uid = pod.uid().unwrap_or_default();
            match self.pods(&ns).delete(&pod.name_any(), &by_uid(&uid)).await {
                Ok(_) => {
                    tracing::info!(user = %owner.user, server = %owner.name, pod = %pod.name_any(), "removed orphaned pod");
                    if let Err(e) = self.delete_secret_of(&owner, &ns, &pod.name_any()).await {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "cannot remove an orphaned pod's Secret");
                    }
                    removed.push(owner);
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot remove orphaned pod")
                }
            }
        }
        Ok(removed)
    }

    /// Whether a start of `server` is in progress in this spawner.
    async fn starting(&self, server: &ServerId) -> bool {
        self.starts.lock().await.contains_key(server)
    }

    /// The start itself, in its own task: everything it created is deleted when it fails,
    /// times out or is cancelled.
    async fn run_start(
        &self,
        req: SpawnRequest,
        m: Manifests,
        progress: ProgressSink,
        mut cancel: signal::Receiver<bool>,
    ) -> Result<Spawned, SpawnError> {
        let server = req.server.clone();
        let deadline = Instant::now() + Duration::from_secs(self.config.start_timeout_secs);
        let mut created = Created::default();
        let result = self
            .launch_steps(&server, &m, &progress, deadline, &mut cancel, &mut created)
            .await;
        if result.is_err() {
            // Do not leave a pod behind that the user cannot use; the claim stays.
            self.delete_created(&server, &created).await;
        }
        result
    }

    async fn launch_steps(
        &self,
        server: &ServerId,
        m: &Manifests,
        progress: &ProgressSink,
        deadline: Instant,
        cancel: &mut signal::Receiver<bool>,
        created: &mut Created,
    ) -> Result<Spawned, SpawnError> {
        let check = |cancel: &signal::Receiver<bool>| {
            if *cancel.borrow() {
                Err(cancelled(server))
            } else {
                Ok(())
            }
        };
        progress.send(ProgressEvent::new(5, "Preparing your server"));
        if matches!(self.config.namespace, NamespaceMode::PerUser { .. }) {
            self.ensure_namespace(server, &m.namespace).await?;
        }
        check(&*cancel)?;
        if let Some(claim) = &m.claim {
            self.ensure_claim(server, claim, progress).await?;
        }
        check(&*cancel)?;
        created.secret = Some(self.put_secret(server, &m.secret, deadline, cancel).await?);
        check(&*cancel)?;
        let pod = self.create_pod(server, &m.pod, deadline, cancel).await?;
        let made = Made {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
        };
        created.pod = Some(made.clone());
        check(&*cancel)?;
        tracing::info!(user = %server.user, server = %server.name, pod = %made.name, namespace = %made.namespace, "pod created");
        progress.send(ProgressEvent::new(15, "Server requested from the cluster"));
        let total = Duration::from_secs(self.config.start_timeout_secs);
        let ip = watch::wait_ready(
            &self.client,
            &made,
            watch::Limits {
                deadline,
                total,
                cancel,
            },
            progress,
        )
        .await
        .map_err(|reason| match reason {
            watch::Stopped::Cancelled => cancelled(server),
            watch::Stopped::Failed(reason) => launch(server, reason),
        })?;
        let state = KubeState {
            namespace: made.namespace,
            pod: made.name,
            uid: made.uid,
            claim: m.claim.as_ref().map(ResourceExt::name_any),
        };
        Ok(Spawned {
            url: format!("http://{ip}:{}", self.config.port),
            state: State(serde_json::to_value(state).unwrap_or_default()),
        })
    }
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

    fn start_timeout(&self) -> Option<Duration> {
        Some(self.config.start_timeout())
    }

    async fn start(
        &self,
        req: SpawnRequest,
        progress: ProgressSink,
    ) -> Result<Spawned, SpawnError> {
        let server = req.server.clone();
        let m = build(&self.config, &req);
        let (tx, rx) = signal::channel(false);
        {
            let mut starts = self.starts.lock().await;
            if starts.contains_key(&server) {
                return Err(launch(
                    &server,
                    "a start of this server is already in progress (or still being cancelled); \
                     try again in a few seconds",
                ));
            }
            starts.insert(server.clone(), Arc::new(tx));
        }
        // The task runs to its end even when this future is dropped: it owns the cleanup,
        // then leaves the table of starts.
        let this = self.clone();
        let id = server.clone();
        let task = tokio::spawn(async move {
            let result = this.run_start(req, m, progress, rx).await;
            this.starts.lock().await.remove(&id);
            result
        });
        task.await
            .map_err(|e| launch(&server, format!("the start task ended abnormally: {e}")))?
    }

    async fn cancel_start(&self, server: &ServerId) {
        let flag = self.starts.lock().await.get(server).cloned();
        if let Some(flag) = flag {
            tracing::info!(user = %server.user, server = %server.name, "cancelling the start");
            flag.send_replace(true);
        }
    }

    async fn find(&self, server: &ServerId) -> Result<Option<Spawned>, SpawnError> {
        Ok(KubeSpawner::find(self, server)
            .await?
            .map(|(spawned, _)| spawned))
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
        let stop_err = |what: &str, e: kube::Error| SpawnError::Stop {
            server: server.clone(),
            reason: format!("cannot {what} {}/{}: {e}", st.namespace, st.pod),
        };
        let api = self.pods(&st.namespace);
        let pod = api
            .get_opt(&st.pod)
            .await
            .map_err(|e| stop_err("read pod", e))?;
        match pod {
            // Only our pod: a newer pod of the same name, and its Secret, are left alone.
            Some(p) if p.uid().as_deref() != Some(st.uid.as_str()) => return Ok(()),
            Some(p) => {
                if let Some(why) = foreign(&self.config, &p.metadata, server, Scope::Server) {
                    // The state names a pod that is not this server's: it is not deleted, and
                    // this server has no pod.
                    tracing::warn!(user = %server.user, server = %server.name, pod = %st.pod, reason = %why, "not stopping a pod that is not this server's");
                    return Ok(());
                }
                let mut dp = by_uid(&st.uid);
                if now {
                    dp = dp.grace_period(0);
                }
                match api.delete(&st.pod, &dp).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) if is_status(&e, 409) => return Ok(()),
                    Err(e) => return Err(stop_err("delete pod", e)),
                }
            }
            None => {}
        }
        self.delete_secret_of(server, &st.namespace, &st.pod)
            .await
            .map_err(|e| stop_err("delete the Secret", e))
    }

    async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        // The inherent method (same name) does the work.
        KubeSpawner::remove_orphans(self, known).await
    }
}
