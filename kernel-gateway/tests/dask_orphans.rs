//! A gateway killed outright (SIGKILL: no chance to stop its clusters) leaves its local Dask
//! processes running, each in its own process group; the next run of the gateway on the same
//! address finds them by the API URL in their environment and stops them, the warm-started
//! scheduler of a cluster included. Real `stackhub-gateway` binaries, real `dask scheduler`.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dask_support::{dedl_python, processes_under, temp_root};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One HTTP/1.0 request as alice (`[[users]]` token): status and JSON body.
async fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: token {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        common::ALICE,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn start(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_stackhub-gateway"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("STACKHUB_GATEWAY_DASK")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the gateway did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_stops_the_clusters_a_killed_one_left() {
    let root = temp_root();
    std::fs::create_dir_all(&root).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = root.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "ip = \"127.0.0.1\"\nport = {port}\n\n[[users]]\nname = \"alice\"\ntoken = \"{}\"\n\n\
             [dask]\npython = \"{}\"\nruntime_dir = \"{}\"\nheartbeat_period = 2\nidle_timeout = 0\n\
             warm_schedulers = 1\n",
            common::ALICE,
            dedl_python().display(),
            root.display()
        ),
    )
    .unwrap();
    let log = root.with_extension("log");
    let mut first = start(&config, &log);
    wait_up(port).await;
    let (s, v) = request(port, "POST", "/api/v1/clusters/", "{}").await;
    assert_eq!(s, 201, "{v}");
    let name = v["name"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = request(port, "GET", &format!("/api/v1/clusters/{name}"), "").await;
        if m["status"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scheduler: Vec<i64> = processes_under(&root.join(&name));
    assert!(!scheduler.is_empty(), "no scheduler process found");

    // Killed outright: the cluster's scheduler lives on, its own process group.
    first.kill().unwrap();
    first.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        scheduler.iter().all(|p| alive(*p)),
        "the scheduler died with the gateway"
    );

    // The next run on the same address stops it (at start, not a minute later).
    let mut second = start(&config, &log);
    wait_up(port).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while scheduler.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the restarted gateway left the earlier run's scheduler {scheduler:?} running; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&name) && text.contains("earlier run"),
        "{text}"
    );
    // The new run's own warm scheduler is not an orphan: it still waits.
    let (s, _) = request(port, "GET", "/api/v1/clusters/", "").await;
    assert_eq!(s, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(second.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    second.wait().unwrap();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&log);
}
