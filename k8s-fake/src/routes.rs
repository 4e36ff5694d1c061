//! The HTTP surface: core/v1 paths, namespaced and cluster-scoped, the namespaced paths of the
//! API groups the fake serves (`/apis/{group}/{version}/namespaces/...`), and a request log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Inner, bad_request, not_found, served_in_group, status};

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
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{resource}",
            get(group_list).post(group_create),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}",
            get(group_get).delete(group_delete),
        )
        .fallback(|uri: Uri| async move { no_such_path(&uri) })
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            log_request,
        ))
        .with_state(inner)
}

fn no_such_path(uri: &Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource ({uri})"),
        json!({}),
    )
}

/// The 404 for a core path naming a resource of an API group (`/api/v1/.../networkpolicies`),
/// as on the real server.
fn not_in_core(resource: &str, uri: &Uri) -> Option<Response> {
    served_in_group(super::api_version_of(resource), resource).then(|| no_such_path(uri))
}

/// The 404 for a group path naming a resource the fake does not serve in that group/version.
fn not_in_group(group: &str, version: &str, resource: &str, uri: &Uri) -> Option<Response> {
    (!served_in_group(&format!("{group}/{version}"), resource)).then(|| no_such_path(uri))
}

async fn group_list(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((group, version, ns, resource)): Path<(String, String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = not_in_group(&group, &version, &resource, &uri) {
        return r;
    }
    inner.list(&resource, Some(&ns), &q)
}

async fn group_create(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((group, version, ns, resource)): Path<(String, String, String, String)>,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = not_in_group(&group, &version, &resource, &uri) {
        return r;
    }
    create_in(&inner, &ns, &resource, &body)
}

async fn group_get(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((group, version, ns, resource, name)): Path<(String, String, String, String, String)>,
) -> Response {
    if let Some(r) = not_in_group(&group, &version, &resource, &uri) {
        return r;
    }
    get_in(&inner, &ns, &resource, &name)
}

async fn group_delete(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((group, version, ns, resource, name)): Path<(String, String, String, String, String)>,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = not_in_group(&group, &version, &resource, &uri) {
        return r;
    }
    let options = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.delete(&resource, &ns, &name, &options)
}

fn create_in(inner: &Inner, ns: &str, resource: &str, body: &[u8]) -> Response {
    let obj = match parse_body(body) {
        Ok(v) => v,
        Err(m) => return bad_request(m),
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    create_response(inner.create(resource, ns, obj), resource, &name)
}

fn get_in(inner: &Inner, ns: &str, resource: &str, name: &str) -> Response {
    match inner
        .store
        .lock()
        .objects
        .get(&(resource.to_owned(), ns.to_owned(), name.to_owned()))
    {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())).into_response(),
        None => not_found(resource, name),
    }
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
    uri: Uri,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = not_in_core(&resource, &uri) {
        return r;
    }
    inner.list(&resource, Some(&ns), &q)
}

async fn ns_create(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((ns, resource)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = not_in_core(&resource, &uri) {
        return r;
    }
    create_in(&inner, &ns, &resource, &body)
}

async fn ns_get(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = not_in_core(&resource, &uri) {
        return r;
    }
    get_in(&inner, &ns, &resource, &name)
}

async fn ns_delete(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Path((ns, resource, name)): Path<(String, String, String)>,
    body: bytes::Bytes,
) -> Response {
    debug_assert_eq!(method, Method::DELETE);
    if let Some(r) = not_in_core(&resource, &uri) {
        return r;
    }
    let options = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.delete(&resource, &ns, &name, &options)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::{Api, DeleteParams, ListParams, PostParams};
    use serde_json::json;

    use crate::FakeKube;

    /// NetworkPolicies live under their API group, as on a real server: created, listed by
    /// label, deleted there; the core path does not serve them.
    #[tokio::test]
    async fn network_policies_under_their_group() {
        let fake = FakeKube::start().await;
        let api: Api<NetworkPolicy> = Api::namespaced(fake.client(), "ns");
        let np: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Ingress"]},
        }))
        .unwrap();
        let made = api.create(&PostParams::default(), &np).await.unwrap();
        assert!(made.metadata.uid.is_some());
        let listed = api
            .list(&ListParams::default().labels("a=b"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            fake.get("networkpolicies", "ns", "p").unwrap()["apiVersion"],
            "networking.k8s.io/v1"
        );
        let core = reqwest_like_get(&fake, "/api/v1/namespaces/ns/networkpolicies").await;
        assert_eq!(core, 404);
        let other = reqwest_like_get(&fake, "/apis/apps/v1/namespaces/ns/networkpolicies").await;
        assert_eq!(other, 404);
        api.delete("p", &DeleteParams::default()).await.unwrap();
        assert!(fake.get("networkpolicies", "ns", "p").is_none());
    }

    async fn reqwest_like_get(fake: &FakeKube, path: &str) -> u16 {
        let req = axum::http::Request::get(path).body(Vec::new()).unwrap();
        match fake.client().request_text(req).await {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{e}"),
        }
    }
}
