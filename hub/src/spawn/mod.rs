//! Spawn orchestration seam: what the API's server endpoints call to start, stop and watch
//! servers.
//!
//! Every start goes through [`Planner`] (options parsed once, resolved against profiles, access
//! rules, quota and site health into a [`Plan`]), then the [`Orchestrator`]. The hub's
//! pipeline around the [`spawner::Spawner`] (server token, OAuth client, readiness check, proxy
//! route, persisting `state`/`url`/`pending`/`launch` in the `servers` table) lives behind
//! [`Orchestrator`]: `pipeline` (start), `stop`, `names` (prefix, routes, environment), `txn`
//! (the transactions), `ready` (readiness), `reconcile` (hub start-up), `track` (progress of a
//! spawn this replica runs), `progress` (progress from any replica), `lease` (who runs each
//! pending spawn or stop across replicas; taking over those of a replica that died). [`SpawnOrchestrator`] is the real pipeline (`pipeline.rs`);
//! [`Unavailable`] answers 501 for a hub built without spawning. `main` plugs the real one in
//! with [`crate::AppState::with_orchestrator`].

mod lease;
mod names;
mod pipeline;
mod plan;
mod prepare;
mod progress;
mod ready;
mod reconcile;
mod server_config;
mod settings;
mod stop;
mod track;
mod txn;

pub use self::pipeline::{SpawnFailure, SpawnOrchestrator};
pub use self::plan::{Plan, Planner, Refusal, StartRequest};
pub use self::prepare::{HubPrepare, PrepareSpawn, Prepared, RouteOwner};
pub use self::reconcile::RouteCheck;
pub use self::server_config::{EXAMPLE_FILES, SERVER_CONFIG_FILES, write_server_config};
pub use self::settings::{LAUNCH_MARGIN, SpawnSettings};

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::error::ApiError;
use crate::proxy::Proxy;
use crate::services::Services;

/// The server an operation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    /// Owner's database id.
    pub user_id: i64,
    /// Owner's name.
    pub user: String,
    /// Server name (`""` = default server).
    pub server: String,
}

/// What a start request achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// The server is up (`201`).
    Started,
    /// The server is starting (`202`).
    Pending,
}

/// What a stop request achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The server is stopped (`204`).
    Stopped,
    /// The server is stopping (`202`).
    Pending,
}

/// One progress event as JSON (`{"progress","message",…}`, the last one with `ready` or
/// `failed`).
pub type ProgressStream = BoxStream<'static, Value>;

/// Starts, stops and reports on user servers for the API.
///
/// The API handler has already checked scopes, validated names and parsed the body; the
/// orchestrator owns everything from there, including the database updates (one transaction
/// per state change).
#[async_trait::async_trait]
pub trait Orchestrator: Send + Sync + Debug + 'static {
    /// Start a server as `plan` says (made by [`Planner::plan`], which every start path
    /// calls first).
    async fn start(&self, server: &ServerRef, plan: Plan) -> Result<StartOutcome, ApiError>;

    /// Stop a server; `remove` also deletes a named server.
    async fn stop(&self, server: &ServerRef, remove: bool) -> Result<StopOutcome, ApiError>;

    /// The progress events of a pending spawn.
    async fn progress(&self, server: &ServerRef) -> Result<ProgressStream, ApiError>;

    /// Why the server's last start failed (its final progress message), as long as no newer
    /// start replaced it; `None` otherwise.
    async fn last_failure(&self, _server: &ServerRef) -> Option<String> {
        None
    }

    /// Forget `user`, whose servers are all stopped, before the user is deleted: remove proxy
    /// routes still naming them (left by a stop that failed half way) and the spawn records
    /// kept under their name, so the next user of that name inherits nothing. Returns the
    /// paths of the routes removed.
    async fn forget_user(&self, _user: &str) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }

    /// The proxy servers are routed through; `None` for a hub without one.
    fn proxy(&self) -> Option<Arc<dyn Proxy>> {
        None
    }

    /// Bring the proxy in line with the database and `services` (JupyterHub's
    /// `check_routes`, `POST /hub/api/proxy`).
    async fn check_routes(&self, _services: &Services) -> Result<RouteCheck, ApiError> {
        Err(not_implemented())
    }
}

/// The OAuth client id of `user`'s server `server` (`""` = the default server), as
/// JupyterHub names it: `jupyterhub-user-NAME[-SERVER]`, URL-escaped.
pub(crate) fn oauth_client_id(user: &str, server: &str) -> String {
    use crate::names::seg;
    if server.is_empty() {
        format!("jupyterhub-user-{}", seg(user))
    } else {
        format!("jupyterhub-user-{}-{}", seg(user), seg(server))
    }
}

/// The orchestrator of a hub without spawning: every call is a 501.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unavailable;

fn not_implemented() -> ApiError {
    ApiError::NotImplemented(
        "Spawning servers is not available in this build of stackhub".to_owned(),
    )
}

#[async_trait::async_trait]
impl Orchestrator for Unavailable {
    async fn start(&self, _: &ServerRef, _: Plan) -> Result<StartOutcome, ApiError> {
        Err(not_implemented())
    }

    async fn stop(&self, _: &ServerRef, _: bool) -> Result<StopOutcome, ApiError> {
        Err(not_implemented())
    }

    async fn progress(&self, _: &ServerRef) -> Result<ProgressStream, ApiError> {
        Err(not_implemented())
    }
}
