//! The proxy's own HTTP/1.1 server path for plain clients, seen by a raw client whose bytes the
//! test controls: large bodies (moved with splice), keep-alive and pipelining, HTTP/1.0
//! clients, a body cut off by its upstream, and connections that hyper takes over mid-way.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 3 * 1024 * 1024 + 17;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A raw upstream: `/big` (length-delimited, written in uneven pieces), `/big-cut` (claims
/// `BIG` bytes, sends a third and closes), `/chunked`, `/plain` (no `Date`), and `/post`
/// (reads a `Content-Length` body and answers with its size).
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        Self { addr, connections }
    }
}

async fn serve(mut stream: TcpStream) {
    let big = pattern(BIG);
    let mut buf = Vec::new();
    while let Some(head) = common::read_head(&mut stream, &mut buf).await {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let head_only = head.starts_with("HEAD ");
        let ok = match path.as_str() {
            "/big" => {
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                let mut ok = stream.write_all(reply.as_bytes()).await.is_ok();
                let body = if head_only { &big[..0] } else { &big[..] };
                for piece in body.chunks(300_001) {
                    ok &= stream.write_all(piece).await.is_ok();
                }
                ok
            }
            "/big-cut" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&big[..BIG / 3]).await;
                return;
            }
            "/chunked" => stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .is_ok(),
            "/plain" => stream
                .write_all(b"HTTP/1.1 200 Whatever\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_ok(),
            "/post" => {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                while buf.len() < len {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..len);
                let body = format!("got {len}");
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                stream.write_all(reply.as_bytes()).await.is_ok()
            }
            _ => stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
                .is_ok(),
        };
        if !ok {
            return;
        }
    }
}

/// One response read from a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Read one response for a request of `method`; `None` if the connection closed first.
async fn read_answer(conn: &mut TcpStream, pending: &mut Vec<u8>, method: &str) -> Option<Answer> {
    let head = common::read_head(conn, pending).await?;
    let status = head[9..12].parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: Vec::new(),
    };
    let length = answer
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap());
    let chunked = answer.header("transfer-encoding") == Some("chunked");
    let until = |pending: &Vec<u8>| -> Option<usize> {
        if method == "HEAD" || status == 204 || status == 304 {
            Some(0)
        } else if chunked {
            pending
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map(|p| p + 5)
        } else {
            length
        }
    };
    loop {
        if let Some(n) = until(pending)
            && pending.len() >= n
        {
            answer.body = pending.drain(..n).collect();
            return Some(answer);
        }
        let mut chunk = [0u8; 65536];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) if length.is_none() && !chunked => {
                answer.body = std::mem::take(pending);
                return Some(answer);
            }
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn proxy_to_raw_upstream() -> (TestProxy, RawUpstream) {
    let up = RawUpstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &format!("http://{}", up.addr)).await;
    (p, up)
}

#[tokio::test]
async fn large_bodies_arrive_whole_on_a_kept_connection() {
    let (p, up) = proxy_to_raw_upstream().await;
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    let mut pending = Vec::new();
    let expected = pattern(BIG);
    for round in 0..3 {
        conn.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
        assert_eq!(answer.status, 200, "round {round}");
        assert_eq!(answer.header("content-length"), Some(&*BIG.to_string()));
        assert!(answer.body == expected, "round {round}: body differs");
    }
    // HEAD keeps the length and sends nothing; the connection carries on.
    conn.write_all(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_answer(&mut conn, &mut pending, "HEAD").await.unwrap();
    assert_eq!(head.header("content-length"), Some(&*BIG.to_string()));
    let next = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(next.body, b"ok");
    assert!(pending.is_empty());
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "the upstream connection went back to the pool after each spliced body"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_as_hyper_would() {
    let (p, _up) = proxy_to_raw_upstream().await;
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    conn.write_all(
        b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let plain = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    // The canonical reason, and a Date the upstream did not send.
    assert!(
        plain.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        plain.head
    );
    let date = plain.header("date").unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(plain.body, b"ok");
    let chunked = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.body, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    let missing = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn http10_clients_get_close_delimited_or_kept_answers() {
    let (p, _up) = proxy_to_raw_upstream().await;
    // Keep-alive asked for and possible: said so, and the connection stays.
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    let mut pending = Vec::new();
    conn.write_all(b"GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let kept = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(kept.header("connection"), Some("keep-alive"));
    // A chunked upstream body cannot be chunked to HTTP/1.0: it ends with the connection.
    conn.write_all(b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let closed = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(closed.header("transfer-encoding"), None);
    assert_eq!(closed.header("connection"), Some("close"));
    assert_eq!(closed.body, b"abcde");
    // Without keep-alive, HTTP/1.0 closes after the answer.
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    conn.write_all(b"GET /plain HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("connection: close\r\n") && text.ends_with("\r\n\r\nok"),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_cut_off_upstream_is_cut_off_for_the_client() {
    let (p, _up) = proxy_to_raw_upstream().await;
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    conn.write_all(b"GET /big-cut HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    // The proxy closes the connection instead of passing a short body off as whole.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut all),
    )
    .await
    .expect("the proxy left a cut-off answer hanging");
    assert!(read.is_ok() || !all.is_empty());
    let body_start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let got = all.len() - body_start;
    assert!(got < BIG, "got {got} of {BIG} bytes");
    assert!(got >= BIG / 3 - 65536, "only {got} bytes arrived");

    // The proxy keeps serving.
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    conn.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ok = read_answer(&mut conn, &mut Vec::new(), "GET")
        .await
        .unwrap();
    assert_eq!(ok.body, b"ok");
}

#[tokio::test]
async fn hyper_takes_over_a_connection_mid_way_without_losing_bytes() {
    let (p, _up) = proxy_to_raw_upstream().await;
    let mut conn = TcpStream::connect(p.public).await.unwrap();
    let mut pending = Vec::new();
    // A GET served on the fast path, then (pipelined) a POST with a body, the health check and
    // a bad request, which hyper answers on the same connection.
    let body = vec![b'x'; 100_000];
    let mut wire = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    wire.extend_from_slice(
        format!(
            "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(&body);
    wire.extend_from_slice(b"GET /_chp_healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.write_all(&wire).await.unwrap();
    let first = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(first.body, b"ok");
    let post = read_answer(&mut conn, &mut pending, "POST").await.unwrap();
    assert_eq!(post.body, b"got 100000");
    let health = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert_eq!(health.body, br#"{"status":"OK"}"#);
    // Back to a plain GET: hyper serves it now, still correctly.
    conn.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let big = read_answer(&mut conn, &mut pending, "GET").await.unwrap();
    assert!(big.body == pattern(BIG));
    // A malformed path on a fresh connection: a 400 from the fast path's error answers.
    let mut bad = TcpStream::connect(p.public).await.unwrap();
    bad.write_all(b"GET /bad%zz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut bad, &mut Vec::new(), "GET").await.unwrap();
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn shutdown_closes_an_idle_keep_alive_connection() {
    let (p, _up) = proxy_to_raw_upstream().await;
    let mut idle = TcpStream::connect(p.public).await.unwrap();
    let mut pending = Vec::new();
    idle.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_answer(&mut idle, &mut pending, "GET").await.unwrap();
    drop(p);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        idle.read_to_end(&mut rest),
    )
    .await
    .expect("an idle keep-alive connection stayed open after shutdown");
    assert!(closed.is_ok() && rest.is_empty());
}
