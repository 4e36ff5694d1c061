//! `GET /hub/api/users/{name}/spawn-options`: the server options the user may choose, for UIs
//! other than the hub's picker. The same profiles, choices and defaults as the picker (the
//! options last used for a server are marked `selected` with `?server=NAME`), the quota with
//! servers used / max, and how to send a choice (`user_options` for the REST start, or the form
//! and query fields of compat spec section 5).
//!
//! Scope: any of `read:servers`, `servers`, `start:servers` on the user's servers.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::db;
use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::names::{ServerName, UserName};
use crate::profiles::{self, UserOptions};
use crate::scopes::Resource;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/hub/api/users/{name}/spawn-options", get(spawn_options))
}

const SCOPES: &[&str] = &["read:servers", "servers", "start:servers"];

async fn spawn_options(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if !SCOPES.iter().any(|s| caller.holds(s)) {
        return Err(ApiError::requires_any_of(SCOPES));
    }
    let server = match q.get("server").filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<ServerName>()?.as_str().to_owned(),
        None => String::new(),
    };
    let name: UserName = name.parse()?;
    let mut conn = state.db().pool().acquire().await?;
    let user = db::users::get(&mut conn, name.as_str())
        .await?
        .ok_or_else(ApiError::no_access)?;
    caller.require(
        SCOPES,
        Resource::Server {
            user: &user.name,
            server: &server,
            groups: &user.groups,
        },
    )?;
    let servers = db::servers::for_users(&mut conn, &[user.id])
        .await?
        .remove(&user.id)
        .unwrap_or_default();
    let quota = crate::quota::of_user(&mut conn, user.id).await?;
    let current = servers
        .iter()
        .find(|s| s.name == server)
        .and_then(|s| UserOptions::parse(&s.user_options).ok())
        .unwrap_or_default();
    let id = state.planner().identity(&user);
    let mut body = profiles::view(state.planner().profiles(), &id, &current);
    if let Some(sites) = state.sites() {
        sites.annotate(&mut body).await;
    }
    let used = servers.iter().filter(|s| s.active()).count();
    body["quota"] = json!({
        "role": quota.as_ref().map(|q| q.role.clone()),
        "description": quota.as_ref().map(crate::quota::UserQuota::describe),
        "cpus": quota.as_ref().map(|q| q.cpus),
        "memory": quota.as_ref().map(|q| q.memory.clone()),
        "gpus": quota.as_ref().map(|q| q.gpus),
        "servers_used": used,
        "servers_max": quota.as_ref().and_then(|q| q.max_servers),
    });
    body["transport"] = json!({
        "user_options": {
            "profile": "<slug>",
            "<option>": "<choice key, or unlisted-choice>",
            "<option>--unlisted-choice": "<free text>",
        },
        "form_fields": {
            "profile": "profile",
            "option": "profile-option-<slug>--<option>",
            "unlisted_text": "profile-option-<slug>--<option>--unlisted-choice",
        },
        "query_prefix": "opt-",
    });
    Ok(Json(body))
}
