//! The direct kernel route: a remote-kernels server's kernel WebSocket goes from the proxy
//! straight to the real `stackhub-gateway` binary (per-user tokens, the project venv's ipykernel),
//! never reaching the single-user server; everything the direct route must not or cannot take
//! is relayed to the single-user server (here a real WebSocket server that records what it gets).
// The handshake callback's error type is tungstenite's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::dead_addr;
use common::gateway::{
    ALICE_COOKIE, GW_ALICE, GW_BOB, GatewayProc, HUB_ALICE, SITE, SingleUser, TestAuth,
    add_server_route, channels_url, execute, msg_id, open, proxy_with, request,
};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A v1 frame: offset table, channel, four JSON parts, buffers.
fn encode_v1(channel: &str, msg: &Value, buffers: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = vec![channel.as_bytes().to_vec()];
    for key in ["header", "parent_header", "metadata", "content"] {
        parts.push(msg[key].to_string().into_bytes());
    }
    parts.extend(buffers.iter().cloned());
    let n = parts.len() + 1;
    let mut offsets = vec![8 * (n + 1)];
    for p in &parts {
        offsets.push(offsets.last().unwrap() + p.len());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for o in offsets {
        out.extend_from_slice(&(o as u64).to_le_bytes());
    }
    for p in parts {
        out.extend_from_slice(&p);
    }
    out
}

/// Channel, header, content and buffers of a v1 frame.
fn decode_v1(frame: &[u8]) -> (String, Value, Value, Vec<Vec<u8>>) {
    let u = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap()) as usize;
    let n = u(0);
    let offsets: Vec<usize> = (0..n).map(|i| u(8 * (i + 1))).collect();
    let parts: Vec<&[u8]> = offsets.windows(2).map(|w| &frame[w[0]..w[1]]).collect();
    let json = |p: &[u8]| serde_json::from_slice::<Value>(p).unwrap();
    (
        String::from_utf8(parts[0].to_vec()).unwrap(),
        json(parts[1]),
        json(parts[4]),
        parts[5..].iter().map(|b| b.to_vec()).collect(),
    )
}

const ECHO_COMM: &str = "\
def _echo_target(comm, open_msg):
    @comm.on_msg
    def _recv(msg):
        comm.send({'echo': True}, buffers=msg['buffers'])
get_ipython().kernel.comm_manager.register_target('echo', _echo_target)
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_channels_go_straight_to_the_site_gateway() {
    let gw = GatewayProc::start().await;
    let single_user = SingleUser::start().await;
    let auth = Arc::new(TestAuth::default());
    let p = proxy_with(Some(Arc::clone(&auth))).await;
    add_server_route(&p, "alice", &single_user, &gw.url(), SITE);
    let kernel = gw.start_kernel(GW_ALICE).await;
    let route = p.routes.get("/user/alice").unwrap();
    let before = route.last_activity();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Legacy JSON protocol, hub token in the header: `1+1` runs at the gateway's kernel.
    let url = channels_url(&p, "alice", &kernel, "session_id=direct-legacy");
    let mut ws = open(&url, Some(&format!("token {HUB_ALICE}")), false)
        .await
        .unwrap();
    assert_eq!(
        execute(&mut ws, "direct-legacy", "1+1").await.as_deref(),
        Some("2")
    );
    assert!(execute(&mut ws, "direct-legacy", ECHO_COMM).await.is_none());
    assert!(route.last_activity() > before, "traffic counts as activity");

    // v1 binary protocol, hub token in the query: a comm message's binary buffers round-trip.
    let url = channels_url(
        &p,
        "alice",
        &kernel,
        &format!("session_id=direct-v1&token={HUB_ALICE}"),
    );
    let mut v1 = open(&url, None, true).await.unwrap();
    let comm_id = msg_id();
    let open_msg = request(
        "direct-v1",
        "comm_open",
        json!({"comm_id": comm_id, "target_name": "echo", "data": {}}),
    );
    v1.send(Message::binary(encode_v1("shell", &open_msg, &[])))
        .await
        .unwrap();
    let buffers = vec![
        b"\x00\x01\x02\xff".to_vec(),
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    ];
    let comm_msg = request(
        "direct-v1",
        "comm_msg",
        json!({"comm_id": comm_id, "data": {}}),
    );
    v1.send(Message::binary(encode_v1("shell", &comm_msg, &buffers)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline, v1.next())
            .await
            .expect("comm echo within 30 s")
            .unwrap()
            .unwrap();
        let Message::Binary(frame) = frame else {
            panic!("a v1 socket carries binary frames only, got {frame:?}")
        };
        let (channel, header, content, got) = decode_v1(&frame);
        if header["msg_type"] == "comm_msg" && content["data"]["echo"] == true {
            assert_eq!(channel, "iopub");
            assert_eq!(got, buffers, "binary buffers intact");
            break;
        }
    }

    // JupyterLab in a browser: only the server's OAuth cookie, and an Origin of this host.
    let url = channels_url(&p, "alice", &kernel, "session_id=direct-cookie");
    let mut req = url.into_client_request().unwrap();
    let origin = format!("http://{}", p.public);
    req.headers_mut().insert(
        "cookie",
        format!("_xsrf=x; {ALICE_COOKIE}").parse().unwrap(),
    );
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        execute(&mut ws, "direct-cookie", "2+3").await.as_deref(),
        Some("5")
    );

    // None of it went through the single-user server; the gateway saw every socket as alice's.
    assert!(single_user.seen().is_empty(), "{:?}", single_user.seen());
    assert_eq!(auth.calls.load().len(), 3);
    assert!(
        auth.calls
            .load()
            .iter()
            .all(|(u, s)| u == "alice" && s == SITE)
    );
    let log = gw.log();
    for session in ["direct-legacy", "direct-v1", "direct-cookie"] {
        assert!(
            log.lines().any(|l| l.contains("client connected")
                && l.contains(&format!("session_id={session}"))
                && l.contains("user=alice")),
            "gateway log lacks {session}:\n{log}"
        );
    }
    assert!(
        !log.contains(HUB_ALICE),
        "the hub token reached the gateway"
    );
}

