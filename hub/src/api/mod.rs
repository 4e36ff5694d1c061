//! The JupyterHub REST API under `/hub/api` (compat spec section 3), one `router()` per module.
//!
//! # Layout
//! - `root`: `GET /hub/api`, `GET /hub/api/info`, `GET /hub/api/user`.
//! - `users`: `GET/POST /hub/api/users`, `GET/POST/PATCH/DELETE /hub/api/users/{name}`.
//! - `tokens`: `GET/POST /hub/api/users/{name}/tokens`, `GET/DELETE …/tokens/{id}`.
//! - `groups`: `/hub/api/groups…`.
//! - `servers`: server start/stop/get/create/progress and `POST …/activity`.
//! - `services`: `GET /hub/api/services[/{name}]`.
//! - `authorizations`: the deprecated `GET /hub/api/authorizations/token/{token}`.
//! - `proxy`: `GET/POST/PATCH /hub/api/proxy` (routing table, resync, move).
//! - `shares`: sharing a server with users and groups, share codes (JupyterHub 5.0+).
//! - `models`: the JSON models (User, Server, Token, Group), filtered by the caller's scopes.

mod authorizations;
pub(crate) mod groups;
pub(crate) mod metrics;
pub(crate) mod models;
mod oidc_token;
mod proxy;
mod root;
pub(crate) mod servers;
mod services;
mod shares;
pub(crate) mod sites;
mod spawn_options;
pub(crate) mod tokens;
mod user_delete;
mod users;

pub(crate) use self::users::load_user;

use std::collections::HashMap;

use axum::Router;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, HOST};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// The API version we answer with: JupyterHub's (PEP 440), the one clients compare with.
pub const JUPYTERHUB_VERSION: &str = "5.4.0";

/// Every API route.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .merge(root::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(groups::router())
        .merge(oidc_token::router())
        .merge(servers::router())
        .merge(spawn_options::router())
        .merge(services::router())
        .merge(authorizations::router())
        .merge(proxy::router())
        .merge(shares::router())
}

/// The pagination media type.
const PAGINATION_TYPE: &str = "application/jupyterhub-pagination+json";
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// `offset` / `limit` of a list request, and whether to answer with the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    pub(crate) offset: i64,
    pub(crate) limit: i64,
    pub(crate) envelope: bool,
}

impl Paging {
    pub(crate) fn from_request(
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let envelope = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(PAGINATION_TYPE));
        let int = |key: &str| -> Result<Option<i64>, ApiError> {
            query
                .get(key)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| ApiError::BadRequest(format!("Invalid {key}: {v:?}")))
                })
                .transpose()
        };
        let offset = int("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::BadRequest(
                "offset must be non-negative".to_owned(),
            ));
        }
        let default = if envelope { DEFAULT_LIMIT } else { MAX_LIMIT };
        let limit = int("limit")?.unwrap_or(default).clamp(1, MAX_LIMIT);
        // The next page starts at `offset + limit`: refuse an offset where that does not fit.
        if offset.checked_add(limit).is_none() {
            return Err(ApiError::BadRequest(format!(
                "offset {offset} is too large (at most {})",
                i64::MAX - limit
            )));
        }
        Ok(Self {
            offset,
            limit,
            envelope,
        })
    }

    /// The reply: a bare list, or the envelope with an absolute `next.url`.
    pub(crate) fn reply(
        &self,
        items: Vec<Value>,
        total: i64,
        state: &AppState,
        headers: &HeaderMap,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Value {
        if !self.envelope {
            return Value::Array(items);
        }
        let next_offset = self.offset.saturating_add(self.limit);
        let next = if next_offset < total {
            let mut params: Vec<(&str, String)> = query
                .iter()
                .filter(|(k, _)| *k != "offset" && *k != "limit")
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            params.sort();
            params.push(("offset", next_offset.to_string()));
            params.push(("limit", self.limit.to_string()));
            let qs: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            json!({
                "offset": next_offset,
                "limit": self.limit,
                "url": format!("{}{path}?{qs}", origin(state, headers)),
            })
        } else {
            Value::Null
        };
        json!({
            "items": items,
            "_pagination": {"offset": self.offset, "limit": self.limit, "total": total, "next": next},
        })
    }
}

/// `scheme://host[:port]` clients reach us at: the configured public URL, else the request's
/// `Host` (and `X-Forwarded-Proto` from our proxy).
pub(crate) fn origin(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.config().public_url
        && let Ok(url) = url::Url::parse(public)
    {
        return url.origin().ascii_serialization();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}
