//! `GET /hub/api/share-codes/{owner}` and `GET/POST/DELETE /hub/api/share-codes/{owner}/{server}`:
//! list unexpired codes, issue one (the code is in that answer only; the hub keeps its
//! SHA-256), revoke one (`?code=` or `?id=sc_N`) or all.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::request::{CodeRequest, ShareScopes};
use super::{
    ServerPath, code_json, method_not_allowed, owner_checked, page, paging, require_grantable,
    server_row, server_segment,
};
use crate::db::shares::{self, NewCode, Scope};
use crate::db::{hash_secret, now_micros};
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::names::seg;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/hub/api/share-codes/{owner}",
            get(list_owner)
                .post(method_not_allowed)
                .delete(method_not_allowed),
        )
        .route(
            "/hub/api/share-codes/{owner}/",
            get(list_at).post(issue_at).delete(revoke_at),
        )
        .route(
            "/hub/api/share-codes/{owner}/{server}",
            get(list_at).post(issue_at).delete(revoke_at),
        )
}

/// A new share code: 256 random bits, URL-safe (as JupyterHub's `token_urlsafe(32)`).
pub(crate) fn new_code() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
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
    let (rows, total) = shares::list_codes(
        &mut conn,
        Scope::Owner(owner.id),
        now_micros(),
        paging.offset,
        paging.limit,
    )
    .await?;
    let items = rows.iter().map(|c| code_json(&state, c, None)).collect();
    let path = format!("hub/api/share-codes/{}", seg(&owner.name));
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
    let (rows, total) = shares::list_codes(
        &mut tx,
        Scope::Server(row.id),
        now_micros(),
        paging.offset,
        paging.limit,
    )
    .await?;
    tx.commit().await?;
    let items = rows.iter().map(|c| code_json(&state, c, None)).collect();
    let path = format!("hub/api/share-codes/{}/{}", seg(&owner.name), seg(&server));
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

async fn issue(
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
    let request = CodeRequest::parse(body)?;
    let scopes = match &request.scopes {
        Some(raw) => ShareScopes::parse(state.config(), raw, &owner.name, &server)?,
        None => ShareScopes::access(&owner.name, &server),
    };
    for scope in scopes.as_slice() {
        require_grantable(&caller, scope)?;
    }
    let row = server_row(&mut tx, &owner, &server).await?;
    let code = new_code();
    let now = now_micros();
    let stored = shares::insert_code(
        &mut tx,
        &NewCode {
            code_hash: &hash_secret(&code),
            owner_id: owner.id,
            server_id: row.id,
            scopes: scopes.as_slice(),
            created: now,
            expires_at: now.saturating_add(request.expires_in.saturating_mul(1_000_000)),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        owner = %owner.name, server = %server, code_id = stored.id,
        expires_in = request.expires_in, "share code issued"
    );
    Ok(Json(code_json(&state, &stored, Some(&code))))
}

async fn issue_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<ServerPath>,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<Json<Value>, ApiError> {
    issue(state, caller, p.owner, p.server, body).await
}

async fn revoke(
    state: AppState,
    caller: ApiCaller,
    owner: String,
    server: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let server = server_segment(&server)?;
    let mut tx = state.db().begin().await?;
    let owner = owner_checked(&mut tx, &caller, &owner, Some(&server), &["shares"]).await?;
    let row = server_row(&mut tx, &owner, &server).await?;
    let code = query.get("code").filter(|c| !c.is_empty());
    let id = query.get("id").filter(|i| !i.is_empty());
    if let Some(code) = code {
        let found = shares::code_by_hash(&mut tx, &hash_secret(code))
            .await?
            .filter(|c| c.server_id == row.id)
            .ok_or_else(|| ApiError::NotFound("No matching code found".to_owned()))?;
        shares::delete_code(&mut tx, row.id, found.id).await?;
        tracing::info!(owner = %owner.name, server = %server, code_id = found.id, "share code revoked");
    } else if let Some(id) = id {
        let missing = || ApiError::NotFound(format!("No code found matching id={id}"));
        let n: i64 = id
            .strip_prefix("sc_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(missing)?;
        if !shares::delete_code(&mut tx, row.id, n).await? {
            return Err(missing());
        }
        tracing::info!(owner = %owner.name, server = %server, code_id = n, "share code revoked");
    } else {
        let n = shares::delete_codes_for_server(&mut tx, row.id).await?;
        tracing::info!(owner = %owner.name, server = %server, deleted = n, "all share codes revoked");
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_at(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(p): Path<ServerPath>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    revoke(state, caller, p.owner, p.server, query).await
}
