//! Helpers of the failover test (`ha_failover.rs`): a PostgreSQL database of its own, replicas
//! that can be killed and restarted on the same ports, HAProxy in front of them (naming the
//! replica that served each answer), the stand-in servers' traces, and a kernel's WebSocket.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use reqwest::Method;

use crate::hub_common::{Hub, admin, log_tail};

pub mod load;

pub use crate::hub_common::COOKIE_SECRET;

/// The header HAProxy adds to every answer: the name of the replica that served it.
pub const REPLICA_HEADER: &str = "x-stackhub-replica";

/// A request header naming the replica HAProxy must send it to (test set-up only).
pub const PIN_HEADER: &str = "x-stackhub-pin";

/// The replicas' readiness check (200 while the database answers and the change feed is
/// heard), HAProxy's health check.
pub const HEALTH_CHECK: &str = "/hub/ready";

pub use crate::hub_common::postgres_database;

/// One `stackhub` replica on fixed ports (HAProxy's configuration names them), so that it
/// restarts where it was.
pub struct Replica {
    pub name: &'static str,
    pub port: u16,
    hub_port: u16,
    pub dir: PathBuf,
    config: PathBuf,
    db_url: String,
    hub: Option<Hub>,
}

impl Replica {
    pub fn new(
        name: &'static str,
        [port, hub_port]: [u16; 2],
        dir: &Path,
        config: &Path,
        db_url: &str,
    ) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            name,
            port,
            hub_port,
            dir,
            config: config.to_owned(),
            db_url: db_url.to_owned(),
            hub: None,
        }
    }

    /// Start it (again) with its configuration; returns once it answers `GET /hub/api`.
    pub async fn start(&mut self) {
        assert!(self.hub.is_none(), "{} runs already", self.name);
        self.hub = Some(
            Hub::start_with_env(
                &self.dir,
                self.port,
                self.hub_port,
                &["--config", self.config.to_str().unwrap()],
                &[
                    ("STACKHUB_DB_URL", &self.db_url),
                    ("STACKHUB_COOKIE_SECRET", COOKIE_SECRET),
                ],
            )
            .await,
        );
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let mut hub = self.hub.take().expect("a running replica");
        let mut child = hub.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.hub.as_ref().unwrap().child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        log_tail(&self.dir.join("hub.log"))
    }

    /// The lines of its log (every run's) that mention `needle`.
    pub fn log_of(&self, needle: &str) -> String {
        std::fs::read_to_string(self.dir.join("hub.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether it leads (`stackhub_leader` in its metrics, asked directly).
    pub async fn leads(&self, api: &reqwest::Client) -> bool {
        let text = admin(api, Method::GET, format!("{}/hub/metrics", self.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("stackhub_leader "))
            .unwrap_or_else(|| panic!("no stackhub_leader in {}'s metrics", self.name))
            == "1"
    }
}

/// HAProxy from Debian in front of the replicas (shared decision 4): round robin, a failed
/// connection retried once on the other replica, health check [`HEALTH_CHECK`], WebSockets
/// passed through; each answer names its replica in [`REPLICA_HEADER`]. Killed on drop.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    socket: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    pub async fn start(dir: &Path, port: u16, replicas: &[(&str, u16)]) -> Self {
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("haproxy not found: scripts/test installs it (apt_install haproxy)")
            });
        let socket = dir.join("haproxy.sock");
        // A request may name the replica it must go to ([`PIN_HEADER`]).
        let servers: String = replicas
            .iter()
            .map(|(name, port)| {
                format!(
                    "    use-server {name} if {{ req.hdr({PIN_HEADER}) -m str {name} }}\n\
                     \x20   server {name} 127.0.0.1:{port} check\n"
                )
            })
            .collect();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 2000\n    stats socket {socket} mode 600 level admin\n\n\
                 defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n\
                 \x20   timeout server 60s\n    timeout tunnel 1h\n    retries 1\n\
                 \x20   option redispatch\n\n\
                 frontend hub\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\n\
                 backend replicas\n    balance roundrobin\n\
                 \x20   option httpchk GET {HEALTH_CHECK}\n    http-check expect status 200\n\
                 \x20   default-server inter 300ms fall 2 rise 2\n\
                 \x20   http-response set-header X-Stackhub-Replica %[srv_name]\n{servers}",
                socket = socket.display(),
            ),
        )
        .unwrap();
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run haproxy");
        let mut proxy = Self {
            child,
            port,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.servers().is_err() {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!(
                    "haproxy exited with {status}: {}",
                    log_tail(&proxy.log.clone())
                );
            }
            assert!(Instant::now() < deadline, "haproxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Each replica's state as HAProxy's health check sees it (`UP`, `DOWN`, `UP 1/2`, …).
    pub fn servers(&self) -> std::io::Result<Vec<(String, String)>> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.write_all(b"show stat\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            return Err(std::io::Error::other(format!("show stat: {text}")));
        };
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.get(px) == Some(&"replicas") && !matches!(f.get(sv), Some(&"BACKEND") | None)
            })
            .map(|f| (f[sv].to_owned(), f[st].to_owned()))
            .collect())
    }

    /// Replica `name`'s health state.
    pub fn state_of(&self, name: &str) -> String {
        self.servers()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replica named in an answer's [`REPLICA_HEADER`].
pub fn served_by(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// The pids a stand-in recorded in `starts/<user>`: one per start.
pub fn starts(dir: &Path, user: &str) -> Vec<i64> {
    std::fs::read_to_string(dir.join(user))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Live stand-in processes: those whose environment carries `STANDIN_DIR=<dir>`.
pub fn standin_pids(dir: &Path) -> BTreeSet<i64> {
    let marker = format!("STANDIN_DIR={}", dir.display());
    crate::hub_common::live_where(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|environ| environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
    })
    .into_iter()
    .collect()
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `kernel`'s channels of `user`'s server at `base` (HAProxy), through replica `pin`
/// when given; the socket and the replica that carried the handshake.
pub async fn kernel_socket(
    base: &str,
    user: &str,
    kernel: &str,
    token: &str,
    pin: Option<&str>,
) -> (Ws, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/user/{user}/api/kernels/{kernel}/channels",
        base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("token {token}").parse().unwrap());
    if let Some(pin) = pin {
        request
            .headers_mut()
            .insert(PIN_HEADER, pin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, resp)) => {
            let replica = resp
                .headers()
                .get(REPLICA_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            (ws, replica)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            panic!("kernel WebSocket through HAProxy: {}", resp.status())
        }
        Err(e) => panic!("kernel WebSocket through HAProxy: {e}"),
    }
}

/// Run `code` on the kernel behind `ws`: the `text/plain` of its result (empty when it has
/// none), once its `execute_reply` said `ok` and the kernel went idle (iopub and shell
/// messages share the socket in no set order).
pub async fn execute(ws: &mut Ws, code: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg_id = format!("ha-{}-{seq}", std::process::id());
    let request = json!({
        "header": {"msg_id": msg_id, "username": "alice", "session": format!("ha-session-{seq}"),
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": false, "store_history": false,
                    "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
    });
    ws.send(Message::text(request.to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut result, mut replied, mut idle) = (String::new(), false, false);
    while !(replied && idle) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{code:?} did not finish within 60 s"))
            .expect("kernel WebSocket closed")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["parent_header"]["msg_id"] != msg_id {
            continue;
        }
        match v["msg_type"].as_str() {
            Some("execute_result") => {
                v["content"]["data"]["text/plain"]
                    .as_str()
                    .unwrap_or_default()
                    .clone_into(&mut result);
            }
            Some("error") => panic!("{code:?} failed: {}", v["content"]),
            Some("execute_reply") => {
                assert_eq!(v["content"]["status"], "ok", "{v}");
                replied = true;
            }
            Some("status") => idle |= v["content"]["execution_state"] == "idle",
            _ => {}
        }
    }
    result
}

/// Whether `ws` is closed (or broken) within `within`; messages meanwhile are skipped.
pub async fn closes_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}
