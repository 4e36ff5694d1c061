//! Starting a cluster's scheduler and workers: the [`DaskLauncher`] seam and its launchers.
//!
//! - [`LocalDaskLauncher`] (`local`): local processes of the gateway's user (the embedded
//!   default);
//! - [`SlurmDaskLauncher`] (`slurm`): the scheduler and each worker as a Slurm job, through the
//!   kernel Slurm launcher's clients, settings and secrets hand-over;
//! - [`KubeDaskLauncher`] (`kubernetes`): scheduler and worker pods beside the kernel pods,
//!   the cluster's secrets in a Secret.
//!
//! [`DaskService`](super::DaskService) picks one by `dask.launcher`, else the gateway's
//! `default_launcher`: a site whose kernels run as Slurm jobs runs Dask the same way. Every
//! launcher keeps the cluster's token and TLS key out of argv, job scripts, pod specs and logs.

mod k8s;
mod local;
mod slurm;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use thiserror::Error;

pub use self::k8s::{KubeDaskLauncher, LABEL_CLUSTER, LABEL_ROLE, pod_name, secret_name};
pub use self::local::LocalDaskLauncher;
pub use self::slurm::SlurmDaskLauncher;
use super::tls::ClusterTls;
use crate::config::Secret;

/// What a launcher needs to start one cluster's processes.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The cluster's name.
    pub name: String,
    /// Its owner.
    pub user: String,
    /// The owner's group (the quota role the cluster was created under), for labels.
    pub group: Option<String>,
    /// Where the scheduler's preload sends heartbeats (`http://host:port/api`).
    pub api_url: String,
    /// The cluster's token (heartbeats, and stopping its own cluster).
    pub token: Secret,
    /// The cluster's certificate and key.
    pub tls: ClusterTls,
    /// Threads per worker.
    pub worker_cores: u32,
    /// Memory limit per worker, bytes.
    pub worker_memory_bytes: u64,
    /// Seconds between heartbeats.
    pub heartbeat_period: u64,
    /// Seconds without tasks before the scheduler asks to be stopped; 0 = never.
    pub idle_timeout: u64,
    /// The scheduler's `--dashboard-prefix`: `[dask] dashboard_prefix` + `/clusters/<name>`.
    pub dashboard_prefix: String,
}

/// Which of a cluster's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Scheduler,
    Worker,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
        }
    }
}

impl ClusterSpec {
    /// The `dask scheduler` arguments every launcher gives (after any `--host`): TLS on
    /// `port`, the dashboard on `dashboard` under the cluster's prefix, and dask-gateway's
    /// preload with its API on `api`, its heartbeat period and idle timeout.
    pub(crate) fn scheduler_args(&self, port: &str, dashboard: &str, api: &str) -> Vec<String> {
        let (period, idle) = (
            self.heartbeat_period.to_string(),
            self.idle_timeout.to_string(),
        );
        [
            "--protocol",
            "tls",
            "--port",
            port,
            "--dashboard-address",
            dashboard,
            "--dashboard-prefix",
            &self.dashboard_prefix,
            "--preload",
            "dask_gateway.scheduler_preload",
            "--dg-api-address",
            api,
            "--dg-heartbeat-period",
            &period,
            "--dg-idle-timeout",
            &idle,
        ]
        .map(str::to_owned)
        .into()
    }

    /// The secret files `role` needs (name → content): the certificate and key, and for the
    /// scheduler the cluster token (workers never talk to the gateway).
    pub(crate) fn secret_files(&self, role: Role) -> Vec<(&'static str, &str)> {
        let mut files = vec![
            ("dask.crt", self.tls.cert.as_str()),
            ("dask.pem", self.tls.key.expose()),
        ];
        if role == Role::Scheduler {
            files.push(("api-token", self.token.expose()));
        }
        files
    }
}

