//! A direct HTTP/1.1 exchange with a pooled upstream connection, for requests without a body.
//!
//! # Why
//! hyper's pooled client runs every upstream connection as a task of its own: the request is
//! handed over through a channel, the response head comes back through a oneshot, every body
//! chunk crosses another channel, and a pool entry is re-inserted by yet another spawned task.
//! For a small response that machinery costs more CPU than the proxying itself (measured with
//! `perf`: about half of the proxy's user time at 1 KiB). Here the request future writes the
//! head itself and the response body reads straight from the upstream socket inside the client
//! connection's task, the way nginx's event loop does. Requests with a body keep using hyper's
//! client, which streams both directions at once.
//!
//! # Semantics (kept identical to hyper's client)
//! The request head is written as hyper writes it (lower-case names, map order, no added
//! length for a body-less GET/HEAD). The response is framed per RFC 9112 6.3 as hyper's decoder
//! does: no body for HEAD, 1xx (skipped), 204 and 304; `Transfer-Encoding` chunked, or read to
//! EOF when chunked is not last; a valid `Content-Length`; otherwise read to EOF. A connection
//! goes back to the pool only after its body was read to the end on a keep-alive response, and
//! a pooled connection the upstream closed is noticed before use; a request that fails on a
//! reused connection before any byte of the answer arrived is retried once on a fresh one (safe:
//! only GET and HEAD come here).
//!
//! # https upstreams
//! Connections are pooled per scheme and authority: plain and TLS connections to the same
//! `host:port` live in separate maps, so the plain path looks up and returns connections as
//! before. An idle TLS connection is checked by peeking at its socket (a read would consume TLS
//! records); anything pending there (a close_notify, an EOF) retires it.

mod body;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use self::body::Framing;
pub(crate) use self::body::UpstreamBody;
use crate::net::{Dialer, UpstreamStream};

/// How often idle connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Sweeps an idle connection survives: it is closed after 60 to 90 s unused (hyper's pool
/// closed them after 60 s).
const IDLE_SWEEPS: u64 = 3;
/// hyper's client limits: response head size and header count.
const MAX_HEAD: usize = 8192 + 4096 * 100;
const MAX_HEADERS: usize = 100;
/// First read size for a response.
const HEAD_READ: usize = 8 * 1024;

/// An upstream connection with its read buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    io: UpstreamStream,
    buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection can still carry a request: nothing arrived on it since its
    /// last response (no EOF, no reset, no stray bytes). Costs a syscall only when the socket
    /// was reported readable.
    fn is_usable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        if self.io.is_tls() {
            let mut probe = [0u8; 1];
            let mut probe = tokio::io::ReadBuf::new(&mut probe);
            // Pending: nothing arrived (and the socket's readiness was cleared by the peek).
            return self.io.tcp().poll_peek(&mut cx, &mut probe).is_pending();
        }
        match self.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

struct Idle {
    conn: Conn,
    /// The sweep epoch when the connection became idle.
    epoch: u64,
}

/// Idle connections by authority, plain and TLS apart.
#[derive(Default)]
struct IdleMaps {
    plain: HashMap<Authority, Vec<Idle>>,
    tls: HashMap<Authority, Vec<Idle>>,
}

impl IdleMaps {
    fn of(&mut self, tls: bool) -> &mut HashMap<Authority, Vec<Idle>> {
        if tls { &mut self.tls } else { &mut self.plain }
    }
}

struct PoolInner {
    idle: Mutex<IdleMaps>,
    max_idle: usize,
    sweeping: AtomicBool,
    /// Incremented by every sweep: idle time is counted in sweeps, so the request path never
    /// reads the clock.
    epoch: AtomicU64,
}

/// Idle keep-alive connections per upstream authority (one pool per [`crate::Proxy`]).
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
    dialer: Dialer,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_idle", &self.inner.max_idle)
            .finish_non_exhaustive()
    }
}

/// A returned connection goes back here when its body has been read to the end.
#[derive(Debug)]
pub(crate) struct Checkin {
    pool: Weak<PoolInner>,
    key: Authority,
}

impl Checkin {
    fn put(self, conn: Conn) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.key, conn, &self.pool);
        }
    }
}

impl PoolInner {
    async fn take(&self, tls: bool, key: &Authority) -> Option<Conn> {
        let mut idle = self.idle.lock().await;
        let list = idle.of(tls).get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.conn.is_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, key: Authority, conn: Conn, me: &Weak<Self>) {
        if self.max_idle == 0 {
            return;
        }
        {
            // Called from a body's poll: never wait for the lock. Only another thread taking
            // or returning a connection to the same pool holds it (the hub's multi-threaded
            // runtime; proxy workers each have their own pool), and then this connection
            // is closed instead of kept.
            let Ok(mut idle) = self.idle.try_lock() else {
                return;
            };
            let list = idle.of(conn.io.is_tls()).entry(key).or_default();
            if list.len() >= self.max_idle {
                return;
            }
            list.push(Idle {
                conn,
                epoch: self.epoch.load(Ordering::Relaxed),
            });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            spawn_sweeper(me.clone());
        }
    }

    /// Close connections idle for two sweep intervals or more, or closed by their upstream.
    async fn sweep(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut idle = self.idle.lock().await;
        let idle = &mut *idle;
        for map in [&mut idle.plain, &mut idle.tls] {
            for list in map.values_mut() {
                list.retain(|e| epoch - e.epoch < IDLE_SWEEPS && e.conn.is_usable());
            }
            map.retain(|_, list| !list.is_empty());
        }
    }
}

