//! The real [`Orchestrator`]: JupyterHub's `User.spawn` / `User.stop` pipeline over a
//! [`spawner::Spawner`] and a [`Proxy`].
//!
//! Start (compat spec section 1), given a [`Plan`] from [`super::Planner`]: the start
//! transaction (`txn`) replaces the server's token and OAuth client and saves the options and
//! the launch specification with the row marked `pending = "spawn"`. A background task owned by
//! the orchestrator then calls [`spawner::Spawner::start`] (waiting for it at least as long as
//! the spawner's own start timeout: [`SpawnSettings::launch_timeout`]), saves the spawner state
//! at once (so a restarted hub can find the process), waits for readiness (`ready`), adds the
//! proxy route and marks the row ready. Progress events are kept per server for the SSE
//! stream. A failure ([`SpawnFailure`]) stops the process and removes token and client again;
//! a start the hub gives up on (timeout, or a stop while it launches) is cancelled through
//! [`spawner::Spawner::cancel_start`], which removes what it launched.
//!
//! Stop: delete the route, stop the process, delete token and OAuth client, clear url/state.
//! Start-up reconciliation is in `reconcile`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Map, Value, json};
use spawner::{LaunchSpec, ProgressSink, SpawnRequest, Spawner, State};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::names::Names;
use super::ready::{Probe, Ready};
use super::track::Track;
use super::txn::{self, StartTxError};
use super::{Orchestrator, Plan, ProgressStream, ServerRef, StartOutcome, StopOutcome};
use crate::db;
use crate::db::{Db, ServerRow};
use crate::error::ApiError;
use crate::proxy::{Proxy, ProxyError};

/// What the pipeline needs besides the spawner and the proxy.
#[derive(Debug, Clone)]
pub struct SpawnSettings {
    /// The hub's internal API URL as servers reach it, e.g. `http://127.0.0.1:8081/hub/api`.
    pub hub_api_url: String,
    /// The hub's base URL path (`/`).
    pub base_url: String,
    /// The public URL of the hub, if configured.
    pub public_url: Option<String>,
    /// Per-user origins (`subdomain_host`): servers routed and announced on their user's host.
    pub subdomain_host: Option<crate::config::host::SubdomainHost>,
    /// From launch until the server must answer (`spawner.start_timeout`); also the shortest
    /// time a launch gets (see [`SpawnSettings::launch_timeout`]).
    pub start_timeout: Duration,
    /// How long a start request waits for readiness before answering 202.
    pub slow_spawn_timeout: Duration,
    /// Readiness poll interval.
    pub poll_interval: Duration,
    /// `spawner.oauth_client_allowed_scopes`, unexpanded (`!user`, `!server`).
    pub oauth_client_allowed_scopes: Vec<String>,
}

impl SpawnSettings {
    /// Settings from the hub's config, with the API reachable at `hub_api_url`.
    pub fn from_config(config: &crate::Config, hub_api_url: String) -> Self {
        Self {
            hub_api_url,
            base_url: config.base_url.clone(),
            public_url: config.public_url.clone(),
            subdomain_host: config.subdomain_host.clone(),
            start_timeout: Duration::from_secs(config.spawner.start_timeout),
            slow_spawn_timeout: Duration::from_millis(config.spawner.slow_spawn_timeout_ms),
            poll_interval: Duration::from_millis(10),
            oauth_client_allowed_scopes: config.spawner.oauth_client_allowed_scopes.clone(),
        }
    }

    /// How long the hub waits for a spawner's start to return: `start_timeout`, or the
    /// spawner's own start timeout plus [`LAUNCH_MARGIN`] when that is longer, so the hub never
    /// gives up on (and loses the state of) a server the spawner is still launching.
    pub fn launch_timeout(&self, spawner_timeout: Option<Duration>) -> Duration {
        spawner_timeout.map_or(self.start_timeout, |t| {
            self.start_timeout.max(t + LAUNCH_MARGIN)
        })
    }
}

