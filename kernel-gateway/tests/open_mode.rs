//! The gateway as an Enterprise Gateway drop-in behind a plain JupyterHub: with no
//! authentication configured (an "open" gateway) the kernel's user is the `KERNEL_USERNAME` the
//! client sends, as in Enterprise Gateway, so kernelspec `authorized_users` /
//! `unauthorized_users` and per-user kernel limits apply to it. With authentication the token's
//! user wins: a forged `KERNEL_USERNAME` changes neither the authorization, nor the budget, nor
//! the kernel's environment.

mod common;

use common::{ALICE, BAD_GUY, Gateway, config, kernelspecs};
use hyper::{Method, StatusCode};
use kernel_gateway::Config;
use serde_json::{Value, json};

/// A gateway with no token, no per-user tokens and no JWT: open.
fn open_config() -> Config {
    Config {
        port: 0,
        kernelspec_dirs: vec![kernelspecs()],
        ..Config::default()
    }
}

async fn start_as(
    gw: &Gateway,
    token: Option<&str>,
    name: &str,
    user: &str,
) -> (StatusCode, Value) {
    let body = json!({"name": name, "env": {"KERNEL_USERNAME": user}}).to_string();
    let (status, _, body) = gw
        .call(Method::POST, "/api/kernels", token, Some(&body))
        .await;
    (status, body)
}

/// `os.environ['KERNEL_USERNAME']` inside kernel `id`.
async fn kernel_username(gw: &Gateway, token: &str, id: &str) -> Option<String> {
    let mut ws = gw.ws(token, id, "s", false).await;
    ws.execute("import os; os.environ['KERNEL_USERNAME']")
        .await
        .result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gateway_authorizes_the_kernel_username() {
    let gw = Gateway::start(open_config()).await;
    // EG's authorization_test spec: authorized bob, alice, bad_guy; unauthorized bad_guy.
    let (s, body) = start_as(&gw, None, "authorization_test", "bad_guy").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("bad_guy"),
        "{body}"
    );
    let (s, body) = start_as(&gw, None, "authorization_test", "carol").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "not in authorized_users: {body}");
    // The global `unauthorized_users` (root by default) too.
    let (s, body) = start_as(&gw, None, "python3", "root").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = start_as(&gw, None, "authorization_test", "bob").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        kernel_username(&gw, "", &id).await.as_deref(),
        Some("'bob'")
    );
    // A name that is no user name is refused, naming it.
    for bad in ["a b", "../../etc", "x\u{7}y"] {
        let (s, body) = start_as(&gw, None, "python3", bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("KERNEL_USERNAME")
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gateway_counts_kernels_per_kernel_username() {
    let mut cfg = open_config();
    cfg.max_kernels_per_user = 1;
    let gw = Gateway::start(cfg).await;
    let (s, body) = start_as(&gw, None, "python3", "alice").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = start_as(&gw, None, "python3", "alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "alice's second kernel: {body}");
    let (s, body) = start_as(&gw, None, "python3", "bob").await;
    assert_eq!(s, StatusCode::CREATED, "bob has his own budget: {body}");
    // An open gateway has no owners: every client sees and manages every kernel, as in EG.
    let (s, _, list) = gw.call(Method::GET, "/api/kernels", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_a_forged_kernel_username_changes_nothing() {
    let mut cfg = config();
    cfg.max_kernels_per_user = 1;
    let gw = Gateway::start(cfg).await;
    // bad_guy claiming to be bob is still bad_guy for authorization_test.
    let (s, body) = start_as(&gw, Some(BAD_GUY), "authorization_test", "bob").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // alice claiming to be carol starts a kernel that is alice's, in its environment too...
    let (s, body) = start_as(&gw, Some(ALICE), "python3", "carol").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        kernel_username(&gw, ALICE, &id).await.as_deref(),
        Some("'alice'")
    );
    // ...and on alice's budget: claiming yet another name does not buy a second kernel.
    let (s, body) = start_as(&gw, Some(ALICE), "python3", "dave").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // An invalid claimed name does not matter either: it is ignored, not parsed.
    let (s, body) = start_as(&gw, Some(BAD_GUY), "python3", "a b").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    gw.stop().await;
}
