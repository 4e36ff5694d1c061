//! Request smuggling through the proxy, tried as an attacker would: heads whose body framing a
//! lenient upstream could read differently from the proxy. The upstream here is the most
//! naive one possible (it frames requests by `Content-Length` only and records every byte),
//! so anything the proxy lets through ambiguously shows up as an extra request there.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Records every byte it receives; answers each request head with `200 ok`, skipping a body
/// of the head's `Content-Length` (and ignoring `Transfer-Encoding`, as a naive server would).
struct NaiveUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl NaiveUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(naive_serve(stream, Arc::clone(&log)));
            }
        });
        Self { addr, received }
    }

    async fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().await).into_owned()
    }

    /// The request lines the upstream saw (lines that look like `METHOD /path HTTP/1.x`).
    async fn request_lines(&self) -> Vec<String> {
        self.received()
            .await
            .split("\r\n")
            .filter(|l| l.ends_with("HTTP/1.1") || l.ends_with("HTTP/1.0"))
            .map(str::to_owned)
            .collect()
    }
}

async fn naive_serve(mut stream: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        log.lock().await.extend_from_slice(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            buf.drain(..end + 4 + len);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Send `wire` on one connection and read until the proxy closes it (or 5 s pass).
async fn exchange(proxy: &TestProxy, wire: &str) -> String {
    let mut client = TcpStream::connect(proxy.public).await.unwrap();
    client.write_all(wire.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn setup() -> (TestProxy, NaiveUpstream) {
    let upstream = NaiveUpstream::start().await;
    let proxy = TestProxy::start().await;
    proxy
        .add_route("/", &format!("http://{}", upstream.addr))
        .await;
    (proxy, upstream)
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Heads any parser on the way must refuse: the proxy answers 400 and forwards nothing.
#[tokio::test]
async fn ambiguous_request_heads_are_refused_before_reaching_the_upstream() {
    let (proxy, upstream) = setup().await;
    for head in [
        // Two different lengths: which one the upstream picks decides where the next request starts.
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 36\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +36\r\n\r\n",
        // obs-fold: a folded line that some servers join to the previous header.
        "POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Content-Length: 36\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n",
        // A bare CR that some servers read as a line end.
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\rContent-Length: 36\r\n\r\n",
        // Whitespace before the colon (RFC 9112 5.1: must be rejected).
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 36\r\n\r\n",
        // A Transfer-Encoding that does not end in chunked, and one on HTTP/1.0.
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(&proxy, &format!("{head}{SMUGGLED}")).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{head:?} was answered {answer:?}"
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    }
    assert_eq!(
        upstream.received().await,
        "",
        "the upstream saw a refused request"
    );
}

/// Both `Content-Length` and `Transfer-Encoding`: the chunked framing wins, the length is not
/// forwarded, and the connection is closed after the answer (RFC 9112 6.3 item 3), so the bytes
/// after the chunked body never become a request at the upstream.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let (proxy, upstream) = setup().await;
    for head in [
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(&proxy, &format!("{head}{SMUGGLED}")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{head:?}: {answer:?}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    }
    let lines = upstream.request_lines().await;
    assert!(
        lines.iter().all(|l| !l.contains("/smuggled")),
        "smuggled: {lines:?}"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    let received = upstream.received().await;
    assert!(
        !received.to_ascii_lowercase().contains("content-length: 5"),
        "the conflicting length was forwarded: {received:?}"
    );
}

/// The same attacks pipelined after a good request on a kept-alive connection: the good one is
/// answered, the bad one refused, and nothing after it is read.
#[tokio::test]
async fn a_refused_head_after_a_good_one_ends_the_connection() {
    let (proxy, upstream) = setup().await;
    let wire = format!(
        "GET /good HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n{SMUGGLED}"
    );
    let answer = exchange(&proxy, &wire).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(upstream.request_lines().await, ["GET /good HTTP/1.1"]);
}
