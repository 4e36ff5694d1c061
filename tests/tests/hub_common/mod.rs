//! Helpers of the end-to-end tests that run the real `stackhub` binary: finding the binary and
//! the venv, free ports, the hub process, cleanup of what a failed run leaves, the admin token.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
// Not every test binary that includes this module uses each helper.
#[allow(unused_imports)]
pub use stackhub_e2e::support::{free_port, log_tail, venv, workspace};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
pub const PASSWORD: &str = "e2e-password";

pub fn stackhub_bin() -> PathBuf {
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

/// A running `stackhub`; killed on drop.
pub struct Hub {
    pub child: Option<Child>,
}

impl Hub {
    pub async fn start(dir: &Path, port: u16, hub_port: u16) -> Self {
        Self::start_with(dir, port, hub_port, &[]).await
    }

    /// Start with extra arguments (e.g. `--config FILE`).
    pub async fn start_with(dir: &Path, port: u16, hub_port: u16, args: &[&str]) -> Self {
        Self::start_with_env(dir, port, hub_port, args, &[]).await
    }

    /// [`Hub::start_with`] plus environment variables (set after the defaults, so they win).
    pub async fn start_with_env(
        dir: &Path,
        port: u16,
        hub_port: u16,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hub.log"))
            .unwrap();
        let child = Command::new(stackhub_bin())
            .args(args)
            .env("STACKHUB_PORT", port.to_string())
            .env("STACKHUB_HUB_PORT", hub_port.to_string())
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("STACKHUB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STACKHUB_DEV_PASSWORD", PASSWORD)
            .env("STACKHUB_VENV", venv())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
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
    pub fn terminate(&mut self) {
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
pub fn live_in_group(pgid: i64) -> Vec<i64> {
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
pub fn live_under(dir: &Path) -> Vec<i64> {
    live_where(|pid| {
        std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
    })
}

/// Live (non-zombie) processes, from `/proc`, for which `keep` holds.
pub fn live_where(keep: impl Fn(i64) -> bool) -> Vec<i64> {
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
        if !zombie && keep(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kills whatever a failed run left running below the test directory, then removes it.
/// `N` distinct free ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut out: Vec<u16> = Vec::with_capacity(N);
    while out.len() < N {
        let p = free_port();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.try_into().unwrap()
}

/// A fresh directory `<tmp>/stackhub-NAME-<unique>`, removed when the returned guard drops.
pub fn scratch_dir(name: &str) -> (PathBuf, Cleanup) {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("stackhub-{name}-{unique:x}"));
    std::fs::create_dir_all(&dir).unwrap();
    (dir.clone(), Cleanup(dir))
}

/// Create `user` (201) through the admin API and issue them a token noted `note`; the token.
pub async fn user_with_token(api: &reqwest::Client, base: &str, user: &str, note: &str) -> String {
    let r = admin(
        api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/{user}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "create {user}");
    issue_token(api, base, user, note).await
}

/// Issue existing `user` a token noted `note` through the admin API; the token.
pub async fn issue_token(api: &reqwest::Client, base: &str, user: &str, note: &str) -> String {
    let t: serde_json::Value = admin(
        api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/{user}/tokens"),
    )
    .json(&serde_json::json!({ "note": note }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    t["token"].as_str().unwrap().to_owned()
}

pub struct Cleanup(pub PathBuf);

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

pub fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .header("Authorization", format!("token {ADMIN_TOKEN}"))
}

/// A browser-like client (cookie jar, redirects followed) logged in as `user` with the
/// development password, on the home page.
pub async fn logged_in_browser(base: &str, user: &str) -> reqwest::Client {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = browser
        .post(format!("{base}/hub/login?next=%2Fhub%2Fhome"))
        .form(&[("username", user), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{user}'s login");
    assert_eq!(r.url().path(), "/hub/home", "{user}'s login");
    browser
}

/// Read the progress stream until the final event; returns every event.
pub async fn progress_of(client: &reqwest::Client, base: &str, user: &str) -> Vec<Value> {
    let resp = admin(
        client,
        reqwest::Method::GET,
        format!("{base}/hub/api/users/{user}/server/progress"),
    )
    .send()
    .await
    .unwrap();
    read_progress(resp).await
}

/// Read a progress stream's answer until the final event; returns every event.
pub async fn read_progress(resp: reqwest::Response) -> Vec<Value> {
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

/// The cookie secret every replica of one test shares.
pub const COOKIE_SECRET: &str = "5f1c0d9e8b7a69584736251403f2e1d0c1b2a39485766758493a2b1c0d0e0f10";

/// A database of its own (named after `dir`) on the test PostgreSQL server
/// (`STACKHUB_TEST_POSTGRES_URL`; the test fails when it is missing): the admin connection (to
/// drop it afterwards), its name and its URL.
pub async fn postgres_database(dir: &Path) -> (sqlx::PgConnection, String, url::Url) {
    use sqlx::{Connection, Executor};
    let admin_url = match std::env::var("STACKHUB_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "STACKHUB_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
             (scripts/test starts one; or source scripts/lib.sh and run start_postgres)"
        ),
    };
    let name = format!(
        "{}_db",
        dir.file_name().unwrap().to_string_lossy().replace('-', "_")
    );
    let mut pg = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    pg.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    (pg, name, url)
}

/// A `stackhub` replica on free ports: its process, public base URL and directory.
pub struct Replica {
    pub hub: Hub,
    pub base: String,
    pub dir: PathBuf,
}

impl Replica {
    /// Start a replica in `dir` on the database at `db_url` with the shared cookie secret and
    /// the command-line `args`.
    pub async fn start(dir: &Path, db_url: &str, args: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let [port, hub_port] = free_ports::<2>();
        let hub = Hub::start_with_env(
            dir,
            port,
            hub_port,
            args,
            &[
                ("STACKHUB_DB_URL", db_url),
                ("STACKHUB_COOKIE_SECRET", COOKIE_SECRET),
            ],
        )
        .await;
        Self {
            hub,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
        }
    }
}

/// Poll every 5 ms until `check` holds; how long it took (panics after `within`).
pub async fn until<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what}: not after {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}
