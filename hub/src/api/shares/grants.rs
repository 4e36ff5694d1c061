//! `GET /hub/api/shares/{owner}` (every share of the owner's servers) and
//! `GET/POST/PATCH/DELETE /hub/api/shares/{owner}/{server}`: list, grant, revoke (some scopes
//! or all of one recipient's) and revoke everyone's.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::request::{GrantRequest, ShareScopes, Target};
use super::{
    ServerPath, method_not_allowed, owner_checked, page, paging, require_grantable, server_row,
    server_segment, share_json,
};
use crate::db::shares::{self, Recipient, Scope};
use crate::db::{self, now_micros};
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::names::{GroupName, UserName};
use crate::scopes::Resource;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/hub/api/shares/{owner}",
            get(list_owner)
                .post(method_not_allowed)
                .patch(method_not_allowed)
                .delete(method_not_allowed),
        )
        .route(
            "/hub/api/shares/{owner}/",
            get(list_at)
                .post(grant_at)
                .patch(revoke_at)
                .delete(delete_at),
        )
        .route(
            "/hub/api/shares/{owner}/{server}",
            get(list_at)
                .post(grant_at)
                .patch(revoke_at)
                .delete(delete_at),
        )
}

async fn list_owner(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(owner): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let paging = paging(&query, &headers)?;
    let mut conn = state.db().pool().acquire().await?;
    let owner = owner_checked(&mut conn, &caller, &owner, None, &["read:shares"]).await?;
    let (rows, total) = shares::list(
        &mut conn,
        Scope::Owner(owner.id),
        paging.offset,
        paging.limit,
    )
    .await?;
    let items = rows.iter().map(|s| share_json(&state, s)).collect();
    let path = format!("hub/api/shares/{}", crate::names::seg(&owner.name));
    Ok(Json(page(
        &state, &headers, &query, paging, &path, items, total,
    )))
}

async fn list_server(
    state: AppState,
    caller: ApiCaller,
    headers: HeaderMap,
    owner: String,
    server: String,
    query: HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    let paging = paging(&query, &headers)?;
    let server = server_segment(&server)?;
    let mut tx = state.db().begin().await?;
    let owner = owner_checked(&mut tx, &caller, &owner, Some(&server), &["read:shares"]).await?;
    let row = server_row(&mut tx, &owner, &server).await?;
    let (rows, total) =
        shares::list(&mut tx, Scope::Server(row.id), paging.offset, paging.limit).await?;
    tx.commit().await?;
    let items = rows.iter().map(|s| share_json(&state, s)).collect();
    let path = format!(
        "hub/api/shares/{}/{}",
        crate::names::seg(&owner.name),
        crate::names::seg(&server)
    );
    Ok(Json(page(
        &state, &headers, &query, paging, &path, items, total,
    )))
}

async fn list_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(p): Path<ServerPath>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    list_server(state, caller, headers, p.owner, p.server, query).await
}

/// The recipient a grant names, checked as JupyterHub does: naming a user or group needs
/// `read:users:name` / `read:groups:name` on it (403), and it must exist (400).
async fn recipient(
    conn: &mut sqlx::AnyConnection,
    caller: &ApiCaller,
    target: &Target,
) -> Result<Recipient, ApiError> {
    match target {
        Target::User(name) => {
            let found = match name.parse::<UserName>() {
                Ok(n) => db::users::get(conn, n.as_str()).await?,
                Err(_) => None,
            };
            let groups = found.as_ref().map(|u| u.groups.clone()).unwrap_or_default();
            if !caller.allows(
                "read:users:name",
                Resource::User {
                    name,
                    groups: &groups,
                },
            ) {
                return Err(ApiError::Forbidden(
                    "Need scope 'read:users:name' to share with users by name".to_owned(),
                ));
            }
            let user =
                found.ok_or_else(|| ApiError::BadRequest(format!("No such user: {name}")))?;
            Ok(Recipient::User(user.id))
        }
        Target::Group(name) => {
            if !caller.allows("read:groups:name", Resource::Group { name }) {
                return Err(ApiError::Forbidden(
                    "Need scope 'read:groups:name' to share with groups by name".to_owned(),
                ));
            }
            let group = match name.parse::<GroupName>() {
                Ok(n) => db::groups::get(conn, n.as_str()).await?,
                Err(_) => None,
            };
            let group =
                group.ok_or_else(|| ApiError::BadRequest(format!("No such group: {name}")))?;
            Ok(Recipient::Group(group.id))
        }
    }
}

