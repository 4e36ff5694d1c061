//! A headless Chromium (Debian `chromium`, npm `playwright-core`) through the server-options
//! picker against the real test identity provider, the real `stackhub` binary and real
//! `jupyterhub-singleuser` servers: alice sees only the profiles her roles and groups allow,
//! picks "JupyterLab (Full working environment)" with the keyboard, watches the progress bar
//! reach ready and lands in JupyterLab's launcher; she creates a named server with another
//! profile from the home page; carol (admin) stops alice's server from the admin page.
//! Screenshots (picker, progress, Lab, home, admin) are kept in `tests/artifacts/` (or
//! `STACKHUB_ARTIFACTS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;
mod oidc_common;

use std::time::Instant;

use browser_common::{artifacts, node};
use oidc_common::{Stack, TestDir};

const PROFILES: &str = r#"
[[profile_list]]
display_name = "JupyterLab (Full working environment)"
slug = "jupyterlab"
description = "JupyterLab with your persistent home directory."
default = true

[[profile_list]]
display_name = "JupyterLab - Light"
slug = "light"
description = "A second Lab for quick experiments."
spawner_override = { environment = { STACKHUB_LIGHT = "1" } }

[[profile_list]]
display_name = "Remote Compute Kernels - LUMI Bridge"
slug = "remote-lumi"
kind = "remote-kernels"
site = "lumi"
warning = "Jupyter Home not available & use of Object Storage S3 for Data Exchange mandatory"

[[profile_list]]
display_name = "Operators' Lab"
slug = "ops"
allowed_groups = ["/admins"]
"#;

#[tokio::test]
async fn chromium_picks_a_profile_and_an_admin_stops_the_server() {
    let dir = TestDir::new("picker");
    let stack = Stack::start(&dir.0, 300, PROFILES).await;
    let art = artifacts();
    let art_s = art.display().to_string();
    let hub = stack.hub.clone();
    let t0 = Instant::now();
    let (hub2, art2) = (hub.clone(), art_s.clone());
    let seen = tokio::task::spawn_blocking(move || {
        node(
            "browser_picker.mjs",
            &[&hub2, "alice", "alice-pw", &art2, "jupyterlab", "light"],
        )
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nhub log:\n{}",
            oidc_common::log_tail(&dir.0.join("hub.log"))
        )
    });
    eprintln!(
        "picker walk took {:.1}s: {seen}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        seen["profiles"],
        serde_json::json!([
            "JupyterLab (Full working environment)",
            "JupyterLab - Light",
            "Remote Compute Kernels - LUMI Bridge"
        ]),
        "alice (not in /admins) does not see the operators' profile"
    );
    assert_eq!(seen["progress_max"], 100);
    assert_eq!(seen["launcher"], true);
    assert!(
        seen["lab_url"]
            .as_str()
            .unwrap()
            .contains("/user/alice/lab"),
        "{seen}"
    );
    assert!(
        seen["named_url"]
            .as_str()
            .unwrap()
            .contains("/user/alice/light1/"),
        "{seen}"
    );
    assert!(
        seen["named_row"].as_str().unwrap().contains("Light one"),
        "{seen}"
    );

    let (status, user) = stack.admin_get("/hub/api/users/alice").await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["servers"][""]["ready"], true, "{user}");
    assert_eq!(user["servers"][""]["user_options"]["profile"], "jupyterlab");
    assert_eq!(user["servers"]["light1"]["ready"], true, "{user}");
    assert_eq!(user["servers"]["light1"]["display_name"], "Light one");
    assert_eq!(
        user["servers"]["light1"]["user_options"]["profile"],
        "light"
    );

    let (hub3, art3) = (hub.clone(), art_s.clone());
    let admin = tokio::task::spawn_blocking(move || {
        node(
            "browser_admin.mjs",
            &[&hub3, "carol", "carol-pw", "alice", &art3],
        )
    })
    .await
    .unwrap();
    assert_eq!(admin["before"], "running", "{admin}");
    assert_eq!(admin["after"], "stopped", "{admin}");
    let (_, user) = stack.admin_get("/hub/api/users/alice").await;
    assert!(
        user["servers"].get("").is_none(),
        "default server stopped: {user}"
    );
    assert_eq!(
        user["servers"]["light1"]["ready"], true,
        "the named one still runs"
    );
    let r = stack
        .admin(
            reqwest::Method::DELETE,
            "/hub/api/users/alice/servers/light1",
        )
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 202 | 204));

    for shot in [
        "picker.png",
        "progress.png",
        "progress-ready.png",
        "lab.png",
        "admin.png",
    ] {
        let len = std::fs::metadata(art.join(shot)).map_or(0, |m| m.len());
        assert!(len > 1000, "screenshot {shot} saved ({len} bytes)");
    }
}