/// A launch that failed.
#[derive(Debug, Error)]
pub enum DaskLaunchError {
    /// Preparing the cluster's files failed.
    #[error("cannot prepare {path}: {source}")]
    Files {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start {what} with {python}: {source}")]
    Spawn {
        /// `scheduler` or `worker <name>`.
        what: String,
        /// The Python used.
        python: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The platform (Slurm, Kubernetes) refused or failed.
    #[error("cannot start {what}: {detail}")]
    Platform {
        /// `scheduler of cluster ...` or `worker ... of cluster ...`.
        what: String,
        /// Why, with the platform's own message.
        detail: String,
    },
}

/// A started scheduler or worker.
pub trait DaskProcess: Send + Sync + Debug {
    /// Stops it (gracefully, then forcibly) and waits until it is gone.
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// `Some(how)` once it has exited by itself.
    fn exited(&self) -> Option<String>;
}

/// Whether the service still has a cluster (by name); see [`DaskLauncher::remove_orphans`].
pub type IsLiveCluster<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

/// Starts the processes of clusters.
pub trait DaskLauncher: Send + Sync + Debug {
    /// Starts `spec`'s scheduler (with the dask-gateway preload, listening on `tls://`).
    fn start_scheduler<'a>(
        &'a self,
        spec: &'a ClusterSpec,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>>;
    /// Starts worker `worker` of `spec`, connecting to `scheduler_address`.
    fn start_worker<'a>(
        &'a self,
        spec: &'a ClusterSpec,
        worker: &'a str,
        scheduler_address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>>;
    /// Removes what the cluster left behind (its files, Secret), after its processes stopped.
    fn cleanup<'a>(&'a self, spec: &'a ClusterSpec) -> BoxFuture<'a, ()>;
    /// Stops what this launcher started for clusters that `is_live` says the service no
    /// longer has (jobs and pods left by an earlier run of the gateway); returns the cluster
    /// names cleaned up. The default has none.
    fn remove_orphans<'a>(&'a self, is_live: &'a IsLiveCluster<'a>) -> BoxFuture<'a, Vec<String>> {
        let _ = is_live;
        Box::pin(async { Vec::new() })
    }
}

/// The launcher `dask.launcher` names when the gateway cannot provide it: every start fails
/// with that message (rather than running users' clusters somewhere else).
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

impl Unavailable {
    fn refuse(&self, what: String) -> DaskLaunchError {
        DaskLaunchError::Platform {
            what,
            detail: format!(
                "this gateway runs Dask clusters with the {:?} launcher, which is not configured",
                self.0
            ),
        }
    }
}

impl DaskLauncher for Unavailable {
    fn start_scheduler<'a>(
        &'a self,
        spec: &'a ClusterSpec,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        let e = self.refuse(format!("the scheduler of cluster {}", spec.name));
        Box::pin(async move { Err(e) })
    }

    fn start_worker<'a>(
        &'a self,
        spec: &'a ClusterSpec,
        worker: &'a str,
        _scheduler_address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        let e = self.refuse(format!("worker {worker} of cluster {}", spec.name));
        Box::pin(async move { Err(e) })
    }

    fn cleanup<'a>(&'a self, _spec: &'a ClusterSpec) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// The Dask launcher for `name` (`local`, `slurm`, `kubernetes`): local processes, or what the
/// kernel launcher registered as `name` provides.
pub(crate) fn select(
    name: &str,
    local: impl FnOnce() -> Arc<dyn DaskLauncher>,
    kernels: &dyn crate::launcher::Launcher,
    config: &super::DaskConfig,
) -> Arc<dyn DaskLauncher> {
    if name == "local" {
        return local();
    }
    match kernels.dask_launcher(name, config) {
        Some(l) => l,
        None => {
            tracing::error!(
                launcher = name,
                "dask.launcher names a launcher this gateway does not run; creating clusters will fail"
            );
            Arc::new(Unavailable(name.to_owned()))
        }
    }
}
