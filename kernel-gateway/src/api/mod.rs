//! HTTP surface of the gateway. Routes (all JSON errors are `{"reason", "message"}`):
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | GET | `/api` | 200 `{version, gateway_version}` |
//! | GET | `/api/kernelspecs` | 200 `{default, kernelspecs}` (those the caller may use) |
//! | GET | `/api/kernelspecs/{name}` | 200 KernelSpecModel |
//! | GET, HEAD | `/kernelspecs/{name}/{file}` | 200 resource file |
//! | GET | `/api/kernels` | 200 the caller's KernelModels |
//! | POST | `/api/kernels` | 201 KernelModel + `Location` |
//! | GET | `/api/kernels/{id}` | 200 KernelModel |
//! | DELETE | `/api/kernels/{id}` | 204 |
//! | POST | `/api/kernels/{id}/interrupt` | 204 |
//! | POST | `/api/kernels/{id}/restart` | 200 KernelModel, once the new kernel answered |
//! | GET | `/api/kernels/{id}/channels` | 101 WebSocket (see [`channels`]) |
//! | GET | `/health` | 200 `{"status": "ok"}` (no auth) |
//! | GET | `/metrics` | 200 Prometheus text (no auth): kernels by state, starts, failures, latency, bytes buffered for clients, slow clients closed, sessions reaped, culled (see `crate::metrics`) |

mod channels;
mod kernels;
mod kernelspecs;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::manager::KernelManager;

/// The whole router.
pub(crate) fn router(state: Arc<KernelManager>) -> Router {
    Router::new()
        .merge(kernels::router())
        .merge(kernelspecs::router())
        .merge(channels::router())
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(m): State<Arc<KernelManager>>) -> Response {
    let kernels = m.counts_by_state().await;
    match m.metrics.encode(kernels, m.buffers.buffered.get()) {
        Ok(text) => ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
