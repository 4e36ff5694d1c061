//! Kubernetes launcher: each kernel is a pod (`restartPolicy: Never`, sized by the caller's
//! quota) plus a Secret holding its HMAC key. The kernel image's `stackhub-kernel-launcher`
//! writes the connection file from the environment (fixed ports: the pod has its own IP) and
//! execs the kernelspec's argv; the gateway connects to the pod IP inside the cluster.
//!
//! Interrupts: no signal reaches a pod from outside, so kernelspecs used here should have
//! `interrupt_mode: message` (a signal interrupt is refused with that advice). Terminate and
//! kill delete the pod (with a grace period, or none) and its Secret.
//! [`KubeLauncher::remove_orphans`] deletes this gateway's kernel pods whose kernel is gone.

mod manifest;

pub use self::manifest::{
    ANNOTATION_GATEWAY, ANNOTATION_KERNEL, ANNOTATION_USER, CONNECTION_FILE, KERNEL_LAUNCHER,
    KubeLauncherConfig, LABEL_GATEWAY, LABEL_KERNEL, ManifestError, build, gateway_labels,
    owner_annotations, pod_name, resources,
};
pub(crate) use self::manifest::{container_security, label_value};

use std::time::Duration;

use futures_util::future::BoxFuture;
use jupyter_protocol::ConnectionInfo;
use jupyter_protocol::connection_info::Transport;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, Secret};
use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};

use super::{
    DaskLauncherOf, ExitInfo, IsLive, KernelProcess, KernelSignal, LaunchError, LaunchRequest,
    Launched, Launcher,
};

/// Starts kernels as pods.
#[derive(Clone)]
pub struct KubeLauncher {
    client: Client,
    config: KubeLauncherConfig,
}

impl std::fmt::Debug for KubeLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLauncher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Delete parameters matching only the object with `uid`.
pub(crate) fn by_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Why an existing kernel object is not the one `owner` describes (another gateway's, user's
/// or kernel's), or `None` when it is: only then may a launch replace it.
fn foreign(
    config: &KubeLauncherConfig,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner: &BTreeMap<String, String>,
) -> Option<String> {
    let ours = gateway_labels(config).remove(LABEL_GATEWAY);
    let label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_GATEWAY))
        .cloned();
    if label != ours {
        return Some(format!("its {LABEL_GATEWAY} label is {label:?}"));
    }
    let have = meta.annotations.clone().unwrap_or_default();
    owner.iter().find_map(|(k, want)| {
        let got = have.get(k);
        (got != Some(want)).then(|| format!("its {k} annotation is {got:?}, not {want:?}"))
    })
}

fn failed(what: String, reason: impl Into<String>) -> LaunchError {
    LaunchError::Spawn {
        program: what,
        source: std::io::Error::other(reason.into()),
    }
}

/// The pod's state for a launch.
enum PodState {
    Running(String),
    Pending,
    Failed(String),
}

/// A container of `pod` that cannot start and will not by waiting (its image cannot be pulled,
/// its container cannot be created): `"<reason>: <message>"`. Kernel and Dask pods alike.
pub(crate) fn cannot_start(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|cs| {
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref().unwrap_or_default();
        matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "InvalidImageName"
                | "ErrImageNeverPull"
                | "CreateContainerConfigError"
                | "CreateContainerError"
        )
        .then(|| format!("{reason}: {}", w.message.as_deref().unwrap_or("no detail")))
    })
}

/// How `pod` ended, once it has (phase `Failed` or `Succeeded`): its phase and the first
/// terminated container's state, if any container reports one. Kernel and Dask pods alike.
pub(crate) fn ended(pod: &Pod) -> Option<(&str, Option<ContainerStateTerminated>)> {
    let status = pod.status.as_ref()?;
    let phase = status
        .phase
        .as_deref()
        .filter(|p| matches!(*p, "Failed" | "Succeeded"))?;
    let term = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.clone());
    Some((phase, term))
}

fn judge(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending;
    };
    if let Some(why) = cannot_start(pod) {
        return PodState::Failed(format!(
            "{why}; check the Kubernetes launcher's `images` setting for this kernelspec"
        ));
    }
    for cs in status.container_statuses.iter().flatten() {
        if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            return PodState::Failed(format!(
                "the kernel exited with code {} ({}) during start",
                t.exit_code,
                t.reason.as_deref().unwrap_or("no reason")
            ));
        }
    }
    match status.phase.as_deref() {
        Some("Running") => match status.pod_ip.as_deref() {
            Some(ip) if !ip.is_empty() => PodState::Running(ip.to_owned()),
            _ => PodState::Pending,
        },
        Some("Failed" | "Succeeded") => PodState::Failed(format!(
            "the kernel pod ended during start ({})",
            status.reason.as_deref().unwrap_or("no reason")
        )),
        _ => PodState::Pending,
    }
}

impl KubeLauncher {
    /// A launcher using `client`.
    pub fn new(client: Client, config: KubeLauncherConfig) -> Self {
        Self { client, config }
    }

