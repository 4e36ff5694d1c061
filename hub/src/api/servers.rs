//! Servers and activity:
//! - `POST/DELETE /hub/api/users/{name}/server`, `POST/DELETE …/servers/{server}`: start and
//!   stop, through the [`Orchestrator`](crate::spawn::Orchestrator) (spawn orchestration:
//!   `hub/src/spawn/`).
//! - `GET /hub/api/users/{name}/server`, `GET/PUT …/servers/{server}` (6.0): read, create.
//! - `GET …/server/progress`, `GET …/servers/{server}/progress`: the SSE progress stream.
//! - `POST /hub/api/users/{name}/activity` (compat spec section 2.4).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::models::server_model;
use super::users::load_user;
use crate::db::{self, ServerRow, UserRow};
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::names::{ServerName, UserName};
use crate::profiles;
use crate::scopes::Resource;
use crate::spawn::{ServerRef, StartOutcome, StartRequest, StopOutcome};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/hub/api/users/{name}/server",
            get(get_default).post(start_default).delete(stop_default),
        )
        .route(
            "/hub/api/users/{name}/servers/{server}",
            get(get_named)
                .post(start_named)
                .put(create_named)
                .delete(stop_named),
        )
        .route(
            "/hub/api/users/{name}/server/progress",
            get(progress_default),
        )
        .route(
            "/hub/api/users/{name}/servers/{server}/progress",
            get(progress_named),
        )
        .route("/hub/api/users/{name}/activity", post(activity))
}

fn server_name(raw: &str) -> Result<String, ApiError> {
    Ok(raw.parse::<ServerName>()?.as_str().to_owned())
}

/// Load the user, check `scopes` on the server, and load the server row if it exists.
async fn load_server(
    state: &AppState,
    caller: &ApiCaller,
    name: &str,
    server: &str,
    scopes: &[&str],
) -> Result<(UserRow, Option<ServerRow>), ApiError> {
    if !scopes.iter().any(|s| caller.holds(s)) {
        return Err(ApiError::requires_any_of(scopes));
    }
    let name: UserName = name.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let user = db::users::get(&mut conn, name.as_str())
        .await?
        .ok_or_else(ApiError::no_access)?;
    caller.require(
        scopes,
        Resource::Server {
            user: &user.name,
            server,
            groups: &user.groups,
        },
    )?;
    let row = db::servers::get(&mut conn, user.id, server).await?;
    Ok((user, row))
}

fn server_ref(user: &UserRow, server: &str) -> ServerRef {
    ServerRef {
        user_id: user.id,
        user: user.name.clone(),
        server: server.to_owned(),
    }
}

async fn read_server(
    state: AppState,
    caller: ApiCaller,
    name: String,
    server: String,
) -> Result<Json<Value>, ApiError> {
    let (user, row) = load_server(&state, &caller, &name, &server, &["read:servers"]).await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("No such server: {name}/{server}")))?;
    Ok(Json(server_model(&state, &caller, &user, &row)))
}

async fn get_default(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    read_server(state, caller, name, String::new()).await
}

async fn get_named(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let server = server_name(&server)?;
    read_server(state, caller, name, server).await
}

async fn start(
    state: AppState,
    caller: ApiCaller,
    name: String,
    server: String,
    body: Option<Value>,
) -> Result<Response, ApiError> {
    let (options, display_name) = profiles::from_rest_body(body)?;
    let (user, _) = load_server(
        &state,
        &caller,
        &name,
        &server,
        &["servers", "start:servers"],
    )
    .await?;
    let req = StartRequest {
        options,
        display_name,
    };
    let outcome = state
        .planner()
        .start(state.orchestrator(), &user, &server, req)
        .await?;
    let status = match outcome {
        StartOutcome::Started => StatusCode::CREATED,
        StartOutcome::Pending => StatusCode::ACCEPTED,
    };
    Ok(status.into_response())
}