fn spawn_sweeper(pool: Weak<PoolInner>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            pool.sweep().await;
        }
    });
}

/// A response head from the upstream and the body to stream after it.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: UpstreamBody,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, dialer: Dialer) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(IdleMaps::default()),
                max_idle,
                sweeping: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
            }),
            dialer,
        }
    }

    /// Send a body-less GET or HEAD with the already encoded `head` to `authority` (over TLS
    /// when `tls`) and read the response head. Errors are short reasons for the log and the 503.
    pub(crate) async fn send(
        &self,
        tls: bool,
        authority: &Authority,
        head: &[u8],
        method: &Method,
    ) -> Result<Answer, String> {
        let is_head = *method == Method::HEAD;
        if let Some(conn) = self.inner.take(tls, authority).await {
            match self.exchange(conn, authority, head, is_head).await {
                Ok(answer) => return Ok(answer),
                // The upstream closed the kept-alive connection before reading our request
                // (a race with its idle timeout): try once more on a new connection.
                Err(Failure::Retryable(_)) => {}
                Err(Failure::Fatal(reason)) => return Err(reason),
            }
        }
        let conn = Conn {
            io: self
                .dialer
                .connect(tls, authority)
                .await
                .map_err(|e| format!("connect: {e}"))?,
            buf: BytesMut::new(),
        };
        self.exchange(conn, authority, head, is_head)
            .await
            .map_err(Failure::into_reason)
    }

    async fn exchange(
        &self,
        mut conn: Conn,
        authority: &Authority,
        head: &[u8],
        is_head: bool,
    ) -> Result<Answer, Failure> {
        if let Err(e) = conn.io.write_all(head).await {
            return Err(Failure::Retryable(format!("sending the request: {e}")));
        }
        let mut got_bytes = false;
        loop {
            if !conn.buf.is_empty() {
                match parse_head(&mut conn.buf, is_head).map_err(Failure::Fatal)? {
                    Parsed::Partial => {}
                    Parsed::Informational => continue,
                    Parsed::Head(status, version, headers, framing, keep_alive) => {
                        let checkin = keep_alive.then(|| Checkin {
                            pool: Arc::downgrade(&self.inner),
                            key: authority.clone(),
                        });
                        let body = UpstreamBody::new(conn, framing, checkin);
                        return Ok(Answer {
                            status,
                            version,
                            headers,
                            body,
                        });
                    }
                }
                if conn.buf.len() >= MAX_HEAD {
                    return Err(Failure::Fatal("response head too large".into()));
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(HEAD_READ);
            }
            match conn.io.read_buf(&mut conn.buf).await {
                Ok(0) if !got_bytes => {
                    return Err(Failure::Retryable(
                        "the upstream closed the connection without answering".into(),
                    ));
                }
                Ok(0) => {
                    return Err(Failure::Fatal(
                        "the upstream closed the connection in the response head".into(),
                    ));
                }
                Ok(_) => got_bytes = true,
                Err(e) if !got_bytes => {
                    return Err(Failure::Retryable(format!("reading the response: {e}")));
                }
                Err(e) => return Err(Failure::Fatal(format!("reading the response: {e}"))),
            }
        }
    }
}

enum Failure {
    /// Nothing of an answer arrived: a fresh connection may succeed.
    Retryable(String),
    Fatal(String),
}

impl Failure {
    fn into_reason(self) -> String {
        match self {
            Self::Retryable(r) | Self::Fatal(r) => r,
        }
    }
}

enum Parsed {
    Partial,
    /// A 1xx response was consumed; parse again.
    Informational,
    Head(StatusCode, Version, HeaderMap, Framing, bool),
}

/// Parse a response head at the start of `buf`, consuming it when complete.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Parsed, String> {
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if status.is_informational() {
        if code == 101 {
            return Err("unexpected 101 Switching Protocols".into());
        }
        let _ = buf.split_to(len);
        return Ok(Parsed::Informational);
    }
    // Header values are kept as slices of the head, without copying.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", h.name))?;
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    let framing = framing(status, version, &headers, is_head)?;
    let keep_alive = keep_alive(version, &headers) && !matches!(framing, Framing::UntilClose);
    Ok(Parsed::Head(status, version, headers, framing, keep_alive))
}

/// How the response body is delimited (RFC 9112 6.3, as hyper's client decides).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    is_head: bool,
) -> Result<Framing, String> {
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err("HTTP/1.0 response with Transfer-Encoding".into());
        }
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            Framing::chunked()
        } else {
            Framing::UntilClose
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let value = value.to_str().map_err(|_| "invalid Content-Length")?;
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length".into());
            }
            let n: u64 = part.parse().map_err(|_| "invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values".into());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            close |= token.eq_ignore_ascii_case("close");
            keep |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    if version == Version::HTTP_10 {
        keep && !close
    } else {
        !close
    }
}

/// Encode a body-less request head as hyper's client writes it.
pub(crate) fn encode_head(method: &Method, target: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut size = method.as_str().len() + target.len() + 14;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut out = Vec::with_capacity(size);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    put_headers(&mut out, headers);
    out.put_slice(b"\r\n");
    out
}

/// Append `name: value` lines for `headers`, names in lower case as hyper writes them.
pub(crate) fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
