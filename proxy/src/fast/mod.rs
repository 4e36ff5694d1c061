//! The server side of plain-TCP client connections: body-less GET and HEAD requests are read,
//! forwarded over a pooled upstream connection (`h1`) and answered in the connection's own
//! task, and large response bodies are spliced from socket to socket. The first request that
//! is anything else (a body, an upgrade, an in-process route, a malformed head) hands the
//! connection, with every byte read so far, to hyper for the rest of its life.
//!
//! # Why
//! With hyper's server each request builds a `Request`, runs the service future and a
//! `Response` through hyper's dispatcher, and every body byte is copied into the proxy and out
//! again. At 1 KiB that machinery was about a third of the proxy's user CPU; at 1 MiB the two
//! copies were about two thirds of all its CPU (`perf`). This path writes the head and any
//! buffered body in one `writev`, and moves the rest of a large body with `splice(2)`, which
//! nginx (without splice) and configurable-http-proxy cannot.
//!
//! # Semantics
//! Requests are forwarded exactly as `Proxy::forward` forwards them (the same header rewriting,
//! pool, timeouts and error answers). Answers are written as hyper writes them. Keep-alive
//! follows RFC 9112: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
//! `Connection: keep-alive`; pipelined requests are answered in order. A head must arrive
//! within 30 s of its first byte, and a keep-alive connection may sit idle for 75 s.

mod request;
mod respond;
mod splice;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::request::{Head, Parsed};
use self::respond::{Exchange, Source};
use crate::forward::{Peer, Proxy};
use crate::server::HEAD_TIMEOUT;

/// How long a keep-alive connection may wait for its next request (nginx's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Read size for request heads.
const READ_SIZE: usize = 8 * 1024;

/// How a connection left this path.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Closed (by either side, on an error, or for shutdown).
    Closed,
    /// hyper serves the rest, starting with the bytes already read.
    HandOver(Prefixed),
}

/// Serve `stream` until it closes or needs hyper. `stop` asks to finish the current request
/// and close.
pub(crate) async fn serve_plain(
    stream: TcpStream,
    proxy: &Proxy,
    peer: &Peer,
    stop: &CancellationToken,
) -> Outcome {
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
    };
    loop {
        let head = match conn.next_head(stop).await {
            Next::Head(head) => head,
            Next::Other => return Outcome::HandOver(conn.hand_over(Bytes::new())),
            Next::Closed => return Outcome::Closed,
        };
        if proxy.is_healthz(&head.uri) {
            return Outcome::HandOver(conn.hand_over(head.raw));
        }
        let route = {
            let host = head.headers.get(header::HOST).and_then(|h| h.to_str().ok());
            proxy.route_for_path(head.uri.path(), host)
        };
        if route.as_ref().is_ok_and(|route| proxy.is_local(route)) {
            return Outcome::HandOver(conn.hand_over(head.raw));
        }
        match conn.answer(proxy, peer, *head, route, stop).await {
            Ok(true) => {}
            Ok(false) => {
                // FIN after the answer, so the client reads all of it before the close.
                let _ = conn.stream.shutdown().await;
                return Outcome::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended with an error");
                return Outcome::Closed;
            }
        }
    }
}

enum Next {
    Head(Box<Head>),
    Other,
    Closed,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn next_head(&mut self, stop: &CancellationToken) -> Next {
        loop {
            if !self.buf.is_empty() {
                match request::parse(&mut self.buf) {
                    Parsed::Simple(head) => return Next::Head(head),
                    Parsed::Other => return Next::Other,
                    Parsed::Partial => {}
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_SIZE);
            }
            let read = if self.buf.is_empty() {
                tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.buf) => read,
                    () = stop.cancelled() => return Next::Closed,
                    () = tokio::time::sleep(IDLE_TIMEOUT) => return Next::Closed,
                }
            } else {
                match tokio::time::timeout(HEAD_TIMEOUT, self.stream.read_buf(&mut self.buf)).await
                {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::debug!("request head timed out");
                        return Next::Closed;
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Forward one request and write its answer; `Ok(true)` to read the next request.
    async fn answer(
        &mut self,
        proxy: &Proxy,
        peer: &Peer,
        mut head: Head,
        route: Result<std::sync::Arc<crate::routes::Route>, crate::error::ForwardError>,
        stop: &CancellationToken,
    ) -> io::Result<bool> {
        let pq = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let sent = match route {
            Ok(route) => {
                let upstream_pq = proxy.upstream_path(&route, pq);
                proxy
                    .send_direct(&head.method, &mut head.headers, &route, peer, &upstream_pq)
                    .await
            }
            Err(e) => Err(e),
        };
        let (status, headers, source) = match sent {
            Ok(answer) => (answer.status, answer.headers, Source::Upstream(answer.body)),
            Err(err) => {
                let (parts, body) = proxy.error_response(&err, pq).await.into_parts();
                (parts.status, parts.headers, Source::Proxy(body))
            }
        };
        let exchange = Exchange {
            is_head: head.method == http::Method::HEAD,
            version: head.version,
            keep_alive: head.keep_alive && !stop.is_cancelled(),
        };
        respond::write(&mut self.stream, status, headers, source, exchange).await
    }

    fn hand_over(self, head: Bytes) -> Prefixed {
        Prefixed {
            head,
            rest: self.buf,
            inner: self.stream,
        }
    }
}

/// A client connection handed to hyper: bytes already read come first.
#[derive(Debug)]
pub(crate) struct Prefixed {
    head: Bytes,
    rest: BytesMut,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        for pending in [&mut this.head as &mut dyn Buf, &mut this.rest] {
            if pending.has_remaining() {
                let n = pending.remaining().min(buf.remaining());
                buf.put_slice(&pending.chunk()[..n]);
                pending.advance(n);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
