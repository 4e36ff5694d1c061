//! HTTP and WebSocket traffic through the proxy to real upstream servers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, Upstream, client, get, ws_echo};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use proxy::ProxyOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn full_path_query_and_forwarded_headers_reach_upstream() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/user/alice", &up.url()).await;
    p.add_route("/user/alice/gpu", &format!("{}/base/", up.url()))
        .await;

    let (status, _, body) = get(&p.url("/user/alice/lab/tree?x=1&y=%20")).await;
    assert_eq!(status, StatusCode::OK);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/user/alice/lab/tree?x=1&y=%20");
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], p.public.port().to_string());
    // The client's Host is kept, as configurable-http-proxy does (jupyter_server checks it).
    assert_eq!(headers["host"], p.public.to_string());
    assert_eq!(headers["x-forwarded-host"], p.public.to_string());

    // The longer prefix wins and the target's path is prepended.
    let (_, _, body) = get(&p.url("/user/alice/gpu/api/kernels")).await;
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/base/user/alice/gpu/api/kernels");

    // Percent-encoded paths match decoded routes and are forwarded as sent.
    p.add_route("/user/b%20c", &up.url()).await;
    let (status, _, body) = get(&p.url("/user/b%20c/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["path"],
        "/user/b%20c/x"
    );
}

#[tokio::test]
async fn no_route_is_404_and_dead_upstream_is_503() {
    let p = TestProxy::start().await;
    let (status, headers, body) = get(&p.url("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(!body.is_empty() && body.len() < 512);

    // A port nobody listens on.
    let dead_addr = common::dead_addr();
    p.add_route("/user/gone", &format!("http://{dead_addr}"))
        .await;
    let (status, _, body) = get(&p.url("/user/gone/lab")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.is_empty() && body.len() < 512, "{body:?}");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains(&dead_addr.to_string()),
        "upstream address leaked: {text}"
    );

    let (status, _, body) = get(&p.url("/_chp_healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "OK"
    );
}

#[tokio::test]
async fn error_target_serves_error_pages() {
    let up = Upstream::start().await;
    let options = ProxyOptions {
        error_target: Some(format!("{}/hub/error", up.url())),
        ..ProxyOptions::default()
    };
    let p = TestProxy::start_with(options, Some(common::TOKEN)).await;
    let (status, _, body) = get(&p.url("/user/x/lab?a=b")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/hub/error/404?url=%2Fuser%2Fx%2Flab%3Fa%3Db");
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;

    let raw_cases: [&[u8]; 5] = [
        b"GET /bad%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
    ];
    for raw in raw_cases {
        let mut s = TcpStream::connect(p.public).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(
            head.starts_with("HTTP/1.1 4"),
            "{:?} -> {head}",
            String::from_utf8_lossy(raw)
        );
    }
    let (status, _, _) = get(&p.url("/still/fine")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_stream_in_both_directions() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;

    // 16 MiB download arrives intact.
    let (status, _, body) = get(&p.url("/big/16777216")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 16 << 20);
    assert!(body.iter().all(|&b| b == b'x'));

    // 16 MiB chunked upload arrives intact.
    let chunks = (0..256)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![7u8; 65536]))));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post(p.url("/upload")).body(body).unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = c.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["body_len"],
        16 << 20
    );

    // A response is passed on chunk by chunk: the first chunk reaches the client while the
    // upstream is still holding the rest back.
    let resp = client().get(p.url("/hold").parse().unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk was held back by the proxy")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "first");
    up.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
}

#[tokio::test]
async fn traffic_updates_last_activity() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/user/alice", &up.url()).await;
    let added = p.routes.get("/user/alice").unwrap().last_activity();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _, _) = get(&p.url("/user/alice/api/status")).await;
    assert_eq!(status, StatusCode::OK);
    let after_ok = p.routes.get("/user/alice").unwrap().last_activity();
    assert!(after_ok > added, "{after_ok} !> {added}");

    // Error answers do not count as activity.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _, _) = get(&p.url("/user/alice/status/404")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        p.routes.get("/user/alice").unwrap().last_activity(),
        after_ok
    );
}

