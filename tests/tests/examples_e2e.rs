//! The example notebooks end to end, on real components: the `stackhub` binary (local spawner,
//! embedded S3), a real `stackhub-gateway` as the remote site LUMI, stock `jupyterhub-singleuser`
//! servers with the hub's server configuration (`hub/share/server/stackhub_examples.py`), and
//! the "Python DEDL" kernel (scripts/lib.sh ensure_dedl_env) at the site.
//!
//! - A full-Lab server's first start puts the examples in the home; an edited example survives a
//!   restart unchanged and a deleted one does not come back.
//! - A remote-kernels server's first start puts them in the user's S3 space (its file browser),
//!   with the same rules across a restart.
//! - All four run top to bottom with nbclient against that running server: each kernel is
//!   started through the server's REST API and driven over its kernel WebSocket, so it runs at
//!   LUMI and reads and writes the user's S3 space; the test checks what they computed and what
//!   they saved there. The executed notebooks are kept in the test artifacts
//!   (`STACKHUB_ARTIFACTS` or `tests/artifacts/examples/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use std::path::PathBuf;
use std::time::Instant;

use hub_common::{
    ADMIN_TOKEN, Hub, free_ports, live_under, progress_of, scratch_dir, user_with_token, venv,
    workspace,
};
use remote_common::{Gateway, start_server, stop_server, wait_site};
use serde_json::Value;
use stackhub_e2e::secrets::{SecretScan, descendants};

const HUB_CONFIG: &str = r#"
[s3]
health_interval_secs = 1

[spawner]
start_timeout = 90

[[sites]]
id = "lumi"
name = "LUMI Bridge"
gateway_url = "GATEWAY"
gateway_auth = "hub-jwt"
s3 = { mode = "embedded" }

[[profile_list]]
display_name = "JupyterLab"
slug = "jupyterlab"
default = true

[[profile_list]]
display_name = "Remote Compute Kernels - LUMI Bridge"
slug = "remote-lumi"
kind = "remote-kernels"
site = "lumi"
"#;

/// The site's "Python DEDL" kernelspec: scripts/lib.sh ensure_dedl_env puts it in the venv,
/// where the local gateway finds it.
fn assert_dedl_kernelspec() {
    let spec = venv().join("share/jupyter/kernels/python_dedl/kernel.json");
    assert!(
        spec.is_file(),
        "no {}: scripts/test installs it (scripts/lib.sh ensure_dedl_env)",
        spec.display()
    );
}

fn artifacts() -> PathBuf {
    std::env::var_os("STACKHUB_ARTIFACTS")
        .map_or_else(|| workspace().join("tests/artifacts"), PathBuf::from)
        .join("examples")
}

