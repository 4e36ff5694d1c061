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
//!
//! # Fixed receive buffers
//! Upstream sockets get a fixed receive buffer (`SO_RCVBUF`, 1 MiB asked for by default,
//! `--upstream-recv-buffer-kib`) instead of the kernel's autotuning, which grew them to 6-12 MiB
//! each on our machines. The upstream's window is then what the client drains, so it sends as
//! the client reads instead of running megabytes ahead, and most of its transmitting happens
//! while this process acknowledges what it read. Measured with 1 MiB responses from nginx
//! (`sendfile`) to wrk at 64 connections through the proxy, on 2 cores: the median total CPU
//! per request of wrk, backend and proxy fell from about 1220 to 1010 us (the backend's share
//! from 300-590 to about 100 us), and throughput rose by 15-25%; at 1 KiB nothing changed. It also bounds the kernel memory an idle-reading client can
//! pin per upstream connection. A buffer the kernel would not grant (above `net.core.rmem_max`;
//! a clamped one measured slower than autotuning) is not set at all. Upstreams far away with a
//! large bandwidth-delay product may want a bigger one, or 0 for autotuning.
//!
//! # TLS
//! An https upstream's connection is TLS over the same [`QuickAckStream`]: the socket options,
//! the prompt ACKs and the activity records stay on the TCP socket underneath
//! ([`UpstreamStream`]). Plain connections pay one enum match per read or write, no allocation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::BoxError;
use crate::client_tls::{UpstreamTls, server_name};
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

/// A connection to an upstream: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    Plain(QuickAckStream),
    Tls(Box<TlsStream<QuickAckStream>>),
}

impl UpstreamStream {
    fn socket(&self) -> &QuickAckStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// The TCP socket underneath (readiness checks of pooled connections).
    pub(crate) fn tcp(&self) -> &TcpStream {
        self.socket().tcp()
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Record activity on `route` for every chunk read or written (used for upgraded tunnels).
    pub(crate) fn with_activity(self, route: Arc<Route>) -> Self {
        match self {
            Self::Plain(s) => Self::Plain(s.with_activity(route)),
            Self::Tls(mut s) => {
                s.get_mut().0.activity = Some(route);
                Self::Tls(s)
            }
        }
    }

    /// A handle for [`AckHandle::rearm`] on the TCP socket.
    pub(crate) fn ack_handle(&self) -> io::Result<AckHandle> {
        self.socket().ack_handle()
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            UpstreamStream::Plain($s) => {
                let $s = Pin::new($s);
                $body
            }
            UpstreamStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $body
            }
        }
    };
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        self.tcp().connected()
    }
}

/// Opens upstream connections: TCP with our socket options, then TLS for https targets.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    tls: UpstreamTls,
    timeout: Duration,
    /// `SO_RCVBUF` for new sockets; `None` leaves it to the kernel.
    recv_buffer: Option<usize>,
}

impl Dialer {
    pub(crate) fn new(tls: UpstreamTls, timeout: Duration, recv_buffer: Option<usize>) -> Self {
        Self {
            tls,
            timeout,
            recv_buffer: recv_buffer.and_then(|size| grantable(size, rmem_max())),
        }
    }

    /// A connected upstream socket with our options.
    fn wrap(&self, stream: TcpStream) -> QuickAckStream {
        if let Some(size) = self.recv_buffer {
            let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(size);
        }
        QuickAckStream::new(stream)
    }

    /// Connect to `authority` (TLS when `tls`), within the connect timeout.
    pub(crate) async fn connect(
        &self,
        tls: bool,
        authority: &Authority,
    ) -> io::Result<UpstreamStream> {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let connecting = async {
            let stream = self.wrap(TcpStream::connect((host, port)).await?);
            if tls {
                self.handshake(authority, stream).await
            } else {
                Ok(UpstreamStream::Plain(stream))
            }
        };
        tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// TLS over a connected socket; the certificate must name the target's host.
    async fn handshake(
        &self,
        authority: &Authority,
        stream: QuickAckStream,
    ) -> io::Result<UpstreamStream> {
        let name = server_name(authority).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "host is not a valid TLS server name",
            )
        })?;
        let tls = self
            .tls
            .connector()?
            .connect(name, stream)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        Ok(UpstreamStream::Tls(Box::new(tls)))
    }
}

/// `net.core.rmem_max`, the largest receive buffer an unprivileged process is granted; read
/// once. `None` where it cannot be read (not Linux, or not visible in this network namespace).
fn rmem_max() -> Option<usize> {
    static RMEM_MAX: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *RMEM_MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// `requested` if the kernel grants it whole; otherwise `None` (autotuning), said once.
fn grantable(requested: usize, rmem_max: Option<usize>) -> Option<usize> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match rmem_max {
        Some(max) if requested <= max => Some(requested),
        _ => {
            SAID.call_once(|| match rmem_max {
                Some(max) => tracing::info!(
                    requested,
                    rmem_max = max,
                    "upstream receive buffers left to the kernel's autotuning: the size asked \
                     for is above net.core.rmem_max"
                ),
                None => tracing::info!(
                    requested,
                    "upstream receive buffers left to the kernel's autotuning: \
                     net.core.rmem_max cannot be read"
                ),
            });
            None
        }
    }
}

/// The connector of the pooled upstream client: hyper's resolver, our sockets, TLS for https.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConnector {
    http: HttpConnector,
    dialer: Dialer,
}

impl UpstreamConnector {
    pub(crate) fn new(dialer: Dialer) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(dialer.timeout));
        http.enforce_http(false);
        Self { http, dialer }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = uri.authority().cloned();
        let connecting = self.http.call(uri);
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let stream = dialer.wrap(connecting.await?.into_inner());
            let stream = match (tls, authority) {
                (false, _) => UpstreamStream::Plain(stream),
                (true, Some(authority)) => {
                    tokio::time::timeout(dialer.timeout, dialer.handshake(&authority, stream))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                        })??
                }
                (true, None) => return Err("https URI without a host".into()),
            };
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_buffer_the_kernel_grants_is_set() {
        assert_eq!(grantable(1 << 20, Some(4 << 20)), Some(1 << 20));
        assert_eq!(grantable(1 << 20, Some(1 << 20)), Some(1 << 20));
        // Debian's default rmem_max (208 KiB) would clamp it: autotuning instead.
        assert_eq!(grantable(1 << 20, Some(212_992)), None);
        assert_eq!(grantable(1 << 20, None), None);
    }

    #[tokio::test]
    async fn upstream_sockets_get_the_fixed_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        // Below the smallest rmem_max Linux ships with (208 KiB), and not the usual default.
        let size = 96 * 1024;
        let dialer = Dialer::new(UpstreamTls::default(), Duration::from_secs(5), Some(size));
        let stream = dialer.connect(false, &authority).await.unwrap();
        let granted = socket2::SockRef::from(stream.tcp())
            .recv_buffer_size()
            .unwrap();
        // Linux reports twice the size asked for (the rest is its bookkeeping).
        assert_eq!(granted, 2 * size);

        let auto = Dialer::new(UpstreamTls::default(), Duration::from_secs(5), None);
        let stream = auto.connect(false, &authority).await.unwrap();
        let autotuned = socket2::SockRef::from(stream.tcp())
            .recv_buffer_size()
            .unwrap();
        assert_ne!(autotuned, 2 * size);
    }
}
