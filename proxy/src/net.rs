//! Upstream sockets: `TCP_NODELAY` on, and prompt ACKs where they matter.
//!
//! # Why prompt ACKs
//! jupyter_server never sets `TCP_NODELAY` on kernel WebSockets. A kernel reply is several small
//! frames written one after another; under Nagle's algorithm the second frame waits until the first
//! is acknowledged, and a Linux receiver in delayed-ACK mode acknowledges only after ~40 ms. A
//! `1+1` round trip then costs ~48 ms instead of ~6 ms. We cannot change the upstream, but as its
//! receiver we can acknowledge at once: `TCP_QUICKACK` (Linux) sends a pending ACK immediately
//! and keeps ACKs immediate for a while; the kernel clears it again on its own, so it is re-armed.
//!
//! # Where
//! Upgraded tunnels (WebSockets) re-arm it after every chunk they forward, *after* the chunk has
//! been written to the client ([`AckHandle::rearm`]), so the extra ACK packet is off the latency
//! path. Pooled HTTP connections only start in quick-ACK mode: re-arming after every response
//! would add a pure ACK packet per request (measured: ~8% of the proxy's CPU at 1 KiB), while
//! HTTP responses from Tornado/jupyter_server leave in one write and the delayed ACK rides on
//! the next request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::routes::Route;

/// A TCP stream to an upstream that acknowledges promptly and, for tunnels, records activity.
#[derive(Debug)]
pub struct QuickAckStream {
    inner: TcpStream,
    activity: Option<Arc<Route>>,
}

impl QuickAckStream {
    /// Wrap a connected stream: sets `TCP_NODELAY` and arms `TCP_QUICKACK` once.
    pub fn new(inner: TcpStream) -> Self {
        let _ = inner.set_nodelay(true);
        rearm_quickack(&inner);
        Self {
            inner,
            activity: None,
        }
    }

    /// The socket itself (readiness checks of pooled connections).
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    /// Record activity on `route` for every chunk read or written (used for upgraded tunnels).
    pub(crate) fn with_activity(mut self, route: Arc<Route>) -> Self {
        self.activity = Some(route);
        self
    }

    fn touch(&self) {
        if let Some(route) = &self.activity {
            route.touch();
        }
    }
}

/// A second handle on an upstream socket, to re-arm `TCP_QUICKACK` while the stream itself is
/// split between two copy loops.
#[derive(Debug)]
pub(crate) struct AckHandle(socket2::Socket);

impl AckHandle {
    /// Acknowledge what was read so far now, and keep ACKs immediate for a while.
    pub(crate) fn rearm(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.0.set_tcp_quickack(true);
    }
}

impl QuickAckStream {
    /// A handle for [`AckHandle::rearm`] on this socket (a duplicated descriptor).
    pub(crate) fn ack_handle(&self) -> io::Result<AckHandle> {
        use std::os::fd::AsFd;
        let fd = self.inner.as_fd().try_clone_to_owned()?;
        Ok(AckHandle(socket2::Socket::from(fd)))
    }
}

#[cfg(target_os = "linux")]
fn rearm_quickack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn rearm_quickack(_stream: &TcpStream) {}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            this.touch();
        }
        polled
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// The connector of the pooled upstream client: hyper's resolver and connect timeout, our sockets.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConnector {
    http: HttpConnector,
}

impl UpstreamConnector {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(true);
        Self { http }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<QuickAckStream>;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TokioIo::new(QuickAckStream::new(io.into_inner())))
        })
    }
}

/// Connect a fresh (unpooled) stream to `authority`, for upgraded connections.
pub(crate) async fn connect_tunnel(
    authority: &http::uri::Authority,
    timeout: Duration,
) -> io::Result<QuickAckStream> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(QuickAckStream::new(stream))
}
