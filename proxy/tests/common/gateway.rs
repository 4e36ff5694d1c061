//! The real `stackhub-gateway` binary with the project venv's ipykernel, the hub's side of the
//! kernel-channel seam as the tests play it, a single-user server stand-in, and a kernel client.
// The handshake callback's error type is tungstenite's.
#![allow(clippy::expect_used, clippy::panic, clippy::result_large_err)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
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

use super::{TestProxy, client, free_port_pair};

pub const SITE: &str = "lumi";
pub const HUB_ALICE: &str = "hub-token-alice";
pub const GW_ALICE: &str = "gateway-token-alice";
pub const GW_BOB: &str = "gateway-token-bob";
pub const V1: &str = "v1.kernel.websocket.jupyter.org";
/// The single-user server's OAuth cookie holding `hub-token-alice`, as tornado signs it (the
/// proxy reads the token and leaves the signature to the server that made it).
pub const ALICE_COOKIE: &str = "jupyterhub-user-alice=\"2|1:0|10:1795307516|21:jupyterhub-user-alice|20:aHViLXRva2VuLWFsaWNl|0a1b2c\"";

/// The hub's side of the seam as the test plays it: `hub-token-NAME` may use NAME's server at
/// `lumi` and is exchanged for alice's gateway token (bob's for anyone else); site `down`
/// cannot issue credentials.
#[derive(Debug, Default)]
pub struct TestAuth {
    pub calls: ArcSwap<Vec<(String, String)>>,
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
pub struct GatewayProc {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
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

pub fn gateway_binary() -> PathBuf {
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

pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("STACKHUB_VENV").map_or_else(
        || {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../.venv")
        },
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
    pub async fn start() -> Self {
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Start a kernel as the gateway user owning `gateway_token` (as the user's Lab in gateway
    /// mode does with the hub-issued credentials).
    pub async fn start_kernel(&self, gateway_token: &str) -> String {
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
pub struct SingleUser {
    pub addr: std::net::SocketAddr,
    seen: Arc<ArcSwap<Vec<String>>>,
}

impl SingleUser {
    pub async fn start() -> Self {
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

    pub fn seen(&self) -> Vec<String> {
        Vec::clone(&self.seen.load())
    }
}

/// A proxy with `auth`, routing `/user/NAME` to the stand-in with `kernel_gateway` data.
pub async fn proxy_with(auth: Option<Arc<TestAuth>>) -> TestProxy {
    let options = ProxyOptions {
        kernel_auth: auth.map(|a| a as Arc<dyn KernelChannelAuth>),
        ..ProxyOptions::default()
    };
    TestProxy::start_with(options, Some(super::TOKEN)).await
}

pub fn add_server_route(
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

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open `url` with optional `Authorization` and subprotocol; the handshake's result.
pub async fn open(url: &str, auth: Option<&str>, v1: bool) -> Result<Ws, WsError> {
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

pub fn channels_url(p: &TestProxy, user: &str, kernel: &str, query: &str) -> String {
    format!(
        "ws://{}/user/{user}/api/kernels/{kernel}/channels?{query}",
        p.public
    )
}

pub fn msg_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "msg-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

pub fn request(session: &str, msg_type: &str, content: Value) -> Value {
    json!({
        "header": {"msg_id": msg_id(), "msg_type": msg_type, "session": session,
                   "username": "alice", "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
    })
}

/// Execute `code` over a legacy (JSON) socket; the `text/plain` result, once reply and idle arrived.
pub async fn execute(ws: &mut Ws, session: &str, code: &str) -> Option<String> {
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
