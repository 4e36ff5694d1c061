//! Sharing (JupyterHub 5.0+, compat spec section 9): a share grants a user, or a group's
//! members, scopes on exactly one server (`access:servers!server=OWNER/NAME` by default); a
//! share code is a secret that any user can exchange for such a share (at
//! `/hub/accept-share`) until it expires or is revoked.
//!
//! # Layout
//! - `grants`: `GET /hub/api/shares/{owner}`, `GET/POST/PATCH/DELETE …/shares/{owner}/{server}`.
//! - `codes`: `GET /hub/api/share-codes/{owner}`, `GET/POST/DELETE …/{owner}/{server}`.
//! - `shared`: `GET /hub/api/users/{name}/shared[/{owner}/{server}]` (and `DELETE` to leave a
//!   share), the same under `/hub/api/groups/{name}/shared`.
//! - `request`: the request bodies, parsed once.
//!
//! The default server is addressed with an empty last segment (`/shares/alice/`). The scopes a
//! share grants reach the recipient through [`crate::db::UserRow::shared_scopes`], so every
//! scope check (REST API, OAuth provider) sees them, and a revocation is seen by the next
//! request.

mod codes;
mod grants;
pub(crate) mod request;
mod shared;

use std::collections::HashMap;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::Paging;
use super::models::{absolute, server_url};
use crate::db::shares::{CodeRow, ShareRow, SharedServer};
use crate::db::{self, ServerRow, UserRow, iso, iso_opt};
use crate::error::{ApiError, json_error};
use crate::extract::{ApiCaller, CallerKind};
use crate::names::{ServerName, UserName};
use crate::scopes::{Owner, Resource, ScopeSet};
use crate::state::AppState;

/// `{owner}/` (the default server) or `{owner}/{server}` in a route.
#[derive(Debug, serde::Deserialize)]
struct ServerPath {
    owner: String,
    #[serde(default)]
    server: String,
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .merge(grants::router())
        .merge(codes::router())
        .merge(shared::router())
}

/// 405 for methods JupyterHub refuses on the owner-only paths.
async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed: name a server (`…/{owner}/{server}`, `…/{owner}/` for the default)",
    )
}

/// A server name from a path segment (`""` = the default server).
fn server_segment(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() {
        Ok(String::new())
    } else {
        Ok(raw.parse::<ServerName>()?.as_str().to_owned())
    }
}

/// The owner `name` (404 if missing), after checking the caller holds one of `scopes` at all
/// (403) and on `res_of(owner)` (404).
async fn owner_checked(
    conn: &mut sqlx::AnyConnection,
    caller: &ApiCaller,
    name: &str,
    server: Option<&str>,
    scopes: &[&str],
) -> Result<UserRow, ApiError> {
    if !scopes.iter().any(|s| caller.holds(s)) {
        return Err(ApiError::requires_any_of(scopes));
    }
    let name: UserName = name.parse()?;
    let owner = db::users::get(conn, name.as_str())
        .await?
        .ok_or_else(ApiError::no_access)?;
    let res = match server {
        Some(server) => Resource::Server {
            user: &owner.name,
            server,
            groups: &owner.groups,
        },
        None => Resource::User {
            name: &owner.name,
            groups: &owner.groups,
        },
    };
    caller.require(scopes, res)?;
    Ok(owner)
}

/// The owner's server row: 404 if a named server does not exist; the default server always
/// exists (its row is created, stopped, when first needed).
async fn server_row(
    conn: &mut sqlx::AnyConnection,
    owner: &UserRow,
    server: &str,
) -> Result<ServerRow, ApiError> {
    if let Some(row) = db::servers::get(conn, owner.id, server).await? {
        return Ok(row);
    }
    if server.is_empty()
        && let Some(row) = db::servers::create(conn, owner.id, "", None, &json!({})).await?
    {
        return Ok(row);
    }
    Err(ApiError::NotFound(format!(
        "No such server: {}/{server}",
        owner.name
    )))
}

/// 403 unless the caller itself holds `scope` (a share grants nothing its granter lacks).
fn require_grantable(caller: &ApiCaller, scope: &str) -> Result<(), ApiError> {
    let who = match &caller.kind {
        CallerKind::User(u) => Owner::User(&u.name),
        CallerKind::Service { name } => Owner::Service(name),
    };
    let wanted = ScopeSet::expand(&[scope], who);
    if caller.effective().covers(&wanted) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Do not have permission to grant share with scope {scope}"
        )))
    }
}

/// The truncated server model of share models.
fn server_json(state: &AppState, s: &SharedServer) -> Value {
    let url = server_url(state, &s.owner, &s.name);
    json!({
        "user": {"name": s.owner},
        "name": s.name,
        "url": url,
        "full_url": absolute(state, &url),
        "ready": s.ready,
    })
}

/// The Share model.
fn share_json(state: &AppState, s: &ShareRow) -> Value {
    json!({
        "server": server_json(state, &s.server),
        "scopes": s.scopes,
        "user": s.user.as_ref().map(|name| json!({"name": name})),
        "group": s.group.as_ref().map(|name| json!({"name": name})),
        "kind": if s.group.is_some() { "group" } else { "user" },
        "created_at": iso(s.created),
    })
}

/// The ShareCode model; `code` only in the answer that issues it.
fn code_json(state: &AppState, c: &CodeRow, code: Option<&str>) -> Value {
    let mut m = json!({
        "server": server_json(state, &c.server),
        "scopes": c.scopes,
        "id": format!("sc_{}", c.id),
        "created_at": iso(c.created),
        "expires_at": iso(c.expires_at),
        "exchange_count": c.exchange_count,
        "last_exchanged_at": iso_opt(c.last_exchanged_at),
    });
    if let Some(code) = code {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", code)
            .finish();
        let accept = format!("{}hub/accept-share?{q}", state.config().base_url);
        m["code"] = code.into();
        m["full_accept_url"] = absolute(state, &accept);
        m["accept_url"] = accept.into();
    }
    m
}

/// Paging of the share lists: JupyterHub always answers these with the envelope.
fn paging(query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Paging, ApiError> {
    Ok(Paging {
        envelope: true,
        ..Paging::from_request(query, headers)?
    })
}

/// The envelope of one page.
fn page(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    paging: Paging,
    path: &str,
    items: Vec<Value>,
    total: i64,
) -> Value {
    let path = format!(
        "{}{}",
        state.config().base_url,
        path.trim_start_matches('/')
    );
    paging.reply(items, total, state, headers, &path, query)
}
