//! `GET /hub/api/services` (`list:services`: every service the caller may list, by name) and
//! `GET /hub/api/services/{name}` (`read:services`, `read:services:name` or
//! `read:roles:services`), answering JupyterHub's service model cut down to what the caller's
//! scopes show.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::scopes::Resource;
use crate::services::Service;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/api/services", get(list))
        .route("/hub/api/services/", get(list))
        .route("/hub/api/services/{name}", get(one))
}

/// The bootstrap admin token's service, as a model (it is not configured under `[[services]]`).
fn bootstrap_model(name: &str) -> Value {
    json!({
        "kind": "service", "name": name, "roles": ["admin"], "admin": true, "url": "",
        "prefix": "", "command": [], "pid": 0, "info": {}, "display": false,
    })
}

fn full_model(s: &Service) -> Value {
    json!({
        "kind": "service",
        "name": s.name(),
        "roles": s.roles,
        "admin": false,
        "url": s.config.url.clone().unwrap_or_default(),
        "prefix": if s.config.url.is_some() { s.prefix.clone() } else { String::new() },
        "command": s.config.command,
        "pid": s.pid().unwrap_or(0),
        "info": s.config.info,
        "display": s.config.display,
    })
}

/// Keep the fields the caller's scopes on service `name` show (JupyterHub's access map).
fn filtered(caller: &ApiCaller, name: &str, full: Value) -> Option<Value> {
    filtered_with(caller, name, full, &[])
}

/// [`filtered`], with `extra` fields shown whatever the caller's scopes.
fn filtered_with(
    caller: &ApiCaller,
    name: &str,
    full: Value,
    extra: &[&'static str],
) -> Option<Value> {
    let res = Resource::Service { name };
    let mut keys: Vec<&str> = extra.to_vec();
    if caller.allows("read:services", res) {
        keys.extend([
            "kind", "name", "admin", "url", "prefix", "command", "pid", "info", "display",
        ]);
    }
    if caller.allows("read:services:name", res) {
        keys.extend(["kind", "name", "admin"]);
    }
    if caller.allows("read:roles:services", res) {
        keys.extend(["kind", "name", "roles", "admin"]);
    }
    if keys.is_empty() {
        return None;
    }
    let Value::Object(full) = full else {
        return None;
    };
    let model: Map<String, Value> = full
        .into_iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .collect();
    Some(Value::Object(model))
}

/// Every service, with the bootstrap one.
fn models(state: &AppState) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = state
        .services()
        .iter()
        .map(|s| (s.name().to_owned(), full_model(s)))
        .collect();
    if state.config().admin_token.is_some() {
        let name = &state.config().admin_service_name;
        out.push((name.clone(), bootstrap_model(name)));
    }
    out
}

async fn list(State(state): State<AppState>, caller: ApiCaller) -> Result<Json<Value>, ApiError> {
    if !caller.holds("list:services") {
        return Err(ApiError::requires_any_of(&["list:services"]));
    }
    let mut data = Map::new();
    for (name, full) in models(&state) {
        if caller.allows("list:services", Resource::Service { name: &name })
            && let Some(model) = filtered(&caller, &name, full)
        {
            data.insert(name, model);
        }
    }
    Ok(Json(Value::Object(data)))
}

async fn one(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let scopes = ["read:services", "read:services:name", "read:roles:services"];
    caller.require(&scopes, Resource::Service { name: &name })?;
    let (_, full) = models(&state)
        .into_iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("No such service: {name}")))?;
    filtered(&caller, &name, full)
        .map(Json)
        .ok_or_else(ApiError::no_access)
}

/// Service `name` as the holder of one of its tokens sees it: the caller's own view plus the
/// identify fields (`read:services:name`: kind, name, admin). A service known only from its
/// token (no longer configured) shows just those.
pub(super) fn identify_model(state: &AppState, caller: &ApiCaller, name: &str) -> Value {
    let identify = ["kind", "name", "admin"];
    models(state)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, full)| filtered_with(caller, name, full, &identify))
        .unwrap_or_else(|| json!({"kind": "service", "name": name, "admin": false}))
}

/// The service's roles, for `GET /hub/api/user` with a service's token.
pub(super) fn roles_of(state: &AppState, name: &str) -> (bool, Vec<String>) {
    if name == state.config().admin_service_name {
        return (true, vec!["admin".to_owned()]);
    }
    let roles = state
        .services()
        .get(name)
        .map(|s| s.roles.clone())
        .unwrap_or_default();
    (false, roles)
}
