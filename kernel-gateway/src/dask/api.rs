//! The REST routes of Dask Gateway's protocol.
//!
//! | Method | Path | Who | Success |
//! |---|---|---|---|
//! | GET | `/api/version` | anyone | `{"version"}` |
//! | GET | `/api/health` | anyone | `{"status": "pass"}` |
//! | GET | `/api/v1/options` | user | `{"cluster_options": [...]}` |
//! | GET | `/api/v1/clusters/[?status=a,b]` | user | `{name: cluster}` of the caller's clusters |
//! | POST | `/api/v1/clusters/` | user | 201 `{"name"}` (body `{"cluster_options": {...}}`) |
//! | GET | `/api/v1/clusters/{name}[?wait]` | user | the cluster (with `tls_cert`/`tls_key` while running); `wait` blocks up to 20 s for a change while pending or stopping |
//! | DELETE | `/api/v1/clusters/{name}` | user, or the cluster's token | 204 |
//! | POST | `/api/v1/clusters/{name}/scale` | user | `{"ok", "msg"}` (body `{"count"}`) |
//! | POST | `/api/v1/clusters/{name}/adapt` | user | `{"ok", "msg"}` (body `{"minimum", "maximum", "active"}`) |
//! | POST | `/api/v1/clusters/{name}/heartbeat` | the cluster's token only | 200 |
//! | any | `/clusters/{name}/...` | user | the cluster's dashboard (see `dashboard`) |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::DaskService;
use super::error::DaskError;
use super::model::Status;
use super::quota::DaskQuota;
use super::session::{Presented, presented};
use crate::auth::{Caller, Purpose};

/// The Dask Gateway release whose protocol this speaks.
const PROTOCOL_VERSION: &str = "2026.3.0";
/// How long `?wait` blocks.
const WAIT: Duration = Duration::from_secs(20);

/// The Dask routes, for merging into the gateway's router.
pub fn router(service: Arc<DaskService>) -> Router {
    let published = (!service.config.dashboard_prefix.is_empty())
        .then(|| format!("{}/clusters/{{*rest}}", service.config.dashboard_prefix));
    let router = match published {
        Some(path) => Router::new().route(&path, any(super::dashboard::serve)),
        None => Router::new(),
    };
    router
        .route(
            "/api/version",
            get(|| async { axum::Json(json!({ "version": PROTOCOL_VERSION })) }),
        )
        .route(
            "/api/health",
            get(|| async { axum::Json(json!({ "status": "pass" })) }),
        )
        .route("/api/v1/options", get(options))
        .route("/api/v1/clusters/", get(list).post(create))
        .route("/api/v1/clusters", get(list).post(create))
        .route("/api/v1/clusters/{name}", get(cluster).delete(delete))
        .route("/api/v1/clusters/{name}/scale", post(scale))
        .route("/api/v1/clusters/{name}/adapt", post(adapt))
        .route("/api/v1/clusters/{name}/heartbeat", post(heartbeat))
        .route("/clusters/{*rest}", any(super::dashboard::serve))
        .with_state(service)
}

/// Who is calling.
enum Who {
    /// A user, its Dask quota (resolved once per request) and the session cookie to set,
    /// after a handshake.
    User(Caller, DaskQuota, Option<HeaderValue>),
    /// A cluster's scheduler (its token), by cluster name.
    Cluster(String),
}

impl DaskService {
    /// Authenticates a request (see `session`).
    async fn who(&self, headers: &HeaderMap) -> Result<Who, DaskError> {
        match presented(headers) {
            Presented::Token(token) => {
                if let Some(c) = self
                    .registry
                    .all()
                    .into_iter()
                    .find(|c| c.token_matches(token))
                {
                    return Ok(Who::Cluster(c.name().to_owned()));
                }
                let caller =
                    crate::auth::authenticate_for(&self.manager, Some(token), Purpose::Dask)
                        .await
                        .map_err(DaskError::Auth)?;
                let quota = self.quota(&caller)?;
                let cookie = self.sessions.open(caller.clone())?;
                Ok(Who::User(caller, quota, Some(cookie)))
            }
            Presented::JupyterHub(token) => {
                let hub = self.hub_auth.as_ref().ok_or_else(|| {
                    DaskError::Forbidden(
                        "Authorization: jupyterhub is not accepted here (this site has no \
                         dask.hub_api_url); send Authorization: Bearer <token>"
                            .into(),
                    )
                })?;
                let (user, roles) = hub.check(token).await?;
                let caller = crate::auth::caller(&self.manager, user, roles);
                let quota = self.quota(&caller)?;
                let cookie = self.sessions.open(caller.clone())?;
                Ok(Who::User(caller, quota, Some(cookie)))
            }
            Presented::Other(scheme) => Err(DaskError::Forbidden(format!(
                "Authorization scheme {scheme:?} is not accepted here; send Authorization: Bearer <token> or jupyterhub <token>"
            ))),
            Presented::Nothing => {
                if let Some(caller) = self.sessions.caller(headers) {
                    let quota = self.quota(&caller)?;
                    return Ok(Who::User(caller, quota, None));
                }
                if self.manager.config.is_open() {
                    let caller = crate::auth::authenticate(&self.manager, None)
                        .await
                        .map_err(DaskError::Auth)?;
                    let quota = self.quota(&caller)?;
                    return Ok(Who::User(caller, quota, None));
                }
                Err(DaskError::Unauthenticated)
            }
        }
    }

