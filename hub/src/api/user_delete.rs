//! `DELETE /hub/api/users/{name}`: stop the user's servers, then remove them with their
//! routes, OAuth clients, tokens and sessions, so a later user of the same name inherits
//! nothing.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::users::load_user;
use crate::db::{self, UserRow};
use crate::error::ApiError;
use crate::extract::{ApiCaller, CallerKind};
use crate::spawn::ServerRef;
use crate::state::AppState;

/// How long a delete waits for the user's servers to finish stopping.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The user's servers that are running or pending.
pub(super) async fn active_servers(
    state: &AppState,
    user_id: i64,
) -> Result<Vec<db::ServerRow>, ApiError> {
    let mut conn = state.db().pool().acquire().await?;
    Ok(db::servers::for_users(&mut conn, &[user_id])
        .await?
        .remove(&user_id)
        .unwrap_or_default()
        .into_iter()
        .filter(db::ServerRow::active)
        .collect())
}

/// `""` (default) and `gpu` as `default server, server gpu (pending stop)`.
pub(super) fn describe(servers: &[db::ServerRow]) -> String {
    servers
        .iter()
        .map(|s| {
            let name = if s.name.is_empty() {
                "default server".to_owned()
            } else {
                format!("server {}", s.name)
            };
            match &s.pending {
                Some(p) => format!("{name} (pending {p})"),
                None => name,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// All of `user`'s servers (stopped ones included) and their OAuth client ids under the
/// user's name (the default server's always among them).
pub(super) async fn servers_and_clients(
    conn: &mut sqlx::AnyConnection,
    user: &UserRow,
) -> Result<(Vec<db::ServerRow>, Vec<String>), sqlx::Error> {
    let servers = db::servers::for_users(conn, &[user.id])
        .await?
        .remove(&user.id)
        .unwrap_or_default();
    let mut ids: Vec<String> = servers
        .iter()
        .map(|s| crate::spawn::oauth_client_id(&user.name, &s.name))
        .collect();
    let default = crate::spawn::oauth_client_id(&user.name, "");
    if !ids.contains(&default) {
        ids.push(default);
    }
    Ok((servers, ids))
}

/// Stop every running or pending server of `user` through the spawn pipeline (proxy route,
/// the process with its remote kernels, server token, OAuth client) and wait until all are
/// stopped. Returns what was stopped.
///
/// # Errors
/// 400 (as JupyterHub) when a server is still stopping after [`STOP_WAIT`] or its stop failed.
async fn stop_all(state: &AppState, user: &UserRow) -> Result<String, ApiError> {
    let active = active_servers(state, user.id).await?;
    for s in &active {
        let server = ServerRef {
            user_id: user.id,
            user: user.name.clone(),
            server: s.name.clone(),
        };
        state.orchestrator().stop(&server, false).await?;
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    loop {
        let left = active_servers(state, user.id).await?;
        if left.is_empty() {
            return Ok(describe(&active));
        }
        let stopping = left.iter().any(|s| s.pending.is_some());
        if !stopping {
            return Err(ApiError::BadRequest(format!(
                "{}'s servers could not be stopped ({}); the user was not deleted, see the hub \
                 log",
                user.name,
                describe(&left)
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::BadRequest(format!(
                "{}'s servers are in the process of stopping ({}), please wait.",
                user.name,
                describe(&left)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn delete(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = load_user(&state, &caller, &name, &["delete:users"]).await?;
    if let CallerKind::User(me) = &caller.kind
        && me.id == user.id
    {
        return Err(ApiError::BadRequest("Cannot delete yourself!".to_owned()));
    }
    let stopped = stop_all(&state, &user).await?;
    let routes = state.orchestrator().forget_user(&user.name).await?;
    let mut tx = state.db().begin().await?;
    let (servers, clients) = servers_and_clients(&mut tx, &user).await?;
    if servers.iter().any(db::ServerRow::active) {
        return Err(ApiError::BadRequest(format!(
            "A server of {} was started while deleting them; try again",
            user.name
        )));
    }
    let removed = db::users::delete(&mut tx, user.id, &clients).await?;
    tx.commit().await?;
    tracing::info!(
        user = %user.name,
        servers_stopped = %stopped,
        routes = ?routes,
        removed = ?removed,
        "deleted user"
    );
    Ok(StatusCode::NO_CONTENT)
}
