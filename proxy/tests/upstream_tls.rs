//! https upstreams: GET/HEAD over the direct HTTP/1 path, streamed bodies over the pooled client,
//! WebSocket tunnels, certificate checks (an untrusted upstream is a 503) and the client
//! certificate of `--client-ssl-*`, against real TLS servers with certificates made in the test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::pki::Pki;
use common::{TOKEN, TestProxy, Upstream, get, ws_echo_tls};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use proxy::ProxyOptions;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A proxy trusting `pki`'s CA (besides the system roots), presenting its client certificate
/// when `client_cert`.
async fn proxy_trusting(pki: &Pki, client_cert: bool) -> TestProxy {
    let options = ProxyOptions {
        upstream_tls: pki.upstream_tls(client_cert),
        ..ProxyOptions::default()
    };
    TestProxy::start_with(options, Some(TOKEN)).await
}

/// POST `chunks` x 64 KiB to `url` on the proxy, streamed one chunk at a time; status and body.
async fn post_streamed(p: &TestProxy, path: &str, chunks: usize) -> (StatusCode, Bytes) {
    let tcp = TcpStream::connect(p.public).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        for _ in 0..chunks {
            let chunk = Frame::data(Bytes::from(vec![b'p'; 64 * 1024]));
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let req = Request::post(path)
        .header("host", p.public.to_string())
        .body(body)
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn ws_status(url: &str) -> StatusCode {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(resp)) => resp.status(),
        Ok(_) => StatusCode::SWITCHING_PROTOCOLS,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn https_target_get_head_and_streamed_post() {
    let pki = Pki::new("get");
    let up = Upstream::start_tls(pki.server()).await;
    let p = proxy_trusting(&pki, false).await;
    p.add_route("/tls", &up.url()).await;

    // Body-less GETs take the direct HTTP/1 path, over one pooled TLS connection.
    for i in 0..3 {
        let (status, _, body) = get(&p.url(&format!("/tls/hello?i={i}"))).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let seen: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["path"], format!("/tls/hello?i={i}"));
        assert_eq!(seen["headers"]["host"], p.public.to_string());
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    }
    assert_eq!(up.connections(), 1, "GETs did not reuse the TLS connection");

    // A streamed 1 MiB answer (`/big/N` on the upstream).
    p.add_route("/big", &up.url()).await;
    let (status, _, body) = get(&p.url("/big/1048576")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 1_048_576);
    assert!(body.iter().all(|b| *b == b'x'));

    let head = Request::head(p.url("/tls/hello"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(head).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A request with a body goes through the pooled client, streamed, over TLS too.
    let (status, body) = post_streamed(&p, "/tls/upload", 16).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/tls/upload");
    assert_eq!(seen["body_len"], 16 * 64 * 1024);

    // A DNS name: the certificate is checked against `localhost`, the name sent by SNI.
    p.add_route(
        "/byname",
        &format!("https://localhost:{}/base", up.addr.port()),
    )
    .await;
    let (status, _, body) = get(&p.url("/byname/x")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/base/byname/x");
}

#[tokio::test]
async fn websocket_echo_through_an_https_target() {
    let pki = Pki::new("ws");
    let echo = ws_echo_tls(pki.server()).await;
    let p = proxy_trusting(&pki, false).await;
    p.add_route("/wss", &format!("wss://{echo}")).await;
    p.add_route("/https", &format!("https://{echo}")).await;
    for prefix in ["/wss", "/https"] {
        let url = format!("ws://{}{prefix}/socket", p.public);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text("over tls")).await.unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        for expected in [Message::text("over tls"), Message::binary(big)] {
            let got = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            assert_eq!(got.unwrap().unwrap().unwrap(), expected);
        }
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn untrusted_upstream_certificates_are_503() {
    let pki = Pki::new("rogue");
    let rogue = Upstream::start_tls(pki.rogue_server()).await;
    let rogue_echo = ws_echo_tls(pki.rogue_server()).await;
    let p = proxy_trusting(&pki, false).await;
    p.add_route("/rogue", &rogue.url()).await;
    p.add_route("/rogue-ws", &format!("wss://{rogue_echo}"))
        .await;

    let (status, _, body) = get(&p.url("/rogue/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert!(
        body.len() < 512 && text.contains("not responding"),
        "{text}"
    );
    assert!(!text.contains(&rogue.addr.to_string()), "{text}");
    let (status, _) = post_streamed(&p, "/rogue/upload", 2).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let ws = ws_status(&format!("ws://{}/rogue-ws/socket", p.public)).await;
    assert_eq!(ws, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        rogue.connections(),
        0,
        "a handshake with the rogue succeeded"
    );

    // The private CA is not trusted by default: only the system roots are.
    let good = Upstream::start_tls(pki.server()).await;
    let default = TestProxy::start().await;
    default.add_route("/private", &good.url()).await;
    let (status, _, _) = get(&default.url("/private/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Plain HTTP to a TLS port is a 503 too, and the proxy keeps serving.
    p.add_route("/mismatch", &format!("http://{}", good.addr))
        .await;
    let (status, _, _) = get(&p.url("/mismatch/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = get(&p.url("/_chp_healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn client_certificate_for_upstreams_that_ask() {
    let pki = Pki::new("mtls");
    let up = Upstream::start_tls(pki.mtls_server()).await;
    let with_cert = proxy_trusting(&pki, true).await;
    with_cert.add_route("/m", &up.url()).await;
    let (status, _, body) = get(&with_cert.url("/m/get")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, body) = post_streamed(&with_cert, "/m/post", 3).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");

    let without = proxy_trusting(&pki, false).await;
    without.add_route("/m", &up.url()).await;
    let (status, _, _) = get(&without.url("/m/get")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The flags JupyterHub's `internal_ssl` passes, on the real binary, with an https default
/// target that asks for a client certificate.
#[tokio::test]
async fn client_ssl_flags_on_the_command_line() {
    let pki = Pki::new("cli");
    let up = Upstream::start_tls(pki.mtls_server()).await;
    let (port, api_port) = common::free_port_pair();
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
        .args(["--default-target", &up.url()])
        .arg("--client-ssl-key")
        .arg(&pki.client_key)
        .arg("--client-ssl-cert")
        .arg(&pki.client_cert)
        .arg("--client-ssl-ca")
        .arg(&pki.ca)
        .args([
            "--client-ssl-request-cert",
            "--client-ssl-reject-unauthorized",
        ])
        .env("CONFIGPROXY_AUTH_TOKEN", "t")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/via/cli");
    let mut answer = None;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            answer = Some(get(&url).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = answer.expect("stackhub-proxy did not listen");
    assert_eq!(status, StatusCode::OK, "{body:?}");

    // Bad values: each a usage error naming the file.
    let usage_error = |args: Vec<std::ffi::OsString>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
            .args(["--port", "0"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = usage_error(vec!["--client-ssl-ca".into(), "/nonexistent/ca.pem".into()]).await;
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let err = usage_error(vec![
        "--client-ssl-cert".into(),
        pki.client_cert.clone().into(),
        "--client-ssl-key".into(),
        pki.server_key.clone().into(),
    ])
    .await;
    let key = pki.server_key.display().to_string();
    assert!(err.contains(&key) && err.contains("does not fit"), "{err}");
    let err = usage_error(vec![
        "--client-ssl-ca".into(),
        pki.client_key.clone().into(),
    ])
    .await;
    assert!(err.contains("no certificate found"), "{err}");
    assert!(
        !err.contains("PRIVATE KEY"),
        "key material in an error: {err}"
    );
}

/// A TLS WebSocket upstream that leaves Nagle on and answers every message with three frames,
/// each its own write (as jupyter_server sends a kernel reply).
async fn three_frame_upstream(acceptor: tokio_rustls::TlsAcceptor) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                stream.set_nodelay(false).unwrap();
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if !msg.is_text() {
                        continue;
                    }
                    for part in ["status: busy", "execute_result", "status: idle"] {
                        if ws.send(Message::text(part)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Through a `wss` target the multi-frame reply is not held back by Nagle's algorithm waiting
/// for a delayed ACK (~40 ms each): the proxy acknowledges promptly on the TCP socket under TLS.
#[tokio::test]
async fn multi_frame_replies_over_tls_do_not_stall() {
    let pki = Pki::new("nagle");
    let upstream = three_frame_upstream(pki.server()).await;
    let p = proxy_trusting(&pki, false).await;
    p.add_route("/k", &format!("wss://{upstream}")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/k/channels", p.public))
        .await
        .unwrap();
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let start = std::time::Instant::now();
        ws.send(Message::text("execute")).await.unwrap();
        for _ in 0..3 {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            assert!(frame.unwrap().unwrap().unwrap().is_text());
        }
        rounds.push(start.elapsed());
    }
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median round trip {median:?} (all: {rounds:?})"
    );
}