/// Why a start failed (the last progress event says it).
#[derive(Debug, thiserror::Error)]
pub enum SpawnFailure {
    /// The spawner could not launch the server.
    #[error(transparent)]
    Launch(#[from] spawner::SpawnError),
    /// The launch or the first answer took too long.
    #[error("Server at {prefix} didn't respond in {secs} seconds (setting: spawner.start_timeout)")]
    TooSlow {
        /// The server's prefix.
        prefix: String,
        /// The limit that passed.
        secs: u64,
    },
    /// A stop request cancelled the start.
    #[error("cancelled")]
    Cancelled,
    /// The server's process ended before it answered.
    #[error("server process exited{}", .0.map(|c| format!(" with code {c}")).unwrap_or_default())]
    Exited(Option<i32>),
    /// The proxy refused the route.
    #[error(transparent)]
    Route(#[from] ProxyError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The spawn pipeline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SpawnOrchestrator {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) db: Db,
    pub(super) spawner: Arc<dyn Spawner>,
    pub(super) proxy: Arc<dyn Proxy>,
    pub(super) settings: SpawnSettings,
    pub(super) tracks: Mutex<HashMap<(String, String), Arc<Track>>>,
    pub(super) prepare: Option<Arc<dyn super::PrepareSpawn>>,
    http: reqwest::Client,
}

impl SpawnOrchestrator {
    /// An orchestrator over `spawner` and `proxy`.
    ///
    /// # Panics
    /// When the HTTP client for readiness checks cannot be built (no TLS backend).
    pub fn new(
        db: Db,
        spawner: Arc<dyn Spawner>,
        proxy: Arc<dyn Proxy>,
        settings: SpawnSettings,
    ) -> Self {
        #[allow(clippy::expect_used)]
        let http = super::ready::client().expect("the readiness HTTP client builds");
        Self {
            inner: Arc::new(Inner {
                db,
                spawner,
                proxy,
                settings,
                tracks: Mutex::new(HashMap::new()),
                prepare: None,
                http,
            }),
        }
    }

    /// Let `prepare` add environment and the quota to every spawn. Call right after
    /// [`Self::new`], before the orchestrator is cloned (a clone keeps the old setting).
    #[must_use]
    pub fn with_prepare(mut self, prepare: Arc<dyn super::PrepareSpawn>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.prepare = Some(prepare);
        }
        self
    }

    pub(super) fn names(&self, user: &str, server: &str) -> Names {
        Names::new(&self.inner.settings, user, server)
    }

    async fn track(&self, user: &str, server: &str) -> Option<Arc<Track>> {
        self.inner
            .tracks
            .lock()
            .await
            .get(&(user.to_owned(), server.to_owned()))
            .cloned()
    }

    pub(super) async fn add_route(
        &self,
        n: &Names,
        url: &str,
        launch: Option<&LaunchSpec>,
    ) -> Result<(), ProxyError> {
        let mut data = match (&self.inner.prepare, launch) {
            (Some(p), Some(spec)) => {
                let owner = super::RouteOwner {
                    user: &n.id.user,
                    server: &n.id.name,
                    oauth_client_id: &n.client_id,
                };
                p.route_data(&owner, spec)
            }
            _ => Map::new(),
        };
        data.insert("user".to_owned(), Value::String(n.id.user.clone()));
        data.insert("server_name".to_owned(), Value::String(n.id.name.clone()));
        self.inner.proxy.add_route(&n.route, url, data).await
    }

    /// The background part of a start: launch, wait for readiness, route, mark ready.
    async fn run_spawn(self, n: Names, mut row: ServerRow, req: SpawnRequest, track: Arc<Track>) {
        let began = Instant::now();
        let outcome = self.spawn_inner(&n, &mut row, req, &track).await;
        crate::metrics::spawn_finished(began.elapsed().as_secs_f64(), outcome.is_ok()).await;
        match outcome {
            Ok(()) => {
                let url = &n.url();
                track.push(json!({
                    "progress": 100,
                    "ready": true,
                    "message": format!("Server ready at {url}"),
                    "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"),
                    "url": url,
                }));
            }
            Err(failure) => {
                tracing::warn!(server = %n.id, error = %failure, "spawn failed");
                if !row.state.as_object().is_none_or(Map::is_empty)
                    && let Err(e) = self
                        .inner
                        .spawner
                        .stop(&n.id, &State(row.state.clone()), true)
                        .await
                {
                    tracing::error!(server = %n.id, error = %e, "cannot stop a failed server");
                }
                if let Err(e) = txn::clear(&self.inner.db, &n, &mut row, false).await {
                    tracing::error!(server = %n.id, error = %e, "cannot mark a failed server stopped");
                }
                let message = match failure {
                    SpawnFailure::Cancelled => "Spawn cancelled".to_owned(),
                    f => format!("Spawn failed: {f}"),
                };
                track.push(json!({
                    "progress": 100,
                    "failed": true,
                    "message": message,
                }));
            }
        }
    }

