//! Accept loops: the public listener (HTTP/1.1 and HTTP/2, optional TLS) and the API listener.
//!
//! Both take the listener and a shutdown future from the caller, so the hub can embed them and
//! tests can bind `127.0.0.1:0`. On shutdown they stop accepting, ask open connections to finish
//! (HTTP/1 keep-alive is closed after the current request, HTTP/2 sends GOAWAY) and wait up to
//! the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::Api;
use crate::balance::{Balancer, Handoff, Load, Placement};
use crate::fast;
use crate::forward::{Peer, Proxy};

/// How long open connections get to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send a request head, and a TLS handshake to complete.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve proxied traffic on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    serve_balanced(listener, proxy, tls, shutdown, None).await;
}

/// [`serve`] as one of several workers sharing `listener`, spreading connections with `balancer`.
pub(crate) async fn serve_balanced(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    balancer: Option<Balancer>,
) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let is_tls = tls.is_some();
    accept_loop(
        listener,
        tls,
        shutdown,
        balancer,
        move |client, remote, watcher, stop| {
            let proxy = Arc::clone(&proxy);
            let builder = builder.clone();
            let peer = Arc::new(Peer::new(remote, local_port, is_tls));
            async move {
                // Plain connections start on the fast path; hyper takes over what it does not serve.
                let io: Box<dyn ClientIo> = match client {
                    Client::Plain(stream) => {
                        match fast::serve_plain(stream, &proxy, &peer, &stop).await {
                            fast::Outcome::Closed => return,
                            fast::Outcome::HandOver(io) => Box::new(io),
                        }
                    }
                    Client::Tls(io) => io,
                };
                let service = service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    let peer = Arc::clone(&peer);
                    async move { Ok::<_, Infallible>(proxy.handle(req, &peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// Serve the configurable-http-proxy REST API on `listener` until `shutdown` resolves.
pub async fn serve_api(
    listener: TcpListener,
    api: Api,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    accept_loop(
        listener,
        tls,
        shutdown,
        None,
        move |client, _remote, watcher, _stop| {
            let api = api.clone();
            let builder = builder.clone();
            async move {
                let io: Box<dyn ClientIo> = match client {
                    Client::Plain(stream) => Box::new(stream),
                    Client::Tls(io) => io,
                };
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(io), service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// A boxed client stream: plain TCP or TLS.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// An accepted client connection.
enum Client {
    Plain(TcpStream),
    Tls(Box<dyn ClientIo>),
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    mut balancer: Option<Balancer>,
    serve_conn: F,
) where
    F: Fn(Client, std::net::SocketAddr, Watcher, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // Tells connections on the fast path to finish their request and close (hyper's are told
    // through their watcher).
    let stop = CancellationToken::new();
    let serve_conn = Arc::new(serve_conn);
    let mut backoff = Duration::from_millis(5);
    let mut inbox = balancer.as_mut().and_then(Balancer::take_inbox);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(handoff) = recv(&mut inbox) => {
                // Another worker's connection, placed here to even out the load.
                if let Some(balancer) = &balancer
                    && let Some((stream, remote, load)) = balancer.receive(handoff)
                {
                    spawn_conn(stream, remote, load.into(), &tls, &graceful, &stop, &serve_conn);
                }
                continue;
            }
        };
        let (stream, remote) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (stream, load) = match &balancer {
            None => (stream, None),
            Some(balancer) => match balancer.place(stream, remote) {
                Placement::Here(stream, load) => (stream, Some(load)),
                Placement::Away => continue,
            },
        };
        spawn_conn(stream, remote, load, &tls, &graceful, &stop, &serve_conn);
    }
    drop(listener);
    stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

/// The next handed-over connection, or never without an inbox.
async fn recv(inbox: &mut Option<UnboundedReceiver<Handoff>>) -> Option<Handoff> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Serve one accepted connection on its own task.
fn spawn_conn<F, Fut>(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    load: Option<Load>,
    tls: &Option<TlsAcceptor>,
    graceful: &GracefulShutdown,
    stop: &CancellationToken,
    serve_conn: &Arc<F>,
) where
    F: Fn(Client, std::net::SocketAddr, Watcher, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let span = tracing::debug_span!("conn", client.addr = %remote);
    let tls = tls.clone();
    let watcher = graceful.watcher();
    let serve_conn = Arc::clone(serve_conn);
    let stop = stop.clone();
    let task = async move {
        if let Some(client) = handshake(stream, tls).await {
            serve_conn(client, remote, watcher, stop).await;
        }
        drop(load);
    };
    // A disabled span still costs an enter/exit on every poll of the connection.
    if span.is_disabled() {
        tokio::spawn(task);
    } else {
        tokio::spawn(task.instrument(span));
    }
}

async fn handshake(stream: TcpStream, tls: Option<TlsAcceptor>) -> Option<Client> {
    let Some(acceptor) = tls else {
        return Some(Client::Plain(stream));
    };
    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Client::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
