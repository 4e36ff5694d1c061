//! A headless Chromium (Debian `chromium`, driven by npm `playwright-core`) clicks through the
//! login at the real test identity provider and lands on the hub's home page showing the user's
//! name and quota.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod oidc_common;

use std::process::Command;
use std::time::Instant;

use oidc_common::{Stack, TestDir, workspace};

#[tokio::test]
async fn chromium_logs_in_through_the_provider() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: scripts/test installs Debian's chromium (or set CHROMIUM)"
    );
    let dir = TestDir::new("browser");
    let stack = Stack::start(&dir.0, 300, "").await;
    let shot = dir.0.join("home.png");
    let t0 = Instant::now();
    let hub = stack.hub.clone();
    let script = workspace().join("tests/idp/browser_login.mjs");
    let shot_arg = shot.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(hub)
            .arg("alice")
            .arg("alice-pw")
            .arg(shot_arg)
            .env("CHROMIUM", chromium)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    eprintln!("Chromium login took {:.2}s", t0.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "browser login failed: {}\n{}\nhub log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        oidc_common::log_tail(&dir.0.join("hub.log"))
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value =
        serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    assert!(
        seen["url"].as_str().unwrap().ends_with("/hub/home"),
        "{seen}"
    );
    assert_eq!(seen["user"], "alice");
    assert_eq!(
        seen["quota"],
        "Quota: stack-jupyter-medium: 6 CPUs, 18 GiB memory, no GPU"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot taken"
    );
    if let Some(keep) = std::env::var_os("STACKHUB_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
