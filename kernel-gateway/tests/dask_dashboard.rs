//! A cluster's Dask dashboard through the gateway, for its owner only: real `dask scheduler`
//! processes (distributed 2026.8 with bokeh) behind a real gateway listener, the owner reading
//! the status page, a static asset and the bokeh WebSocket with the hub's kind of credential (a
//! per-user site JWT) and with the session cookie a browser holds; another user, no user and a
//! cluster's own token refused on every one of them, without anything reaching the scheduler;
//! paths that try to leave their cluster refused; a stopped cluster's dashboard gone.
// Helpers outside `#[test]` fns panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use common::Gateway;
use dask_support::{
    Signer, bearer, bokeh_script, bokeh_ws, call, dask_config, gateway_logs, get, new_cluster,
    session_token, temp_root, wait_status,
};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// A refusal: `status` with a JSON `{"error"}` body (`who` names the credentials, which the
/// message does not show).
async fn refused(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    who: &str,
    status: StatusCode,
) {
    let (s, _, body) = get(gw, path, headers).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        s,
        status,
        "{path} as {who}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    assert!(v["error"].is_string(), "{path}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_is_its_owners_alone() {
    gateway_logs();
    let signer = Signer::start().await;
    let root = temp_root();
    let gw = Gateway::start(dask_config(&root, Some(&signer.jwks_url))).await;
    let alice = bearer(&signer.token("alice", 600));
    let bob = bearer(&signer.token("bob", 600));
    let (a, b) = tokio::join!(new_cluster(&gw, &alice), new_cluster(&gw, &bob));
    let (ma, mb) = tokio::join!(
        wait_status(&gw, &alice, &a, 60, |s| s != "PENDING"),
        wait_status(&gw, &bob, &b, 60, |s| s != "PENDING"),
    );
    assert_eq!(
        (&ma["status"], &mb["status"]),
        (&"RUNNING".into(), &"RUNNING".into())
    );
    assert_eq!(ma["dashboard_route"], format!("/clusters/{a}/status"));

    // The owner, with the site JWT on every request (as the hub's proxy will send it).
    let status_path = format!("/clusters/{a}/status");
    let owner = [("authorization", alice.as_str())];
    let (s, h, body) = get(&gw, &status_path, &owner).await;
    let page = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        page.contains("Dask Diagnostic UI") && page.contains("Bokeh.embed"),
        "{page}"
    );
    assert!(
        h["cache-control"].to_str().unwrap().contains("private"),
        "a per-user page is never kept by a shared cache"
    );
    let script = bokeh_script(&page);
    assert!(
        script.starts_with(&format!("/clusters/{a}/static/")),
        "{script}"
    );
    let (s, h, js) = get(&gw, &script, &owner).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));
    assert!(js.len() > 100_000, "bokeh.min.js is {} bytes", js.len());
    let (s, h, _) = get(&gw, &format!("/clusters/{a}/statics/css/base.css"), &owner).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/css"));
    // A real upgrade to the bokeh server, which says ACK.
    let ws_path = format!("{status_path}/ws");
    let token = session_token(&page);
    let ack = bokeh_ws(&gw, &ws_path, &token, &owner).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&ack).unwrap()["msgtype"],
        "ACK",
        "{ack}"
    );
    // `/clusters/<name>/` leads to the status page, relative to wherever the client is.
    let (s, h, _) = get(&gw, &format!("/clusters/{a}/"), &owner).await;
    assert_eq!(
        (s, &h["location"]),
        (StatusCode::FOUND, &"status".parse().unwrap())
    );

    // A browser after the handshake: the session cookie alone, its own Origin on the upgrade.
    let (s, h, _) = call(
        &gw,
        Method::GET,
        "/api/v1/options",
        Some(&alice),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let browser = [("cookie", cookie.as_str())];
    let (s, _, body) = get(&gw, &status_path, &browser).await;
    assert_eq!(s, StatusCode::OK);
    let token = session_token(&String::from_utf8_lossy(&body));
    let origin = format!("http://{}", gw.addr);
    let ack = bokeh_ws(
        &gw,
        &ws_path,
        &token,
        &[("cookie", &cookie), ("origin", &origin)],
    )
    .await
    .unwrap();
    assert!(ack.contains("ACK"), "{ack}");

    // Another user (their JWT, their cookie), no user, a cluster's token: refused, every
    // route, the upgrade included; another user's cluster is not there at all.
    let (_, h, _) = call(&gw, Method::GET, "/api/v1/options", Some(&bob), None, None).await;
    let bob_cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cluster_token = format!(
        "token {}",
        std::fs::read_to_string(root.join(&b).join("api-token"))
            .unwrap()
            .trim()
    );
    let pages = [
        status_path.clone(),
        script.clone(),
        format!("/clusters/{a}/statics/css/base.css"),
        format!("/clusters/{a}/"),
        format!("/clusters/{a}"),
    ];
    for (label, who, status) in [
        (
            "bob's JWT",
            vec![("authorization", bob.as_str())],
            StatusCode::NOT_FOUND,
        ),
        (
            "bob's cookie",
            vec![("cookie", bob_cookie.as_str())],
            StatusCode::NOT_FOUND,
        ),
        ("nobody", vec![], StatusCode::UNAUTHORIZED),
        (
            "a guessed cookie",
            vec![("cookie", "dask-gateway-0=0")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bob's cluster's token",
            vec![("authorization", cluster_token.as_str())],
            StatusCode::FORBIDDEN,
        ),
        (
            "a bad JWT",
            vec![("authorization", "Bearer not-a-jwt")],
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        for p in &pages {
            refused(&gw, p, &who, label, status).await;
        }
        assert_eq!(
            bokeh_ws(&gw, &ws_path, &token, &who).await,
            Err(status),
            "{label}"
        );
    }
    let (s, h, _) = get(&gw, &status_path, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        h.contains_key("www-authenticate"),
        "the 401 starts the client's handshake"
    );

    // Paths that would leave bob's own cluster for alice's: refused before any forwarding.
    let bob_auth = [("authorization", bob.as_str())];
    for trick in [
        format!("/clusters/{b}/../{a}/status"),
        format!("/clusters/{b}/%2e%2e/{a}/status"),
        format!("/clusters/{b}/.%2E/{a}/status"),
        format!("/clusters/{b}/%252e%252e/{a}/status"),
        format!("/clusters/{b}/..%2f{a}/status"),
        format!("/clusters/{b}/status%2f..%2f..%2f{a}%2fstatus"),
        format!("/clusters/{b}/..%5c{a}/status"),
        format!("/clusters/{b}%2f..%2f{a}/status"),
        format!("/clusters/%2e%2e/clusters/{a}/status"),
        format!("/clusters/./{a}/status"),
    ] {
        refused(&gw, &trick, &bob_auth, "bob", StatusCode::BAD_REQUEST).await;
    }
    let ws_trick = format!("/clusters/{b}/%2e%2e/{a}/status/ws");
    assert_eq!(
        bokeh_ws(&gw, &ws_trick, &token, &bob_auth).await,
        Err(StatusCode::BAD_REQUEST)
    );
    // Bob's own dashboard is his.
    let (s, _, _) = get(
        &gw,
        &format!("/clusters/{b}/statics/css/base.css"),
        &bob_auth,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Stopped: the owner is told it is gone (JSON), the upgrade too; others still see nothing.
    let (s, _, v) = call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/clusters/{a}"),
        Some(&alice),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let m = wait_status(&gw, &alice, &a, 20, |s| s == "STOPPED").await;
    assert_eq!(m["status"], "STOPPED", "{m}");
    assert!(m["dashboard_route"].is_null(), "{m}");
    refused(&gw, &status_path, &owner, "alice", StatusCode::GONE).await;
    refused(&gw, &script, &owner, "alice", StatusCode::GONE).await;
    assert_eq!(
        bokeh_ws(&gw, &ws_path, &token, &owner).await,
        Err(StatusCode::GONE)
    );
    refused(&gw, &status_path, &bob_auth, "bob", StatusCode::NOT_FOUND).await;

    gw.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}

/// Published under `[dask] dashboard_prefix` (as the hub publishes a site's dashboards): the
/// cluster's `dashboard_route` carries the prefix, the scheduler links its assets under it, and
/// the page, its assets and the bokeh WebSocket answer at the published path (and still at
/// `/clusters/<name>/`), for the owner only; a prefix that is not this gateway's is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_dashboard_keeps_its_prefix() {
    gateway_logs();
    let signer = Signer::start().await;
    let root = temp_root();
    let mut config = dask_config(&root, Some(&signer.jwks_url));
    config.dask.dashboard_prefix = "/hub/dask/lumi".into();
    let gw = Gateway::start(config).await;
    let alice = bearer(&signer.token("alice", 600));
    let bob = bearer(&signer.token("bob", 600));
    let a = new_cluster(&gw, &alice).await;
    let m = wait_status(&gw, &alice, &a, 60, |s| s != "PENDING").await;
    assert_eq!(m["status"], "RUNNING", "{m}");
    let published = format!("/hub/dask/lumi/clusters/{a}");
    assert_eq!(m["dashboard_route"], format!("{published}/status"));

    let owner = [("authorization", alice.as_str())];
    for base in [published.clone(), format!("/clusters/{a}")] {
        let (s, _, body) = get(&gw, &format!("{base}/status"), &owner).await;
        let page = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(s, StatusCode::OK, "{base}: {page}");
        // Bokeh links absolutely: to the published path, whichever way the page was asked.
        let script = bokeh_script(&page);
        assert!(
            script.starts_with(&format!("{published}/static/")),
            "{script}"
        );
        let (s, _, js) = get(&gw, &script, &owner).await;
        assert_eq!(s, StatusCode::OK, "{script}");
        assert!(js.len() > 100_000, "bokeh.min.js is {} bytes", js.len());
        let ack = bokeh_ws(
            &gw,
            &format!("{base}/status/ws"),
            &session_token(&page),
            &owner,
        )
        .await
        .unwrap();
        assert!(ack.contains("ACK"), "{ack}");
    }
    // Someone else's, or another prefix: nothing.
    refused(
        &gw,
        &format!("{published}/status"),
        &[("authorization", bob.as_str())],
        "bob",
        StatusCode::NOT_FOUND,
    )
    .await;
    refused(
        &gw,
        &format!("{published}/status"),
        &[],
        "nobody",
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let (s, _, _) = get(
        &gw,
        &format!("/hub/dask/central/clusters/{a}/status"),
        &owner,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another site's prefix");
    let (s, _, _) = call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/clusters/{a}"),
        Some(&alice),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_status(&gw, &alice, &a, 20, |s| s == "STOPPED").await;
}
