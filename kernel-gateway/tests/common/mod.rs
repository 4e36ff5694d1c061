//! Test harness: a gateway on 127.0.0.1:0 with kernelspecs pointing at the project venv's ipykernel,
//! a small HTTP client and a kernel WebSocket client.
// Helpers panic on failure by design (they are test code outside `#[test]` fns).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kernel_gateway::config::UserToken;
use kernel_gateway::{Config, KernelManager, LocalLauncher};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
pub const BAD_GUY: &str = "bad-guy-token";

/// The project venv (env `STACKHUB_VENV`, default `<workspace>/.venv`); panics if unusable.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("STACKHUB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../.venv")
        });
    let python = venv.join("bin/python3");
    let ok = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import ipykernel"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Python venv with ipykernel at {} (set STACKHUB_VENV); run `scripts/test`, which creates it",
        venv.display()
    );
    python
}

fn write_spec(root: &std::path::Path, name: &str, spec: Value) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kernel.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
}

/// A kernelspec directory with `python3`, `python3-msg` (interrupt by message),
/// `authorization_test` (EG's itest spec) and `broken` (exits at once).
pub fn kernelspecs() -> PathBuf {
    let python = venv_python();
    let python = python.to_string_lossy();
    let root = std::env::temp_dir().join(format!(
        "stackhub-gw-specs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let argv = json!([
        python,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}"
    ]);
    write_spec(
        &root,
        "python3",
        json!({"argv": argv, "display_name": "Python 3", "language": "python",
        "metadata": {"debugger": true}}),
    );
    std::fs::write(root.join("python3/logo-64x64.png"), b"\x89PNG fake").unwrap();
    write_spec(
        &root,
        "python3-msg",
        json!({"argv": argv, "display_name": "Python 3 (message interrupt)",
        "language": "python", "interrupt_mode": "message"}),
    );
    write_spec(
        &root,
        "authorization_test",
        json!({"argv": argv, "display_name": "Authorization test",
        "language": "python", "metadata": {"process_proxy": {
            "class_name": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy",
            "config": {"authorized_users": "bob,alice,bad_guy", "unauthorized_users": "bad_guy"}}}}),
    );
    write_spec(
        &root,
        "broken",
        json!({"argv": [python, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
        "display_name": "Broken", "language": "python"}),
    );
    root
}

pub fn config() -> Config {
    Config {
        port: 0,
        kernelspec_dirs: vec![kernelspecs()],
        users: ["alice", "bob", "bad_guy"]
            .iter()
            .zip([ALICE, BOB, BAD_GUY])
            .map(|(name, token)| UserToken {
                name: (*name).to_owned(),
                token: Some(token.into()),
                token_sha256: None,
                roles: Vec::new(),
            })
            .collect(),
        ..Config::default()
    }
}

pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub manager: Arc<KernelManager>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start(config: Config) -> Self {
        let runtime_dir =
            std::env::temp_dir().join(format!("stackhub-gw-run-{}", uuid::Uuid::new_v4().simple()));
        let launcher = Arc::new(LocalLauncher::new(runtime_dir, "127.0.0.1"));
        Self::start_with(config, launcher).await
    }

    /// A gateway launching through `launcher`, re-attaching what it recovers (as `main` does).
    pub async fn start_with(config: Config, launcher: Arc<dyn kernel_gateway::Launcher>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let manager = Arc::new(KernelManager::new(config, launcher, |k| {
            std::env::var(k).ok()
        }));
        manager.recover().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kernel_gateway::serve(
            listener,
            manager.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Gateway {
            addr,
            manager,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    /// One HTTP request; returns status, headers and the body as JSON (Null if empty/not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, hyper::HeaderMap, Value) {
        http(self.addr, method, path, token, body).await
    }

    pub async fn start_kernel(&self, token: &str, name: &str) -> String {
        let (status, _, body) = self
            .call(
                Method::POST,
                "/api/kernels",
                Some(token),
                Some(&json!({"name": name}).to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn ws(&self, token: &str, kernel_id: &str, session: &str, v1: bool) -> Ws {
        ws_connect(self.addr, token, kernel_id, session, v1).await
    }
}

/// `Authorization` value: `token` passed as is when it already names a scheme (`Bearer ...`).
pub fn auth_header(token: &str) -> String {
    if token.starts_with("Bearer ") {
        token.to_owned()
    } else {
        format!("token {token}")
    }
}

/// One HTTP request to `addr`; returns status, headers and the body as JSON (Null if not JSON).
pub async fn http(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, hyper::HeaderMap, Value) {
    let auth = token.map(auth_header);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    http_with(addr, method, path, &headers, body).await
}

/// [`http`] with any `headers`.
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, hyper::HeaderMap, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A kernel WebSocket to `addr` (a gateway or a jupyter_server relaying to one).
pub async fn ws_connect(
    addr: std::net::SocketAddr,
    token: &str,
    kernel_id: &str,
    session: &str,
    v1: bool,
) -> Ws {
    let url = format!("ws://{addr}/api/kernels/{kernel_id}/channels?session_id={session}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", auth_header(token).parse().unwrap());
    if v1 {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v1.kernel.websocket.jupyter.org".parse().unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let selected = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(selected.is_some(), v1, "subprotocol negotiation");
    Ws {
        ws,
        session: session.to_owned(),
    }
}

pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub session: String,
}

/// What one execute request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub reply_status: Option<String>,
}

pub fn request(session: &str, msg_type: &str, content: Value) -> Value {
    json!({
        "header": {"msg_id": uuid::Uuid::new_v4().to_string(), "msg_type": msg_type, "session": session,
                   "username": "test", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
    })
}

impl Ws {
    pub async fn send_json(&mut self, msg: &Value) {
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    /// Next legacy JSON message (text frame), or None on close/timeout.
    pub async fn next_json(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match frame {
                Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Sends `code` for execution and returns the request's msg_id.
    pub async fn submit(&mut self, code: &str) -> String {
        let msg = request(
            &self.session,
            "execute_request",
            json!({"code": code, "silent": false}),
        );
        let id = msg["header"]["msg_id"].as_str().unwrap().to_owned();
        self.send_json(&msg).await;
        id
    }

    /// Collects output of `msg_id` until its execute_reply and idle status have both arrived.
    pub async fn collect(&mut self, msg_id: &str, wait: Duration) -> Outcome {
        let mut out = Outcome::default();
        let mut idle = false;
        let deadline = tokio::time::Instant::now() + wait;
        while !(idle && out.reply_status.is_some()) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self
                .next_json(left)
                .await
                .unwrap_or_else(|| panic!("no complete output for {msg_id}: {out:?}"));
            if msg["parent_header"]["msg_id"] != msg_id {
                continue;
            }
            assert_eq!(
                msg["msg_type"], msg["header"]["msg_type"],
                "top-level msg_type copy"
            );
            let c = &msg["content"];
            match msg["msg_type"].as_str().unwrap_or_default() {
                "stream" => out.stdout.push_str(c["text"].as_str().unwrap_or_default()),
                "execute_result" => {
                    out.result = c["data"]["text/plain"].as_str().map(str::to_owned)
                }
                "error" => out.error = c["ename"].as_str().map(str::to_owned),
                "execute_reply" => out.reply_status = c["status"].as_str().map(str::to_owned),
                "status" => idle |= c["execution_state"] == "idle",
                _ => {}
            }
        }
        out
    }

    pub async fn execute(&mut self, code: &str) -> Outcome {
        let id = self.submit(code).await;
        self.collect(&id, Duration::from_secs(30)).await
    }
}

/// The value of `name` on the gateway's `/metrics` (Prometheus text), if it is there.
pub async fn metric(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .uri(format!("http://{addr}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