async fn start_default(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Response, ApiError> {
    start(state, caller, name, String::new(), body).await
}

async fn start_named(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Response, ApiError> {
    let server = server_name(&server)?;
    start(state, caller, name, server, body).await
}

#[derive(Debug, Deserialize, Default)]
struct StopBody {
    #[serde(default)]
    remove: bool,
}

async fn stop(
    state: AppState,
    caller: ApiCaller,
    name: String,
    server: String,
    remove: bool,
) -> Result<StatusCode, ApiError> {
    let (user, row) = load_server(
        &state,
        &caller,
        &name,
        &server,
        &["servers", "delete:servers"],
    )
    .await?;
    let Some(row) = row else {
        if server.is_empty() {
            return Ok(StatusCode::NO_CONTENT);
        }
        return Err(ApiError::NotFound(format!(
            "No such server: {name}/{server}"
        )));
    };
    if !row.active() {
        if remove && !server.is_empty() {
            let mut tx = state.db().begin().await?;
            db::servers::delete(&mut tx, row.id).await?;
            tx.commit().await?;
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    let outcome = state
        .orchestrator()
        .stop(&server_ref(&user, &server), remove && !server.is_empty())
        .await?;
    Ok(match outcome {
        StopOutcome::Stopped => StatusCode::NO_CONTENT,
        StopOutcome::Pending => StatusCode::ACCEPTED,
    })
}

async fn stop_default(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    stop(state, caller, name, String::new(), false).await
}

async fn stop_named(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<Option<StopBody>>,
) -> Result<StatusCode, ApiError> {
    let server = server_name(&server)?;
    stop(state, caller, name, server, body.unwrap_or_default().remove).await
}

async fn create_named(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Response, ApiError> {
    let server = server_name(&server)?;
    let (options, display_name) = profiles::from_rest_body(body)?;
    let options = options.unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    let (user, _) = load_server(
        &state,
        &caller,
        &name,
        &server,
        &["servers", "start:servers"],
    )
    .await?;
    // Checked as a start would be, so the server can start as created.
    let plan = state.planner().plan(&user, &options).await?;
    let row = state
        .planner()
        .create(&user, &server, display_name.as_deref(), &plan.options)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(server_model(&state, &caller, &user, &row)),
    )
        .into_response())
}

async fn progress(
    state: AppState,
    caller: ApiCaller,
    name: String,
    server: String,
) -> Result<Response, ApiError> {
    let (user, row) = load_server(&state, &caller, &name, &server, &["read:servers"]).await?;
    if row.is_none() {
        return Err(ApiError::NotFound(format!(
            "No such server: {name}/{server}"
        )));
    }
    let events = state
        .orchestrator()
        .progress(&server_ref(&user, &server))
        .await?;
    let events = events.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string())));
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(8)).text(""))
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

async fn progress_default(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    progress(state, caller, name, String::new()).await
}

async fn progress_named(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let server = server_name(&server)?;
    progress(state, caller, name, server).await
}

/// Parse an activity timestamp: ISO-8601, naive means UTC.
fn parse_time(field: &str, v: &Value) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest(format!("Invalid timestamp in {field}: {v}"));
    let s = v.as_str().ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
        .map_err(|_| bad())?;
    let max = Utc::now() + chrono::Duration::minutes(59);
    if t > max {
        return Err(ApiError::BadRequest(format!(
            "{field} {s} is more than 59 minutes in the future"
        )));
    }
    Ok(t.timestamp_micros())
}

#[derive(Debug, Deserialize)]
struct Activity {
    last_activity: Option<Value>,
    servers: Option<HashMap<String, Value>>,
}

async fn activity(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Activity>,
) -> Result<StatusCode, ApiError> {
    let user = load_user(&state, &caller, &name, &["users:activity"]).await?;
    if body.last_activity.is_none() && body.servers.is_none() {
        return Err(ApiError::BadRequest(
            "body must contain at least one of `last_activity` or `servers`".to_owned(),
        ));
    }
    let user_time = body
        .last_activity
        .as_ref()
        .map(|v| parse_time("last_activity", v))
        .transpose()?;
    let mut tx = state.db().begin().await?;
    if let Some(t) = user_time {
        db::users::bump_activity(&mut tx, user.id, t).await?;
    }
    for (server, model) in body.servers.iter().flatten() {
        let t = model
            .get("last_activity")
            .ok_or_else(|| ApiError::BadRequest(format!("servers.{server} needs a last_activity")))
            .and_then(|v| parse_time(&format!("servers.{server}.last_activity"), v))?;
        let row = db::servers::get(&mut tx, user.id, server)
            .await?
            .ok_or_else(|| {
                ApiError::BadRequest(format!("No such server '{server}' for user {}", user.name))
            })?;
        db::servers::bump_activity(&mut tx, row.id, t).await?;
        db::users::bump_activity(&mut tx, user.id, t).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::OK)
}
