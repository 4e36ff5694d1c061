//! Spawners: start, watch and stop single-user JupyterLab servers.
//!
//! The hub owns the pipeline around a spawner (tokens, OAuth client, readiness check, proxy
//! route, database); a spawner only turns a [`SpawnRequest`] into a running process or pod and
//! reports on it. Its [`State`] is an opaque JSON value the hub stores, so a restarted hub can
//! hand it back to [`Spawner::poll`] / [`Spawner::stop`] and re-attach.
//!
//! Implementations: [`LocalProcessSpawner`] (the embedded default: `jupyterhub-singleuser` from
//! the project's venv) and [`k8s::KubeSpawner`] (a pod per server, a claim per user).

pub mod k8s;
mod launch;
mod local;
mod local_children;
mod local_records;
pub mod profile;
#[cfg(feature = "test-util")]
pub mod testing;
mod types;

pub use self::launch::{ChosenProfile, LaunchError, LaunchSpec, Resources};

pub use self::local::{LocalProcessConfig, LocalProcessSpawner};
pub use self::types::{
    ProgressEvent, ProgressSink, Quota, ServerId, SpawnError, SpawnRequest, Spawned, State, Status,
};

use std::fmt::Debug;
use std::time::Duration;

/// Starts and stops one kind of single-user server.
///
/// Contract (as JupyterHub's `Spawner`):
/// - [`start`](Spawner::start) returns once the server process/pod is launched, with the URL it
///   will listen on and the state to persist; the hub then waits for the URL to answer.
/// - [`poll`](Spawner::poll) is [`Status::Running`] while it runs, else how it ended.
/// - [`stop`](Spawner::stop) ends it (gracefully, then forcibly after a grace period) and is
///   idempotent: stopping a server that is gone succeeds.
#[async_trait::async_trait]
pub trait Spawner: Send + Sync + Debug + 'static {
    /// Short name for logs and `/hub/api/info` (e.g. `localprocess`).
    fn kind(&self) -> &'static str;

    /// Launch the server described by `req`, reporting progress to `progress`.
    async fn start(&self, req: SpawnRequest, progress: ProgressSink)
    -> Result<Spawned, SpawnError>;

    /// The longest [`start`](Spawner::start) takes before it fails on its own and has removed
    /// what it launched (e.g. a pod still pulling its image); `None` when a start is quick.
    /// The hub never gives up on a start before this.
    fn start_timeout(&self) -> Option<Duration> {
        None
    }

    /// Ask the start of `server` in progress, if any, to give up: it removes what it launched
    /// and its [`start`](Spawner::start) returns an error soon (or, if it had just finished,
    /// its result, which the caller then stops). The hub calls this when it gives up on a
    /// start (its own timeout, or the user stopped the server) and then awaits the start.
    /// Default: nothing to cancel (the start is quick and its result is stopped).
    async fn cancel_start(&self, server: &ServerId) {
        let _ = server;
    }

    /// Whether the server described by `state` still runs.
    async fn poll(&self, server: &ServerId, state: &State) -> Result<Status, SpawnError>;

    /// Stop the server described by `state`; `now` skips the graceful period.
    async fn stop(&self, server: &ServerId, state: &State, now: bool) -> Result<(), SpawnError>;

    /// Find the running server of `server` whose start's result was lost (the hub replica that
    /// ran the start died before saving the state): its URL and state, so another replica can
    /// re-attach instead of launching it twice. Default: nothing can be found.
    async fn find(&self, server: &ServerId) -> Result<Option<Spawned>, SpawnError> {
        let _ = server;
        Ok(None)
    }

    /// Hub start-up, after re-attaching: remove servers this spawner finds of its own (pods left
    /// by an earlier run) that are not in `known`, the servers the hub re-attached to. Returns
    /// the servers removed. Default: nothing to find (a local process dies with its hub's
    /// process group or is stopped through its saved state).
    async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        let _ = known;
        Ok(Vec::new())
    }
}
