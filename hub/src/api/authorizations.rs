//! JupyterHub's deprecated token lookup: `GET /hub/api/authorizations/token/{token}` answers the
//! model of the user or service owning `{token}`.
//!
//! As JupyterHub's `TokenAPIHandler`: the caller must authenticate with a token (a browser
//! session is refused with 403), needs no scope, and reads the owner's model through its own
//! scopes plus the owner's identify scopes (`read:users:name`, `read:users:groups` for a user,
//! `read:services:name` for a service): holding a token shows whose it is, nothing more about the
//! token itself. An unknown or expired token is a 404 that does not echo it. Seeing a token counts
//! as its activity. Every call logs a deprecation warning; the looked-up token is never logged.
//! `POST /hub/api/authorizations/token` is JupyterHub 2.0's removed endpoint: a 404 saying so.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::models::{UserModelOpts, user_model};
use crate::db::{self, TokenOwner};
use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/authorizations/token/{token}", get(lookup))
        .route("/hub/api/authorizations/token", post(removed))
}

/// JupyterHub's warning, word for word (it never names the token).
const DEPRECATED: &str =
    "/authorizations/token/:token endpoint is deprecated in JupyterHub 2.0. Use /api/user";

async fn lookup(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if caller.by_cookie {
        // JupyterHub's `@token_authenticated`: a token in the Authorization header only.
        return Err(ApiError::Forbidden(
            "This endpoint takes token authentication only".to_owned(),
        ));
    }
    tracing::warn!("{DEPRECATED}");
    let now = db::now_micros();
    let mut conn = state.db().pool().acquire().await?;
    let found = db::tokens::by_hash_with_user(&mut conn, &db::hash_secret(&token), now).await?;
    let Some((row, user)) = found else {
        return Err(ApiError::NotFound("Not Found".to_owned()));
    };
    crate::extract::record_token_use(&state, &mut conn, &row, now).await?;
    let model = match (&row.owner, user) {
        (TokenOwner::User { .. }, Some(user)) => {
            let servers = db::servers::for_users(&mut conn, &[user.id])
                .await?
                .remove(&user.id)
                .unwrap_or_default();
            let roles = crate::auth::user_roles(state.config(), &user);
            let opts = UserModelOpts {
                identity: true,
                ..UserModelOpts::default()
            };
            user_model(&state, &caller, &user, &roles, &servers, opts)
                .ok_or_else(|| ApiError::NotFound("Not Found".to_owned()))?
        }
        (TokenOwner::Service { name, .. }, _) => {
            super::services::identify_model(&state, &caller, name)
        }
        // A user token without its user (deleted meanwhile) identifies no one.
        (TokenOwner::User { .. }, None) => return Err(ApiError::NotFound("Not Found".to_owned())),
    };
    Ok(Json(model))
}

async fn removed() -> ApiError {
    ApiError::NotFound(
        "Deprecated endpoint /hub/api/authorizations/token is removed in JupyterHub 2.0. \
         Use /hub/api/users/:user/tokens instead."
            .to_owned(),
    )
}
