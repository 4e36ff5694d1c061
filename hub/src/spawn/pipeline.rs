//! The real [`Orchestrator`]: JupyterHub's `User.spawn` / `User.stop` pipeline over a
//! [`spawner::Spawner`] and a [`Proxy`].
//!
//! Start (compat spec section 1): in one transaction, replace the server's `Server at …` token,
//! upsert its OAuth client (secret = the token's hash, redirect URI = `<prefix>oauth_callback`),
//! save `user_options` and mark the row `pending = "spawn"`. A background task owned by the
//! orchestrator then calls [`spawner::Spawner::start`] (waiting for it at least as long as the
//! spawner's own start timeout: [`SpawnSettings::launch_timeout`]), saves the spawner state at
//! once (so a restarted hub can find the process), polls `GET {url}{prefix}api` every
//! [`SpawnSettings::poll_interval`] until any status below 500 (or `spawner.start_timeout` from
//! launch), adds the proxy route and marks the row ready. Progress events are kept per server
//! for the SSE stream. A failure stops the process and removes token and client again; a start
//! the hub gives up on (timeout, or a stop while it launches) is cancelled through
//! [`spawner::Spawner::cancel_start`], which removes what it launched.
//!
//! Stop: delete the route, stop the process, delete token and OAuth client, clear url/state.
//!
//! [`SpawnOrchestrator::reconcile`] runs at hub start-up: servers marked running are polled and
//! get their routes back, or are cleaned up when gone; spawns or stops cut short by a hub exit
//! are stopped; stale `/user/…` routes are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Map, Value, json};
use spawner::{ProgressSink, ServerId, SpawnRequest, Spawner, State, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::track::Track;
use super::{Orchestrator, ProgressStream, ServerRef, StartOutcome, StopOutcome};
use crate::api::models::seg;
use crate::db::{self, ClientRow, Db, NewToken, ServerRow};
use crate::error::ApiError;
use crate::proxy::Proxy;

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
    pub subdomain_host: Option<crate::origins::SubdomainHost>,
    /// From launch until the server must answer (`spawner.start_timeout`); also the shortest
    /// time a launch gets (see [`SpawnSettings::launch_timeout`]).
    pub start_timeout: Duration,
    /// How long a start request waits for readiness before answering 202.
    pub slow_spawn_timeout: Duration,
    /// Readiness poll interval.
    pub poll_interval: Duration,
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

/// The spawn pipeline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SpawnOrchestrator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    spawner: Arc<dyn Spawner>,
    proxy: Arc<dyn Proxy>,
    settings: SpawnSettings,
    tracks: Mutex<HashMap<(String, String), Arc<Track>>>,
    prepare: Option<Arc<dyn super::PrepareSpawn>>,
}

/// Names derived from a server.
struct Names {
    /// The URL path, `<base>user/NAME/[SERVER/]`.
    prefix: String,
    /// The proxy route: the prefix, or `/HOST<prefix>` with per-user origins.
    route: String,
    /// The server's origin with per-user origins (`https://NAME.hub.example`), else empty.
    origin: String,
    client_id: String,
    note: String,
    id: ServerId,
}

