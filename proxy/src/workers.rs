//! Thread-per-core serving: one single-threaded runtime per worker, each accepting from the same
//! listening socket with its own upstream connection pool; all share one [`RouteTable`].
//!
//! # Why
//! On a work-stealing runtime a proxied request hops between threads: the client connection,
//! the pooled upstream connection and the request future can each be woken on another core,
//! and every hop is a futex wake-up (tens of microseconds when the other core sleeps). A
//! WebSocket frame pays it twice per direction. Keeping a connection, its upstream and its
//! tunnel on one thread removes those hops, which is how nginx's workers behave too.
//!
//! The listening socket is shared by duplicating its descriptor: each worker's poller is told
//! about the same accept queue, and whichever worker wakes first takes the connection; it hands
//! the connection to a less busy worker when there is one (`balance`).

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::balance::Balancer;
use crate::error::ConfigError;
use crate::forward::{Proxy, ProxyOptions};
use crate::routes::RouteTable;
use crate::server::serve_balanced;

/// Running proxy workers; [`Workers::join`] waits for them after the shutdown token is cancelled.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Start `count` workers (at least one) serving `listener` until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`ConfigError::Bind`] when the socket cannot be prepared or duplicated, and
    /// [`ConfigError::Target`] for a bad error target in `options`.
    pub fn start(
        listener: StdListener,
        routes: Arc<RouteTable>,
        options: &ProxyOptions,
        tls: Option<TlsAcceptor>,
        count: usize,
        shutdown: &CancellationToken,
    ) -> Result<Self, ConfigError> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |source| ConfigError::Bind { addr, source };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let mut threads = Vec::with_capacity(count.max(1));
        let balancers = Balancer::group(count.max(1));
        for (index, balancer) in balancers.into_iter().enumerate() {
            let socket = listener.try_clone().map_err(bind_err)?;
            let proxy = Proxy::new(Arc::clone(&routes), options.clone())?;
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || run_worker(socket, proxy, tls, shutdown, balancer))
                .map_err(bind_err)?;
            threads.push(thread);
        }
        Ok(Self { threads })
    }

    /// Wait for every worker to finish (after the shutdown token was cancelled).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run_worker(
    socket: StdListener,
    proxy: Proxy,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    balancer: Balancer,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "proxy worker cannot start its runtime");
            return;
        }
    };
    runtime.block_on(async move {
        match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => {
                let stopped = shutdown.cancelled_owned();
                serve_balanced(listener, Arc::new(proxy), tls, stopped, Some(balancer)).await;
            }
            Err(e) => tracing::error!(error = %e, "proxy worker cannot use the listening socket"),
        }
    });
}

/// The number of workers to run by default: one per available core.
pub fn default_worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
