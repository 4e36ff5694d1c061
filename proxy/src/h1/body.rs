//! The response body of a direct upstream exchange: read from the upstream socket as the
//! client connection asks for it, de-framed (length, chunked or until close), and the
//! connection handed back to the pool once the body has ended.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::{Checkin, Conn};
use crate::routes::Route;

/// Largest read for a body: big bodies move in few large chunks.
const MAX_READ: usize = 256 * 1024;
/// Smallest read.
const MIN_READ: usize = 8 * 1024;
/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 64 * 1024;

/// How a response body is delimited.
#[derive(Debug)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0 for no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Until the upstream closes the connection.
    UntilClose,
}

impl Framing {
    pub(crate) fn chunked() -> Self {
        Self::Chunked(Chunked::Size)
    }
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers until an empty line.
    Trailers,
}

/// A streamed upstream response body that marks `route` active on every data frame.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    checkin: Option<Checkin>,
    route: Option<Arc<Route>>,
}

impl UpstreamBody {
    pub(super) fn new(conn: Conn, framing: Framing, checkin: Option<Checkin>) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing,
            checkin,
            route: None,
        };
        if matches!(body.framing, Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// Record activity on `route` for every data frame.
    pub(crate) fn with_activity(mut self, route: Option<Arc<Route>>) -> Self {
        self.route = route;
        self
    }

    /// The upstream socket and the bytes left, when the rest of a length-delimited body can be
    /// moved without reading it here: plain TCP, nothing buffered, something left.
    pub(crate) fn splice_source(&self) -> Option<(&tokio::net::TcpStream, u64)> {
        let conn = self.conn.as_ref()?;
        match self.framing {
            Framing::Length(left) if left > 0 && conn.buf.is_empty() && !conn.io.is_tls() => {
                Some((conn.io.tcp(), left))
            }
            _ => None,
        }
    }

    /// The route this body records activity on.
    pub(crate) fn route(&self) -> Option<&Arc<Route>> {
        self.route.as_ref()
    }

    /// `n` bytes of a length-delimited body were moved past this reader (see
    /// [`Self::splice_source`]); the connection goes back to the pool when none are left.
    pub(crate) fn spliced(&mut self, n: u64) {
        if let Framing::Length(left) = self.framing {
            let left = left.saturating_sub(n);
            self.framing = Framing::Length(left);
            if left == 0 {
                self.finish();
            }
        }
    }

    /// The body has ended: the connection goes back to the pool if it can carry another request.
    fn finish(&mut self) {
        self.framing = Framing::Length(0);
        if let (Some(conn), Some(checkin)) = (self.conn.take(), self.checkin.take())
            && conn.buf.is_empty()
        {
            checkin.put(conn);
        }
    }

    fn data(&self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(route) = &self.route {
            route.touch();
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    /// Read more from the upstream into the buffer; `Ok(0)` is end of stream.
    fn fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let want = usize::try_from(want)
            .unwrap_or(MAX_READ)
            .clamp(MIN_READ, MAX_READ);
        if conn.buf.capacity() - conn.buf.len() < MIN_READ {
            conn.buf.reserve(want);
        }
        poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
    }

    fn buf(&mut self) -> &mut BytesMut {
        // Only called while the connection is held.
        &mut self.conn.as_mut().expect("body connection").buf
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the upstream closed the connection before the end of the body",
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid chunked body: {what}"),
    )
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) => {
                    let buffered = this.buf().len();
                    if buffered > 0 {
                        let n = usize::try_from(left).map_or(buffered, |l| l.min(buffered));
                        let chunk = this.buf().split_to(n).freeze();
                        let left = left - n as u64;
                        this.framing = Framing::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return this.data(chunk);
                    }
                    if ready!(this.fill(cx, left))? == 0 {
                        this.conn = None;
                        return Poll::Ready(Some(Err(truncated())));
                    }
                }
                Framing::UntilClose => {
                    if !this.buf().is_empty() {
                        let chunk = this.buf().split().freeze();
                        return this.data(chunk);
                    }
                    if ready!(this.fill(cx, MAX_READ as u64))? == 0 {
                        this.conn = None;
                        this.framing = Framing::Length(0);
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(state) => match step_chunked(this.buf(), state)? {
                    Step::Next(next) => this.framing = Framing::Chunked(next),
                    Step::Data(chunk, next) => {
                        this.framing = Framing::Chunked(next);
                        return this.data(chunk);
                    }
                    Step::End(trailers) => {
                        this.finish();
                        if let Some(trailers) = trailers {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        return Poll::Ready(None);
                    }
                    Step::More => {
                        let want = match state {
                            Chunked::Data(left) => left,
                            _ => 0,
                        };
                        if this.buf().len() > MAX_LINE && !matches!(state, Chunked::Data(_)) {
                            return Poll::Ready(Some(Err(invalid("line too long"))));
                        }
                        if ready!(this.fill(cx, want))? == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(truncated())));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

pub(super) enum Step {
    /// Moved to another state; go on.
    Next(Chunked),
    /// Some chunk data, and the state after it.
    Data(Bytes, Chunked),
    /// The body ended, with trailers if there were any.
    End(Option<HeaderMap>),
    /// Need more bytes.
    More,
}

/// One step of the chunked decoder over what is buffered.
pub(super) fn step_chunked(buf: &mut BytesMut, state: Chunked) -> io::Result<Step> {
    match state {
        Chunked::Size => {
            let Some(eol) = find_crlf(buf) else {
                return Ok(Step::More);
            };
            let line = buf.split_to(eol + 2);
            let size = parse_chunk_size(&line[..eol])?;
            Ok(Step::Next(if size == 0 {
                Chunked::Trailers
            } else {
                Chunked::Data(size)
            }))
        }
        Chunked::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            let chunk = buf.split_to(n).freeze();
            let left = left - n as u64;
            Ok(Step::Data(
                chunk,
                if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                },
            ))
        }
        Chunked::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("missing CRLF after chunk data"));
            }
            buf.advance(2);
            Ok(Step::Next(Chunked::Size))
        }
        Chunked::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::End(None));
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(Step::More);
            };
            let section = buf.split_to(end + 4);
            Ok(Step::End(Some(parse_trailers(&section)?)))
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// `1a3f[;ext...]` (with optional whitespace before the extension).
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let mut size: u64 = 0;
    let mut digits = 0;
    for &b in line {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b';' | b' ' | b'\t' => break,
            _ => return Err(invalid("bad chunk size")),
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or_else(|| invalid("chunk size overflows"))?;
        digits += 1;
    }
    if digits == 0 {
        return Err(invalid("empty chunk size"));
    }
    Ok(size)
}

fn parse_trailers(section: &[u8]) -> io::Result<HeaderMap> {
    let mut slots = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
    let parsed = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(invalid("bad trailers")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid("bad trailer"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| invalid("bad trailer"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(wire: &[u8]) -> io::Result<(Vec<u8>, Option<HeaderMap>)> {
        let mut buf = BytesMut::from(wire);
        let mut state = Chunked::Size;
        let mut out = Vec::new();
        loop {
            match step_chunked(&mut buf, state)? {
                Step::Next(next) => state = next,
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::End(t) => return Ok((out, t)),
                Step::More => return Err(truncated()),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        let (body, trailers) = decode(b"5\r\nhello\r\n1;ext=1\r\n \r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello ");
        assert!(trailers.is_none());
        let (body, trailers) = decode(b"A\r\n0123456789\r\n0\r\nx-sum: 9\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        assert!(decode(b"zz\r\n").is_err());
        assert!(decode(b"\r\n").is_err());
        assert!(decode(b"3\r\nabcXX0\r\n\r\n").is_err());
        assert!(decode(b"ffffffffffffffffff\r\n").is_err());
        assert!(decode(b"3\r\nab").is_err());
    }
}
