//! Remote Compute Kernels in a real browser: headless Chromium signs in, picks "Remote Compute
//! Kernels - LUMI Bridge", and in the stock JupyterLab it lands in opens a notebook from the
//! launcher, runs a cell and saves. Underneath: the real `stackhub` (embedded proxy and S3), a
//! real `stackhub-gateway` as the LUMI site, a stock `jupyterhub-singleuser` in gateway mode with
//! `s3contents`, and ipykernel. The browser's cookie-authenticated kernel WebSocket must take the
//! proxy's direct route to the gateway (the single-user server never relays it) with JupyterLab's
//! binary v1 kernel protocol, and the saved notebook must be in S3. The launcher lists the site's
//! Python DEDL and R kernels with the site in their names; an R notebook and a Python DEDL one
//! (the Data Lake's libraries) run at the site, in alice's working area there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;
mod remote_common;

use browser_common::{artifacts, node};
use hub_common::{Hub, PASSWORD, free_ports, issue_token, log_tail, scratch_dir};
use remote_common::{Gateway, site_token, wait_site};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_runs_a_notebook_at_the_lumi_gateway_over_the_direct_route() {
    let (dir, _cleanup) = scratch_dir("remote-browser");
    let [port, hub_port, lumi_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    // The site's kernels: the venv's python3, Python DEDL (scripts/lib.sh ensure_dedl_env puts
    // its kernelspec in the venv) and Debian's IRkernel (/usr/share/jupyter/kernels/ir).
    let dedl_spec = hub_common::venv().join("share/jupyter/kernels/python_dedl/kernel.json");
    assert!(
        dedl_spec.is_file(),
        "no {}: scripts/test installs it (scripts/lib.sh ensure_dedl_env)",
        dedl_spec.display()
    );
    let area = dir.join("lumi-area");
    let lumi = Gateway::start_site(
        &dir,
        "lumi",
        lumi_port,
        &base,
        "",
        &format!(
            "site_name = \"LUMI Bridge\"\nkernel_working_root = \"{}\"",
            area.display()
        ),
    );
    lumi.wait_ready().await;
    std::fs::write(
        dir.join("hub.toml"),
        format!(
            "[s3]\nhealth_interval_secs = 1\n\n[spawner]\nstart_timeout = 90\n\n\
             [[sites]]\nid = \"lumi\"\nname = \"LUMI Bridge\"\ngateway_url = \"{}\"\n\
             gateway_auth = \"hub-jwt\"\ns3 = {{ mode = \"embedded\" }}\n\n\
             [[profile_list]]\ndisplay_name = \"Remote Compute Kernels - LUMI Bridge\"\n\
             slug = \"remote-lumi\"\nkind = \"remote-kernels\"\nsite = \"lumi\"\n\n\
             [[profile_list]]\ndisplay_name = \"JupyterLab\"\nslug = \"jupyterlab\"\n\
             default = true\n",
            lumi.url
        ),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let _hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let api = reqwest::Client::new();
    wait_site(&api, &base, "lumi", true).await;

    let art = artifacts().display().to_string();
    let b = base.clone();
    let code = "import os; print('AT', os.environ['STACKHUB_S3_PREFIX'], 6 * 7)";
    let more = serde_json::json!([
        {"card": "R at LUMI Bridge", "kernel": "ir", "shot": "remote-r.png", "marker": "RAT ",
         "code": "cat(\"RAT\", getwd(), Sys.getenv(\"HOME\"), 1 + 1, \
                  Sys.getenv(\"STACKHUB_S3_PREFIX\"), \
                  nzchar(Sys.getenv(\"AWS_SECRET_ACCESS_KEY\")), \"\\n\")"},
        {"card": "Python DEDL at LUMI Bridge", "kernel": "python_dedl", "shot": "remote-dedl.png",
         "marker": "DEDL ",
         "code": "import os, destinelab, earthkit.data, pystac_client, xarray, zarr, s3fs, \
                  dask_gateway; print('DEDL', os.getcwd(), xarray.__version__, zarr.__version__)"},
    ])
    .to_string();
    let seen = tokio::task::spawn_blocking(move || {
        node(
            "browser_remote_lab.mjs",
            &[
                &b,
                "alice",
                PASSWORD,
                &art,
                "remote-lumi",
                code,
                "AT users/alice/ 42",
                &more,
            ],
        )
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nhub log:\n{}\nserver log:\n{}",
            log_tail(&dir.join("hub.log")),
            log_tail(&dir.join("data/logs/alice.log"))
        )
    });
    eprintln!("browser saw: {seen}");
    assert!(
        seen["lab_url"]
            .as_str()
            .unwrap()
            .contains("/user/alice/lab"),
        "{seen}"
    );
    assert!(
        seen["output"]
            .as_str()
            .unwrap()
            .contains("AT users/alice/ 42"),
        "{seen}"
    );

    // The launcher offers the site's kernels, saying where they run; R and Python DEDL run there,
    // in alice's working area (also their HOME), R with the S3 exchange in its environment (the
    // secret's presence, not its value), Python DEDL with the pinned Data Lake libraries.
    let cards: Vec<&str> = seen["launcher"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "Python 3 (ipykernel) at LUMI Bridge",
        "Python DEDL at LUMI Bridge",
        "R at LUMI Bridge",
    ] {
        assert!(
            cards.contains(&want),
            "{want:?} not in the launcher: {cards:?}"
        );
    }
    let alice_area = area.join("alice");
    assert_eq!(
        seen["more"][0].as_str().unwrap_or_default(),
        format!("RAT {0} {0} 2 users/alice/ TRUE", alice_area.display()),
        "{seen}"
    );
    let pins = std::fs::read_to_string(
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../scripts/requirements-dedl.txt"),
    )
    .unwrap();
    let pin = |pkg: &str| {
        pins.lines()
            .find_map(|l| l.strip_prefix(&format!("{pkg}==")))
            .unwrap_or_else(|| panic!("{pkg} not pinned in scripts/requirements-dedl.txt"))
            .to_owned()
    };
    assert_eq!(
        seen["more"][1].as_str().unwrap_or_default(),
        format!(
            "DEDL {} {} {}",
            alice_area.display(),
            pin("xarray"),
            pin("zarr")
        ),
        "{seen}"
    );

    // The kernel runs at LUMI, and the browser's kernel WebSocket went there directly.
    let token = issue_token(&api, &base, "alice", "remote browser").await;
    let jwt = site_token(&api, &base, "lumi", &token).await;
    let jwt = jwt["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {jwt}"));
    let kernels: Value = api
        .get(format!("{}/api/kernels", lumi.url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at_lumi: Vec<&str> = kernels
        .as_array()
        .unwrap_or_else(|| panic!("{kernels}"))
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    // The kernel ids the page's WebSockets named are LUMI kernels (opening a new notebook, the
    // Lab may start two sessions and shut one down again: the live one must be among them).
    let used: Vec<&str> = seen["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str()?.split("/api/kernels/").nth(1)?.split('/').next())
        .collect();
    assert!(!used.is_empty(), "no kernel WebSocket: {seen}");
    assert!(
        used.iter().any(|id| at_lumi.contains(id)),
        "{used:?} not all at LUMI ({at_lumi:?})"
    );
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    // The server logs its kernel starts without their credentials.
    assert!(
        server_log.contains("GatewayKernelManager started kernel"),
        "{server_log}"
    );
    for secret in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "JUPYTER_GATEWAY_AUTH_TOKEN",
    ] {
        assert!(
            !server_log.contains(secret),
            "{secret} reached the single-user server's log:\n{server_log}"
        );
    }
    for id in &used {
        assert!(
            !server_log.contains(&format!("{id}/channels")),
            "the browser's kernel channel went through the single-user server:\n{server_log}"
        );
    }
    assert!(
        seen["binary_frames"].as_u64().unwrap() > 0,
        "JupyterLab did not get the v1 (binary) kernel protocol: {seen}"
    );

    // The notebook the browser saved is an object in alice's S3 space.
    let saved = seen["saved"].as_str().unwrap();
    assert!(saved.ends_with(".ipynb"), "{seen}");
    // (The Lab reports the save done when its PUT returned; allow the store a moment.)
    let mut last = String::new();
    let mut found = None;
    for _ in 0..40 {
        let r = api
            .get(format!("{base}/user/alice/api/contents/{saved}"))
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            found = Some(r);
            break;
        }
        last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let r = found.unwrap_or_else(|| {
        panic!(
            "the saved notebook through the contents API: {last}\nbrowser saw: {seen}\nserver log:\n{}",
            log_tail(&dir.join("data/logs/alice.log"))
        )
    });
    let nb: Value = r.json().await.unwrap();
    assert!(
        nb["content"]["cells"][0]["source"]
            .as_str()
            .unwrap_or_default()
            .contains("STACKHUB_S3_PREFIX"),
        "{nb}"
    );
    let objects = walk(&dir.join("data"));
    assert!(
        objects
            .iter()
            .any(|p| p.contains("/s3/") && p.ends_with(&format!("users/alice/{saved}"))),
        "no S3 object for {saved}: {objects:?}"
    );
}

/// Every file below `root` (the embedded store keeps objects as files).
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}
