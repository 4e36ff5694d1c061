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
//! | GET | `/metrics` | 200 Prometheus text (no auth): kernels by state, starts, failures, latency, bytes buffered for clients, slow clients closed, sessions reaped |

mod channels;
mod kernels;
mod kernelspecs;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
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

async fn metrics(State(m): State<Arc<KernelManager>>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE stackhub_gateway_kernels gauge");
    for (state, n) in m.counts_by_state().await {
        let _ = writeln!(out, "stackhub_gateway_kernels{{state=\"{state}\"}} {n}");
    }
    let c = &m.metrics;
    let _ = writeln!(out, "# TYPE stackhub_gateway_kernel_starts_total counter");
    let _ = writeln!(
        out,
        "stackhub_gateway_kernel_starts_total {}",
        c.starts.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE stackhub_gateway_kernel_start_failures_total counter"
    );
    let _ = writeln!(
        out,
        "stackhub_gateway_kernel_start_failures_total {}",
        c.start_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE stackhub_gateway_kernel_start_seconds_sum counter"
    );
    let secs = c.start_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "stackhub_gateway_kernel_start_seconds_sum {secs}");
    let b = &m.buffers;
    let _ = writeln!(out, "# TYPE stackhub_gateway_buffered_bytes gauge");
    let _ = writeln!(out, "stackhub_gateway_buffered_bytes {}", b.buffered.get());
    let _ = writeln!(
        out,
        "# TYPE stackhub_gateway_slow_clients_closed_total counter"
    );
    let _ = writeln!(
        out,
        "stackhub_gateway_slow_clients_closed_total {}",
        b.slow_clients_closed.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE stackhub_gateway_sessions_reaped_total counter");
    let _ = writeln!(
        out,
        "stackhub_gateway_sessions_reaped_total {}",
        b.sessions_reaped.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE stackhub_gateway_kernels_culled_total counter");
    let _ = writeln!(
        out,
        "stackhub_gateway_kernels_culled_total {}",
        c.culled.load(Ordering::Relaxed)
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