    async fn spawn_inner(
        &self,
        n: &Names,
        row: &mut ServerRow,
        req: SpawnRequest,
        track: &Arc<Track>,
    ) -> Result<(), SpawnFailure> {
        let settings = &self.inner.settings;
        let too_slow = |limit: Duration| SpawnFailure::TooSlow {
            prefix: n.prefix.clone(),
            secs: limit.as_secs(),
        };
        let (sink, mut rx) = ProgressSink::channel();
        let fwd_track = Arc::clone(track);
        let forward = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
                if let Some(m) = v.as_object_mut() {
                    m.remove("ready");
                    m.remove("failed");
                }
                fwd_track.push(v);
            }
        });
        // The launch may take as long as the spawner's own timeout (a pod pulling its image):
        // giving up earlier would lose the state of what it launches.
        let launch_timeout = settings.launch_timeout(self.inner.spawner.start_timeout());
        let launch_deadline = Instant::now() + launch_timeout;
        // A boxed future (async_trait): polled by reference here, handed over below.
        let mut start = self.inner.spawner.start(req, sink);
        let first = tokio::select! {
            r = &mut start => Ok(r),
            () = tokio::time::sleep_until(launch_deadline) => Err(too_slow(launch_timeout)),
            () = track.cancelled() => Err(SpawnFailure::Cancelled),
        };
        let spawned = match first {
            Ok(r) => r?,
            Err(failure) => {
                self.give_up_start(n, start).await;
                return Err(failure);
            }
        };
        row.state = spawned.state.0.clone();
        self.inner.db.save_server(row).await?;
        if track.is_cancelled() {
            forward.abort();
            return Err(SpawnFailure::Cancelled);
        }
        track.push(json!({"progress": 50, "message": "Waiting for the server to answer"}));
        // From launch, the server has `spawner.start_timeout` to answer.
        let deadline = Instant::now() + settings.start_timeout;
        let probe = Probe {
            http: &self.inner.http,
            spawner: &*self.inner.spawner,
            server: &n.id,
            state: &spawned.state,
            interval: settings.poll_interval,
        };
        let target = format!("{}{}api", spawned.url, n.prefix);
        let ready = probe.wait(&target, deadline, track).await;
        forward.abort();
        match ready {
            Ready::Yes => {}
            Ready::Exited(code) => return Err(SpawnFailure::Exited(code)),
            Ready::Timeout => return Err(too_slow(settings.start_timeout)),
            Ready::Cancelled => return Err(SpawnFailure::Cancelled),
        }
        self.add_route(n, &spawned.url, row.launch.as_ref()).await?;
        row.url = Some(spawned.url);
        row.pending = None;
        self.inner.db.save_server(row).await?;
        tracing::info!(server = %n.id, prefix = %n.prefix, "server ready");
        Ok(())
    }

    /// The hub gave up on a start (timeout or cancel): cancel it through the spawner, which
    /// removes what it launched, and await its end for a while; a start that completed
    /// meanwhile is stopped. Nothing launched is left without a saved state to stop it by.
    async fn give_up_start(
        &self,
        n: &Names,
        start: impl Future<Output = Result<spawner::Spawned, spawner::SpawnError>>,
    ) {
        tracing::warn!(server = %n.id, "giving up on the start; cancelling it in the spawner");
        self.inner.spawner.cancel_start(&n.id).await;
        match tokio::time::timeout(CANCEL_GRACE, start).await {
            Ok(Ok(spawned)) => {
                if let Err(e) = self.inner.spawner.stop(&n.id, &spawned.state, true).await {
                    tracing::error!(server = %n.id, error = %e, "cannot stop a server whose start was given up");
                }
            }
            Ok(Err(e)) => {
                tracing::info!(server = %n.id, error = %e, "the cancelled start ended");
            }
            Err(_) => tracing::error!(
                server = %n.id,
                "the spawner did not end the cancelled start within {} s; what it launched is \
                 removed by the next hub start's orphan removal",
                CANCEL_GRACE.as_secs()
            ),
        }
    }

    /// Abort spawns in progress (hub shutdown). Their rows stay `pending` and are cleaned up
    /// by the next [`reconcile`](Self::reconcile); running servers keep running.
    pub async fn shutdown(&self) {
        let tracks = self.inner.tracks.lock().await;
        for track in tracks.values() {
            if let Some(task) = track.task.lock().await.take() {
                task.abort();
            }
        }
    }

    async fn do_stop(&self, n: &Names, mut row: ServerRow, remove: bool) {
        if let Err(e) = self.inner.proxy.delete_route(&n.route).await {
            tracing::error!(server = %n.id, error = %e, "cannot delete route");
        }
        if let Err(e) = self
            .inner
            .spawner
            .stop(&n.id, &State(row.state.clone()), false)
            .await
        {
            tracing::error!(server = %n.id, error = %e, "cannot stop server");
            row.pending = None;
            let _ = self.inner.db.save_server(&row).await;
            return;
        }
        match txn::clear(&self.inner.db, n, &mut row, remove).await {
            Ok(()) => tracing::info!(server = %n.id, "server stopped"),
            Err(e) => tracing::error!(server = %n.id, error = %e, "cannot mark server stopped"),
        }
    }
}