    /// `caller`'s Dask quota (403 when none applies).
    fn quota(&self, caller: &Caller) -> Result<DaskQuota, DaskError> {
        DaskQuota::resolve(&self.config, &caller.user, &caller.roles)
    }

    /// A user and its quota (refusing cluster tokens).
    pub(super) async fn user(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Caller, DaskQuota, Option<HeaderValue>), DaskError> {
        match self.who(headers).await? {
            Who::User(caller, quota, cookie) => Ok((caller, quota, cookie)),
            Who::Cluster(_) => Err(DaskError::Forbidden(
                "a cluster's token may only send its heartbeats and stop its own cluster".into(),
            )),
        }
    }
}

/// `response` with the session cookie, if one was opened.
fn with_cookie(response: impl IntoResponse, cookie: Option<HeaderValue>) -> Response {
    let mut response = response.into_response();
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// A JSON object body.
fn json_body(body: &Bytes) -> Result<Map<String, Value>, DaskError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(DaskError::Invalid(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(DaskError::Invalid(format!("malformed JSON body: {e}"))),
    }
}

async fn options(
    State(svc): State<Arc<DaskService>>,
    headers: HeaderMap,
) -> Result<Response, DaskError> {
    let (_, quota, cookie) = svc.user(&headers).await?;
    Ok(with_cookie(axum::Json(quota.options_spec()), cookie))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(
    State(svc): State<Arc<DaskService>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, DaskError> {
    let (caller, _, cookie) = svc.user(&headers).await?;
    let wanted: Option<Vec<Status>> = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|item| {
                    Status::parse(item).ok_or_else(|| {
                        DaskError::Invalid(format!(
                            "unknown cluster status {item:?}; use pending, running, stopping, stopped or failed"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let mut out = Map::new();
    for c in svc.registry.of_user(&caller.user) {
        if wanted.as_ref().is_none_or(|w| w.contains(&c.status())) {
            out.insert(c.name().to_owned(), c.model(false));
        }
    }
    Ok(with_cookie(axum::Json(Value::Object(out)), cookie))
}

async fn create(
    State(svc): State<Arc<DaskService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DaskError> {
    let (caller, quota, cookie) = svc.user(&headers).await?;
    let body = json_body(&body)?;
    let options = match body.get("cluster_options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(DaskError::Invalid(
                "cluster_options must be a JSON object".into(),
            ));
        }
    };
    let name = svc.create(&caller.user, &quota, &options).await?;
    Ok(with_cookie(
        (StatusCode::CREATED, axum::Json(json!({ "name": name }))),
        cookie,
    ))
}

async fn cluster(
    State(svc): State<Arc<DaskService>>,
    Path(name): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, DaskError> {
    let (caller, _, cookie) = svc.user(&headers).await?;
    let cluster = svc.registry.get_for(&caller.user, &name)?;
    if q.contains_key("wait") {
        let mut rx = cluster.changed.subscribe();
        let status = *rx.borrow_and_update();
        if matches!(status, Status::Pending | Status::Stopping) {
            let _ = tokio::time::timeout(WAIT, rx.changed()).await;
        }
    }
    Ok(with_cookie(axum::Json(cluster.model(true)), cookie))
}

async fn delete(
    State(svc): State<Arc<DaskService>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DaskError> {
    let (cluster, cookie) = match svc.who(&headers).await? {
        Who::User(caller, _, cookie) => (svc.registry.get_for(&caller.user, &name)?, cookie),
        Who::Cluster(own) if own == name => (
            svc.registry
                .get(&name)
                .ok_or_else(|| DaskError::NotFound(name.clone()))?,
            None,
        ),
        Who::Cluster(_) => {
            return Err(DaskError::Forbidden(
                "a cluster's token is valid for its own cluster only".into(),
            ));
        }
    };
    tracing::info!(
        cluster = name,
        user = cluster.spec.user,
        "dask cluster stop requested"
    );
    let me = svc.clone();
    tokio::spawn(async move { me.stop(&cluster, Status::Stopped).await });
    Ok(with_cookie(StatusCode::NO_CONTENT, cookie))
}

/// A non-negative integer field (or `None` when absent / null).
fn count_field(body: &Map<String, Value>, key: &str) -> Result<Option<u32>, DaskError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                DaskError::Invalid(format!("{key} must be a non-negative integer, got {v}"))
            }),
    }
}

async fn scale(
    State(svc): State<Arc<DaskService>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DaskError> {
    let (caller, _, cookie) = svc.user(&headers).await?;
    let cluster = svc.registry.get_for(&caller.user, &name)?;
    let body = json_body(&body)?;
    let count = count_field(&body, "count")?
        .ok_or_else(|| DaskError::Invalid("count is required".into()))?;
    if cluster.status() != Status::Running {
        return Err(DaskError::Conflict(format!(
            "Cluster {name} is not running"
        )));
    }
    // Clamped with a warning, as upstream's cluster_max_workers (the client shows `msg`).
    let (count, msg) = cluster.quota.clamp_scale(count);
    svc.scheduler_call(&cluster, json!({"op": "scale", "count": count}))
        .await?;
    Ok(with_cookie(
        axum::Json(json!({"ok": msg.is_none(), "msg": msg})),
        cookie,
    ))
}

async fn adapt(
    State(svc): State<Arc<DaskService>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DaskError> {
    let (caller, _, cookie) = svc.user(&headers).await?;
    let cluster = svc.registry.get_for(&caller.user, &name)?;
    let body = json_body(&body)?;
    let minimum = count_field(&body, "minimum")?;
    let maximum = count_field(&body, "maximum")?;
    let active = match body.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(DaskError::Invalid(format!(
                "active must be true or false, got {v}"
            )));
        }
    };
    if let (Some(lo), Some(hi)) = (minimum, maximum)
        && lo > hi
    {
        return Err(DaskError::Invalid(format!(
            "minimum ({lo}) must not be greater than maximum ({hi})"
        )));
    }
    if cluster.status() != Status::Running {
        return Err(DaskError::Conflict(format!(
            "Cluster {name} is not running"
        )));
    }
    let (minimum, maximum, msg) = cluster.quota.clamp_adapt(minimum, maximum);
    svc.scheduler_call(
        &cluster,
        json!({"op": "adapt", "minimum": minimum, "maximum": maximum, "active": active}),
    )
    .await?;
    Ok(with_cookie(
        axum::Json(json!({"ok": msg.is_none(), "msg": msg})),
        cookie,
    ))
}

/// A scheduler's heartbeat (what `dask_gateway.scheduler_preload` posts).
#[derive(Debug, Deserialize)]
pub(super) struct Heartbeat {
    pub(super) scheduler_address: String,
    #[serde(default)]
    pub(super) api_address: String,
    #[serde(default)]
    pub(super) dashboard_address: String,
    #[serde(default)]
    pub(super) count: u32,
    #[serde(default)]
    pub(super) active_workers: Vec<String>,
    #[serde(default)]
    pub(super) closing_workers: Vec<String>,
    #[serde(default)]
    pub(super) closed_workers: Vec<String>,
}

async fn heartbeat(
    State(svc): State<Arc<DaskService>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DaskError> {
    match svc.who(&headers).await? {
        Who::Cluster(own) if own == name => {}
        Who::Cluster(_) => {
            return Err(DaskError::Forbidden(
                "a cluster's token is valid for its own cluster only".into(),
            ));
        }
        Who::User(..) => {
            return Err(DaskError::Forbidden(
                "heartbeats come from the cluster's scheduler, with the cluster's token".into(),
            ));
        }
    }
    let cluster = svc
        .registry
        .get(&name)
        .ok_or_else(|| DaskError::NotFound(name.clone()))?;
    let beat: Heartbeat = serde_json::from_slice(&body)
        .map_err(|e| DaskError::Invalid(format!("malformed heartbeat: {e}")))?;
    if !beat.scheduler_address.starts_with("tls://") {
        return Err(DaskError::Invalid(format!(
            "scheduler_address must be a tls:// address, got {}",
            beat.scheduler_address
        )));
    }
    svc.heartbeat(&cluster, beat).await?;
    Ok(StatusCode::OK.into_response())
}
