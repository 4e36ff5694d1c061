//! What is shared with a user or a group: `GET /hub/api/users/{name}/shared` (including shares
//! to the user's groups), `GET/DELETE /hub/api/users/{name}/shared/{owner}/{server}` (the
//! user's own share; `DELETE` leaves it), and the same under `/hub/api/groups/{name}/shared`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::{page, paging, server_segment, share_json};
use crate::api::groups::load_group;
use crate::api::load_user;
use crate::db;
use crate::db::shares::{self, Recipient, Scope, ShareRow};
use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::names::{UserName, seg};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/users/{name}/shared", get(user_list))
        .route(
            "/hub/api/users/{name}/shared/{owner}/",
            get(user_get).delete(user_leave),
        )
        .route(
            "/hub/api/users/{name}/shared/{owner}/{server}",
            get(user_get).delete(user_leave),
        )
        .route("/hub/api/groups/{name}/shared", get(group_list))
        .route(
            "/hub/api/groups/{name}/shared/{owner}/",
            get(group_get).delete(group_leave),
        )
        .route(
            "/hub/api/groups/{name}/shared/{owner}/{server}",
            get(group_get).delete(group_leave),
        )
}

async fn user_list(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let paging = paging(&query, &headers)?;
    let user = load_user(&state, &caller, &name, &["read:users:shares"]).await?;
    let mut conn = state.db().pool().acquire().await?;
    let (rows, total) = shares::list(
        &mut conn,
        Scope::SharedWithUser(user.id),
        paging.offset,
        paging.limit,
    )
    .await?;
    let items = rows.iter().map(|s| share_json(&state, s)).collect();
    let path = format!("hub/api/users/{}/shared", seg(&user.name));
    Ok(Json(page(
        &state, &headers, &query, paging, &path, items, total,
    )))
}

async fn group_list(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let paging = paging(&query, &headers)?;
    let group = load_group(&state, &caller, &name, &["read:groups:shares"]).await?;
    let mut conn = state.db().pool().acquire().await?;
    let (rows, total) = shares::list(
        &mut conn,
        Scope::SharedWithGroup(group.id),
        paging.offset,
        paging.limit,
    )
    .await?;
    let items = rows.iter().map(|s| share_json(&state, s)).collect();
    let path = format!("hub/api/groups/{}/shared", seg(&group.name));
    Ok(Json(page(
        &state, &headers, &query, paging, &path, items, total,
    )))
}

/// The share of `owner`'s `server` granted directly to `to` (404 naming it otherwise).
async fn find_share(
    state: &AppState,
    to: Recipient,
    who: &str,
    owner: &str,
    server: &str,
) -> Result<ShareRow, ApiError> {
    let server = server_segment(server)?;
    let missing = || ApiError::NotFound(format!("No such share for {who} on {owner}/{server}"));
    let owner: UserName = owner.parse().map_err(|_| missing())?;
    let mut conn = state.db().pool().acquire().await?;
    let Some(owner) = db::users::get(&mut conn, owner.as_str()).await? else {
        return Err(missing());
    };
    let Some(row) = db::servers::get(&mut conn, owner.id, &server).await? else {
        return Err(missing());
    };
    shares::find(&mut conn, row.id, to)
        .await?
        .ok_or_else(missing)
}

async fn user_share(
    state: &AppState,
    caller: &ApiCaller,
    p: &SharedPath,
    scopes: &[&str],
) -> Result<ShareRow, ApiError> {
    let user = load_user(state, caller, &p.name, scopes).await?;
    let who = format!("user {}", user.name);
    find_share(state, Recipient::User(user.id), &who, &p.owner, &p.server).await
}

async fn group_share(
    state: &AppState,
    caller: &ApiCaller,
    p: &SharedPath,
    scopes: &[&str],
) -> Result<ShareRow, ApiError> {
    let group = load_group(state, caller, &p.name, scopes).await?;
    let who = format!("group {}", group.name);
    find_share(state, Recipient::Group(group.id), &who, &p.owner, &p.server).await
}

async fn leave(state: &AppState, share: &ShareRow) -> Result<Response, ApiError> {
    let mut tx = state.db().begin().await?;
    shares::delete(&mut tx, share.id).await?;
    tx.commit().await?;
    tracing::info!(
        owner = %share.server.owner, server = %share.server.name,
        user = ?share.user, group = ?share.group, "share left"
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{name}/shared/{owner}/` (the default server) or `{name}/shared/{owner}/{server}`.
#[derive(Debug, serde::Deserialize)]
struct SharedPath {
    name: String,
    owner: String,
    #[serde(default)]
    server: String,
}

async fn user_get(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<SharedPath>,
) -> Result<Json<Value>, ApiError> {
    let s = user_share(&state, &caller, &p, &["read:users:shares"]).await?;
    Ok(Json(share_json(&state, &s)))
}

async fn user_leave(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<SharedPath>,
) -> Result<Response, ApiError> {
    let s = user_share(&state, &caller, &p, &["users:shares"]).await?;
    leave(&state, &s).await
}

async fn group_get(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<SharedPath>,
) -> Result<Json<Value>, ApiError> {
    let s = group_share(&state, &caller, &p, &["read:groups:shares"]).await?;
    Ok(Json(share_json(&state, &s)))
}

async fn group_leave(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<SharedPath>,
) -> Result<Response, ApiError> {
    let s = group_share(&state, &caller, &p, &["groups:shares"]).await?;
    leave(&state, &s).await
}