/// The example files the hub ships, below `examples/`.
fn example(name: &str) -> &'static str {
    hub::EXAMPLE_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not an example"))
        .1
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// `user`'s server's REST API with `token`.
    fn user(
        &self,
        method: reqwest::Method,
        user: &str,
        token: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/user/{user}/{path}", self.base))
            .header("Authorization", format!("token {token}"))
    }

    /// The names in directory `path` of `user`'s server's contents.
    async fn listing(&self, user: &str, token: &str, path: &str) -> Vec<String> {
        let r = self
            .user(
                reqwest::Method::GET,
                user,
                token,
                &format!("api/contents/{path}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "list {path}");
        let model: Value = r.json().await.unwrap();
        let mut names: Vec<String> = model["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The text of file `path` through `user`'s server (None: 404).
    async fn text(&self, user: &str, token: &str, path: &str) -> Option<String> {
        let r = self
            .user(
                reqwest::Method::GET,
                user,
                token,
                &format!("api/contents/{path}?type=file&format=text&content=1"),
            )
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200, "read {path}");
        let model: Value = r.json().await.unwrap();
        Some(model["content"].as_str().unwrap().to_owned())
    }

    async fn start(&self, user: &str, profile: &str) {
        let r = start_server(&self.client, &self.base, user, profile).await;
        assert!(r.status().is_success(), "start {user}: {}", r.status());
        let events = progress_of(&self.client, &self.base, user).await;
        assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
    }
}

const TOP_LEVEL: &[&str] = &[
    "01-stac-search.ipynb",
    "02-zarr-cube-from-s3.ipynb",
    "03-dask-at-the-site.ipynb",
    "04-save-results-to-s3.ipynb",
    "README.md",
    "stac-fixture",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_reach_new_homes_and_s3_spaces_and_run_against_the_server() {
    assert_dedl_kernelspec();
    let (dir, _cleanup) = scratch_dir("examples-e2e");
    let [port, hub_port, lumi_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let lumi = Gateway::start(&dir, "lumi", lumi_port, &base);
    lumi.wait_ready().await;
    std::fs::write(
        dir.join("hub.toml"),
        HUB_CONFIG.replace("GATEWAY", &lumi.url),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let hub_pid = i64::from(hub.child.as_ref().unwrap().id());
    let api = Api {
        client: reqwest::Client::new(),
        base: base.clone(),
    };
    let alice = user_with_token(&api.client, &base, "alice", "examples e2e").await;
    let bob = user_with_token(&api.client, &base, "bob", "examples e2e").await;

    // A full Lab: the first start puts every example in the home, the Lab lists them, and a
    // marker says which were offered.
    let started = Instant::now();
    api.start("alice", "jupyterlab").await;
    let home = dir.join("data/users/alice");
    for (name, content) in hub::EXAMPLE_FILES {
        let copy = std::fs::read_to_string(home.join("examples").join(name))
            .unwrap_or_else(|e| panic!("examples/{name} in alice's home: {e}"));
        assert_eq!(copy, *content, "examples/{name}");
    }
    assert_eq!(api.listing("alice", &alice, "examples").await, TOP_LEVEL);
    let marker: Value = serde_json::from_str(
        &std::fs::read_to_string(home.join(".stackhub/examples.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["offered"], serde_json::json!(TOP_LEVEL));
    // She edits one example and deletes another; a restart changes neither.
    let edited = "{\"cells\": [], \"metadata\": {}, \"nbformat\": 4, \"nbformat_minor\": 5}\n";
    std::fs::write(home.join("examples/02-zarr-cube-from-s3.ipynb"), edited).unwrap();
    std::fs::remove_file(home.join("examples/03-dask-at-the-site.ipynb")).unwrap();
    stop_server(&api.client, &base, "alice").await;
    api.start("alice", "jupyterlab").await;
    assert_eq!(
        std::fs::read_to_string(home.join("examples/02-zarr-cube-from-s3.ipynb")).unwrap(),
        edited,
        "the edited example after a restart"
    );
    assert!(
        !home.join("examples/03-dask-at-the-site.ipynb").exists(),
        "a deleted example came back"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("examples/01-stac-search.ipynb")).unwrap(),
        example("01-stac-search.ipynb")
    );
    let full_lab_secs = started.elapsed().as_secs_f64();

    // Remote Compute Kernels at LUMI: the examples land in bob's S3 space, which is his Lab's
    // file browser (s3contents); the marker is not in the listing.
    wait_site(&api.client, &base, "lumi", true).await;
    let started = Instant::now();
    api.start("bob", "remote-lumi").await;
    assert_eq!(api.listing("bob", &bob, "examples").await, TOP_LEVEL);
    assert!(
        !api.listing("bob", &bob, "")
            .await
            .contains(&".stackhub".to_owned()),
        "the marker shows in the file browser"
    );
    for name in [
        "02-zarr-cube-from-s3.ipynb",
        "README.md",
        "stac-fixture/sentinel-2-l2a-fixture/collection.json",
    ] {
        assert_eq!(
            api.text("bob", &bob, &format!("examples/{name}"))
                .await
                .as_deref(),
            Some(example(name)),
            "examples/{name} in bob's S3 space"
        );
    }
    let remote_start_secs = started.elapsed().as_secs_f64();

    // The four examples run top to bottom against bob's server, read from his S3 space: their
    // kernels start through the server and run at LUMI.
    let started = Instant::now();
    let out_dir = artifacts();
    let run = tokio::process::Command::new(venv().join("bin/python"))
        .arg(workspace().join("tests/notebooks/run_notebooks.py"))
        .arg(&out_dir)
        .args([
            "examples/01-stac-search.ipynb",
            "examples/02-zarr-cube-from-s3.ipynb",
            "examples/03-dask-at-the-site.ipynb",
            "examples/04-save-results-to-s3.ipynb",
        ])
        .env("STACKHUB_NB_SERVER", format!("{base}/user/bob"))
        .env("STACKHUB_NB_TOKEN", &bob)
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "run_notebooks.py: {stderr}");
    let report: Value = serde_json::from_slice(
        run.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    let notebooks_secs = started.elapsed().as_secs_f64();
    let nbs = report["notebooks"].as_array().unwrap();
    assert_eq!(nbs.len(), 4);
    for nb in nbs {
        assert!(
            nb["error"].is_null(),
            "{} failed: {}",
            nb["path"],
            nb["error"]
        );
        // The server started the notebook's kernelspec, Python DEDL, at LUMI.
        assert_eq!(
            nb["kernels"],
            serde_json::json!(["python_dedl"]),
            "{}",
            nb["path"]
        );
    }
    let stdout = |i: usize| nbs[i]["stdout"].as_str().unwrap().to_owned();
    // The STAC search, on the fixture the kernel fetched from bob's S3 space.
    assert!(stdout(0).contains("1 of 5 items match"), "{}", stdout(0));
    assert!(
        !stdout(0).contains("catalogue: stac-fixture/catalog.json"),
        "the kernel ran beside the notebook, not at the site: {}",
        stdout(0)
    );
    // The cube, written to bob's space and read back; its mean is the one it was built with.
    assert!(
        stdout(1).contains("Your S3 space: s3://")
            && stdout(1).contains("/data/synthetic-t2m.zarr"),
        "{}",
        stdout(1)
    );
    assert!(
        stdout(1).contains("cube {'time': 24, 'lat': 40, 'lon': 40}, mean 285.500 K"),
        "{}",
        stdout(1)
    );
    // The Dask cluster in the kernel at LUMI: two workers, the yearly means the cube was built
    // with.
    assert!(
        stdout(2).contains("2 workers")
            && stdout(2).contains("2024: 285.000 K")
            && stdout(2).contains("2025: 286.000 K"),
        "{}",
        stdout(2)
    );
    assert!(
        stdout(3).contains("mean change 2024 -> 2025: +1.000 K"),
        "{}",
        stdout(3)
    );
    // What they saved is in bob's S3 space, seen through his server.
    assert!(
        api.text("bob", &bob, "data/synthetic-t2m.zarr/zarr.json")
            .await
            .is_some(),
        "the cube's metadata in bob's S3 space"
    );
    assert_eq!(
        api.text("bob", &bob, "results/t2m-yearly-mean.csv")
            .await
            .as_deref(),
        Some("year,t2m_mean\n2024,285.000\n2025,286.000\n")
    );
    assert!(
        api.text("bob", &bob, "results/t2m-yearly.zarr/t2m_change/zarr.json")
            .await
            .is_some()
    );

    // Bob edits one example in S3 and deletes another; a restart changes neither.
    let r = api
        .user(
            reqwest::Method::PUT,
            "bob",
            &bob,
            "api/contents/examples/README.md",
        )
        .json(&serde_json::json!({"type": "file", "format": "text", "content": "my notes\n"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "edit README.md: {}", r.status());
    let r = api
        .user(
            reqwest::Method::DELETE,
            "bob",
            &bob,
            "api/contents/examples/03-dask-at-the-site.ipynb",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "delete 03-dask-at-the-site.ipynb");

    // Every secret of the run, while the processes live, for the log search at the end.
    let mut scan = SecretScan::new();
    scan.add("the admin token", ADMIN_TOKEN)
        .add("alice's API token", &alice)
        .add("bob's API token", &bob);
    let mut pids = descendants(&[hub_pid]);
    for pid in live_under(&dir) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let from_environ: usize = pids.iter().map(|pid| scan.add_environ(*pid)).sum();
    assert!(
        from_environ >= 3,
        "secrets from the servers' environments: {from_environ}"
    );

    stop_server(&api.client, &base, "bob").await;
    api.start("bob", "remote-lumi").await;
    assert_eq!(
        api.text("bob", &bob, "examples/README.md").await.as_deref(),
        Some("my notes\n")
    );
    assert_eq!(
        api.text("bob", &bob, "examples/03-dask-at-the-site.ipynb")
            .await,
        None,
        "a deleted example came back"
    );
    assert!(
        api.listing("bob", &bob, "examples")
            .await
            .contains(&"01-stac-search.ipynb".to_owned())
    );

    // The copies were logged without credentials.
    let alice_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    assert!(
        alice_log.contains("copied the example notebooks to"),
        "alice's server log:\n{alice_log}"
    );
    assert!(
        !alice_log.contains("could not copy the example notebooks"),
        "{alice_log}"
    );
    let bob_log = std::fs::read_to_string(dir.join("data/logs/bob.log")).unwrap();
    assert!(
        bob_log.contains("copied the example notebooks to s3://"),
        "{bob_log}"
    );
    assert!(
        !bob_log.contains("could not copy the example notebooks"),
        "{bob_log}"
    );
    let logs = scan.logs_under(&dir);
    assert!(logs >= 4, "logs searched: {logs}");
    scan.assert_clean();
    eprintln!(
        "examples e2e: full Lab start + restart {full_lab_secs:.1} s, remote-kernels start \
         {remote_start_secs:.1} s, four notebooks at LUMI {notebooks_secs:.1} s ({})",
        nbs.iter()
            .map(|nb| format!("{} {}", nb["path"].as_str().unwrap(), nb["seconds"]))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
