//! `GET /hub/api` (no auth, CORS `*`), `GET /hub/api/info` (`read:hub`), `GET /hub/api/user`
//! (any valid token: the caller's identity, compat spec section 2.3).

use axum::extract::State;
use axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::JUPYTERHUB_VERSION;
use super::models::{UserModelOpts, user_model};
use crate::db;
use crate::error::ApiError;
use crate::extract::{ApiCaller, CallerKind};
use crate::scopes::Resource;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api", get(version))
        .route("/hub/api/", get(version))
        .route("/hub/api/info", get(info))
        .route("/hub/api/user", get(whoami))
}

async fn version() -> impl IntoResponse {
    (
        [(ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(json!({ "version": JUPYTERHUB_VERSION })),
    )
}

async fn info(State(state): State<AppState>, caller: ApiCaller) -> Result<Json<Value>, ApiError> {
    caller.require(&["read:hub"], Resource::Hub)?;
    Ok(Json(json!({
        "version": JUPYTERHUB_VERSION,
        "stackhub_version": env!("CARGO_PKG_VERSION"),
        "python": "",
        "sys_executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        "spawner": {"class": "stackhub", "version": env!("CARGO_PKG_VERSION")},
        "authenticator": {"class": state.authenticator().kind(), "version": env!("CARGO_PKG_VERSION")},
    })))
}

async fn whoami(State(state): State<AppState>, caller: ApiCaller) -> Result<Json<Value>, ApiError> {
    let scopes = caller.effective().to_strings();
    let token_id = caller.token_id.map(|id| format!("a{id}"));
    let mut model = match &caller.kind {
        CallerKind::User(user) => {
            let mut conn = state.db().pool().acquire().await?;
            let servers = db::servers::for_users(&mut conn, &[user.id])
                .await?
                .remove(&user.id)
                .unwrap_or_default();
            let roles = crate::auth::user_roles(state.config(), user);
            let opts = UserModelOpts {
                identity: true,
                ..UserModelOpts::default()
            };
            user_model(&state, &caller, user, &roles, &servers, opts)
                .unwrap_or_else(|| json!({"kind": "user", "name": user.name}))
        }
        CallerKind::Service { name } => {
            let (admin, roles) = super::services::roles_of(&state, name);
            json!({"kind": "service", "name": name, "admin": admin, "roles": roles})
        }
    };
    model["scopes"] = json!(scopes);
    model["token_id"] = json!(token_id);
    model["session_id"] = json!(caller.session_id);
    Ok(Json(model))
}
