//! Reading one request head from a plain client connection, and deciding whether the fast path
//! can serve it: a GET or HEAD without a body, in origin form, that asks for no upgrade and no
//! `Expect`. Anything else stays in the buffer for hyper, which validates and answers it.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// Header count and head size served here; bigger heads go to hyper (which answers 431).
const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// A request head this path serves.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) version: Version,
    /// Origin form: path and query.
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    /// Whether the client wants the connection kept open after the answer.
    pub(super) keep_alive: bool,
    /// The head as received, to hand the request to hyper after all.
    pub(super) raw: Bytes,
}

/// What the buffer holds.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A head this path serves, consumed from the buffer.
    Simple(Box<Head>),
    /// Something else, left in the buffer: hyper serves the connection from here on.
    Other,
}

/// Parse the request head at the start of `buf`.
pub(super) fn parse(buf: &mut BytesMut) -> Parsed {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parsed::Other,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Other;
    };
    let mut close = false;
    let mut keep = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case(b"content-length") && h.value.trim_ascii() != b"0" {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let keep_alive = if version == Version::HTTP_10 {
        keep && !close
    } else {
        !close
    };

    // Names are checked now; values become slices of the head once it is split off.
    let base = buf.as_ptr() as usize;
    let path_span = span(base, path.as_bytes());
    let mut names = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        names.push((name, span(base, h.value)));
    }
    let raw = buf.split_to(len).freeze();
    match build(&raw, path_span, names) {
        Some((uri, headers)) => Parsed::Simple(Box::new(Head {
            method,
            version,
            uri,
            headers,
            keep_alive,
            raw,
        })),
        None => {
            // Put the head back for hyper (a rare path: invalid URI or header value).
            let mut restored = BytesMut::with_capacity(raw.len() + buf.len());
            restored.extend_from_slice(&raw);
            restored.extend_from_slice(buf);
            *buf = restored;
            Parsed::Other
        }
    }
}

fn span(base: usize, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
}

fn build(
    raw: &Bytes,
    (path_start, path_end): (usize, usize),
    names: Vec<(HeaderName, (usize, usize))>,
) -> Option<(Uri, HeaderMap)> {
    let uri = Uri::from_maybe_shared(raw.slice(path_start..path_end)).ok()?;
    if uri.scheme().is_some() || uri.path_and_query().is_none() {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(names.len());
    for (name, (start, end)) in names {
        let value = HeaderValue::from_maybe_shared(raw.slice(start..end)).ok()?;
        headers.append(name, value);
    }
    Some((uri, headers))
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(wire);
        (parse(&mut buf), buf)
    }

    #[test]
    fn simple_requests_are_served_here() {
        let (p, rest) =
            parsed("GET /user/a/x?y=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        let Parsed::Simple(head) = p else {
            panic!("not simple: {p:?}")
        };
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path_and_query().unwrap().as_str(), "/user/a/x?y=1");
        assert_eq!(
            head.headers.get_all("x-a").iter().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(head.keep_alive);
        assert_eq!(&rest[..], b"GET /next");

        let (p, _) =
            parsed("HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(
            matches!(p, Parsed::Simple(ref h) if h.keep_alive && h.version == Version::HTTP_10)
        );
        let (p, _) = parsed("GET / HTTP/1.0\r\n\r\n");
        assert!(matches!(p, Parsed::Simple(ref h) if !h.keep_alive));
        let (p, _) = parsed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(p, Parsed::Simple(ref h) if !h.keep_alive));
    }

    #[test]
    fn everything_else_stays_for_hyper() {
        for wire in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://example.org/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "BREW / HTCPCP/1.0\r\n\r\n",
        ] {
            let (p, rest) = parsed(wire);
            assert!(matches!(p, Parsed::Other), "{wire:?} gave {p:?}");
            assert_eq!(&rest[..], wire.as_bytes(), "{wire:?} was consumed");
        }
    }

    #[test]
    fn partial_heads_wait_until_too_big() {
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: h\r\n").0,
            Parsed::Partial
        ));
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parsed(&huge).0, Parsed::Other));
    }
}
