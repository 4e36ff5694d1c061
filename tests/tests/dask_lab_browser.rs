//! The Dask panel of the full JupyterLab in a real browser, on real components: a real
//! `stackhub-gateway` as the Central site serving Dask Gateway beside its kernels, the real
//! `stackhub` and a stock `jupyterhub-singleuser` with dask-labextension. Headless Chromium signs
//! in, starts the full Lab, and in its Dask panel clicks "+ NEW": the server's cluster factory is
//! `dask_gateway.GatewayCluster` (the hub's server configuration), so the cluster starts at the
//! site as the user, through `stackhub_dask.SiteAuth`. The test checks at the gateway's REST API,
//! as the user, that the cluster the panel lists is hers and running there; the panel scales it
//! to a worker, opens its "Workers Memory" dashboard pane, whose iframe renders the bokeh
//! document of the cluster's scheduler, fed over its WebSocket and showing the worker (the
//! server's `dask/dashboard/<id>/` paths redirect the browser to the hub's dashboard route, which
//! serves it to her hub session), and shuts it down: nothing of hers is left at the gateway. Screenshots: `dask-panel-*.png` in the test
//! artifacts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;
mod remote_common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser_common::artifacts;
use hub_common::{Hub, PASSWORD, free_ports, log_tail, scratch_dir, user_with_token, workspace};
use remote_common::{Gateway, site_health, site_token, stop_server, wait_site};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// `tests/idp/browser_dask_panel.mjs` running: it prints `STEP {...}` after each step and waits
/// for "go" on its stdin.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<tokio::sync::Mutex<String>>,
    /// The tails of the hub's, the server's and the gateway's logs, for failures.
    logs: Box<dyn Fn() -> String + Send>,
}

impl Browser {
    fn start(args: &[&str], logs: Box<dyn Fn() -> String + Send>) -> Self {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        assert!(
            std::path::Path::new(&chromium).exists(),
            "{chromium} not found: scripts/test installs Debian's chromium (or set CHROMIUM)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(workspace().join("tests/idp/browser_dask_panel.mjs"))
            .args(args)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let stderr = Arc::new(tokio::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = String::new();
            let _ = err.read_to_string(&mut buf).await;
            sink.lock().await.push_str(&buf);
        });
        Self {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            stderr,
            logs,
        }
    }

    /// The next line the script prints within 120 s; fails the test with its output if it ended.
    async fn line(&mut self, what: &str) -> String {
        let next = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line()).await;
        match next {
            Ok(Ok(Some(line))) => line,
            other => {
                let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the browser script ended before {what} ({other:?}, {status:?}):\n{}\n{}",
                    self.stderr.lock().await,
                    (self.logs)()
                )
            }
        }
    }

    /// What the script saw at step `name`.
    async fn step(&mut self, name: &str) -> Value {
        loop {
            let line = self.line(name).await;
            if let Some(seen) = line.strip_prefix("STEP ") {
                let seen: Value = serde_json::from_str(seen).unwrap();
                assert_eq!(seen["step"], name, "{seen}");
                return seen;
            }
        }
    }

    async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The script's last JSON line, once it exited successfully.
    async fn finish(mut self) -> Value {
        let last = self.line("the end").await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the browser script exits")
            .unwrap();
        assert!(status.success(), "{status}: {}", self.stderr.lock().await);
        serde_json::from_str(&last).unwrap()
    }
}