/// How long the hub waits for a start it gave up on to end after cancelling it.
const CANCEL_GRACE: Duration = Duration::from_secs(60);

/// What the hub adds to a spawner's own start timeout before it gives up on a launch.
pub const LAUNCH_MARGIN: Duration = Duration::from_secs(10);

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::from(e)
}

#[async_trait::async_trait]
impl Orchestrator for SpawnOrchestrator {
    async fn start(&self, server: &ServerRef, plan: Plan) -> Result<StartOutcome, ApiError> {
        let key = (server.user.clone(), server.server.clone());
        if self
            .track(&key.0, &key.1)
            .await
            .is_some_and(|t| !t.finished())
        {
            return Err(ApiError::BadRequest(format!(
                "Server {}/{} is pending spawn",
                key.0, key.1
            )));
        }
        let mut row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .map_err(db_err)?
            .ok_or_else(ApiError::no_access)?;
        let n = self.names(&server.user, &server.server);
        let token = db::new_secret();
        let mut env = n.environment(&self.inner.settings, &token);
        let prepared = match &self.inner.prepare {
            Some(p) => p.prepare(server, &plan).await?,
            None => super::Prepared::default(),
        };
        // The profile's environment, then the hub's (quota, sites, identity provider).
        env.extend(plan.spec.environment.clone());
        env.extend(prepared.env);
        let now = db::now_micros();
        row.user_options = plan.options;
        row.launch = Some(plan.spec.clone());
        row.pending = Some("spawn".to_owned());
        row.url = None;
        row.state = json!({});
        row.started = Some(now);
        row.last_activity = Some(now);
        let max_servers = plan
            .quota
            .as_ref()
            .and_then(|q| q.max_servers.map(|m| (m, q.role.as_str())));
        let allowed = n.client_allowed_scopes(&self.inner.settings);
        match txn::begin_start(&self.inner.db, &n, &row, &token, &allowed, max_servers).await {
            Ok(()) => {}
            Err(e @ StartTxError::MaxServers { .. }) => {
                return Err(ApiError::BadRequest(e.to_string()));
            }
            Err(StartTxError::Db(e)) => return Err(db_err(e)),
        }
        let req = SpawnRequest {
            server: n.id.clone(),
            prefix: n.prefix.clone(),
            env,
            spec: plan.spec,
        };
        let track = Arc::new(Track::new());
        self.inner
            .tracks
            .lock()
            .await
            .insert(key, Arc::clone(&track));
        tracing::info!(server = %n.id, profile = ?req.spec.profile_slug(), "spawn requested");
        let span = tracing::info_span!("spawn", user = %n.id.user, server = %n.id.name);
        let task = tokio::spawn(
            self.clone()
                .run_spawn(n, row, req, Arc::clone(&track))
                .instrument(span),
        );
        *track.task.lock().await = Some(task.abort_handle());
        match tokio::time::timeout(self.inner.settings.slow_spawn_timeout, track.done()).await {
            Ok(true) => Ok(StartOutcome::Started),
            _ => Ok(StartOutcome::Pending),
        }
    }