    /// The settings.
    pub fn config(&self) -> &KubeLauncherConfig {
        &self.config
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// Delete this gateway's kernel pods and Secrets whose kernel `is_live` denies (asked
    /// after listing: see [`Launcher::remove_orphans`]). Returns the kernel ids removed.
    ///
    /// # Errors
    /// Listing failed (a failed delete is logged; the others go on).
    pub async fn remove_orphans(&self, is_live: &IsLive<'_>) -> Result<Vec<String>, LaunchError> {
        let selector = gateway_labels(&self.config)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let lp = ListParams::default().labels(&selector);
        let what = || format!("kernel pods in namespace {}", self.config.namespace);
        let pods = self
            .pods()
            .list(&lp)
            .await
            .map_err(|e| failed(what(), e.to_string()))?;
        let secrets = self
            .secrets()
            .list(&lp)
            .await
            .map_err(|e| failed(what(), e.to_string()))?;
        let mut removed = Vec::new();
        // The label is a lossy label value: two gateway ids may share it, the annotation
        // (when present) tells them apart.
        let other_gateway = |a: &BTreeMap<String, String>| {
            a.get(ANNOTATION_GATEWAY)
                .is_some_and(|g| *g != self.config.gateway_id)
        };
        for pod in pods.items {
            if other_gateway(pod.annotations()) {
                continue;
            }
            let Some(id) = pod.annotations().get(ANNOTATION_KERNEL).cloned() else {
                continue;
            };
            if is_live(&id) {
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            match self
                .pods()
                .delete(&pod.name_any(), &by_uid(&uid).grace_period(0))
                .await
            {
                Ok(_) => {
                    tracing::info!(kernel_id = %id, pod = %pod.name_any(), "removed orphaned kernel pod");
                    removed.push(id);
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    tracing::warn!(kernel_id = %id, error = %e, "cannot remove orphaned kernel pod")
                }
            }
        }
        for secret in secrets.items {
            if other_gateway(secret.annotations()) {
                continue;
            }
            let Some(id) = secret.annotations().get(ANNOTATION_KERNEL) else {
                continue;
            };
            if !is_live(id) {
                let uid = secret.uid().unwrap_or_default();
                let _ = self
                    .secrets()
                    .delete(&secret.name_any(), &by_uid(&uid))
                    .await;
            }
        }
        Ok(removed)
    }

    /// Create `obj`. An existing object of its name is replaced only when it is this
    /// kernel's (a restart reuses the kernel id): same gateway, kernel id and user; another's
    /// is left alone and the launch fails.
    async fn create_replacing<K>(
        &self,
        api: &Api<K>,
        obj: &K,
        owner: &BTreeMap<String, String>,
    ) -> Result<K, String>
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), obj).await {
            Err(e) if is_status(&e, 409) => {}
            other => return other.map_err(|e| e.to_string()),
        }
        let Some(old) = api.get_opt(&name).await.map_err(|e| e.to_string())? else {
            return api
                .create(&PostParams::default(), obj)
                .await
                .map_err(|e| e.to_string());
        };
        if let Some(why) = foreign(&self.config, old.meta(), owner) {
            tracing::warn!(object = %name, namespace = %self.config.namespace, reason = %why, "refusing to replace a kernel object that is not this kernel's");
            return Err(format!(
                "{name} already exists and belongs to another kernel, user or gateway; it was \
                 left alone: start the kernel with a new id"
            ));
        }
        let uid = old.meta().uid.clone().unwrap_or_default();
        match api.delete(&name, &by_uid(&uid).grace_period(0)).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.to_string()),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while api
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .is_some_and(|o| o.meta().uid.as_deref() == Some(uid.as_str()))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        api.create(&PostParams::default(), obj)
            .await
            .map_err(|e| e.to_string())
    }

    async fn launch_pod(&self, request: LaunchRequest) -> Result<Launched, LaunchError> {
        let (secret, pod) = build(&self.config, &request)
            .map_err(|e| failed(format!("kernel {}", request.kernel_id), e.to_string()))?;
        let name = pod.name_any();
        let ns = self.config.namespace.clone();
        let what = || format!("kernel pod {ns}/{name}");
        let owner = owner_annotations(&self.config, &request);
        let secret = self
            .create_replacing(&self.secrets(), &secret, &owner)
            .await
            .map_err(|e| failed(what(), format!("cannot create its Secret: {e}")))?;
        let secret_uid = secret.uid().unwrap_or_default();
        let created = match self.create_replacing(&self.pods(), &pod, &owner).await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.secrets().delete(&name, &by_uid(&secret_uid)).await;
                return Err(failed(what(), format!("cannot create the pod: {e}")));
            }
        };
        let uid = created.uid().unwrap_or_default();
        tracing::info!(kernel_id = %request.kernel_id, pod = %name, namespace = %ns, "kernel pod created");
        let cond = {
            let uid = uid.clone();
            move |p: Option<&Pod>| match p {
                None => true,
                Some(p) => {
                    p.uid().as_deref() != Some(uid.as_str())
                        || !matches!(judge(p), PodState::Pending)
                }
            }
        };
        let timeout = Duration::from_secs(self.config.launch_timeout_secs);
        let outcome =
            tokio::time::timeout(timeout, await_condition(self.pods(), &name, cond)).await;
        let result = match outcome {
            Err(_) => Err(format!(
                "not running after {} s (image pull or scheduling); raise the Kubernetes \
                 launcher's `launch_timeout_secs` or check the cluster's capacity",
                timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!("watching the pod failed: {e}")),
            Ok(Ok(None)) => Err("the pod was deleted during start".to_owned()),
            Ok(Ok(Some(p))) if p.uid().as_deref() != Some(uid.as_str()) => {
                Err("the pod was replaced during start".to_owned())
            }
            Ok(Ok(Some(p))) => match judge(&p) {
                PodState::Running(ip) => Ok(ip),
                PodState::Failed(m) => Err(m),
                PodState::Pending => Err("the pod is still pending".to_owned()),
            },
        };
        let ip = match result {
            Ok(ip) => ip,
            Err(reason) => {
                let _ = self
                    .pods()
                    .delete(&name, &by_uid(&uid).grace_period(0))
                    .await;
                let _ = self.secrets().delete(&name, &by_uid(&secret_uid)).await;
                return Err(failed(what(), reason));
            }
        };
        let [shell, iopub, stdin, control, hb] = self.config.ports;
        let connection = ConnectionInfo {
            ip,
            transport: Transport::TCP,
            shell_port: shell,
            iopub_port: iopub,
            stdin_port: stdin,
            control_port: control,
            hb_port: hb,
            key: request.key.clone(),
            signature_scheme: "hmac-sha256".to_owned(),
            kernel_name: Some(request.spec.name.clone()),
        };
        Ok(Launched {
            connection,
            process: Box::new(KernelPod {
                client: self.client.clone(),
                namespace: ns,
                name,
                uid,
            }),
        })
    }
}

