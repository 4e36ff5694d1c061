//! A notebook's "Launch in JupyterHub" link (`/hub/user-redirect/lab/tree/PATH`, JupyterHub's
//! deep link) followed by someone who has never logged in, in a headless Chromium (Debian
//! `chromium`, npm `playwright-core`) against the real test identity provider, the real
//! `stackhub` binary and a real `jupyterhub-singleuser`: the login, the identity provider, the
//! options picker, the progress page, and the notebook open in JupyterLab. The screenshot is
//! kept in `tests/artifacts/deep-link-notebook.png` (or `STACKHUB_ARTIFACTS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;
mod oidc_common;

use browser_common::{artifacts, node};
use oidc_common::{Stack, TestDir};

/// Two profiles, so the link goes through the picker.
const PROFILES: &str = r#"
[[profile_list]]
display_name = "JupyterLab (Full working environment)"
slug = "jupyterlab"
default = true

[[profile_list]]
display_name = "JupyterLab - Light"
slug = "light"
"#;

#[tokio::test]
async fn a_never_logged_in_browser_follows_a_deep_link_to_the_notebook() {
    let dir = TestDir::new("deep-link");
    let stack = Stack::start(&dir.0, 300, PROFILES).await;
    // The notebook the link names, in alice's home (the local spawner's <data>/users/alice).
    let examples = dir.0.join("data/users/alice/examples");
    std::fs::create_dir_all(&examples).unwrap();
    let notebook = serde_json::json!({
        "cells": [{"cell_type": "code", "execution_count": null, "id": "c1", "metadata": {},
                   "outputs": [], "source": ["print('deep link works')"]}],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                     "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5
    });
    std::fs::write(examples.join("deep.ipynb"), notebook.to_string()).unwrap();
    let (status, _) = stack.admin_get("/hub/api/users/alice").await;
    assert_eq!(status, 404, "alice has never logged in");

    let art = artifacts();
    let (hub, art_s) = (stack.hub.clone(), art.display().to_string());
    let seen = tokio::task::spawn_blocking(move || {
        node(
            "browser_deep_link.mjs",
            &[&hub, "alice", "alice-pw", &art_s, "examples/deep.ipynb"],
        )
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nhub log:\n{}",
            oidc_common::log_tail(&dir.0.join("hub.log"))
        )
    });
    let steps: Vec<String> = serde_json::from_value(seen["steps"].clone()).unwrap();
    // The way it went: the link sent the browser to the login with itself as `next`, the
    // identity provider brought it back, the link went on to the picker with the server's path
    // as `next`, then the progress page and the notebook. (A redirect is not a navigation of
    // its own: each step is where one landed.)
    let pos = |prefix: &str| {
        steps
            .iter()
            .position(|s| s.starts_with(prefix))
            .unwrap_or_else(|| panic!("never at {prefix}: {steps:?}"))
    };
    let login = pos("/hub/login?next=%2Fhub%2Fuser-redirect%2Flab%2Ftree%2Fexamples%2Fdeep.ipynb");
    let picker =
        pos("/hub/spawn/alice?next=%2Fhub%2Fuser%2Falice%2Flab%2Ftree%2Fexamples%2Fdeep.ipynb");
    let pending = pos("/hub/spawn-pending/alice");
    let lab = pos("/user/alice/lab/tree/examples/deep.ipynb");
    assert!(
        login < picker && picker < pending && pending < lab,
        "{steps:?}"
    );
    assert!(
        seen["lab_url"]
            .as_str()
            .unwrap()
            .contains("/user/alice/lab/tree/examples/deep.ipynb"),
        "{seen}"
    );
    // The notebook is the Lab's current document.
    assert!(
        seen["title"].as_str().unwrap().contains("deep.ipynb")
            || seen["notebook_tab"] == "deep.ipynb",
        "{seen}"
    );
    assert!(
        seen["cell_text"]
            .as_str()
            .unwrap()
            .contains("deep link works"),
        "{seen}"
    );
    let (status, user) = stack.admin_get("/hub/api/users/alice").await;
    assert_eq!(status, 200);
    assert_eq!(user["servers"][""]["ready"], true, "{user}");
    let shot = art.join("deep-link-notebook.png");
    let len = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(len > 1000, "screenshot saved ({len} bytes)");
}
