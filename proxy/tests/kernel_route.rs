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

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, client, dead_addr, free_port_pair};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use proxy::{KernelAuthError, KernelChannelAuth, ProxyOptions};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SITE: &str = "lumi";
const HUB_ALICE: &str = "hub-token-alice";
const GW_ALICE: &str = "gateway-token-alice";
const GW_BOB: &str = "gateway-token-bob";
const V1: &str = "v1.kernel.websocket.jupyter.org";
/// The single-user server's OAuth cookie holding `hub-token-alice`, as tornado signs it (the
/// proxy reads the token and leaves the signature to the server that made it).
const ALICE_COOKIE: &str = "jupyterhub-user-alice=\"2|1:0|10:1795307516|21:jupyterhub-user-alice|20:aHViLXRva2VuLWFsaWNl|0a1b2c\"";

/// The hub's side of the seam as the test plays it: `hub-token-NAME` may use NAME's server at
/// `lumi` and is exchanged for alice's gateway token (bob's for anyone else); site `down`
/// cannot issue credentials.
#[derive(Debug, Default)]
struct TestAuth {
    calls: ArcSwap<Vec<(String, String)>>,
}

impl KernelChannelAuth for TestAuth {
    fn authorize<'a>(
        &'a self,
        user: &'a str,
        server: &'a str,
        site: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<HeaderValue>, KernelAuthError>> {
        Box::pin(async move {
            self.calls.rcu(|calls| {
                let mut calls = Vec::clone(calls);
                calls.push((user.to_owned(), site.to_owned()));
                calls
            });
            if site == "down" {
                return Err(KernelAuthError::new("credential issuer unreachable"));
            }
            let allowed = site == SITE && server.is_empty() && token == format!("hub-token-{user}");
            let credential = if user == "alice" { GW_ALICE } else { GW_BOB };
            Ok(allowed.then(|| HeaderValue::from_str(&format!("token {credential}")).unwrap()))
        })
    }
}

/// The real `stackhub-gateway` binary, stopped with SIGTERM (it stops its kernels) when dropped.
struct GatewayProc {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    dir: PathBuf,
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_binary() -> PathBuf {
    // Test executables live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("stackhub-gateway");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p kernel-gateway`; scripts/test builds the workspace)",
        bin.display()
    );
    bin
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("STACKHUB_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python3");
    assert!(
        python.exists(),
        "no Python venv with ipykernel at {} (set STACKHUB_VENV); run scripts/test, which creates it",
        venv.display()
    );
    python
}

impl GatewayProc {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stackhub-kroute-{}-{}",
            std::process::id(),
            free_port_pair().0
        ));
        let specs = dir.join("kernels/python3");
        std::fs::create_dir_all(&specs).unwrap();
        let spec = json!({
            "argv": [venv_python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python",
        });
        std::fs::write(specs.join("kernel.json"), spec.to_string()).unwrap();
        let config = format!(
            "kernelspec_dirs = [{kernels:?}]\n\
             [[users]]\nname = \"alice\"\ntoken = \"{GW_ALICE}\"\n\
             [[users]]\nname = \"bob\"\ntoken = \"{GW_BOB}\"\n",
            kernels = dir.join("kernels").display().to_string(),
        );
        std::fs::write(dir.join("gateway.toml"), config).unwrap();
        let port = free_port_pair().0;
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let child = std::process::Command::new(gateway_binary())
            .arg("--config")
            .arg(dir.join("gateway.toml"))
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Self {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            dir,
        };
        for _ in 0..300 {
            assert!(
                gw.child.try_wait().unwrap().is_none(),
                "stackhub-gateway exited: {}",
                gw.log()
            );
            if TcpStream::connect(gw.addr).await.is_ok() {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stackhub-gateway did not listen within 15 s: {}", gw.log());
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Start a kernel as the gateway user owning `gateway_token` (as the user's Lab in gateway
    /// mode does with the hub-issued credentials).
    async fn start_kernel(&self, gateway_token: &str) -> String {
        let req = Request::post(format!("{}/api/kernels", self.url()))
            .header("authorization", format!("token {gateway_token}"))
            .body(Full::new(Bytes::from(r#"{"name":"python3"}"#)))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        body["id"].as_str().unwrap().to_owned()
    }
}

/// The single-user server stand-in: a WebSocket server that records each request's path and
/// greets every connection with `relayed`, then echoes.
#[derive(Clone)]
struct SingleUser {
    addr: std::net::SocketAddr,
    seen: Arc<ArcSwap<Vec<String>>>,
}

impl SingleUser {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let callback = |req: &WsRequest, resp: WsResponse| {
                        record.rcu(|seen| {
                            let mut seen = Vec::clone(seen);
                            seen.push(req.uri().to_string());
                            seen
                        });
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    let _ = ws.send(Message::text("relayed")).await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        Vec::clone(&self.seen.load())
    }
}

/// A proxy with `auth`, routing `/user/NAME` to the stand-in with `kernel_gateway` data.
async fn proxy_with(auth: Option<Arc<TestAuth>>) -> TestProxy {
    let options = ProxyOptions {
        kernel_auth: auth.map(|a| a as Arc<dyn KernelChannelAuth>),
        ..ProxyOptions::default()
    };
    TestProxy::start_with(options, Some(common::TOKEN)).await
}

fn add_server_route(
    p: &TestProxy,
    user: &str,
    single_user: &SingleUser,
    gateway_url: &str,
    site: &str,
) {
    let mut data = Map::new();
    data.insert(
        "target".into(),
        format!("http://{}", single_user.addr).into(),
    );
    data.insert("user".into(), user.into());
    data.insert(
        "kernel_gateway".into(),
        json!({"url": gateway_url, "site": site, "user": user, "server": "",
               "cookie": format!("jupyterhub-user-{user}")}),
    );
    p.routes.add(&format!("/user/{user}/"), data).unwrap();
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open `url` with optional `Authorization` and subprotocol; the handshake's result.
async fn open(url: &str, auth: Option<&str>, v1: bool) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    if v1 {
        req.headers_mut()
            .insert("sec-websocket-protocol", V1.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn channels_url(p: &TestProxy, user: &str, kernel: &str, query: &str) -> String {
    format!(
        "ws://{}/user/{user}/api/kernels/{kernel}/channels?{query}",
        p.public
    )
}

fn msg_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "msg-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn request(session: &str, msg_type: &str, content: Value) -> Value {
    json!({
        "header": {"msg_id": msg_id(), "msg_type": msg_type, "session": session,
                   "username": "alice", "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
    })
}

/// Execute `code` over a legacy (JSON) socket; the `text/plain` result, once reply and idle arrived.
async fn execute(ws: &mut Ws, session: &str, code: &str) -> Option<String> {
    let msg = request(
        session,
        "execute_request",
        json!({"code": code, "silent": false}),
    );
    let id = msg["header"]["msg_id"].clone();
    ws.send(Message::text(msg.to_string())).await.unwrap();
    let (mut result, mut replied, mut idle) = (None, false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(replied && idle) {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("kernel reply within 30 s")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let m: Value = serde_json::from_str(text.as_str()).unwrap();
        if m["parent_header"]["msg_id"] != id {
            continue;
        }
        match m["header"]["msg_type"].as_str().unwrap_or_default() {
            "execute_result" => {
                result = m["content"]["data"]["text/plain"]
                    .as_str()
                    .map(str::to_owned)
            }
            "execute_reply" => {
                assert_eq!(m["content"]["status"], "ok", "{m}");
                replied = true;
            }
            "status" => idle |= m["content"]["execution_state"] == "idle",
            _ => {}
        }
    }
    result
}

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