impl Launcher for KubeLauncher {
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(self.launch_pod(request))
    }

    fn remove_orphans<'a>(
        &'a self,
        is_live: &'a IsLive<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, LaunchError>> {
        // The inherent method (same name) does the work.
        Box::pin(KubeLauncher::remove_orphans(self, is_live))
    }

    fn dask_launcher(&self, _name: &str, config: &crate::dask::DaskConfig) -> DaskLauncherOf {
        Some(std::sync::Arc::new(
            crate::dask::launch::KubeDaskLauncher::new(
                self.client.clone(),
                self.config.clone(),
                config,
            ),
        ))
    }
}

/// A kernel running as a pod.
#[derive(Clone)]
pub struct KernelPod {
    client: Client,
    namespace: String,
    name: String,
    uid: String,
}

impl std::fmt::Debug for KernelPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPod")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl KernelPod {
    /// Delete the pod (only this incarnation: uid precondition) and its Secret.
    pub async fn delete(&self, grace_secs: u32) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut dp = DeleteParams::default().grace_period(grace_secs);
        dp.preconditions = Some(kube::api::Preconditions {
            uid: Some(self.uid.clone()),
            resource_version: None,
        });
        match pods.delete(&self.name, &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => return Ok(()),
            Err(e) => return Err(e),
        }
        match secrets.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl KernelProcess for KernelPod {
    fn signal(&self, signal: KernelSignal) -> Result<(), LaunchError> {
        let grace = match signal {
            KernelSignal::Interrupt => {
                return Err(LaunchError::Signal {
                    signal,
                    detail: "kernel pods cannot be signalled from the gateway; give the \
                             kernelspec `interrupt_mode: message`"
                        .to_owned(),
                });
            }
            KernelSignal::Terminate => 5,
            KernelSignal::Kill => 0,
        };
        let handle = tokio::runtime::Handle::try_current().map_err(|e| LaunchError::Signal {
            signal,
            detail: format!("no runtime to delete the pod on: {e}"),
        })?;
        let pod = self.clone();
        handle.spawn(async move {
            if let Err(e) = pod.delete(grace).await {
                tracing::warn!(pod = %pod.name, error = %e, "cannot delete kernel pod");
            }
        });
        Ok(())
    }

    fn poll(&self) -> BoxFuture<'_, Option<ExitInfo>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
            let pod = match pods.get_opt(&self.name).await {
                Ok(p) => p,
                Err(e) => {
                    // Unknown is not dead: the API server may be briefly unreachable.
                    tracing::warn!(pod = %self.name, error = %e, "cannot read kernel pod");
                    return None;
                }
            };
            let Some(pod) = pod.filter(|p| p.uid().as_deref() == Some(self.uid.as_str())) else {
                return Some(ExitInfo {
                    status: "pod deleted".to_owned(),
                    last_stderr: None,
                });
            };
            let (phase, term) = ended(&pod)?;
            Some(ExitInfo {
                status: term.as_ref().map_or_else(
                    || format!("pod {phase}"),
                    |t| format!("exit status {}", t.exit_code),
                ),
                last_stderr: term.and_then(|t| t.reason.or(t.message)),
            })
        })
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({"namespace": self.namespace, "pod": self.name, "uid": self.uid})
    }
}
