//! `/hub/api/proxy` (scope `proxy`), as JupyterHub's `ProxyAPIHandler`:
//!
//! - `GET`: the routing table, `{routespec: {routespec, target, data}}` sorted by routespec and
//!   paginated (`offset`, `limit`; the envelope with `Accept:
//!   application/jupyterhub-pagination+json`, its `items` being the same object).
//! - `POST`: resync the proxy with the database and the services (JupyterHub's
//!   `check_routes`; see [`crate::spawn::RouteCheck`]) → 200, empty.
//! - `PATCH`: JupyterHub points its proxy client at a new `api_url`/`auth_token` and resyncs.
//!   The proxy embedded in the hub process has no API URL to move, so after the body is checked
//!   (a JSON object, as JupyterHub requires) the answer is a 400 saying so; the body's
//!   `auth_token` is never echoed or logged.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::Paging;
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
    let Value::Object(model) = body else {
        return Err(ApiError::BadRequest(
            "Request body must be JSON dict".to_owned(),
        ));
    };
    the_proxy(&state)?;
    let keys: Vec<&str> = model
        .keys()
        .map(String::as_str)
        .filter(|k| matches!(*k, "api_url" | "auth_token"))
        .collect();
    Err(ApiError::BadRequest(format!(
        "The embedded proxy cannot be moved: stackhub's proxy runs inside the hub process, so \
         there is no proxy API to point at another place (got {}); the routes were left as they \
         are",
        if keys.is_empty() {
            "no api_url or auth_token".to_owned()
        } else {
            keys.join(" and ")
        }
    )))
}