/// The stand-in's greeting on a relayed socket.
async fn expect_relayed(url: &str, auth: Option<&str>) {
    let mut ws = open(url, auth, false).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("greeting")
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::text("relayed"), "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_fallbacks() {
    let gw = GatewayProc::start().await;
    let single_user = SingleUser::start().await;
    let auth = Arc::new(TestAuth::default());
    let p = proxy_with(Some(Arc::clone(&auth))).await;
    add_server_route(&p, "alice", &single_user, &gw.url(), SITE);
    let alice_kernel = gw.start_kernel(GW_ALICE).await;
    let bob_kernel = gw.start_kernel(GW_BOB).await;
    let alice_auth = format!("token {HUB_ALICE}");

    // A wrong hub token: 403 JSON from the proxy, without the token in it.
    let url = channels_url(&p, "alice", &alice_kernel, "session_id=s");
    match open(&url, Some("Bearer not-alices-token"), false).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["status"], 403);
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("alice"), "{message}");
            assert!(!body.to_string().contains("not-alices-token"));
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // Bob's kernel through alice's server: alice's gateway credentials do not reach it.
    let url = channels_url(&p, "alice", &bob_kernel, "session_id=s");
    match open(&url, Some(&alice_auth), false).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::NOT_FOUND),
        other => panic!("expected 404 from the gateway, got {:?}", other.map(|_| ())),
    }
    assert!(single_user.seen().is_empty(), "{:?}", single_user.seen());

    // No token (a browser with only its cookie): relayed, query and path untouched.
    let url = channels_url(&p, "alice", &alice_kernel, "session_id=cookie");
    expect_relayed(&url, None).await;
    // Not the channels path, or not a kernel id: relayed.
    expect_relayed(
        &format!("ws://{}/user/alice/terminals/websocket/1", p.public),
        Some(&alice_auth),
    )
    .await;
    expect_relayed(
        &channels_url(&p, "alice", "not-a-kernel", ""),
        Some(&alice_auth),
    )
    .await;
    // A cross-origin page: relayed (the single-user server applies its own Origin policy).
    let mut req = channels_url(&p, "alice", &alice_kernel, "session_id=xo")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", alice_auth.parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("relayed"));
    // The cookie sent by a page of another site: relayed, never used by the proxy.
    let calls = auth.calls.load().len();
    let mut req = channels_url(&p, "alice", &alice_kernel, "session_id=xo-cookie")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", ALICE_COOKIE.parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("relayed"));
    assert_eq!(
        auth.calls.load().len(),
        calls,
        "a cross-origin cookie was tried"
    );

    // The gateway down: relayed.
    add_server_route(
        &p,
        "carol",
        &single_user,
        &format!("http://{}", dead_addr()),
        SITE,
    );
    expect_relayed(
        &channels_url(&p, "carol", &alice_kernel, "session_id=down"),
        Some("token hub-token-carol"),
    )
    .await;
    // The authoriser cannot decide: relayed.
    add_server_route(&p, "dave", &single_user, &gw.url(), "down");
    expect_relayed(
        &channels_url(&p, "dave", &alice_kernel, "session_id=noauth"),
        Some(&alice_auth),
    )
    .await;
    // The route is not a remote-kernels one: relayed without asking the authoriser.
    let calls = auth.calls.load().len();
    p.add_route("/user/erin", &format!("http://{}", single_user.addr))
        .await;
    expect_relayed(
        &channels_url(&p, "erin", &alice_kernel, "session_id=plain"),
        Some(&alice_auth),
    )
    .await;
    assert_eq!(auth.calls.load().len(), calls);

    let seen = single_user.seen();
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(
        seen[0],
        format!("/user/alice/api/kernels/{alice_kernel}/channels?session_id=cookie")
    );

    // Without an authoriser (standalone stackhub-proxy) the relay is all there is.
    let plain = proxy_with(None).await;
    add_server_route(&plain, "alice", &single_user, &gw.url(), SITE);
    expect_relayed(
        &channels_url(&plain, "alice", &alice_kernel, "session_id=p"),
        Some(&alice_auth),
    )
    .await;
    assert!(!gw.log().contains(HUB_ALICE));
}
