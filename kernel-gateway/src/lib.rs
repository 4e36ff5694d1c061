//! `kernel-gateway`: a Jupyter Enterprise Gateway drop-in. REST + WebSocket in front, ZeroMQ to
//! the kernels behind, kernels started through a [`Launcher`].
//!
//! Layout:
//! - `protocol/`: messages without I/O (ZeroMQ framing + HMAC, legacy and v1 WebSocket framing);
//! - `kernel/`: one kernel's ZeroMQ side, sessions, lifecycle (handshake, heartbeat, restart);
//! - [`launcher`]: the `Launcher` seam, the local-process and Slurm launchers;
//! - `manager`: the registry (limits, ownership, culling); `api/`: the HTTP routes;
//! - `metrics`: the Prometheus metrics of `GET /metrics` (names, types and labels listed there);
//! - `auth`: shared / per-user tokens and JWT bearers (`jwt`: JWKS cache and validation);
//! - [`quota`]: quota roles → per-kernel CPU / memory / GPU limits and max kernels;
//! - `cors`: Enterprise Gateway's `allow_origin` CORS headers and the WebSocket Origin check;
//! - [`exchange`]: the S3 exchange a remote site requires of kernel starts (`remote_site`);
//! - `workdir`: where a kernel runs (the site's per-user working area, not the client's path);
//! - [`dask`]: Dask clusters (a Dask Gateway-compatible API and scheduler proxy on the same port);
//! - [`config`]: TOML config + environment overrides.
//!
//! Routes are listed in the `api` module docs.

mod api;
mod auth;
pub mod config;
mod cors;
pub mod dask;
mod error;
pub mod exchange;
mod jwt;
mod kernel;
pub mod kernelspec;
pub mod launcher;
mod manager;
mod metrics;
pub mod protocol;
pub mod quota;
mod time;
mod workdir;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use self::auth::Caller;
pub use self::config::Config;
pub use self::error::GatewayError;
pub use self::jwt::{Identity, JwtError};
pub use self::launcher::{ByKernelSpec, Launcher, LocalLauncher, ResourceLimits};
pub use self::manager::{KernelManager, StartRequest};
pub use self::metrics::Metrics;

/// The router for `state` (tests can drive it without a socket): the kernel routes only.
pub fn app(state: Arc<KernelManager>) -> Router {
    app_with(state, None)
}

/// The router for `state` and, when given, the Dask routes of `dask`.
pub fn app_with(state: Arc<KernelManager>, dask: Option<Arc<dask::DaskService>>) -> Router {
    let mut router = api::router(state.clone());
    if let Some(dask) = dask {
        router = router.merge(dask::router(dask));
    }
    router
        .layer(axum::middleware::from_fn_with_state(state, cors::layer))
        .layer(axum::middleware::from_fn(trace_request))
}

/// One span per request, carrying method and path.
async fn trace_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    async move {
        let response = next.run(req).await;
        tracing::debug!(status = response.status().as_u16(), "request done");
        response
    }
    .instrument(span)
    .await
}

/// Serves `state` on `listener` until `shutdown` resolves, culling on the configured interval;
/// then shuts every kernel down.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<KernelManager>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let culler = {
        let state = state.clone();
        let every = Duration::from_secs(state.config.cull_interval.max(1));
        tokio::spawn(async move {
            if state.config.cull_idle_timeout == 0 {
                return;
            }
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                state.cull_once().await;
            }
        })
    };
    let orphans = {
        let state = state.clone();
        let every = Duration::from_secs(state.config.orphan_cleanup_interval.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                state.remove_orphans_once().await;
            }
        })
    };
    use axum::serve::ListenerExt as _;
    let result = if state.config.dask.enabled {
        // Dask: the API beside the kernel routes, the scheduler proxy on the same port.
        let dask = dask::DaskService::local(state.clone(), listener.local_addr()?);
        let watchdog = dask.spawn_watchdog();
        let (listener, acceptor) = dask::split_listener(listener, dask.clone())?;
        let result = axum::serve(listener, app_with(state.clone(), Some(dask.clone())))
            .with_graceful_shutdown(shutdown)
            .await;
        acceptor.abort();
        watchdog.abort();
        dask.shutdown_all().await;
        result
    } else {
        // Kernel replies are bursts of small frames: without TCP_NODELAY each reply can wait for
        // the client's delayed ACK (~40 ms). (The Dask listener sets it on every connection.)
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown(shutdown)
            .await
    };
    culler.abort();
    orphans.abort();
    state.shutdown_all().await;
    result
}