/// Alice's clusters at `gateway` with `status`, asked as her (her site token from the hub).
async fn clusters_at(
    api: &reqwest::Client,
    base: &str,
    gateway: &str,
    token: &str,
    status: &str,
) -> Value {
    let t = site_token(api, base, "central", token).await;
    let r = api
        .get(format!("{gateway}/api/v1/clusters/?status={status}"))
        .header(
            "Authorization",
            format!("Bearer {}", t["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dask_panel_creates_scales_shows_and_stops_a_cluster_at_the_site() {
    let (dir, _cleanup) = scratch_dir("dask-lab");
    let [port, hub_port, central_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    // Central publishes its dashboards through the hub (`/hub/dask/central/clusters/...`).
    let central = Gateway::start_site(
        &dir,
        "central",
        central_port,
        &base,
        "",
        "[dask]\ndashboard_prefix = \"/hub/dask/central\"\n",
    );
    central.wait_ready().await;
    std::fs::write(
        dir.join("hub.toml"),
        format!(
            "public_url = \"{base}/\"\ngateway_token_issuer = \"stackhub\"\n\n\
             [s3]\nhealth_interval_secs = 1\n\n[spawner]\nstart_timeout = 90\n\n\
             [[sites]]\nid = \"central\"\nname = \"Central Site\"\ngateway_url = \"{central}\"\n\
             gateway_auth = \"hub-jwt\"\ns3 = {{ mode = \"embedded\" }}\n\n\
             [[profile_list]]\ndisplay_name = \"Remote Compute Kernels - Central Site\"\n\
             slug = \"remote-central\"\nkind = \"remote-kernels\"\nsite = \"central\"\n\n\
             [[profile_list]]\ndisplay_name = \"JupyterLab (Full working environment)\"\n\
             slug = \"jupyterlab\"\ndefault = true\n",
            central = central.url
        ),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let _hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let api = reqwest::Client::new();
    let token = user_with_token(&api, &base, "alice", "dask panel").await;
    wait_site(&api, &base, "central", true).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while site_health(&api, &base, "central").await["dask"]["available"] != true {
        assert!(Instant::now() < deadline, "Central's Dask never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    let art = artifacts().display().to_string();
    let logs = {
        let dir = dir.clone();
        move || {
            format!(
                "hub log:\n{}\nserver log:\n{}\ngateway log:\n{}",
                log_tail(&dir.join("hub.log")),
                log_tail(&dir.join("data/logs/alice.log")),
                log_tail(&dir.join("gateway-central.log")),
            )
        }
    };
    let mut browser = Browser::start(
        &[&base, "alice", PASSWORD, &art, "jupyterlab", "1"],
        Box::new(logs.clone()),
    );

    // "+ NEW": the panel lists a Dask Gateway cluster, and it is alice's, running at Central.
    let listed = browser.step("listed").await;
    eprintln!(
        "listed after {:.1} s: {listed}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(listed["items"], 1, "{listed}");
    assert_eq!(listed["title"], "GatewayCluster 1", "{listed}");
    let at_gateway = clusters_at(&api, &base, &central.url, &token, "running,pending").await;
    let names: Vec<&String> = at_gateway.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 1, "{at_gateway}\n{}", logs());
    let name = names[0].clone();
    assert_eq!(at_gateway[&name]["status"], "RUNNING", "{at_gateway}");
    assert_eq!(
        listed["scheduler_address"],
        format!("gateway://127.0.0.1:{central_port}/{name}"),
        "{listed}"
    );
    // Its dashboard is the hub's, same-origin for the Lab.
    let dashboard = listed["dashboard_link"].as_str().unwrap().to_owned();
    assert_eq!(
        dashboard,
        format!("{base}/hub/dask/central/clusters/{name}/status"),
        "{listed}"
    );
    browser.go().await;

    // SCALE to one worker: the panel shows the worker the scheduler has.
    let scaled = browser.step("scaled").await;
    assert!(
        scaled["text"]
            .as_str()
            .unwrap()
            .contains("Number of Workers: 1"),
        "{scaled}"
    );
    browser.go().await;

    // The "Workers Memory" pane: the cluster's plots through the hub, the bokeh document
    // rendered in the pane's iframe, fed over its WebSocket, showing the worker.
    let shown = browser.step("dashboard").await;
    eprintln!(
        "dashboard after {:.1} s: {shown}",
        started.elapsed().as_secs_f64()
    );
    let plots: Vec<&str> = shown["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        plots.contains(&"Workers Memory") && plots.contains(&"Task Stream"),
        "{shown}"
    );
    // The panel shows dashboards at the server's dask/dashboard/<id>/, which redirects the
    // browser to the hub's (stackhub_dask's server extension): the pane's page is the hub's.
    let id = listed["id"].as_str().unwrap();
    assert_eq!(shown["url"], format!("dask/dashboard/{id}"), "{shown}");
    assert_eq!(
        shown["src"],
        format!("{base}/user/alice/dask/dashboard/{id}/individual-workers-memory"),
        "{shown}"
    );
    let prefix = dashboard.trim_end_matches("status");
    assert_eq!(
        shown["frame_url"],
        format!("{prefix}individual-workers-memory"),
        "{shown}"
    );
    assert!(
        !shown["document"]["roots"].as_array().unwrap().is_empty(),
        "{shown}"
    );
    let workers = shown["document"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{shown}");
    // That redirect is for the server's user only: without credentials it does not tell where
    // the cluster's dashboard is; with alice's token it sends her to the hub's.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let plots_url = format!("{base}/user/alice/dask/dashboard/{id}/individual-plots.json?v=1");
    let location = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let r = no_redirect.get(&plots_url).send().await.unwrap();
    assert!(
        matches!(r.status().as_u16(), 302 | 401 | 403) && !location(&r).contains("/dask/"),
        "{} {}",
        r.status(),
        location(&r)
    );
    let r = no_redirect
        .get(&plots_url)
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{prefix}individual-plots.json?v=1"));
    let socket = &shown["socket"];
    assert_eq!(
        socket["url"],
        format!(
            "ws://127.0.0.1:{port}/hub/dask/central/clusters/{name}/individual-workers-memory/ws"
        ),
        "{shown}"
    );
    assert!(
        socket["received"].as_u64().unwrap() > 1 && socket["closed"] == false,
        "{shown}"
    );
    browser.go().await;

    // SHUTDOWN: the panel is empty and nothing of alice's is left at the gateway.
    let end = browser.finish().await;
    assert_eq!(end["shut_down"], true, "{end}");
    eprintln!("shut down after {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        clusters_at(&api, &base, &central.url, &token, "running,pending").await,
        json!({}),
        "{}",
        logs()
    );
    stop_server(&api, &base, "alice").await;
}
