//! The spawn pipeline over a fake spawner (a tiny HTTP server per spawn): per-spawn
//! bookkeeping, environment, routes, progress, stop clean-up, start-up reconciliation, start
//! timeout, and the browser flow of compat spec section 2.6.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::{settings, setup};
use common::{ADMIN_TOKEN, Hub};
use hub::SpawnOrchestrator;
use hub::proxy::EmbeddedProxy;
use serde_json::{Value, json};

async fn sse(h: &Hub, path: &str) -> Vec<Value> {
    let r = h.admin(Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

#[tokio::test]
async fn start_route_env_progress_stop() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    let r = h.admin(Method::POST, "/hub/api/users/alice", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/server",
            Some(r#"{"size": "small"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Route as JupyterHub stores it.
    let route = s.table.get("/user/alice").expect("route for alice");
    assert_eq!(route.data()["user"], "alice");
    assert_eq!(route.data()["server_name"], "");
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(model.body["ready"], true);
    assert_eq!(model.body["user_options"], json!({"size": "small"}));
    assert_eq!(
        route.data()["target"].as_str().unwrap(),
        format!("http://127.0.0.1:{}", model.body["state"]["port"])
    );

    // The environment of compat spec section 1, with no hub secret in it.
    let env = s.spawner.envs.lock().await[0].clone();
    assert_eq!(env["JUPYTERHUB_CLIENT_ID"], "jupyterhub-user-alice");
    assert_eq!(env["JUPYTERHUB_API_URL"], "http://127.0.0.1:8081/hub/api");
    assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], "/user/alice/");
    assert_eq!(
        env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
        "/user/alice/oauth_callback"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]).unwrap(),
        json!(["access:servers!server=alice/", "access:servers!user=alice"])
    );
    assert_eq!(
        env["JUPYTERHUB_ACTIVITY_URL"],
        "http://127.0.0.1:8081/hub/api/users/alice/activity"
    );
    assert_eq!(env["JUPYTERHUB_USER"], "alice");
    assert_eq!(env["JUPYTERHUB_API_TOKEN"], env["JPY_API_TOKEN"]);
    assert!(env.values().all(|v| !v.contains(ADMIN_TOKEN)));
    let server_token = env["JUPYTERHUB_API_TOKEN"].clone();

    // The server token: note `Server at …`, identifies alice.
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&server_token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "alice");
    let tokens = h
        .admin(Method::GET, "/hub/api/users/alice/tokens", None)
        .await;
    assert!(
        tokens.body["api_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["note"] == "Server at /user/alice/"),
        "{}",
        tokens.text
    );

    // Progress of a ready server: just the ready event.
    let events = sse(h, "/hub/api/users/alice/server/progress").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["ready"], true);
    assert_eq!(events[0]["url"], "/user/alice/");

    // Starting again is a 400; stopping cleans everything up.
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(s.table.get("/user/alice").is_none());
    assert!(s.spawner.running.lock().await.is_empty());
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&server_token), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "server token deleted");
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(model.body["stopped"], true);
    let r = h
        .admin(Method::GET, "/hub/api/users/alice/server/progress", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Restart without a body reuses the saved user_options.
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(model.body["user_options"], json!({"size": "small"}));
}

