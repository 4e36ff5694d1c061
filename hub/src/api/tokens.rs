//! Tokens: `GET/POST /hub/api/users/{name}/tokens`, `GET/DELETE …/tokens/{id}` (`a<id>`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::models::token_model;
use super::users::load_user;
use crate::auth::{is_role, role_scopes};
use crate::db::{self, NewToken, TokenRow, UserRow};
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::scopes::{Owner, ScopeSet, validate_scope};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/users/{name}/tokens", get(list).post(create))
        .route(
            "/hub/api/users/{name}/tokens/{id}",
            get(get_one).delete(delete),
        )
}

async fn list(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(&state, &caller, &name, &["read:tokens"]).await?;
    let mut conn = state.db().pool().acquire().await?;
    let tokens = db::tokens::for_user(&mut conn, user.id, db::now_micros()).await?;
    Ok(Json(
        json!({"api_tokens": tokens.iter().map(token_model).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct NewTokenRequest {
    note: Option<String>,
    expires_in: Option<i64>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
}

async fn create(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Option<NewTokenRequest>>,
) -> Result<Response, ApiError> {
    let user = load_user(&state, &caller, &name, &["tokens"]).await?;
    let body = body.unwrap_or_default();
    let note = body
        .note
        .clone()
        .unwrap_or_else(|| match caller.user_name() {
            Some(n) if n == user.name => "Requested via api".to_owned(),
            Some(n) => format!("Requested via api by user {n}"),
            None => "Requested via api by service".to_owned(),
        });
    let request = TokenRequest {
        note: &note,
        expires_in: body.expires_in,
        scopes: body.scopes.as_deref(),
        roles: body.roles.as_deref(),
    };
    let (token, secret) = mint(&state, &caller.effective(), &user, &request).await?;
    let mut model = token_model(&token);
    model["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// A token to make for a user: what `POST /users/{name}/tokens` and the token page ask for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenRequest<'a> {
    /// Note.
    pub(crate) note: &'a str,
    /// Lifetime in seconds; `None` = never expires.
    pub(crate) expires_in: Option<i64>,
    /// Scopes; with `roles`, `None` for both means `inherit`.
    pub(crate) scopes: Option<&'a [String]>,
    /// Roles whose scopes the token gets.
    pub(crate) roles: Option<&'a [String]>,
}

/// Make a token for `user` as `request` says, on behalf of a requester holding `requester`:
/// 400 for scopes or roles that do not exist or that the owner does not hold, 403 for scopes
/// the requester does not hold. Returns the stored token and its secret (shown once).
pub(crate) async fn mint(
    state: &AppState,
    requester: &ScopeSet,
    user: &UserRow,
    request: &TokenRequest<'_>,
) -> Result<(TokenRow, String), ApiError> {
    let mut scopes: Vec<String> = Vec::new();
    for s in request.scopes.iter().copied().flatten() {
        validate_scope(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        scopes.push(s.clone());
    }
    for r in request.roles.iter().copied().flatten() {
        if !is_role(state.config(), r) {
            return Err(ApiError::BadRequest(format!("Role {r} does not exist")));
        }
        scopes.extend(role_scopes(state.config(), r));
    }
    if request.scopes.is_none() && request.roles.is_none() {
        scopes.push("inherit".to_owned());
    }
    scopes.sort();
    scopes.dedup();
    let now = db::now_micros();
    let expires_at = request
        .expires_in
        .map(|secs| expiry(now, secs))
        .transpose()?;
    let owner_scopes = crate::auth::user_scopes(state.config(), user);
    // `inherit` (also the `token` role) is everything the owner holds: the requester must hold
    // all of it too.
    let requested =
        ScopeSet::expand(&scopes, Owner::User(&user.name)).resolve_inherit(&owner_scopes);
    if !owner_scopes.covers(&requested) {
        return Err(ApiError::BadRequest(format!(
            "Not assigning requested scopes {} not held by user {}",
            scopes.join(", "),
            user.name
        )));
    }
    // The requester may not hand out more than it holds either.
    if !requester.covers(&requested.intersect(&owner_scopes)) {
        return Err(ApiError::Forbidden(format!(
            "Not assigning requested scopes {} not held by the requester",
            scopes.join(", ")
        )));
    }
    let secret = db::new_secret();
    let mut tx = state.db().begin().await?;
    let id = db::tokens::insert(
        &mut tx,
        &NewToken {
            hash: &db::hash_secret(&secret),
            prefix: &secret[..4],
            user_id: Some(user.id),
            service_id: None,
            scopes: &scopes,
            note: request.note,
            created: now,
            expires_at,
            session_id: None,
            oauth_client: None,
        },
    )
    .await?;
    let token = db::tokens::get_for_user(&mut tx, user.id, id, now)
        .await?
        .ok_or_else(ApiError::no_access)?;
    tx.commit().await?;
    tracing::info!(user = %user.name, token = %format!("a{id}"), "created token");
    Ok((token, secret))
}

/// The expiry time (µs) of a token made at `now` (µs) to live `secs` seconds; a 400 for a
/// lifetime that is not positive or does not fit.
fn expiry(now: i64, secs: i64) -> Result<i64, ApiError> {
    if secs <= 0 {
        return Err(ApiError::BadRequest(format!(
            "expires_in must be positive, not {secs}"
        )));
    }
    secs.checked_mul(1_000_000)
        .and_then(|us| now.checked_add(us))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "expires_in {secs} is too large (at most {} seconds)",
                (i64::MAX - now) / 1_000_000
            ))
        })
}

pub(crate) fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.strip_prefix('a')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::NotFound(format!("No such token: {id}")))
}

async fn get_one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(&state, &caller, &name, &["read:tokens"]).await?;
    let id = parse_id(&id)?;
    let mut conn = state.db().pool().acquire().await?;
    let token = db::tokens::get_for_user(&mut conn, user.id, id, db::now_micros())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No such token: a{id}")))?;
    Ok(Json(token_model(&token)))
}

async fn delete(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = load_user(&state, &caller, &name, &["tokens"]).await?;
    let id = parse_id(&id)?;
    revoke(&state, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke `user`'s token `id` (404 if `user` has no such token); an OAuth token takes every
/// token of its client for `user` with it.
pub(crate) async fn revoke(state: &AppState, user: &UserRow, id: i64) -> Result<(), ApiError> {
    let mut tx = state.db().begin().await?;
    let token = db::tokens::get_for_user(&mut tx, user.id, id, db::now_micros())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No such token: a{id}")))?;
    match &token.oauth_client {
        Some(client) => db::tokens::delete_for_client(&mut tx, user.id, client).await?,
        None => db::tokens::delete(&mut tx, id).await?,
    }
    tx.commit().await?;
    tracing::info!(user = %user.name, token = %format!("a{id}"), "deleted token");
    Ok(())
}
