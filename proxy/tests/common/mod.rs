//! Test harness: the proxy in-process on 127.0.0.1:0, and real upstream servers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod gateway;
pub mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{Api, Proxy, ProxyOptions, RouteTable};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-secret-token";

/// A running proxy with its API; stops when dropped.
pub struct TestProxy {
    pub public: SocketAddr,
    pub api: SocketAddr,
    pub routes: Arc<RouteTable>,
    stop: CancellationToken,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestProxy {
    pub async fn start() -> Self {
        Self::start_with(ProxyOptions::default(), Some(TOKEN)).await
    }

    pub async fn start_with(options: ProxyOptions, token: Option<&str>) -> Self {
        let routes = Arc::new(RouteTable::new());
        let proxy = Arc::new(Proxy::new(Arc::clone(&routes), options).unwrap());
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, api_addr) = (public.local_addr().unwrap(), api.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(proxy::serve(
            public,
            proxy,
            None,
            stop.clone().cancelled_owned(),
        ));
        tokio::spawn(proxy::serve_api(
            api,
            Api::new(Arc::clone(&routes), token.map(str::to_owned)),
            None,
            stop.clone().cancelled_owned(),
        ));
        Self {
            public: public_addr,
            api: api_addr,
            routes,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// Add a route through the REST API (as the hub does).
    pub async fn add_route(&self, path: &str, target: &str) {
        let (status, _) = api_call(
            self.api,
            "POST",
            &format!("/api/routes{path}"),
            Some(TOKEN),
            Some(json!({ "target": target }).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
}

/// One request to the API listener; returns status and body text.
pub async fn api_call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{api}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("token {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Read the next request (or response) head from a raw connection, keeping what follows it in
/// `buf`; `None` when the connection ends first.
pub async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8(buf.drain(..end + 4).collect()).unwrap());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub async fn get(url: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = client().get(url.parse().unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// An upstream HTTP server. Routes:
/// - anything: 200 JSON `{method, path, headers, body_len}` (the request body is read fully)
/// - `/big/<n>`: n bytes of `x`, streamed in 64 KiB chunks
/// - `/hold`: sends "first" at once, then waits for `release` before sending "last"
/// - `.../status/<code>`: answers with that status
pub struct Upstream {
    pub addr: SocketAddr,
    pub release: Arc<Notify>,
    /// Connections accepted (TLS: handshakes completed).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    tls: bool,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same server behind TLS (`https://` URLs).
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (rel, st, count) = (Arc::clone(&release), stop.clone(), Arc::clone(&connections));
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = st.cancelled() => break,
                    r = listener.accept() => r.unwrap(),
                };
                let rel = Arc::clone(&rel);
                let count = Arc::clone(&count);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| upstream_handle(req, Arc::clone(&rel)));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            release,
            connections,
            tls: is_tls,
            stop,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_handle(
    req: Request<Incoming>,
    release: Arc<Notify>,
) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap();
        let chunks = (0..n.div_ceil(65536)).map(move |i| {
            let len = (n - i * 65536).min(65536);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len])))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if path == "/hold" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await;
            release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"last")))).await;
        });
        let stream = tokio_stream_from(rx);
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if let Some((_, code)) = path.split_once("/status/") {
        let mut resp = Response::new(full("status"));
        *resp.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Ok(resp);
    }
    let method = req.method().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_owned()),
            )
        })
        .collect();
    let mut body = req.into_body();
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map(|f| f.into_data()) {
            body_len += data.map(|d| d.len()).unwrap_or(0);
        }
    }
    let reply = json!({"method": method, "path": pq, "headers": headers, "body_len": body_len});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(full(reply.to_string()))
        .unwrap())
}

fn full(s: impl Into<Bytes>) -> UpBody {
    BodyExt::boxed(Full::new(s.into()))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A WebSocket echo upstream (every text/binary message is sent back). Returns its address.
pub async fn ws_echo() -> SocketAddr {
    ws_echo_with(None).await
}

/// A WebSocket echo upstream behind TLS (`wss://` or `https://` targets).
pub async fn ws_echo_tls(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    ws_echo_with(Some(acceptor)).await
}

async fn ws_echo_with(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => echo(stream).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            echo(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn echo<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            if ws.send(msg).await.is_err() {
                break;
            }
        } else if msg.is_close() {
            break;
        }
    }
}

/// An address where nothing listens (a port bound and released).
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Two distinct free ports in 10000..20000 for a child process to bind: outside the ephemeral
/// range, where every `bind(0)` of the tests running beside this one lands, and below the kernel
/// gateway's kernel port range (20000..32000). A port from `bind(0)`, once released, could be
/// handed to another test before the child binds it.
pub fn free_port_pair() -> (u16, u16) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    let mut free = (0..10_000u32)
        .map(|i| 10_000 + u16::try_from(seed.wrapping_add(i.wrapping_mul(7919)) % 10_000).unwrap())
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
    let first = free.next().expect("no free port in 10000..20000");
    let second = free.find(|p| *p != first).expect("no second free port");
    (first, second)
}
