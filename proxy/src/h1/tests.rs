use super::*;

fn parse(wire: &[u8], is_head: bool) -> Result<Parsed, String> {
    let mut buf = BytesMut::from(wire);
    parse_head(&mut buf, is_head)
}

fn head(wire: &[u8], is_head: bool) -> (StatusCode, HeaderMap, Framing, bool) {
    match parse(wire, is_head).unwrap() {
        Parsed::Head(status, _, headers, framing, keep) => (status, headers, framing, keep),
        _ => panic!("not a complete head"),
    }
}

#[test]
fn response_framing_follows_rfc_9112() {
    let (status, headers, framing, keep) = head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
        false,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-a"], "b");
    assert!(matches!(framing, Framing::Length(5)));
    assert!(keep);

    let (_, _, framing, _) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
    assert!(matches!(framing, Framing::Length(0)), "HEAD has no body");
    let (_, _, framing, _) = head(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        false,
    );
    assert!(matches!(framing, Framing::Length(0)));

    let (_, _, framing, keep) = head(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        false,
    );
    assert!(matches!(framing, Framing::Chunked(_)));
    assert!(keep);
    let (_, _, framing, keep) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
    assert!(matches!(framing, Framing::UntilClose));
    assert!(!keep, "a close-delimited body ends the connection");
    let (_, _, framing, keep) = head(b"HTTP/1.1 200 OK\r\n\r\n", false);
    assert!(matches!(framing, Framing::UntilClose));
    assert!(!keep);

    assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", false).is_err());
    assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
    assert!(
        parse(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err()
    );
    assert!(parse(b"HTTP/1.1 999x OK\r\n\r\n", false).is_err());
    assert!(matches!(
        parse(b"HTTP/1.1 200 OK\r\nContent-Le", false).unwrap(),
        Parsed::Partial
    ));
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let (_, _, _, keep) = head(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(!keep);
    let (_, _, _, keep) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert!(!keep);
    let (_, _, _, keep) = head(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(keep);
}

#[test]
fn informational_responses_are_skipped() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
    assert!(matches!(
        parse_head(&mut buf, false).unwrap(),
        Parsed::Informational
    ));
    assert!(matches!(
        parse_head(&mut buf, false).unwrap(),
        Parsed::Head(..)
    ));
    assert!(buf.is_empty());
}

#[test]
fn request_heads_are_encoded_like_hyper() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("example.org"));
    headers.append("x-multi", HeaderValue::from_static("1"));
    headers.append("x-multi", HeaderValue::from_static("2"));
    let head = encode_head(&Method::GET, "/a/b?c=d", &headers);
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "GET /a/b?c=d HTTP/1.1\r\nhost: example.org\r\nx-multi: 1\r\nx-multi: 2\r\n\r\n"
    );
}