async fn grant(
    state: AppState,
    caller: ApiCaller,
    owner: String,
    server: String,
    body: Option<Value>,
) -> Result<Json<Value>, ApiError> {
    if !caller.holds("shares") {
        return Err(ApiError::requires_any_of(&["shares"]));
    }
    let server = server_segment(&server)?;
    let mut tx = state.db().begin().await?;
    // The caller's right on the server first (as JupyterHub's `needs_scope`), then the body.
    let owner = owner_checked(&mut tx, &caller, &owner, Some(&server), &["shares"]).await?;
    let request = GrantRequest::parse(body)?;
    let scopes = match &request.scopes {
        Some(raw) => ShareScopes::parse(state.config(), raw, &owner.name, &server)?,
        None => ShareScopes::access(&owner.name, &server),
    };
    let row = server_row(&mut tx, &owner, &server).await?;
    for scope in scopes.as_slice() {
        require_grantable(&caller, scope)?;
    }
    let to = recipient(&mut tx, &caller, &request.target).await?;
    let share = shares::grant(
        &mut tx,
        owner.id,
        row.id,
        to,
        scopes.as_slice(),
        now_micros(),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        owner = %owner.name, server = %server, recipient = ?request.target, scopes = ?share.scopes,
        "share granted"
    );
    Ok(Json(share_json(&state, &share)))
}

async fn grant_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<ServerPath>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    grant(state, caller, p.owner, p.server, body).await
}

/// Scopes to revoke, as stored: an unfiltered scope means the one on this server.
fn revoke_scopes(raw: &[String], owner: &str, server: &str) -> Vec<String> {
    raw.iter()
        .map(|s| {
            if s.contains('!') {
                s.clone()
            } else {
                format!("{s}!server={owner}/{server}")
            }
        })
        .collect()
}

async fn revoke(
    state: AppState,
    caller: ApiCaller,
    owner: String,
    server: String,
    body: Option<Value>,
) -> Result<Json<Value>, ApiError> {
    if !caller.holds("shares") {
        return Err(ApiError::requires_any_of(&["shares"]));
    }
    let server = server_segment(&server)?;
    let mut tx = state.db().begin().await?;
    let owner = owner_checked(&mut tx, &caller, &owner, Some(&server), &["shares"]).await?;
    let request = GrantRequest::parse(body)?;
    let row = server_row(&mut tx, &owner, &server).await?;
    // Revoking needs no right to read the recipient's name; an unknown one holds nothing.
    let to = match &request.target {
        Target::User(name) => match name.parse::<UserName>() {
            Ok(n) => db::users::get(&mut tx, n.as_str())
                .await?
                .map(|u| Recipient::User(u.id)),
            Err(_) => None,
        },
        Target::Group(name) => match name.parse::<GroupName>() {
            Ok(n) => db::groups::get(&mut tx, n.as_str())
                .await?
                .map(|g| Recipient::Group(g.id)),
            Err(_) => None,
        },
    };
    let Some(to) = to else {
        tx.rollback().await?;
        return Ok(Json(json!({})));
    };
    let scopes = request
        .scopes
        .as_deref()
        .map(|raw| revoke_scopes(raw, &owner.name, &server));
    let left = shares::revoke(&mut tx, row.id, to, scopes.as_deref()).await?;
    tx.commit().await?;
    tracing::info!(
        owner = %owner.name, server = %server, recipient = ?request.target, "share revoked"
    );
    Ok(Json(
        left.map_or_else(|| json!({}), |s| share_json(&state, &s)),
    ))
}

async fn revoke_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<ServerPath>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    revoke(state, caller, p.owner, p.server, body).await
}

async fn delete_all(
    state: AppState,
    caller: ApiCaller,
    owner: String,
    server: String,
) -> Result<Response, ApiError> {
    let server = server_segment(&server)?;
    let mut tx = state.db().begin().await?;
    let owner = owner_checked(&mut tx, &caller, &owner, Some(&server), &["shares"]).await?;
    let row = server_row(&mut tx, &owner, &server).await?;
    let n = shares::delete_for_server(&mut tx, row.id).await?;
    tx.commit().await?;
    tracing::info!(owner = %owner.name, server = %server, deleted = n, "all shares revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<ServerPath>,
) -> Result<Response, ApiError> {
    delete_all(state, caller, p.owner, p.server).await
}
