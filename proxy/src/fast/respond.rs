//! Writing an answer to the client as hyper's server writes it (status line with the canonical
//! reason, lower-case header names, `date` when missing), then its body: by length, chunked, or
//! until close for an HTTP/1.0 client. Data already buffered leaves with the head in one write,
//! and the rest of a large upstream body is spliced (see `splice`).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{StatusCode, Version};
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::splice;
use crate::body::ProxyBody;
use crate::h1::UpstreamBody;

/// Bodies with at least this much left after the buffered part are spliced.
const SPLICE_MIN: u64 = 32 * 1024;

/// Where an answer's body comes from.
#[derive(Debug)]
pub(super) enum Source {
    /// A pooled upstream connection.
    Upstream(UpstreamBody),
    /// The proxy's own answer (errors, pages from `--error-target`).
    Proxy(ProxyBody),
}

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx),
            Self::Proxy(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(io::Error::other))),
        }
    }

    async fn next_data(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            match std::future::poll_fn(|cx| self.poll_frame(cx)).await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                    // Trailers are dropped, as hyper's server does for clients that did not
                    // ask for them.
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Data that is available without waiting (already buffered), if any.
    fn ready_data(&mut self) -> io::Result<Option<Bytes>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => Ok(frame.into_data().ok()),
            Poll::Ready(Some(Err(e))) => Err(e),
            Poll::Ready(None) | Poll::Pending => Ok(None),
        }
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            Self::Upstream(body) => body.size_hint().exact(),
            Self::Proxy(body) => body.size_hint().exact(),
        }
    }
}

/// The request an answer is for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exchange {
    pub(super) is_head: bool,
    pub(super) version: Version,
    /// The client asked to keep the connection, and the proxy is not shutting down.
    pub(super) keep_alive: bool,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Write an answer; `Ok(true)` when the connection can carry another request.
pub(super) async fn write(
    stream: &mut TcpStream,
    status: StatusCode,
    mut headers: HeaderMap,
    mut source: Source,
    exchange: Exchange,
) -> io::Result<bool> {
    let no_body = exchange.is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let wire = if no_body {
        Wire::None
    } else if let Some(n) = source.exact_len() {
        Wire::Length(n)
    } else if exchange.version == Version::HTTP_11 {
        Wire::Chunked
    } else {
        Wire::Close
    };
    if matches!(wire, Wire::Chunked | Wire::Close) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let keep_alive = exchange.keep_alive && wire != Wire::Close;
    let mut out = Vec::with_capacity(256);
    encode_head(
        &mut out,
        status,
        &headers,
        wire,
        keep_alive,
        exchange.version,
    );

    match wire {
        Wire::None => {
            stream.write_all(&out).await?;
            return Ok(keep_alive);
        }
        Wire::Length(_) | Wire::Close => {
            let first = source.ready_data()?.unwrap_or_default();
            write_all_vectored(stream, &mut [IoSlice::new(&out), IoSlice::new(&first)]).await?;
            loop {
                if let Source::Upstream(body) = &mut source
                    && let Some((from, left)) = body.splice_source()
                    && left >= SPLICE_MIN
                    && let Some(pipe) = splice::Pipe::take()
                {
                    let route = body.route().cloned();
                    splice::copy(from, stream, &pipe, left, |_| {
                        if let Some(route) = &route {
                            route.touch();
                        }
                    })
                    .await?;
                    // Only a transfer that emptied the pipe returns it for reuse.
                    pipe.give_back();
                    body.spliced(left);
                    continue;
                }
                match source.next_data().await {
                    None => break,
                    Some(data) => stream.write_all(&data?).await?,
                }
            }
        }
        Wire::Chunked => {
            let first = source.ready_data()?.unwrap_or_default();
            let size = chunk_size_line(first.len());
            let (size, tail): (&[u8], &[u8]) = if first.is_empty() {
                (b"", b"")
            } else {
                (&size, b"\r\n")
            };
            let mut parts = [
                IoSlice::new(&out),
                IoSlice::new(size),
                IoSlice::new(&first),
                IoSlice::new(tail),
            ];
            write_all_vectored(stream, &mut parts).await?;
            while let Some(data) = source.next_data().await {
                let data = data?;
                if data.is_empty() {
                    continue;
                }
                let size = chunk_size_line(data.len());
                let mut parts = [
                    IoSlice::new(&size),
                    IoSlice::new(&data),
                    IoSlice::new(b"\r\n"),
                ];
                write_all_vectored(stream, &mut parts).await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(keep_alive)
}

fn chunk_size_line(len: usize) -> Vec<u8> {
    format!("{len:X}\r\n").into_bytes()
}

fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    wire: Wire,
    keep_alive: bool,
    version: Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    crate::h1::put_headers(out, headers);
    match wire {
        Wire::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Wire::Length(n) if !headers.contains_key(header::CONTENT_LENGTH) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        _ => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The current time as an HTTP date, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

async fn write_all_vectored(
    stream: &mut TcpStream,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = stream.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}