#[tokio::test]
async fn reconcile_reattaches_and_cleans_up() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    for name in ["alice", "bob"] {
        h.admin(Method::POST, &format!("/hub/api/users/{name}"), None)
            .await;
        let r = h
            .admin(Method::POST, &format!("/hub/api/users/{name}/server"), None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // A "restarted hub": empty route table, same database and processes; bob's server died.
    let bob = h
        .admin(Method::GET, "/hub/api/users/bob/server", None)
        .await;
    let bob_port = bob.body["state"]["port"].as_u64().unwrap() as u16;
    s.spawner
        .running
        .lock()
        .await
        .remove(&bob_port)
        .unwrap()
        .abort();
    let table = Arc::new(proxy::RouteTable::new());
    let mut stale = serde_json::Map::new();
    stale.insert("target".into(), "http://127.0.0.1:9".into());
    stale.insert("user".into(), "carol".into());
    table.add("/user/carol", stale).unwrap();
    let again = SpawnOrchestrator::new(
        h.state.db().clone(),
        s.spawner.clone(),
        Arc::new(EmbeddedProxy::new(Arc::clone(&table))),
        settings(Duration::from_secs(5)),
    );
    again.reconcile().await.unwrap();
    assert!(table.get("/user/alice").is_some(), "alice re-attached");
    assert!(table.get("/user/bob").is_none());
    assert!(table.get("/user/carol").is_none(), "stale route removed");
    let bob = h
        .admin(Method::GET, "/hub/api/users/bob/server", None)
        .await;
    assert_eq!(bob.body["stopped"], true, "{}", bob.text);
    drop(s.orchestrator);
}

#[tokio::test]
async fn reconcile_beside_live_replicas_leaves_pending_spawns_alone() {
    // A pending spawn (the fake listens but never answers) seen by another replica's
    // start-up: beside live replicas it may be theirs, in flight, and is left alone; a hub
    // alone on the database stops it.
    let s = setup(Arc::default(), Duration::from_secs(30)).await;
    let h = &s.hub;
    h.admin(Method::POST, "/hub/api/users/mute", None).await;
    let r = h
        .admin(Method::POST, "/hub/api/users/mute/server", None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let other = SpawnOrchestrator::new(
        h.state.db().clone(),
        s.spawner.clone(),
        Arc::new(EmbeddedProxy::new(Arc::new(proxy::RouteTable::new()))),
        settings(Duration::from_secs(30)),
    );
    let model = async || {
        h.admin(Method::GET, "/hub/api/users/mute/server", None)
            .await
            .body
    };
    other.reconcile_beside_replicas().await.unwrap();
    let m = model().await;
    assert_eq!(m["pending"], "spawn", "left alone: {m}");
    other.reconcile().await.unwrap();
    let m = model().await;
    assert_eq!(m["stopped"], true, "stopped when alone: {m}");
    assert_eq!(m["pending"], Value::Null, "{m}");
    drop(s.orchestrator);
}

#[tokio::test]
async fn start_timeout_fails_the_spawn() {
    let s = setup(Arc::default(), Duration::from_millis(300)).await;
    let h = &s.hub;
    h.admin(Method::POST, "/hub/api/users/mute", None).await;
    let r = h
        .admin(Method::POST, "/hub/api/users/mute/server", None)
        .await;
    // The fake listens but never answers: the spawn is pending, then fails.
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let events = sse(h, "/hub/api/users/mute/server/progress").await;
    assert_eq!(
        events[0],
        json!({"progress": 0, "message": "Server requested"})
    );
    let last = events.last().unwrap();
    assert_eq!(last["failed"], true);
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("spawner.start_timeout"),
        "{last}"
    );
    let model = h
        .admin(Method::GET, "/hub/api/users/mute/server", None)
        .await;
    assert_eq!(model.body["stopped"], true);
    assert!(s.spawner.running.lock().await.is_empty(), "process stopped");
    assert!(s.table.get("/user/mute").is_none());

    // Reloading the pending page after the failure still says why, and offers a new start.
    let (cookie, _) = h.login("mute").await;
    let r = h.send(page("/hub/spawn-pending/mute", &cookie, None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Server start failed"), "{}", r.text);
    assert!(r.text.contains("id=\"failure\""), "{}", r.text);
    assert!(r.text.contains("spawner.start_timeout"), "{}", r.text);
    assert!(
        r.text.replace("&#x2f;", "/").contains("/hub/spawn/mute"),
        "{}",
        r.text
    );
}

fn page(path: &str, cookie: &str, accept: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header("cookie", cookie);
    if let Some(a) = accept {
        b = b.header("accept", a);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn browser_flow() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    let (cookie, cookies) = h.login("alice").await;

    // Stopped: 424 page linking to the spawn page; JSON for API-like requests.
    let r = h.send(page("/hub/user/alice/lab", &cookie, None)).await;
    assert_eq!(r.status, StatusCode::FAILED_DEPENDENCY);
    assert!(
        r.text
            .replace("&#x2f;", "/")
            .contains("/hub/spawn/alice?next=%2Fhub%2Fuser%2Falice%2Flab"),
        "{}",
        r.text
    );
    let r = h
        .send(page("/hub/user/alice/api/kernels", &cookie, None))
        .await;
    assert_eq!(r.status, StatusCode::FAILED_DEPENDENCY);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("/hub/spawn/alice"),
        "{}",
        r.text
    );

    // The spawn page is the options picker; a query naming options only selects them (a GET
    // never starts a server); the form's post starts it and redirects to the pending page,
    // which goes on to `next` once ready.
    let r = h
        .send(page(
            "/hub/spawn/alice?next=%2Fhub%2Fuser%2Falice%2Flab",
            &cookie,
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("JupyterLab (Full working environment)"));
    let r = h
        .send(page(
            "/hub/spawn/alice?next=%2Fhub%2Fuser%2Falice%2Flab&profile=jupyterlab",
            &cookie,
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("id=\"spawn-form\""), "{}", r.text);
    assert!(s.spawner.envs.lock().await.is_empty(), "nothing started");
    let req = Request::post("/hub/spawn/alice?next=%2Fhub%2Fuser%2Falice%2Flab")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "_xsrf={}&profile=jupyterlab",
            cookies["_xsrf"]
        )))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert_eq!(
        r.headers["location"],
        "/hub/spawn-pending/alice?next=%2Fhub%2Fuser%2Falice%2Flab"
    );
    let r = h
        .send(page(
            "/hub/spawn-pending/alice?next=%2Fhub%2Fuser%2Falice%2Flab",
            &cookie,
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/hub/user/alice/lab");

    // Running: on to the server with a redirect count; a loop ends in a 500.
    let r = h.send(page("/hub/user/alice/lab?a=b", &cookie, None)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/user/alice/lab?a=b&redirects=1");
    let r = h
        .send(page("/hub/user/alice/lab?redirects=4", &cookie, None))
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Someone else's server is off limits; the home page offers open and stop.
    let (bob, _) = h.login("bob").await;
    let r = h.send(page("/hub/user/alice/lab", &bob, None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h.send(page("/hub/home", &cookie, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("Stop") && r.text.contains("Open"),
        "{}",
        r.text
    );
}

/// `/hub/user-redirect/PATH`: login first, the picker when nothing runs, then the visitor's own
/// server; a link cannot lead out of it.
#[tokio::test]
async fn user_redirect_deep_links_land_in_the_visitors_own_server() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    let link = "/hub/user-redirect/lab/tree/examples/x.ipynb?kernel=python3";

    // Never logged in: the login page, coming back to the link.
    let r = h.send(page(link, "", None)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert_eq!(
        r.headers["location"],
        "/hub/login?next=%2Fhub%2Fuser-redirect%2Flab%2Ftree%2Fexamples%2Fx.ipynb%3Fkernel%3Dpython3"
    );

    // Logged in, no server: the picker first, with the server's path as `next`.
    let (cookie, cookies) = h.login("alice").await;
    let r = h.send(page(link, &cookie, None)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let next = "%2Fhub%2Fuser%2Falice%2Flab%2Ftree%2Fexamples%2Fx.ipynb%3Fkernel%3Dpython3";
    assert_eq!(
        r.headers["location"],
        format!("/hub/spawn/alice?next={next}").as_str()
    );
    let req = Request::post(format!("/hub/spawn/alice?next={next}"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "_xsrf={}&profile=jupyterlab",
            cookies["_xsrf"]
        )))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let r = h
        .send(page(
            &format!("/hub/spawn-pending/alice?next={next}"),
            &cookie,
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "/hub/user/alice/lab/tree/examples/x.ipynb?kernel=python3"
    );

    // Running: straight to the server, for alice and for bob alike: each to their own.
    let r = h.send(page(link, &cookie, None)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "/hub/user/alice/lab/tree/examples/x.ipynb?kernel=python3"
    );
    let (bob, _) = h.login("bob").await;
    let r = h.send(page(link, &bob, None)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/hub/spawn/bob?next=%2Fhub%2Fuser%2Fbob%2F"),
        "bob's link leads to bob's server: {:?}",
        r.headers["location"]
    );

    // A crafted link cannot climb out of the server onto the hub (its token page, say).
    for bad in [
        "/hub/user-redirect/../../hub/token",
        "/hub/user-redirect/lab/%2e%2e/%2e%2e/%2e%2e/hub/token",
    ] {
        let r = h.send(page(bad, &cookie, None)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(r.headers.get("location").is_none());
    }
}
