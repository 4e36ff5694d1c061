//! The HTTP surface: core/v1 paths, namespaced and cluster-scoped, and a request log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Inner, bad_request, not_found, status};

/// The router over the shared store.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/v1/{resource}", get(cluster_list).post(cluster_create))
        .route(
            "/api/v1/{resource}/{name}",
            get(cluster_get).delete(cluster_delete),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}",
            get(ns_list).post(ns_create),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}/{name}",
            get(ns_get).delete(ns_delete),
        )
        .fallback(|uri: Uri| async move {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource ({uri})"),
                json!({}),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            log_request,
        ))
        .with_state(inner)
}

async fn log_request(
    State(inner): State<Arc<Inner>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    inner.store.lock().requests.push(line);
    next.run(req).await
}

fn create_response(
    result: Result<Value, (StatusCode, String)>,
    resource: &str,
    name: &str,
) -> Response {
    match result {
        Ok(obj) => (StatusCode::CREATED, axum::Json(obj)).into_response(),
        Err((StatusCode::CONFLICT, m)) => status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            m,
            json!({"name": name, "kind": resource}),
        ),
        Err((StatusCode::NOT_FOUND, m)) => status(StatusCode::NOT_FOUND, "NotFound", m, json!({})),
        Err((code, m)) => status(code, "Invalid", m, json!({})),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn cluster_list(
    State(inner): State<Arc<Inner>>,
    Path(resource): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    // Cluster-scoped resources live under namespace ""; namespaced ones list across all.
    let ns = (resource == "namespaces").then_some("");
    inner.list(&resource, ns, &q)
}

async fn cluster_create(
    State(inner): State<Arc<Inner>>,
    Path(resource): Path<String>,
    body: bytes::Bytes,
) -> Response {
    if resource != "namespaces" {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_owned(),
            json!({}),
        );
    }
    let obj = match parse_body(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    create_response(inner.create(&resource, "", obj), &resource, &name)
}

async fn cluster_get(
    State(inner): State<Arc<Inner>>,
    Path((resource, name)): Path<(String, String)>,
) -> Response {
    match inner
        .store
        .lock()
        .objects
        .get(&(resource.clone(), String::new(), name.clone()))
    {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())).into_response(),
        None => not_found(&resource, &name),
    }
}

async fn cluster_delete(
    State(inner): State<Arc<Inner>>,
    Path((resource, name)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    let options = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.delete(&resource, "", &name, &options)
}

async fn ns_list(
    State(inner): State<Arc<Inner>>,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    inner.list(&resource, Some(&ns), &q)
}

async fn ns_create(
    State(inner): State<Arc<Inner>>,
    Path((ns, resource)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    let obj = match parse_body(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    create_response(inner.create(&resource, &ns, obj), &resource, &name)
}

async fn ns_get(
    State(inner): State<Arc<Inner>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    match inner
        .store
        .lock()
        .objects
        .get(&(resource.clone(), ns, name.clone()))
    {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())).into_response(),
        None => not_found(&resource, &name),
    }
}

async fn ns_delete(
    State(inner): State<Arc<Inner>>,
    method: Method,
    Path((ns, resource, name)): Path<(String, String, String)>,
    body: bytes::Bytes,
) -> Response {
    debug_assert_eq!(method, Method::DELETE);
    let options = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.delete(&resource, &ns, &name, &options)
}