#[tokio::test]
async fn websocket_messages_pass_both_ways() {
    let echo = ws_echo().await;
    let p = TestProxy::start().await;
    p.add_route("/user/alice", &format!("http://{echo}")).await;

    let url = format!(
        "ws://{}/user/alice/api/kernels/k1/channels?session_id=s",
        p.public
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let before = p.routes.get("/user/alice").unwrap().last_activity();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..50 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("msg {i}"))
        );
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data(), blob);
    assert!(p.routes.get("/user/alice").unwrap().last_activity() > before);
    ws.close(None).await.unwrap();

    // Two connections at once stay independent.
    let url = format!("ws://{}/user/alice/x", p.public);
    let (mut a, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    a.send(Message::text("a")).await.unwrap();
    b.send(Message::text("b")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap(), Message::text("b"));
    assert_eq!(a.next().await.unwrap().unwrap(), Message::text("a"));
}

#[tokio::test]
async fn refused_upgrade_and_dead_websocket_upstream() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    // A plain HTTP server does not switch protocols: its answer comes back as is.
    p.add_route("/plain", &up.url()).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/plain/status/403", p.public))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("unexpected {other:?}"),
    }
    let dead_addr = common::dead_addr();
    p.add_route("/dead", &format!("http://{dead_addr}")).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/dead/ws", p.public))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 503),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn http2_clients_are_served() {
    let up = Upstream::start().await;
    let p = TestProxy::start().await;
    p.add_route("/", &up.url()).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = h2.get(p.url("/over/h2").parse().unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/over/h2");
    assert_eq!(seen["headers"]["host"], p.public.to_string());
}

/// An in-process upstream that answers with what it was handed.
#[derive(Debug)]
struct Echo;

impl proxy::LocalUpstream for Echo {
    fn call(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> futures_util::future::BoxFuture<'static, http::Response<proxy::LocalBody>> {
        Box::pin(async move {
            let seen = serde_json::json!({
                "path": req.uri().to_string(),
                "forwarded_for": req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()),
                "has_connection_header": req.headers().contains_key(http::header::CONNECTION),
                "body": String::from_utf8_lossy(&req.into_body().collect().await.expect("request body").to_bytes()),
            });
            http::Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(
                    Full::new(Bytes::from(seen.to_string()))
                        .map_err(proxy::BoxError::from)
                        .boxed_unsync(),
                )
                .expect("a valid response")
        })
    }
}

#[tokio::test]
async fn an_in_process_upstream_gets_its_routes_without_a_socket() {
    // Nothing listens on the local target's address: only the in-process path can answer.
    let nobody = "127.0.0.1:9";
    let options = ProxyOptions {
        local: Some(proxy::LocalTarget {
            authority: nobody.to_owned(),
            upstream: std::sync::Arc::new(Echo),
        }),
        ..ProxyOptions::default()
    };
    let p = TestProxy::start_with(options, Some(common::TOKEN)).await;
    let up = Upstream::start().await;
    p.add_route("/", &format!("http://{nobody}")).await;
    p.add_route("/user/alice", &up.url()).await;

    let resp = client()
        .request(
            Request::post(p.url("/hub/api/users?x=1"))
                .header("connection", "keep-alive")
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let seen: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["path"], "/hub/api/users?x=1");
    assert_eq!(seen["forwarded_for"], "127.0.0.1");
    assert_eq!(
        seen["has_connection_header"], false,
        "hop-by-hop headers stripped"
    );
    assert_eq!(seen["body"], "payload");

    // Other routes still go over the network.
    let (status, _, body) = get(&p.url("/user/alice/lab")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["path"],
        "/user/alice/lab"
    );
}
