//! The `Launcher` seam: how a kernel process comes to exist and how it is signalled.
//!
//! The gateway owns everything around it (connection info, ZeroMQ, readiness, limits); a launcher
//! only starts a kernel for a [`LaunchRequest`] and returns where to reach it plus a
//! [`KernelProcess`] handle. The local-process launcher lives here, the Slurm launcher in
//! [`slurm`]; [`ByKernelSpec`] picks one per kernelspec.
//!
//! Optional parts of the seam (default methods, so a launcher implements only what its platform
//! has): progress messages while a launch waits ([`Launcher::launch_with_progress`]), re-attaching
//! to kernels that outlived a gateway restart ([`Launcher::recover`]), and restarting a kernel
//! inside the same allocation ([`KernelProcess::restart_in_place`]).

pub mod k8s;
mod local;
mod select;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use jupyter_protocol::ConnectionInfo;
use thiserror::Error;

use crate::config::MemoryLimitMode;
use crate::kernelspec::KernelSpec;

pub use self::local::{DEFAULT_PORT_RANGE, LocalLauncher, shared_account_warnings};
pub use self::select::ByKernelSpec;

/// Why a launch or a signal failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The kernel command could not be spawned.
    #[error("spawning {program}: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Preparing the launch (ports, connection file) failed.
    #[error("preparing {what}: {source}")]
    Prepare {
        /// What was being prepared.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The scheduler refused or failed an operation (`sbatch`, `scancel`, ...).
    #[error("{what}: {detail}")]
    Scheduler {
        /// What was attempted (`sbatch`, `squeue`, ...).
        what: &'static str,
        /// Why, with the scheduler's own message.
        detail: String,
    },
    /// The kernel did not come up in time (e.g. a batch job still queued).
    #[error("{detail}")]
    Timeout {
        /// What was waited for, with the scheduler's reason.
        detail: String,
    },
    /// The kernel's job ended before the kernel called back.
    #[error("{detail}")]
    Ended {
        /// How it ended.
        detail: String,
    },
    /// Sending a signal failed.
    #[error("signal {signal:?}: {detail}")]
    Signal {
        /// The signal.
        signal: KernelSignal,
        /// Why.
        detail: String,
    },
}

/// What the gateway asks a launcher to start.
#[derive(Clone)]
pub struct LaunchRequest {
    /// The kernel's id (stable across restarts).
    pub kernel_id: String,
    /// The kernelspec.
    pub spec: Arc<KernelSpec>,
    /// Final environment for the kernel (spec env, passed-through `KERNEL_*`, forced values).
    pub env: BTreeMap<String, String>,
    /// Working directory, if the client asked for an existing one.
    pub working_dir: Option<PathBuf>,
    /// HMAC key for the connection file (secret).
    pub key: String,
    /// Resource limits from the caller's quota (also in `env` as `KERNEL_*_LIMIT`). Launchers
    /// enforce what their platform can: pod limits, Slurm `--cpus-per-task` / `--mem`, rlimits.
    pub limits: ResourceLimits,
}

/// Per-kernel resource limits; `None` = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceLimits {
    /// CPUs.
    pub cpus: Option<f64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// How a local launcher enforces `memory_bytes`.
    pub memory_mode: MemoryLimitMode,
    /// GPUs.
    pub gpus: Option<u32>,
}

impl std::fmt::Debug for LaunchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("kernel_id", &self.kernel_id)
            .field("spec", &self.spec.name)
            .field("working_dir", &self.working_dir)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A started kernel: where to reach it and its process handle.
pub struct Launched {
    /// Ports, transport, key.
    pub connection: ConnectionInfo,
    /// The running process (or job, or pod).
    pub process: Box<dyn KernelProcess>,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("ip", &self.connection.ip)
            .field("shell_port", &self.connection.shell_port)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// Signals the gateway sends to a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSignal {
    /// SIGINT: interrupt the running cell.
    Interrupt,
    /// SIGTERM: ask to exit.
    Terminate,
    /// SIGKILL: exit now.
    Kill,
}

