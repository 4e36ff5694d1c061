//! Helpers of the Remote Compute Kernels end-to-end tests: real `stackhub-gateway` processes as
//! remote sites, kernel WebSockets through the hub's proxy, server start/stop and site health
//! through the hub's REST API.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::hub_common::{self, admin, venv};

pub fn gateway_bin() -> PathBuf {
    let bin = hub_common::stackhub_bin().with_file_name("stackhub-gateway");
    assert!(
        bin.exists(),
        "{} not found: build the workspace first",
        bin.display()
    );
    bin
}

/// A `stackhub-gateway` configured as remote site `site`; killed on drop.
pub struct Gateway {
    child: Child,
    pub url: String,
}

impl Gateway {
    pub fn start(dir: &Path, site: &str, port: u16, hub: &str) -> Self {
        Self::start_with(dir, site, port, hub, "")
    }

    /// [`Gateway::start`] with `jwt` appended to the config's `[jwt]` table (`leeway_secs = 1`).
    pub fn start_with(dir: &Path, site: &str, port: u16, hub: &str, jwt: &str) -> Self {
        Self::start_site(dir, site, port, hub, jwt, "")
    }

    /// [`Gateway::start_with`] with `top` (top-level config lines, e.g. `site_name`,
    /// `kernel_working_root`) before the `[jwt]` table.
    pub fn start_site(dir: &Path, site: &str, port: u16, hub: &str, jwt: &str, top: &str) -> Self {
        Self::start_auth(
            dir,
            site,
            port,
            &format!(
                "{top}\n\n\
                 [jwt]\njwks_url = \"{hub}/hub/api/sites/jwks.json\"\n\
                 issuer = \"stackhub\"\nalgorithms = [\"EdDSA\"]\n{jwt}\n"
            ),
        )
    }

    /// A site whose gateway takes the shared token `token` (the hub's `gateway_auth = "token"`).
    pub fn start_token(dir: &Path, site: &str, port: u16, token: &str) -> Self {
        Self::start_auth(dir, site, port, &format!("auth_token = \"{token}\"\n"))
    }

    /// A remote site `site` whose config ends with `auth` (how callers authenticate).
    fn start_auth(dir: &Path, site: &str, port: u16, auth: &str) -> Self {
        let config = dir.join(format!("gateway-{site}.toml"));
        std::fs::write(
            &config,
            format!(
                "remote_site = true\nsite_id = \"{site}\"\nip = \"127.0.0.1\"\n\
                 port = {port}\n\n{auth}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("gateway-{site}.log"))).unwrap();
        let venv = venv();
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Kernels run in the gateway's directory: below `dir`, so `Cleanup` finds what a failed
        // run leaves.
        let work = dir.join(format!("work-{site}"));
        std::fs::create_dir_all(&work).unwrap();
        let child = Command::new(gateway_bin())
            .current_dir(&work)
            .arg("--config")
            .arg(&config)
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", path)
            .env("JUPYTER_RUNTIME_DIR", dir.join(format!("runtime-{site}")))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run stackhub-gateway");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if client.get(format!("{}/api", self.url)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway at {} did not answer within 10 s", self.url);
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// moto's server (S3, IAM and STS; no authentication enforced) from the venv, with `buckets`
/// created; killed on drop. It runs in `dir`, so `Cleanup` finds it after a failed run.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start(dir: &Path, port: u16, buckets: &[&str]) -> Self {
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for bucket in buckets {
            let url = format!("{}/{bucket}", moto.endpoint);
            let mut tries = 0;
            // `CreateBucket` unsigned (moto takes it), once the server answers.
            loop {
                match client.put(&url).send().await {
                    Ok(r) => {
                        assert!(
                            r.status().is_success(),
                            "create bucket {bucket}: {}",
                            r.status()
                        );
                        break;
                    }
                    Err(e) => {
                        tries += 1;
                        assert!(tries < 400, "moto at {url} did not answer: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// …")`, or a browser's `("cookie", …)` and `("origin", …)`).
pub async fn open_channels(
    base: &str,
    user: &str,
    kernel: &str,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/user/{user}/api/kernels/{kernel}/channels?session_id={}",
        base.replace("http://", "ws://"),
        uuid_like()
    );
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Runs `code` in `kernel` over the kernel WebSocket through the hub's proxy, opened with
/// `headers` (see [`open_channels`]); returns the kernel's stdout.
pub async fn run(
    base: &str,
    user: &str,
    kernel: &str,
    headers: &[(&str, &str)],
    code: &str,
) -> String {
    let mut ws = open_channels(base, user, kernel, headers)
        .await
        .expect("kernel websocket through the proxy");
    let msg_id = format!("remote-e2e-{}", uuid_like());
    let request = json!({
        "header": {"msg_id": msg_id, "username": user, "session": uuid_like(),
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": false, "store_history": false,
                    "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
    });
    ws.send(Message::text(request.to_string())).await.unwrap();
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no reply within 90 s; output so far: {out}"))
            .expect("websocket closed")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["parent_header"]["msg_id"] != msg_id {
            continue;
        }
        match v["msg_type"].as_str() {
            Some("stream") => out.push_str(v["content"]["text"].as_str().unwrap_or_default()),
            Some("error") => panic!("kernel error: {}", v["content"]),
            Some("status") if v["content"]["execution_state"] == "idle" => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    out
}

pub fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Start `user`'s default server with `profile` through the REST API (as an admin).
pub async fn start_server(
    api: &reqwest::Client,
    base: &str,
    user: &str,
    profile: &str,
) -> reqwest::Response {
    admin(
        api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/{user}/server"),
    )
    .json(&json!({ "profile": profile }))
    .send()
    .await
    .unwrap()
}

/// Stop `user`'s default server and wait until the hub has forgotten it.
pub async fn stop_server(api: &reqwest::Client, base: &str, user: &str) {
    let r = admin(
        api,
        reqwest::Method::DELETE,
        format!("{base}/hub/api/users/{user}/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 202 | 204),
        "stop: {}",
        r.status()
    );
    for _ in 0..400 {
        let m: Value = admin(
            api,
            reqwest::Method::GET,
            format!("{base}/hub/api/users/{user}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if m["servers"].get("").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not stop within 20 s");
}

/// The hub's answer to `POST /hub/api/sites/{site}/token` for the owner of hub token `token`
/// (the gateway token her server is issued, with `expires_at`).
pub async fn site_token(api: &reqwest::Client, base: &str, site: &str, token: &str) -> Value {
    api.post(format!("{base}/hub/api/sites/{site}/token"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn site_health(api: &reqwest::Client, base: &str, id: &str) -> Value {
    let sites: Value = admin(api, reqwest::Method::GET, format!("{base}/hub/api/sites"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("site {id} in {sites}"))
}

pub async fn wait_site(api: &reqwest::Client, base: &str, id: &str, available: bool) -> Value {
    for _ in 0..200 {
        let s = site_health(api, base, id).await;
        if s["available"] == available {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "site {id} never became available={available}: {}",
        site_health(api, base, id).await
    );
}
