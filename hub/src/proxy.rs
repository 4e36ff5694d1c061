//! The `Proxy` seam: how the hub edits the proxy's route table.
//!
//! [`EmbeddedProxy`] edits the in-process [`::proxy::RouteTable`] that the public listener serves
//! (the embedded default), and [`InProcessHub`] lets that listener hand the hub's own requests
//! to the hub's router directly. [`ChpProxy`] is the same seam over configurable-http-proxy's
//! REST API (CHP or an external `stackhub-proxy`), which can be moved at run time.

mod chp;

pub use self::chp::ChpProxy;

use std::fmt::Debug;
use std::sync::Arc;

use axum::Router;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};

/// A route operation failed.
#[derive(Debug, thiserror::Error)]
#[error("proxy route {path}: {reason}")]
pub struct ProxyError {
    /// The route path.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// The proxy could not be moved (`PATCH /hub/api/proxy`). Never holds the proxy's token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelocateError {
    /// The proxy runs inside the hub process.
    #[error(
        "The embedded proxy cannot be moved: stackhub's proxy runs inside the hub process, so \
         there is no proxy API to point at another place; the routes were left as they are \
         (configure [proxy] api_url to run with an external proxy)"
    )]
    Embedded,
    /// The new API URL is not usable.
    #[error("Invalid proxy api_url {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        why: String,
    },
    /// The new place did not answer a route listing (with the token given); nothing changed.
    #[error("Cannot use the proxy API at {url}: {why}; the hub keeps its current proxy")]
    Unreachable {
        /// The API URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// Adds, deletes and lists proxy routes.
#[async_trait::async_trait]
pub trait Proxy: Send + Sync + Debug + 'static {
    /// Add or replace the route at `path` to `target`, with extra `data` stored beside it.
    async fn add_route(
        &self,
        path: &str,
        target: &str,
        data: Map<String, Value>,
    ) -> Result<(), ProxyError>;

    /// Delete the route at `path` (absent is fine).
    async fn delete_route(&self, path: &str) -> Result<(), ProxyError>;

    /// Every route: path and its data (including `target`).
    async fn routes(&self) -> Result<Vec<(String, Map<String, Value>)>, ProxyError>;

    /// Point at another proxy API (`api_url`, `token`: the ones given change); JupyterHub's
    /// `PATCH /hub/api/proxy`. The embedded proxy cannot move.
    ///
    /// # Errors
    /// [`RelocateError`]; the proxy in use stays as it was.
    async fn relocate(
        &self,
        _api_url: Option<&str>,
        _token: Option<crate::config::Secret>,
    ) -> Result<(), RelocateError> {
        Err(RelocateError::Embedded)
    }

    /// Make sure the hub's own route is in the table (a route check, a move). The embedded
    /// table gets it at start-up and keeps it.
    ///
    /// # Errors
    /// [`ProxyError`] when the route cannot be read or added.
    async fn ensure_hub_route(&self) -> Result<(), ProxyError> {
        Ok(())
    }
}

/// The proxy embedded in the hub process: edits the shared route table directly.
#[derive(Debug, Clone)]
pub struct EmbeddedProxy {
    table: Arc<::proxy::RouteTable>,
}

impl EmbeddedProxy {
    /// A seam over `table`.
    pub fn new(table: Arc<::proxy::RouteTable>) -> Self {
        Self { table }
    }
}

#[async_trait::async_trait]
impl Proxy for EmbeddedProxy {
    async fn add_route(
        &self,
        path: &str,
        target: &str,
        mut data: Map<String, Value>,
    ) -> Result<(), ProxyError> {
        data.insert("target".to_owned(), Value::String(target.to_owned()));
        self.table
            .add(path, data)
            .map(|_| ())
            .map_err(|e| ProxyError {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    async fn delete_route(&self, path: &str) -> Result<(), ProxyError> {
        self.table.remove(path);
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<(String, Map<String, Value>)>, ProxyError> {
        Ok(self
            .table
            .all()
            .iter()
            .map(|r| (r.path().to_owned(), r.data().to_map()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_routes_round_trip() {
        let table = Arc::new(::proxy::RouteTable::new());
        let p = EmbeddedProxy::new(Arc::clone(&table));
        let mut data = Map::new();
        data.insert("user".into(), "alice".into());
        p.add_route("/user/alice/", "http://127.0.0.1:9", data)
            .await
            .expect("add");
        let routes = p.routes().await.expect("list");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].1["user"], "alice");
        assert_eq!(routes[0].1["target"], "http://127.0.0.1:9");
        assert!(table.lookup("/user/alice/lab").is_some());
        p.delete_route("/user/alice/").await.expect("delete");
        assert!(p.routes().await.expect("list").is_empty());
        assert!(p.add_route("/x", "not a url", Map::new()).await.is_err());
    }
}

/// The hub's router as the embedded proxy's in-process upstream ([`::proxy::LocalUpstream`]):
/// browser and API requests to `/hub/...` reach the handlers without a loopback connection.
/// The hub's own listener still serves single-user servers, which call it by URL.
#[derive(Debug, Clone)]
pub struct InProcessHub(Router);

impl InProcessHub {
    /// Serve requests with `router` (see [`crate::app`]).
    pub fn new(router: Router) -> Self {
        Self(router)
    }
}

impl ::proxy::LocalUpstream for InProcessHub {
    fn call(&self, mut req: Request<Incoming>) -> BoxFuture<'static, Response<::proxy::LocalBody>> {
        // Browser traffic: the hub-host guard applies (see `crate::origins::guard`).
        req.extensions_mut().insert(crate::origins::ViaPublicProxy);
        let mut router = self.0.clone();
        Box::pin(async move {
            // A Router is always ready and never fails (errors are responses).
            let resp = match tower_service::Service::call(&mut router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            resp.map(|body| body.map_err(::proxy::BoxError::from).boxed_unsync())
        })
    }
}
