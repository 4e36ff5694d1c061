//! End to end: the real `stackhub` binary with its embedded proxy, a stock
//! `jupyterhub-singleuser` from the project's venv, a cookie-keeping browser-like client, and a
//! kernel WebSocket through the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
const PASSWORD: &str = "e2e-password";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn stackhub_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STACKHUB_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let bin = target.join("debug/stackhub");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p hub`, or run scripts/test), or set STACKHUB_BIN",
        bin.display()
    );
    bin
}

fn venv() -> PathBuf {
    let venv =
        std::env::var_os("STACKHUB_VENV").map_or_else(|| workspace().join(".venv"), PathBuf::from);
    assert!(
        venv.join("bin/jupyterhub-singleuser").exists(),
        "no jupyterhub-singleuser in {}: run scripts/test (it creates the venv) or set STACKHUB_VENV",
        venv.display()
    );
    venv
}

/// A free port in 10000..20000: outside the ephemeral range (32768 and up), where every
/// `bind(0)` of the tests running beside this one lands, and below the gateway's kernel port
/// range (20000..32000). A port taken from `bind(0)` and released could be handed to another
/// test before `stackhub` binds it.
fn free_port() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    (0..10_000u32)
        .map(|i| {
            10_000 + u16::try_from((seed.wrapping_add(i.wrapping_mul(7919))) % 10_000).unwrap()
        })
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("no free port in 10000..20000")
}

/// The end of a log file, for failure messages (the test's directory is removed afterwards).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A running `stackhub`; killed on drop.
struct Hub {
    child: Option<Child>,
}

impl Hub {
    async fn start(dir: &Path, port: u16, hub_port: u16) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hub.log"))
            .unwrap();
        let child = Command::new(stackhub_bin())
            .env("STACKHUB_PORT", port.to_string())
            .env("STACKHUB_HUB_PORT", hub_port.to_string())
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("STACKHUB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STACKHUB_DEV_PASSWORD", PASSWORD)
            .env("STACKHUB_VENV", venv())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run stackhub");
        let mut hub = Self { child: Some(child) };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = hub.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "stackhub exited with {status} before answering; its log:\n{}",
                    log_tail(&dir.join("hub.log"))
                );
            }
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/hub/api"))
                .send()
                .await
                && r.status() == 200
            {
                return hub;
            }
            assert!(
                Instant::now() < deadline,
                "stackhub did not answer GET /hub/api within 20 s; its log:\n{}",
                log_tail(&dir.join("hub.log"))
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("stackhub did not exit after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Live (non-zombie) processes in process group `pgid`.
fn live_in_group(pgid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
        if !zombie && fields.get(2).and_then(|s| s.parse::<i64>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Live (non-zombie) processes whose working directory is below `dir` (servers, kernels).
fn live_under(dir: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned))
                .is_some_and(|s| s == "Z" || s == "X")
        });
        if !zombie
            && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        {
            out.push(pid);
        }
    }
    out
}

/// Kills whatever a failed run left running below the test directory, then removes it.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in live_under(&self.0) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .header("Authorization", format!("token {ADMIN_TOKEN}"))
}

async fn server_model(client: &reqwest::Client, base: &str) -> Value {
    admin(
        client,
        reqwest::Method::GET,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// Read the progress stream until the final event; returns every event.
async fn progress(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let resp = admin(
        client,
        reqwest::Method::GET,
        format!("{base}/hub/api/users/alice/server/progress"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("progress stream timed out")
            .expect("progress stream ended without a final event")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let ev: Value = serde_json::from_str(data.trim()).unwrap();
                    let last = ev.get("ready").is_some() || ev.get("failed").is_some();
                    events.push(ev);
                    if last {
                        return events;
                    }
                }
            }
        }
    }
}

/// The Lab page's `jupyter-config-data`.
fn page_config(html: &str) -> Value {
    let start = html
        .find("id=\"jupyter-config-data\"")
        .expect("page config in the Lab page");
    let open = start + html[start..].find('>').unwrap() + 1;
    let close = open + html[open..].find("</script>").unwrap();
    serde_json::from_str(&html[open..close]).unwrap()
}

async fn execute_one_plus_one(port: u16, kernel: &str, token: &str) -> String {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://127.0.0.1:{port}/user/alice/api/kernels/{kernel}/channels");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("token {token}").parse().unwrap());
    let (mut ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            panic!("kernel websocket through the proxy: {}", resp.status())
        }
        Err(e) => panic!("kernel websocket through the proxy: {e}"),
    };
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg_id = format!("e2e-{}-{seq}", std::process::id());
    let request = json!({
        "header": {"msg_id": msg_id, "username": "alice", "session": format!("e2e-session-{seq}"),
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "1+1", "silent": false, "store_history": false,
                    "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
    });
    ws.send(Message::text(request.to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no execute_result within 60 s")
            .expect("websocket closed")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["msg_type"] == "execute_result" && v["parent_header"]["msg_id"] == msg_id {
            let _ = ws.close(None).await;
            return v["content"]["data"]["text/plain"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

/// `HH:MM:SS.fff` of the first log line containing `needle`, as seconds of the day.
fn log_time(text: &str, needle: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(needle))?;
    let t = line
        .split([' ', 'T', 'Z'])
        .find(|w| w.len() >= 12 && w.as_bytes()[2] == b':' && w.as_bytes()[5] == b':')?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_through_stackhub() {
    let dir = std::env::temp_dir().join(format!(
        "stackhub-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = Cleanup(dir.clone());
    let port = free_port();
    let hub_port = std::iter::repeat_with(free_port)
        .find(|p| *p != port)
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut hub = Hub::start(&dir, port, hub_port).await;
    let api = reqwest::Client::new();

    // Users: alice (owner) and bob (a stranger with his own token).
    for name in ["alice", "bob"] {
        let r = admin(
            &api,
            reqwest::Method::POST,
            format!("{base}/hub/api/users/{name}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "create {name}");
    }
    let bob: Value = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/bob/tokens"),
    )
    .json(&json!({"note": "e2e"}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let bob_token = bob["token"].as_str().expect("bob's token").to_owned();

    // Alice logs in with a cookie-keeping client.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = browser
        .post(format!("{base}/hub/login?next=%2Fhub%2Fhome"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/hub/home");

    // A stopped server: the browser flow ends in the 424 page linking to the spawn page.
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    assert_eq!(r.url().path(), "/hub/user/alice/lab");
    let page = r.text().await.unwrap().replace("&#x2f;", "/");
    assert!(page.contains("href=\"/hub/spawn/alice?next="), "{page}");

    // Start through the REST API and follow the progress stream to `ready`.
    let r = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start: {}",
        r.status()
    );
    let model = server_model(&api, &base).await;
    if r.status() == 202 {
        assert_eq!(model["pending"], "spawn", "{model}");
    }
    let events = progress(&api, &base).await;
    assert_eq!(
        events[0],
        json!({"progress": 0, "message": "Server requested"})
    );
    let last = events.last().unwrap();
    assert_eq!(last["ready"], true, "{events:?}");
    assert_eq!(last["url"], "/user/alice/");
    let model = server_model(&api, &base).await;
    assert_eq!(model["ready"], true, "{model}");
    let pid = model["state"]["pid"]
        .as_i64()
        .expect("pid in the spawner state");

    // Readiness latency: the server's own "running at" line vs the hub noticing.
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    let hub_log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    if let (Some(listening), Some(noticed)) = (
        log_time(&server_log, "is running at"),
        log_time(&hub_log, "readiness: server answered"),
    ) {
        let connected =
            log_time(&hub_log, "readiness: port accepts connections").unwrap_or(noticed);
        eprintln!(
            "server 'running at' {listening:.3}s; hub: first connection {connected:.3}s, \
             answer {noticed:.3}s: {:.0} ms after 'running at'",
            (noticed - listening) * 1000.0
        );
    }

    // The Lab through the proxy, logging in through the hub's OAuth provider.
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/user/alice/lab");
    let html = r.text().await.unwrap();
    let config = page_config(&html);
    assert_eq!(config["hubUser"], "alice");
    let token = config["token"]
        .as_str()
        .expect("OAuth token in page config")
        .to_owned();

    // A kernel through /user/alice/api/kernels, and 1+1 over its WebSocket.
    let r = api
        .post(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let kernel: Value = r.json().await.unwrap();
    let kernel_id = kernel["id"].as_str().unwrap().to_owned();
    assert_eq!(execute_one_plus_one(port, &kernel_id, &token).await, "2");

    // Bob may not use Alice's server.
    let r = api
        .get(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {bob_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Restart the hub while the server runs: it keeps running and is reachable again.
    hub.terminate();
    assert!(
        !live_in_group(pid).is_empty(),
        "the server survives a hub exit"
    );
    let mut hub = Hub::start(&dir, port, hub_port).await;
    let model = server_model(&api, &base).await;
    assert_eq!(model["ready"], true, "{model}");
    let r = api
        .get(format!("{base}/user/alice/api/kernels/{kernel_id}"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "server reachable after the hub restart");
    assert_eq!(execute_one_plus_one(port, &kernel_id, &token).await, "2");

    // Stop: the process group is gone, the route too, and the browser gets the 424 again.
    let r = admin(
        &api,
        reqwest::Method::DELETE,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 202 | 204),
        "stop: {}",
        r.status()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server_model(&api, &base).await["stopped"] != true {
        assert!(Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        live_in_group(pid).is_empty(),
        "orphaned processes: {:?}",
        live_in_group(pid)
    );
    // Kernels run in their own sessions: nothing at all may be left below the data dir.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_under(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "orphaned processes: {:?}",
            live_under(&dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    let r = browser
        .get(format!("{base}/user/alice/api/kernels"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/hub/spawn/alice"),
        "{body}"
    );

    hub.terminate();
    drop(cleanup);
}
