//! `scripts/run`, the newcomer's command, run as it is (on free ports, a scratch data directory
//! and the workspace's debug binaries): the hub comes up with its embedded proxy and S3 store,
//! the five local bridge sites (`stackhub-gateway` on 127.0.0.2 … 127.0.0.6) are healthy, the
//! idle culler runs as a managed service, and a "Remote Compute Kernels - LUMI Bridge" server
//! runs code in a kernel at the LUMI gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hub_common::{
    ADMIN_TOKEN, PASSWORD, admin, free_port, free_ports, log_tail, progress_of, scratch_dir,
    stackhub_bin, user_with_token, venv, workspace,
};
use remote_common::{run, start_server, stop_server};
use serde_json::{Value, json};

const SITES: [&str; 5] = ["central", "lumi", "leonardo", "eumetsat", "marenostrum"];

/// `scripts/run` in its own process group; the group gets SIGTERM (as from Ctrl-C) on drop.
struct RunScript {
    child: Child,
}

impl RunScript {
    fn start(dir: &Path, port: u16, hub_port: u16, sites_port: u16) -> Self {
        let log = std::fs::File::create(dir.join("run.log")).unwrap();
        let bin_dir = stackhub_bin().parent().unwrap().to_owned();
        let child = Command::new("bash")
            .arg(workspace().join("scripts/run"))
            .env("STACKHUB_BIN_DIR", bin_dir)
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("STACKHUB_PORT", port.to_string())
            .env("STACKHUB_HUB_PORT", hub_port.to_string())
            .env("STACKHUB_SITES_PORT", sites_port.to_string())
            .env("STACKHUB_DEV_PASSWORD", PASSWORD)
            .env("STACKHUB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STACKHUB_VENV", venv())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("run scripts/run");
        Self { child }
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .status();
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// A port in 10000..20000 free on every local site address (127.0.0.2 … 127.0.0.6).
fn free_sites_port(taken: &[u16]) -> u16 {
    std::iter::repeat_with(free_port)
        .take(200)
        .find(|p| {
            !taken.contains(p)
                && (2..=6)
                    .all(|i| std::net::TcpListener::bind((format!("127.0.0.{i}"), *p)).is_ok())
        })
        .expect("no port free on 127.0.0.2 … 127.0.0.6")
}

/// `GET /hub/api/sites` until all five sites are available; panics with the logs after 60 s.
async fn wait_sites_healthy(api: &reqwest::Client, base: &str, dir: &Path) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(r) = admin(api, reqwest::Method::GET, format!("{base}/hub/api/sites"))
            .send()
            .await
            && r.status() == 200
        {
            let sites: Vec<Value> = r.json().await.unwrap();
            if sites.len() == SITES.len() && sites.iter().all(|s| s["available"] == true) {
                return sites;
            }
            last = serde_json::to_string(&sites).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the five sites did not come up within 60 s; last GET /hub/api/sites: {last}\n\
         scripts/run's output:\n{}",
        log_tail(&dir.join("run.log"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_brings_up_the_hub_and_five_healthy_sites_running_remote_kernels() {
    let (dir, _cleanup) = scratch_dir("run-script");
    let [port, hub_port] = free_ports();
    let sites_port = free_sites_port(&[port, hub_port]);
    let base = format!("http://127.0.0.1:{port}");
    let script = RunScript::start(&dir, port, hub_port, sites_port);
    let api = reqwest::Client::new();

    let sites = wait_sites_healthy(&api, &base, &dir).await;
    for (i, (site, id)) in sites.iter().zip(SITES).enumerate() {
        assert_eq!(site["id"], id, "{sites:?}");
        assert_eq!(
            site["gateway_url"],
            format!("http://127.0.0.{}:{sites_port}/", i + 2),
            "{site}"
        );
        assert_eq!(site["s3"]["mode"], "embedded", "{site}");
        // Each site serves Dask on its gateway's port; browsers open its dashboards through
        // the hub, at the path the site's gateway publishes them under.
        assert_eq!(
            site["dask"],
            json!({"address": format!("http://127.0.0.{}:{sites_port}", i + 2),
                   "proxy_address": format!("gateway://127.0.0.{}:{sites_port}", i + 2),
                   "public_address": base,
                   "available": true, "reason": null}),
            "{site}"
        );
        let published = format!(
            "http://127.0.0.{}:{sites_port}/hub/dask/{id}/clusters/0123abcd/status",
            i + 2
        );
        let r = api.get(&published).send().await.unwrap();
        assert_eq!(
            r.status(),
            401,
            "{published}: a dashboard path wanting credentials"
        );
    }
    // The admin token of the run is where the script says, readable by its owner only.
    let token_file = dir.join("data/admin-token");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        ADMIN_TOKEN
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The idle culler runs by default as a managed service with its own narrow role.
    let r = admin(
        &api,
        reqwest::Method::GET,
        format!("{base}/hub/api/services/idle-culler"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "the idle culler is a service");
    let culler: Value = r.json().await.unwrap();
    assert_eq!(culler["roles"], json!(["idle-culler"]), "{culler}");
    assert!(
        culler["command"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == "--timeout=600")),
        "{culler}"
    );
    assert!(
        culler["pid"].as_u64().is_some_and(|p| p > 0),
        "the culler process runs: {culler}"
    );

    // A newcomer's first remote kernel: "Remote Compute Kernels - LUMI Bridge".
    let token = user_with_token(&api, &base, "ada", "run script check").await;
    let r = start_server(&api, &base, "ada", "remote-lumi").await;
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start: {}",
        r.status()
    );
    let events = progress_of(&api, &base, "ada").await;
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
    let user_api = |method: reqwest::Method, path: &str| {
        api.request(method, format!("{base}/user/ada/{path}"))
            .header("Authorization", format!("token {token}"))
    };
    // The Lab's launcher says where its kernels run.
    let specs: Value = user_api(reqwest::Method::GET, "api/kernelspecs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        specs["kernelspecs"]["python3"]["spec"]["display_name"],
        "Python 3 (ipykernel) at LUMI Bridge",
        "{specs}"
    );
    // The site's Python DEDL (scripts/lib.sh ensure_dedl_env) and R (Debian's IRkernel) kernels.
    for (name, display) in [
        ("python_dedl", "Python DEDL at LUMI Bridge"),
        ("ir", "R at LUMI Bridge"),
    ] {
        assert_eq!(
            specs["kernelspecs"][name]["spec"]["display_name"], display,
            "{specs}"
        );
    }
    let r = user_api(reqwest::Method::POST, "api/kernels")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "kernel start through the Lab");
    let kernel: Value = r.json().await.unwrap();
    let out = run(
        &base,
        "ada",
        kernel["id"].as_str().unwrap(),
        &[("authorization", &format!("token {token}"))],
        "import os\nprint('sum', 1 + 1)\nprint('cwd', os.getcwd())\n\
         print('home', os.path.expanduser('~'))\n\
         print('prefix', os.environ['STACKHUB_S3_PREFIX'])\n",
    )
    .await;
    assert!(out.contains("sum 2"), "{out}");
    // The kernel runs at the LUMI site, in ada's working area there (not the Lab's directory),
    // with ada's S3 space.
    let lumi_work = dir.join("data/sites/lumi/work/ada");
    assert!(
        out.contains(&format!("cwd {}", lumi_work.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("home {}", lumi_work.display())),
        "{out}"
    );
    assert!(out.contains("prefix users/ada/"), "{out}");
    // The Lab's file browser (ada's S3 space) lists.
    let r = user_api(reqwest::Method::GET, "api/contents")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the Lab's file browser");
    let gateway_log = std::fs::read_to_string(dir.join("data/sites/lumi/gateway.log")).unwrap();
    assert!(
        gateway_log.contains("user=ada"),
        "the LUMI gateway's log names ada's kernel:\n{gateway_log}"
    );
    assert!(!gateway_log.contains(&token), "a token reached the log");
    stop_server(&api, &base, "ada").await;
    drop(script);
}
