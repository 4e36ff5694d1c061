//! Upgraded connections (WebSocket): the handshake is forwarded on a fresh upstream connection;
//! after a `101 Switching Protocols` both sides become one byte tunnel.
//!
//! The upstream side is an `UpstreamStream` (TLS for https targets) over a
//! [`crate::QuickAckStream`]: it marks the route active on every chunk in either
//! direction, and the splice loop acknowledges each upstream chunk promptly once it has been
//! forwarded (see `net.rs` for the Nagle/delayed-ACK stall this removes).
//!
//! # Busy polling after a message
//! A kernel WebSocket is request and reply: after the proxy forwards a message, the answer
//! usually follows within tens of microseconds. If the worker thread sleeps in `epoll_wait`
//! meanwhile, waking it again costs 20-60 us on a virtual machine (the idle vCPU halts and
//! needs an interrupt), twice per round trip. So for `--tunnel-busy-poll-us` (default 50 us)
//! after it forwarded a chunk, a tunnel yields instead of sleeping: other tasks run, and the
//! reactor polls with a zero timeout. HAProxy's `busy-polling` does the same for the same
//! reason, always; here it is bounded by the window after each message.
//!
//! Measured (`ws-latency`, 5000 echo round trips, 2-vCPU VM): p50 148/131 us without, 83/64 us
//! with the 50 us window; the proxy's CPU per round trip rose from about 60 to 80 us. An idle
//! tunnel costs nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use crate::body::{ActivityBody, ProxyBody};
use crate::error::ForwardError;
use crate::forward::{Peer, Proxy, strip_hop_by_hop, upstream_error};
use crate::net::UpstreamStream;
use crate::routes::Route;

/// Whether `req` asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Forward an upgrade request and, on 101, splice client and upstream together.
pub(crate) async fn tunnel(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    route: Arc<Route>,
    peer: &Peer,
    pq: &str,
) -> Result<Response<ProxyBody>, ForwardError> {
    let protocol = req
        .headers()
        .get(header::UPGRADE)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or(ForwardError::BadRequest(
            "Connection: upgrade without an Upgrade header",
        ))?;
    if req.version() != Version::HTTP_11 {
        return Err(ForwardError::BadRequest("upgrade requires HTTP/1.1"));
    }
    let target = route.target();
    let upstream_pq = proxy.upstream_path(&route, pq);
    let path = target.origin_form(&upstream_pq, proxy.options().prepend_path);
    let uri: http::Uri = path
        .parse()
        .map_err(|_| ForwardError::BadRequest("request path cannot be forwarded"))?;

    let stream = proxy
        .dialer()
        .connect(target.is_tls(), target.authority())
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?
        .with_activity(Arc::clone(&route));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection ended");
        }
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _no_body) = req.into_parts();
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    proxy.add_forwarded(&mut parts.headers, peer);
    let upstream_req = Request::from_parts(parts, ProxyBody::empty());

    let mut resp = sender
        .send_request(upstream_req)
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade (403, 404, ...): pass its answer through.
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            ProxyBody::Stream(ActivityBody::new(body, None)),
        ));
    }

    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let busy_poll = proxy.options().tunnel_busy_poll;
    let span = tracing::debug_span!("tunnel", route = %route.path());
    let splice = async move {
        let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
        let (client, upstream) = match (client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let result = match upstream.downcast::<TokioIo<UpstreamStream>>() {
            Ok(parts) => splice(client, parts.io.into_inner(), parts.read_buf, busy_poll).await,
            Err(upstream) => {
                // Not our socket type (cannot happen today): plain copying still works.
                let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                tokio::io::copy_bidirectional(&mut c, &mut u)
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "tunnel closed");
        }
    };
    tokio::spawn(splice.instrument(span));

    let (parts, _empty) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}

/// Size of each direction's copy buffer in a tunnel.
const TUNNEL_BUF: usize = 16 * 1024;

/// Copy both directions until each side has closed. Chunks from the upstream are written to the
/// client first and acknowledged to the upstream right after (see `net.rs`).
pub(crate) async fn splice(
    client: Upgraded,
    upstream: UpstreamStream,
    early: Bytes,
    busy_poll: Duration,
) -> std::io::Result<()> {
    let ack = upstream.ack_handle()?;
    let (mut client_rd, mut client_wr) = tokio::io::split(TokioIo::new(client));
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let last = Activity::new();
    let downstream = async {
        if !early.is_empty() {
            client_wr.write_all(&early).await?;
        }
        pump(&mut up_rd, &mut client_wr, &last, busy_poll, || ack.rearm()).await
    };
    let upstream = pump(&mut client_rd, &mut up_wr, &last, busy_poll, || ());
    tokio::try_join!(downstream, upstream).map(|_| ())
}

/// When a tunnel last forwarded a chunk (either direction).
struct Activity {
    start: Instant,
    micros: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            micros: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        let at = Duration::from_micros(self.micros.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(at)
    }
}

/// Copy `rd` to `wr` until end of stream, then shut `wr` down; `after_write` runs after each chunk.
async fn pump<R, W>(
    rd: &mut R,
    wr: &mut W,
    last: &Activity,
    busy_poll: Duration,
    after_write: impl Fn(),
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; TUNNEL_BUF];
    loop {
        let n = loop {
            if busy_poll.is_zero() || last.since() > busy_poll {
                break rd.read(&mut buf).await?;
            }
            // Not ready: let every other task run and the reactor poll without a timeout, then
            // look again (see the module docs).
            tokio::select! {
                biased;
                n = rd.read(&mut buf) => break n?,
                () = tokio::task::yield_now() => {}
            }
        };
        if n == 0 {
            return wr.shutdown().await;
        }
        wr.write_all(&buf[..n]).await?;
        last.mark();
        after_write();
    }
}
