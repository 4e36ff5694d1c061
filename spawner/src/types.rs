//! Values that cross the spawner seam.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// Which server: its owner and its name (`""` for the default server).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerId {
    /// The owner's user name.
    pub user: String,
    /// The server name; empty for the default server.
    pub name: String,
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user, self.name)
    }
}

/// Resource limits a user's quota grants each server (the input of
/// [`crate::LaunchSpec::build`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// GPUs.
    pub gpus: Option<u32>,
}

/// Everything a spawner needs to launch one server.
#[derive(Clone)]
pub struct SpawnRequest {
    /// The server.
    pub server: ServerId,
    /// The server's base URL path, e.g. `/user/alice/gpu/` (leading and trailing slash).
    pub prefix: String,
    /// The environment of the single-user server computed by the hub (JupyterHub's section 1),
    /// without `JUPYTERHUB_SERVICE_URL`, which the spawner sets once it knows where it listens.
    /// Holds the server's API token: never log it.
    pub env: BTreeMap<String, String>,
    /// What to launch: the resolved profile, resources within the user's quota.
    pub spec: crate::LaunchSpec,
}

impl fmt::Debug for SpawnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnRequest")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("spec", &self.spec)
            .finish()
    }
}

/// A launched server: where it will answer and what to remember about it.
#[derive(Debug, Clone)]
pub struct Spawned {
    /// Base URL without the prefix, e.g. `http://127.0.0.1:43121`.
    pub url: String,
    /// Opaque state for re-attaching after a hub restart.
    pub state: State,
}

/// Opaque spawner state, persisted by the hub as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct State(pub Value);

/// What [`Spawner::poll`](crate::Spawner::poll) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The server runs.
    Running,
    /// The server is gone; its exit code when known.
    Exited(Option<i32>),
}

/// One spawn progress event, as JupyterHub's progress stream carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Percent done, when the spawner can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// A readable message.
    pub message: String,
}

impl ProgressEvent {
    /// An event with a percentage.
    pub fn new(progress: u8, message: impl Into<String>) -> Self {
        Self {
            progress: Some(progress),
            message: message.into(),
        }
    }
}

/// Where a spawner sends progress events; sending never blocks and never fails the spawn.
#[derive(Debug, Clone)]
pub struct ProgressSink(Option<mpsc::UnboundedSender<ProgressEvent>>);

impl ProgressSink {
    /// A sink and the receiver the hub reads.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(Some(tx)), rx)
    }

    /// A sink that drops every event.
    pub fn discard() -> Self {
        Self(None)
    }

    /// Report progress.
    pub fn send(&self, event: ProgressEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

/// A spawner operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The server could not be launched.
    #[error("cannot start server {server}: {reason}")]
    Launch {
        /// The server.
        server: ServerId,
        /// What went wrong, readable by the user.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The stored state does not describe a server of this spawner.
    #[error("server {server}: unusable spawner state: {reason}")]
    BadState {
        /// The server.
        server: ServerId,
        /// Why the state is unusable.
        reason: String,
    },
    /// Stopping failed.
    #[error("cannot stop server {server}: {reason}")]
    Stop {
        /// The server.
        server: ServerId,
        /// What went wrong.
        reason: String,
    },
}
