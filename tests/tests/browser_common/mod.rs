//! Driving headless Chromium (Debian `chromium`) from the tests: the scripts in `tests/idp/` use
//! npm `playwright-core` (installed there by `scripts/test`) and print one JSON line of what they
//! saw; screenshots go to [`artifacts`].

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::hub_common::workspace;

/// Where screenshots go: `STACKHUB_ARTIFACTS`, or `tests/artifacts/`.
pub fn artifacts() -> PathBuf {
    std::env::var_os("STACKHUB_ARTIFACTS")
        .map_or_else(|| workspace().join("tests/artifacts"), PathBuf::from)
}

/// Run `tests/idp/SCRIPT` with node and `args`; the JSON object it printed last. Fails the test
/// with the script's output when it exits unsuccessfully.
pub fn node(script: &str, args: &[&str]) -> Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: scripts/test installs Debian's chromium (or set CHROMIUM)"
    );
    let out = Command::new("node")
        .arg(workspace().join("tests/idp").join(script))
        .args(args)
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim().lines().last().unwrap()).unwrap()
}
