//! `GET /hub/api/users/{name}/oidc-token`: the user's current identity-provider access token,
//! refreshed first when it is about to expire. Single-user servers (their `Server at …` token
//! holds `users:activity!user`) call it through `STACKHUB_ACCESS_TOKEN_URL` to keep handing valid
//! tokens to remote kernel gateways; so can the user's own API tokens and admins
//! (`admin:auth_state`). OAuth tokens of the Lab front-end cannot. The refresh token never
//! leaves the hub.
//!
//! Replies: 200 `{"access_token","token_type":"Bearer","expires_at"}`; 404 when the user has no
//! live tokens (never logged in through OIDC, logged out, or the provider refused the refresh)
//! or OIDC is not configured.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::users::load_user;
use crate::db;
use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/hub/api/users/{name}/oidc-token", get(access_token))
}

async fn access_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(
        &state,
        &caller,
        &name,
        &["users:activity", "admin:auth_state"],
    )
    .await?;
    let none = || ApiError::NotFound(format!("No identity-provider token for user {}", user.name));
    let oidc = state.oidc().ok_or_else(none)?;
    let tokens = oidc
        .fresh_tokens(state.db(), user.id)
        .await?
        .ok_or_else(none)?;
    Ok(Json(json!({
        "access_token": tokens.access,
        "token_type": "Bearer",
        "expires_at": db::iso_opt(tokens.expires_at),
    })))
}