    async fn stop(&self, server: &ServerRef, remove: bool) -> Result<StopOutcome, ApiError> {
        if let Some(track) = self.track(&server.user, &server.server).await
            && !track.finished()
        {
            // Cancel the pending spawn: it stops what it launched and marks the server stopped.
            tracing::info!(server = %server.user, name = %server.server, "spawn cancelled");
            track.cancel();
            let done =
                tokio::time::timeout(self.inner.settings.slow_spawn_timeout, track.done()).await;
            return Ok(if done.is_ok() {
                StopOutcome::Stopped
            } else {
                StopOutcome::Pending
            });
        }
        let mut row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .map_err(db_err)?
            .ok_or_else(ApiError::no_access)?;
        if row.pending.as_deref() == Some("stop") {
            return Ok(StopOutcome::Pending);
        }
        row.pending = Some("stop".to_owned());
        self.inner.db.save_server(&row).await.map_err(db_err)?;
        let n = self.names(&server.user, &server.server);
        let this = self.clone();
        let span = tracing::info_span!("stop", server = %n.id);
        let task =
            tokio::spawn(async move { this.do_stop(&n, row, remove).await }.instrument(span));
        match tokio::time::timeout(self.inner.settings.slow_spawn_timeout, task).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(_) => Ok(StopOutcome::Pending),
        }
    }

    async fn last_failure(&self, server: &ServerRef) -> Option<String> {
        self.track(&server.user, &server.server).await?.failure()
    }

    fn proxy(&self) -> Option<Arc<dyn Proxy>> {
        Some(Arc::clone(&self.inner.proxy))
    }

    async fn check_routes(
        &self,
        services: &crate::services::Services,
    ) -> Result<super::RouteCheck, ApiError> {
        self.resync_routes(services, super::reconcile::Resync::Repair)
            .await
    }

    async fn forget_user(&self, user: &str) -> Result<Vec<String>, ApiError> {
        self.inner.tracks.lock().await.retain(|(u, _), _| u != user);
        let routes = self
            .inner
            .proxy
            .routes()
            .await
            .map_err(ApiError::internal)?;
        let mut removed = Vec::new();
        for (path, data) in routes {
            if data.get("user").and_then(Value::as_str) == Some(user) {
                self.inner
                    .proxy
                    .delete_route(&path)
                    .await
                    .map_err(ApiError::internal)?;
                tracing::info!(route = %path, user, "removed a route of a deleted user");
                removed.push(path);
            }
        }
        Ok(removed)
    }

    async fn progress(&self, server: &ServerRef) -> Result<ProgressStream, ApiError> {
        if let Some(track) = self.track(&server.user, &server.server).await
            && (!track.finished() || track.failed())
        {
            return Ok(track.stream());
        }
        let row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .map_err(db_err)?
            .ok_or_else(ApiError::no_access)?;
        if row.ready() {
            let url = self.names(&server.user, &server.server).url();
            let ev = json!({
                "progress": 100,
                "ready": true,
                "message": format!("Server ready at {url}"),
                "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"),
                "url": url,
            });
            return Ok(stream::once(async move { ev }).boxed());
        }
        Err(ApiError::BadRequest(format!(
            "Server {}/{} is not running",
            server.user, server.server
        )))
    }
}