/// How a kernel process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Human-readable status (`exit status 1`, `signal 9`).
    pub status: String,
    /// Last line the kernel wrote to stderr, if any.
    pub last_stderr: Option<String>,
}

/// Receives human-readable progress of a launch (`Slurm job 12 pending: Resources (position 2)`).
pub type Progress = Arc<dyn Fn(String) + Send + Sync>;

/// A kernel that outlived the gateway (a running batch job), found again at start-up.
pub struct Recovered {
    /// The kernel's id.
    pub kernel_id: String,
    /// The user owning it.
    pub user: String,
    /// Its kernelspec name.
    pub kernel_name: String,
    /// The environment it was launched with (for a later re-launch).
    pub env: BTreeMap<String, String>,
    /// Working directory it was launched with.
    pub working_dir: Option<PathBuf>,
    /// Where it listens now.
    pub connection: ConnectionInfo,
    /// Its handle.
    pub process: Box<dyn KernelProcess>,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("kernel_id", &self.kernel_id)
            .field("user", &self.user)
            .field("kernel_name", &self.kernel_name)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// Whether the gateway still has a kernel (by id); see [`Launcher::remove_orphans`].
pub type IsLive<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

/// Starts kernels.
pub trait Launcher: Send + Sync + std::fmt::Debug {
    /// Starts a kernel and returns once its process exists and its connection info is known
    /// (not once it answers: readiness is the gateway's job).
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>>;

    /// [`Launcher::launch`], reporting waits (queue position, scheduler reason) through
    /// `progress`. The default ignores `progress`.
    fn launch_with_progress(
        &self,
        request: LaunchRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        let _ = progress;
        self.launch(request)
    }

    /// Kernels of an earlier run of this gateway that are still alive, to re-attach at start-up.
    /// A launcher also cancels what it finds of its own that cannot be re-attached (orphans).
    /// The default has none.
    fn recover(&self) -> BoxFuture<'_, Vec<Recovered>> {
        Box::pin(async { Vec::new() })
    }

    /// Removes what this launcher started (kernel pods) for kernels that `is_live` says the
    /// gateway no longer has; returns the kernel ids removed. The manager calls it
    /// periodically. `is_live` is asked after listing, so a kernel whose resources exist at
    /// listing time is already known to the gateway. The default has nothing to remove.
    fn remove_orphans<'a>(
        &'a self,
        is_live: &'a IsLive<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, LaunchError>> {
        let _ = is_live;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Dask clusters on this launcher's platform (`crate::dask`), sharing its clients and
    /// settings: the launcher registered as `name` answers (a dispatcher asks it). The default
    /// runs none.
    fn dask_launcher(&self, name: &str, config: &crate::dask::DaskConfig) -> DaskLauncherOf {
        let _ = (name, config);
        None
    }
}

/// The Dask launcher a kernel launcher's platform provides (see [`Launcher::dask_launcher`]).
pub type DaskLauncherOf = Option<Arc<dyn crate::dask::DaskLauncher>>;

/// A running kernel process.
pub trait KernelProcess: Send + Sync + std::fmt::Debug {
    /// Sends a signal to the kernel (its process group for local kernels).
    ///
    /// # Errors
    /// [`LaunchError::Signal`] when it cannot be delivered.
    fn signal(&self, signal: KernelSignal) -> Result<(), LaunchError>;

    /// `None` while running, else how it ended.
    fn poll(&self) -> BoxFuture<'_, Option<ExitInfo>>;

    /// Opaque state for persistence (pid, job id, ...).
    fn state(&self) -> serde_json::Value;

    /// Restarts the kernel inside the same allocation (a batch job keeps its node) and returns
    /// the new connection info once the new kernel process is up. `None` (the default): not
    /// supported, the gateway stops this process and launches a new one.
    fn restart_in_place(&self) -> Option<BoxFuture<'_, Result<ConnectionInfo, LaunchError>>> {
        None
    }

    /// Whether the kernel keeps running when the gateway exits (a batch job the next gateway
    /// run re-attaches to through [`Launcher::recover`]). Default: no, it is stopped.
    fn outlives_gateway(&self) -> bool {
        false
    }
}
