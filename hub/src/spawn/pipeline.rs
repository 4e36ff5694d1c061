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

use serde_json::{Map, Value, json};
use spawner::{LaunchSpec, ProgressSink, SpawnRequest, Spawner, State};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::names::Names;
use super::ready::{Probe, Ready};
use super::settings::SpawnSettings;
use super::track::Track;
use super::txn::{self, StartTxError};
use super::{Orchestrator, Plan, ProgressStream, ServerRef, StartOutcome, StopOutcome};
use crate::db;
use crate::db::{Db, ServerRow};
use crate::error::ApiError;
use crate::proxy::{Proxy, ProxyError};

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
    /// Another replica took the spawn over (this one's lease ran out).
    #[error("another replica took the spawn over")]
    LeaseLost,
    /// A replica taking over a spawn whose launch never reported back could not launch it
    /// again.
    #[error("cannot start it again after its replica stopped: {0}")]
    Relaunch(String),
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
    /// Plans a spawn again when a replica takes over one whose launch never reported back.
    pub(super) planner: Option<super::Planner>,
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
                planner: None,
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

    /// Let a replica that takes over a spawn whose launch never reported back plan it again
    /// with `planner` (from the stored options). Call right after [`Self::new`], as
    /// [`Self::with_prepare`].
    #[must_use]
    pub fn with_planner(mut self, planner: super::Planner) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.planner = Some(planner);
        }
        self
    }

    /// This replica's id, the owner of the leases it takes.
    pub(super) fn me(&self) -> &str {
        self.inner.db.replica()
    }

    /// Save `row` as the owner of its pending work: [`SpawnFailure::LeaseLost`] when another
    /// replica took it over.
    pub(super) async fn save_owned(&self, row: &ServerRow) -> Result<(), SpawnFailure> {
        self.save_leased(row, false).await
    }

    /// [`Self::save_owned`] at the end of the work: the lease is given up in the same
    /// transaction.
    async fn save_done(&self, row: &ServerRow) -> Result<(), SpawnFailure> {
        self.save_leased(row, true).await
    }

    async fn save_leased(&self, row: &ServerRow, release: bool) -> Result<(), SpawnFailure> {
        let mut tx = self.inner.db.begin().await?;
        if db::servers::save_leased(&mut tx, row, self.me()).await? {
            if release {
                db::leases::release(&mut tx, row.id, self.me()).await?;
            }
            tx.commit().await?;
            Ok(())
        } else {
            tx.rollback().await?;
            Err(SpawnFailure::LeaseLost)
        }
    }

    pub(super) fn names(&self, user: &str, server: &str) -> Names {
        Names::new(&self.inner.settings, user, server)
    }

    pub(super) async fn track(&self, user: &str, server: &str) -> Option<Arc<Track>> {
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
        self.finish(&n, &mut row, outcome, &track, began).await;
    }

    /// The end of a spawn: the ready event, or the clean-up of a failed one (its server
    /// stopped, its token and client removed, its lease released), or nothing at all when
    /// another replica took it over.
    pub(super) async fn finish(
        &self,
        n: &Names,
        row: &mut ServerRow,
        outcome: Result<(), SpawnFailure>,
        track: &Track,
        began: Instant,
    ) {
        if matches!(outcome, Err(SpawnFailure::LeaseLost)) {
            tracing::warn!(server = %n.id, "another replica took this spawn over; leaving it");
            self.abandon(n, track).await;
            return;
        }
        crate::metrics::spawn_finished(began.elapsed().as_secs_f64(), outcome.is_ok()).await;
        match outcome {
            Ok(()) => {
                // The lease went with the final save (`await_ready`).
                track.push(super::progress::ready_event(&n.url()));
                // A ready server's progress is read from the database, as on every other
                // replica: its track (events, channels, the finished task) is not kept.
                self.forget_track(n, track).await;
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
                match txn::clear(&self.inner.db, n, row, false, Some(self.me())).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(server = %n.id, "another replica took the failed spawn over");
                        self.abandon(n, track).await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(server = %n.id, error = %e, "cannot mark a failed server stopped");
                    }
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

    /// Another replica took the spawn of `n` over: end this replica's track of it and forget
    /// it (progress is then read from the database).
    async fn abandon(&self, n: &Names, track: &Track) {
        track.abandon();
        self.forget_track(n, track).await;
    }

    /// Remove `track` from the tracks of `n` (not a newer spawn's track that replaced it).
    async fn forget_track(&self, n: &Names, track: &Track) {
        let mut tracks = self.inner.tracks.lock().await;
        let key = (n.id.user.clone(), n.id.name.clone());
        if tracks
            .get(&key)
            .is_some_and(|t| std::ptr::eq(Arc::as_ptr(t), track))
        {
            tracks.remove(&key);
        }
    }

    /// Give up this replica's lease on server `id` (its pending work is done).
    pub(super) async fn release(&self, id: i64) {
        let released = async {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::leases::release(&mut conn, id, self.me()).await
        }
        .await;
        if let Err(e) = released {
            tracing::warn!(server_id = id, error = %e, "cannot release a spawn lease (it runs out)");
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
        // Saved at once (the URL too, while pending): a replica that takes the spawn over
        // finds the server through them.
        row.state = spawned.state.0.clone();
        row.url = Some(spawned.url.clone());
        let saved = self.save_owned(row).await;
        if saved.is_err() || track.is_cancelled() {
            forward.abort();
            return saved.and(Err(SpawnFailure::Cancelled));
        }
        // From launch, the server has `spawner.start_timeout` to answer.
        let deadline = Instant::now() + settings.start_timeout;
        let ready = self.await_ready(n, row, &spawned, deadline, track).await;
        forward.abort();
        ready
    }

    /// Wait for the launched server `spawned` to answer by `deadline`, then route it and mark
    /// it ready.
    pub(super) async fn await_ready(
        &self,
        n: &Names,
        row: &mut ServerRow,
        spawned: &spawner::Spawned,
        deadline: Instant,
        track: &Track,
    ) -> Result<(), SpawnFailure> {
        let settings = &self.inner.settings;
        track.push(json!({"progress": 50, "message": "Waiting for the server to answer"}));
        let probe = Probe {
            http: &self.inner.http,
            spawner: &*self.inner.spawner,
            server: &n.id,
            state: &spawned.state,
            interval: settings.poll_interval,
        };
        let target = format!("{}{}api", spawned.url, n.prefix);
        match probe.wait(&target, deadline, track).await {
            Ready::Yes => {}
            Ready::Exited(code) => return Err(SpawnFailure::Exited(code)),
            Ready::Timeout => {
                return Err(SpawnFailure::TooSlow {
                    prefix: n.prefix.clone(),
                    secs: settings.start_timeout.as_secs(),
                });
            }
            Ready::Cancelled => return Err(SpawnFailure::Cancelled),
        }
        self.add_route(n, &spawned.url, row.launch.as_ref()).await?;
        row.url = Some(spawned.url.clone());
        row.pending = None;
        self.save_done(row).await?;
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
        self.expire_own_leases().await;
        let tracks = self.inner.tracks.lock().await;
        for track in tracks.values() {
            if let Some(task) = track.task.lock().await.take() {
                task.abort();
            }
        }
    }
}

/// How long the hub waits for a start it gave up on to end after cancelling it.
const CANCEL_GRACE: Duration = Duration::from_secs(60);

pub(super) fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::from(e)
}

impl SpawnOrchestrator {
    /// Begin a spawn of `server` as `plan` says: the start transaction (token, OAuth client,
    /// pending row, this replica's lease), then the background task. `resume`: the progress
    /// events so far of a spawn this replica takes over and launches again (kept, and gone on
    /// from); `None` for a new spawn (earlier events are removed).
    pub(super) async fn launch(
        &self,
        server: &ServerRef,
        plan: Plan,
        resume: Option<Vec<Value>>,
    ) -> Result<Arc<Track>, ApiError> {
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
        let start = txn::Start {
            token: &token,
            allowed_scopes: &allowed,
            max_servers,
            owner: self.me(),
            fresh: resume.is_none(),
        };
        match txn::begin_start(&self.inner.db, &n, &row, &start).await {
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
        let track = Arc::new(match resume {
            None => Track::new(&self.inner.db, row.id),
            Some(events) => {
                let stored = events.len();
                Track::resume(&self.inner.db, row.id, events, stored)
            }
        });
        self.inner.tracks.lock().await.insert(
            (server.user.clone(), server.server.clone()),
            Arc::clone(&track),
        );
        tracing::info!(server = %n.id, profile = ?req.spec.profile_slug(), "spawn requested");
        let span = tracing::info_span!("spawn", user = %n.id.user, server = %n.id.name);
        let task = tokio::spawn(
            self.clone()
                .run_spawn(n, row, req, Arc::clone(&track))
                .instrument(span),
        );
        *track.task.lock().await = Some(task.abort_handle());
        Ok(track)
    }
}

#[async_trait::async_trait]
impl Orchestrator for SpawnOrchestrator {
    async fn start(&self, server: &ServerRef, plan: Plan) -> Result<StartOutcome, ApiError> {
        if self
            .track(&server.user, &server.server)
            .await
            .is_some_and(|t| !t.finished())
        {
            return Err(ApiError::BadRequest(format!(
                "Server {}/{} is pending spawn",
                server.user, server.server
            )));
        }
        let track = self.launch(server, plan, None).await?;
        match tokio::time::timeout(self.inner.settings.slow_spawn_timeout, track.done()).await {
            Ok(true) => Ok(StartOutcome::Started),
            _ => Ok(StartOutcome::Pending),
        }
    }

    async fn stop(&self, server: &ServerRef, remove: bool) -> Result<StopOutcome, ApiError> {
        self.stop_server(server, remove).await
    }

    async fn last_failure(&self, server: &ServerRef) -> Option<String> {
        self.failure_of(server).await
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
        self.progress_of(server).await
    }
}
