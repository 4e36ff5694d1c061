//! `/hub/api/proxy` (scope `proxy`), as JupyterHub's `ProxyAPIHandler`:
//!
//! - `GET`: the routing table, `{routespec: {routespec, target, data}}` sorted by routespec and
//!   paginated (`offset`, `limit`; the envelope with `Accept:
//!   application/jupyterhub-pagination+json`, its `items` being the same object).
//! - `POST`: resync the proxy with the database and the services (JupyterHub's
//!   `check_routes`; see [`crate::spawn::RouteCheck`]) → 200, empty.
//! - `PATCH` `{api_url?, auth_token?}`: as JupyterHub, point the proxy client at a new proxy
//!   and resync (the hub's route, servers and services are added there) → 200, empty. With
//!   [`crate::proxy::ChpProxy`] the new place must answer a route listing with the new token
//!   first (else 400, and the old proxy stays); the proxy embedded in the hub process cannot
//!   move (400 saying so). The `auth_token` is never echoed or logged.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::Paging;
use crate::config::Secret;
use crate::error::{ApiError, ApiJson};
use crate::extract::ApiCaller;
use crate::proxy::Proxy;
use crate::scopes::Resource;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/hub/api/proxy", get(table).post(resync).patch(move_proxy))
}

fn require_proxy(caller: &ApiCaller) -> Result<(), ApiError> {
    caller.require(&["proxy"], Resource::Hub)
}

fn the_proxy(state: &AppState) -> Result<std::sync::Arc<dyn Proxy>, ApiError> {
    state.orchestrator().proxy().ok_or_else(|| {
        ApiError::NotImplemented("This hub runs without a proxy (no spawner)".to_owned())
    })
}

/// One route as JupyterHub's `Proxy.get_all_routes` reports it.
fn route_model(path: &str, mut data: Map<String, Value>) -> Value {
    let target = data.remove("target").unwrap_or(Value::Null);
    data.remove("last_activity");
    json!({"routespec": path, "target": target, "data": data})
}

async fn table(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_proxy(&caller)?;
    let paging = Paging::from_request(&query, &headers)?;
    let mut routes = the_proxy(&state)?
        .routes()
        .await
        .map_err(ApiError::internal)?;
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    let total = i64::try_from(routes.len()).unwrap_or(i64::MAX);
    let offset = usize::try_from(paging.offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(paging.limit).unwrap_or(usize::MAX);
    let page: Map<String, Value> = routes
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(path, data)| {
            let model = route_model(&path, data);
            (path, model)
        })
        .collect();
    if !paging.envelope {
        return Ok(Json(Value::Object(page)));
    }
    let path = format!("{}hub/api/proxy", state.config().base_url);
    let mut reply = paging.reply(Vec::new(), total, &state, &headers, &path, &query);
    reply["items"] = Value::Object(page);
    Ok(Json(reply))
}

async fn resync(State(state): State<AppState>, caller: ApiCaller) -> Result<(), ApiError> {
    require_proxy(&caller)?;
    let check = state.orchestrator().check_routes(state.services()).await?;
    tracing::info!(added = ?check.added, deleted = ?check.deleted, "proxy routes checked");
    Ok(())
}

async fn move_proxy(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(body): ApiJson<Option<Value>>,
) -> Result<(), ApiError> {
    require_proxy(&caller)?;
    let Some(body) = body else {
        return Err(ApiError::BadRequest("need JSON body".to_owned()));
    };
    let Value::Object(mut model) = body else {
        return Err(ApiError::BadRequest(
            "Request body must be JSON dict".to_owned(),
        ));
    };
    let api_url = match model.remove("api_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u),
        Some(_) => return Err(ApiError::BadRequest("api_url must be a string".to_owned())),
    };
    let token = match model.remove("auth_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(Secret::new(t)),
        // Never echo what was sent in place of a token.
        Some(_) => {
            return Err(ApiError::BadRequest(
                "auth_token must be a string".to_owned(),
            ));
        }
    };
    let proxy = the_proxy(&state)?;
    proxy
        .relocate(api_url.as_deref(), token)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let check = state.orchestrator().check_routes(state.services()).await?;
    tracing::info!(
        added = check.added.len(),
        deleted = check.deleted.len(),
        "proxy moved and routes restored"
    );
    Ok(())
}
