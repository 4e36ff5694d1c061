//! Body-less requests go over pooled upstream connections that the proxy reads and writes
//! itself: framing, keep-alive and reuse against a raw HTTP/1.1 upstream whose bytes the test
//! controls.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestProxy, client, get};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: answers each request head by its path, counting connections and requests.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<tokio::sync::Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&r)));
            }
        });
        Self {
            addr,
            connections,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<tokio::sync::Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    while let Some(head) = common::read_head(&mut stream, &mut buf).await {
        seen.lock().await.push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let reply: &[u8] = match path.as_str() {
            "/length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello",
            "/chunked" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
            }
            "/early-hints" => {
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            "/close-after" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            }
            "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nall of it",
            "/garbage" => b"SMTP ready\r\n\r\n",
            "/truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
            "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
            // Keep-alive answer, then the upstream drops the connection (an idle timeout).
            "/then-drop" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                return;
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
        if matches!(
            path.as_str(),
            "/close-after" | "/until-close" | "/garbage" | "/truncated"
        ) {
            return;
        }
    }
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = RawUpstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;
    for _ in 0..5 {
        let (status, headers, body) = get(&p.url("/length")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-up"], "1");
        assert_eq!(headers["content-length"], "5");
        assert_eq!(body, "hello");
    }
    assert_eq!(up.connections(), 1, "one pooled upstream connection");
    let first = up.requests.lock().await[0].clone();
    assert!(first.starts_with("GET /length HTTP/1.1\r\n"), "{first}");
    assert!(
        first.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{first}"
    );

    // `Connection: close` from the upstream: that connection is not reused.
    let (status, _, body) = get(&p.url("/close-after")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    let before = up.connections();
    let (status, _, _) = get(&p.url("/length")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.connections(), before + 1);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_not_used() {
    let up = RawUpstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;
    for round in 0..3 {
        let (status, _, body) = get(&p.url("/then-drop")).await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        assert_eq!(body, "ok");
        // Give the close a moment to arrive, then again without a pause (the retry path).
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(up.connections(), 3);
}

#[tokio::test]
async fn bodies_are_framed_as_the_upstream_sent_them() {
    let up = RawUpstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;

    let resp = client()
        .get(p.url("/chunked").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.to_bytes(), "hello world");

    let (status, _, body) = get(&p.url("/early-hints")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));

    let (status, _, body) = get(&p.url("/until-close")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"all of it"[..]));

    let (status, _, body) = get(&p.url("/no-content")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());

    // HEAD: the length is kept, no body is read or sent.
    let req = Request::builder()
        .method(Method::HEAD)
        .uri(p.url("/length"))
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "5");
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    // ... and the connection stays usable.
    let (status, _, body) = get(&p.url("/length")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
}

#[tokio::test]
async fn broken_upstream_answers_are_503_or_cut_off() {
    let up = RawUpstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;
    let (status, _, _) = get(&p.url("/garbage")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // A body shorter than its Content-Length: the client never sees a silently short body
    // (the response fails, in its head or in its body).
    let cut_off = match client().get(p.url("/truncated").parse().unwrap()).await {
        Err(_) => true,
        Ok(resp) => resp.into_body().collect().await.is_err(),
    };
    assert!(
        cut_off,
        "a truncated upstream body reached the client as complete"
    );

    // The proxy keeps serving.
    let (status, _, body) = get(&p.url("/length")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
}