impl Names {
    /// Where browsers open the server: the prefix, absolute on the user's own host with
    /// per-user origins.
    fn url(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    /// The server's OAuth redirect URI (on its own host with per-user origins, so the server
    /// sets its cookie there).
    fn redirect_uri(&self) -> String {
        format!("{}{}oauth_callback", self.origin, self.prefix)
    }
}

impl SpawnOrchestrator {
    /// An orchestrator over `spawner` and `proxy`.
    pub fn new(
        db: Db,
        spawner: Arc<dyn Spawner>,
        proxy: Arc<dyn Proxy>,
        settings: SpawnSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                spawner,
                proxy,
                settings,
                tracks: Mutex::new(HashMap::new()),
                prepare: None,
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

    fn names(&self, user: &str, server: &str) -> Names {
        let base = &self.inner.settings.base_url;
        let prefix = if server.is_empty() {
            format!("{base}user/{}/", seg(user))
        } else {
            format!("{base}user/{}/{}/", seg(user), seg(server))
        };
        let client_id = super::oauth_client_id(user, server);
        let (route, origin) = match &self.inner.settings.subdomain_host {
            Some(sub) => (
                format!("/{}{prefix}", sub.user_domain(user)),
                sub.user_origin(user),
            ),
            None => (prefix.clone(), String::new()),
        };
        Names {
            note: format!("Server at {prefix}"),
            route,
            origin,
            prefix,
            client_id,
            id: ServerId {
                user: user.to_owned(),
                name: server.to_owned(),
            },
        }
    }

    async fn track(&self, user: &str, server: &str) -> Option<Arc<Track>> {
        self.inner
            .tracks
            .lock()
            .await
            .get(&(user.to_owned(), server.to_owned()))
            .cloned()
    }

    /// The environment of compat spec section 1 (without `JUPYTERHUB_SERVICE_URL`, which the
    /// spawner adds once it knows its port).
    fn environment(
        &self,
        n: &Names,
        user: &str,
        server: &str,
        token: &str,
    ) -> BTreeMap<String, String> {
        let s = &self.inner.settings;
        let access = json!([
            format!("access:servers!server={user}/{server}"),
            format!("access:servers!user={user}"),
        ])
        .to_string();
        let allowed = json!([format!("access:servers!server={user}/{server}")]).to_string();
        let (host, public_url, public_hub) = match s.public_url.as_deref().map(url::Url::parse) {
            Some(Ok(u)) => {
                let origin = u.origin().ascii_serialization();
                let server_origin = if n.origin.is_empty() {
                    &origin
                } else {
                    &n.origin
                };
                (
                    origin.clone(),
                    format!("{server_origin}{}", n.prefix),
                    format!("{origin}{}hub/", s.base_url),
                )
            }
            _ => (String::new(), String::new(), String::new()),
        };
        let api = s.hub_api_url.trim_end_matches('/');
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("JUPYTERHUB_API_TOKEN", token.to_owned()),
            ("JPY_API_TOKEN", token.to_owned()),
            ("JUPYTERHUB_CLIENT_ID", n.client_id.clone()),
            ("JUPYTERHUB_API_URL", api.to_owned()),
            ("JUPYTERHUB_SERVICE_PREFIX", n.prefix.clone()),
            ("JUPYTERHUB_OAUTH_CALLBACK_URL", n.redirect_uri()),
            ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access.clone()),
            ("JUPYTERHUB_OAUTH_SCOPES", access),
            ("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", allowed),
            ("JUPYTERHUB_USER", user.to_owned()),
            ("JUPYTERHUB_SERVER_NAME", server.to_owned()),
            (
                "JUPYTERHUB_ACTIVITY_URL",
                format!("{api}/users/{}/activity", seg(user)),
            ),
            ("JUPYTERHUB_BASE_URL", s.base_url.clone()),
            ("JUPYTERHUB_HOST", host),
            ("JUPYTERHUB_PUBLIC_URL", public_url),
            ("JUPYTERHUB_PUBLIC_HUB_URL", public_hub),
            ("JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "0".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env
    }

    /// Remove a server's token and OAuth client and mark it stopped (or delete it), in one
    /// transaction.
    async fn clear(&self, n: &Names, row: &mut ServerRow, remove: bool) -> Result<(), sqlx::Error> {
        row.url = None;
        row.pending = None;
        row.state = json!({});
        let mut tx = self.inner.db.begin().await?;
        db::tokens::delete_for_note(&mut tx, row.user_id, &n.note).await?;
        db::oauth::delete_client(&mut tx, &n.client_id).await?;
        if remove {
            db::servers::delete(&mut tx, row.id).await?;
        } else {
            db::servers::save(&mut tx, row).await?;
        }
        tx.commit().await
    }

    async fn add_route(
        &self,
        n: &Names,
        url: &str,
        user_options: &Value,
    ) -> Result<(), crate::proxy::ProxyError> {
        let mut data = match &self.inner.prepare {
            Some(p) => {
                let owner = super::RouteOwner {
                    user: &n.id.user,
                    server: &n.id.name,
                    oauth_client_id: &n.client_id,
                };
                p.route_data(&owner, user_options)
            }
            None => Map::new(),
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
            Err(message) => {
                tracing::warn!(server = %n.id, %message, "spawn failed");
                if !row.state.as_object().is_none_or(Map::is_empty)
                    && let Err(e) = self
                        .inner
                        .spawner
                        .stop(&n.id, &State(row.state.clone()), true)
                        .await
                {
                    tracing::error!(server = %n.id, error = %e, "cannot stop a failed server");
                }
                if let Err(e) = self.clear(&n, &mut row, false).await {
                    tracing::error!(server = %n.id, error = %e, "cannot mark a failed server stopped");
                }
                let message = if message == CANCELLED {
                    "Spawn cancelled".to_owned()
                } else {
                    format!("Spawn failed: {message}")
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
    ) -> Result<(), String> {
        let settings = &self.inner.settings;
        let too_slow = |secs: u64| {
            format!(
                "Server at {} didn't respond in {secs} seconds (setting: spawner.start_timeout)",
                n.prefix,
            )
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
            () = tokio::time::sleep_until(launch_deadline) => Err(too_slow(launch_timeout.as_secs())),
            () = track.cancelled() => Err(CANCELLED.to_owned()),
        };
        let spawned = match first {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(reason) => {
                self.give_up_start(n, start).await;
                return Err(reason);
            }
        };
        row.state = spawned.state.0.clone();
        self.inner
            .db
            .save_server(row)
            .await
            .map_err(|e| format!("database error: {e}"))?;
        if track.is_cancelled() {
            forward.abort();
            return Err(CANCELLED.to_owned());
        }
        track.push(json!({"progress": 50, "message": "Waiting for the server to answer"}));
        // From launch, the server has `spawner.start_timeout` to answer.
        let deadline = Instant::now() + settings.start_timeout;
        let ready = self
            .wait_ready(n, &spawned.url, &spawned.state, deadline, track)
            .await;
        forward.abort();
        match ready {
            Ready::Yes => {}
            Ready::Exited(code) => {
                return Err(match code {
                    Some(c) => format!("server process exited with code {c}"),
                    None => "server process exited".to_owned(),
                });
            }
            Ready::Timeout => return Err(too_slow(settings.start_timeout.as_secs())),
            Ready::Cancelled => return Err(CANCELLED.to_owned()),
        }
        self.add_route(n, &spawned.url, &row.user_options)
            .await
            .map_err(|e| e.to_string())?;
        row.url = Some(spawned.url);
        row.pending = None;
        self.inner
            .db
            .save_server(row)
            .await
            .map_err(|e| format!("database error: {e}"))?;
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

    /// Poll `GET {url}{prefix}api` until any status below 500.
    async fn wait_ready(
        &self,
        n: &Names,
        url: &str,
        state: &State,
        deadline: Instant,
        track: &Track,
    ) -> Ready {
        let target = format!("{url}{}api", n.prefix);
        let mut connected = false;
        let mut tick = 0u32;
        loop {
            let result = tokio::select! {
                r = probe(&target, deadline, || {
                    if !connected {
                        connected = true;
                        tracing::info!(server = %n.id, "readiness: port accepts connections");
                    }
                }) => r,
                () = track.cancelled() => return Ready::Cancelled,
            };
            if let Probe::Status(code) = result
                && code < 500
            {
                tracing::info!(server = %n.id, status = code, "readiness: server answered");
                return Ready::Yes;
            }
            tick += 1;
            if tick.is_multiple_of(20)
                && let Ok(Status::Exited(code)) = self.inner.spawner.poll(&n.id, state).await
            {
                return Ready::Exited(code);
            }
            if Instant::now() >= deadline {
                return Ready::Timeout;
            }
            if track.is_cancelled() {
                return Ready::Cancelled;
            }
            tokio::time::sleep(self.inner.settings.poll_interval).await;
        }
    }

    /// Start-up reconciliation: re-attach to running servers, clean up the rest, drop stale
    /// routes.
    ///
    /// # Errors
    /// A database error.
    pub async fn reconcile(&self) -> Result<(), sqlx::Error> {
        let active = {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::servers::active_all(&mut conn).await?
        };
        let mut live = HashSet::new();
        let mut live_ids = Vec::new();
        for (user, mut row) in active {
            let n = self.names(&user, &row.name);
            let state = State(row.state.clone());
            let running = row.pending.is_none()
                && row.url.is_some()
                && matches!(
                    self.inner.spawner.poll(&n.id, &state).await,
                    Ok(Status::Running)
                );
            if running && let Some(url) = row.url.clone() {
                match self.add_route(&n, &url, &row.user_options).await {
                    Ok(()) => {
                        tracing::info!(server = %n.id, "re-attached to running server");
                        live.insert(proxy_key(&n.route));
                        live_ids.push(n.id.clone());
                        continue;
                    }
                    Err(e) => tracing::error!(server = %n.id, error = %e, "cannot re-add route"),
                }
            }
            tracing::info!(server = %n.id, pending = ?row.pending, "server gone or interrupted; cleaning up");
            if let Err(e) = self.inner.spawner.stop(&n.id, &state, false).await {
                tracing::error!(server = %n.id, error = %e, "cannot stop server");
            }
            self.clear(&n, &mut row, false).await?;
        }
        // Pods (or other servers) the spawner finds of its own that no row re-attached to.
        match self.inner.spawner.remove_orphans(&live_ids).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(count = removed.len(), "removed orphaned servers");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot remove orphaned servers"),
        }
        if let Ok(routes) = self.inner.proxy.routes().await {
            for (path, data) in routes {
                if data.contains_key("user") && !live.contains(&proxy_key(&path)) {
                    tracing::info!(route = %path, "removing stale route");
                    let _ = self.inner.proxy.delete_route(&path).await;
                }
            }
        }
        Ok(())
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
        match self.clear(n, &mut row, remove).await {
            Ok(()) => tracing::info!(server = %n.id, "server stopped"),
            Err(e) => tracing::error!(server = %n.id, error = %e, "cannot mark server stopped"),
        }
    }
}

fn proxy_key(path: &str) -> String {
    ::proxy::normalize(path)
}

/// How long the hub waits for a start it gave up on to end after cancelling it.
const CANCEL_GRACE: Duration = Duration::from_secs(60);

/// What the hub adds to a spawner's own start timeout before it gives up on a launch.
pub const LAUNCH_MARGIN: Duration = Duration::from_secs(10);

/// How long one readiness request may take (JupyterHub's `http_timeout`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

enum Ready {
    Yes,
    Exited(Option<i32>),
    Timeout,
    Cancelled,
}

/// The failure message of a spawn cancelled by a stop request.
const CANCELLED: &str = "cancelled";

enum Probe {
    Refused,
    Garbled,
    Status(u16),
}

/// One `GET` on a fresh connection; only the status line is read.
async fn probe(target: &str, deadline: Instant, on_connect: impl FnOnce()) -> Probe {
    let Ok(url) = url::Url::parse(target) else {
        return Probe::Garbled;
    };
    let host = url
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(80);
    let until = deadline.min(Instant::now() + HTTP_TIMEOUT);
    let Ok(Ok(mut stream)) = tokio::time::timeout_at(until, TcpStream::connect((host, port))).await
    else {
        return Probe::Refused;
    };
    on_connect();
    let _ = stream.set_nodelay(true);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{port}\r\nConnection: close\r\n\r\n",
        url.path(),
        url.host_str().unwrap_or_default()
    );
    let exchange = async {
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let k = stream.read(&mut chunk).await?;
            if k == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..k]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout_at(until, exchange).await {
        Ok(Ok(buf)) => {
            let line = String::from_utf8_lossy(&buf);
            line.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .map_or(Probe::Garbled, Probe::Status)
        }
        _ => Probe::Garbled,
    }
}

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::from(e)
}

#[async_trait::async_trait]
impl Orchestrator for SpawnOrchestrator {
    async fn start(
        &self,
        server: &ServerRef,
        user_options: Option<Value>,
    ) -> Result<StartOutcome, ApiError> {
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
        if let Some(opts) = user_options {
            row.user_options = opts;
        }
        let n = self.names(&server.user, &server.server);
        let token = db::new_secret();
        let mut env = self.environment(&n, &server.user, &server.server, &token);
        let prepared = match &self.inner.prepare {
            Some(p) => p.prepare(server, &row.user_options).await?,
            None => super::Prepared::default(),
        };
        env.extend(prepared.env);
        let now = db::now_micros();
        let scopes = vec![
            format!("users:activity!user={}", server.user),
            format!("access:servers!server={}/{}", server.user, server.server),
        ];
        let client = ClientRow {
            id: n.client_id.clone(),
            secret_hash: Some(db::hash_secret(&token)),
            redirect_uri: n.redirect_uri(),
            description: n.note.clone(),
            allowed_scopes: vec![format!(
                "access:servers!server={}/{}",
                server.user, server.server
            )],
        };
        row.pending = Some("spawn".to_owned());
        row.url = None;
        row.state = json!({});
        row.started = Some(now);
        row.last_activity = Some(now);
        {
            let hash = db::hash_secret(&token);
            let mut tx = self.inner.db.begin().await.map_err(db_err)?;
            if let Some((max, role)) = &prepared.max_servers {
                // Counted under the owner's row lock, so two starts cannot both pass.
                let running = db::servers::lock_and_count_active(&mut tx, row.user_id, row.id)
                    .await
                    .map_err(db_err)?;
                if running >= i64::from(*max) {
                    return Err(ApiError::BadRequest(format!(
                        "User {} already runs {running} servers, the most quota role {role} allows",
                        server.user
                    )));
                }
            }
            db::tokens::delete_for_note(&mut tx, server.user_id, &n.note)
                .await
                .map_err(db_err)?;
            db::tokens::insert(
                &mut tx,
                &NewToken {
                    hash: &hash,
                    prefix: &token[..4],
                    user_id: Some(server.user_id),
                    service_id: None,
                    scopes: &scopes,
                    note: &n.note,
                    created: now,
                    expires_at: None,
                    session_id: None,
                    oauth_client: None,
                },
            )
            .await
            .map_err(db_err)?;
            db::oauth::upsert_client(&mut tx, &client, now)
                .await
                .map_err(db_err)?;
            db::servers::save(&mut tx, &row).await.map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        }
        let req = SpawnRequest {
            server: n.id.clone(),
            prefix: n.prefix.clone(),
            env,
            user_options: row.user_options.clone(),
            quota: prepared.quota,
            overrides: prepared.overrides,
        };
        let track = Arc::new(Track::new());
        self.inner
            .tracks
            .lock()
            .await
            .insert(key, Arc::clone(&track));
        tracing::info!(server = %n.id, "spawn requested");
        let span = tracing::info_span!("spawn", server = %n.id);
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
