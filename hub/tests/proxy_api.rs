//! `/hub/api/proxy` (scope `proxy`): JupyterHub's routing table with pagination, the resync
//! (`POST`) that re-adds the routes the hub expects and drops stale ones without touching the
//! hub's own or foreign routes, and `PATCH`, which the embedded proxy refuses. Attacks: users
//! without `proxy` reading the table (every user's server address) or resyncing it, and a
//! `PATCH` body's proxy token echoed back.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::{Setup, setup_on};
use common::{ADMIN_TOKEN, hub_with, test_db, validate};
use hub::{Config, RoleConfig, Secret, ServiceConfig};
use serde_json::{Map, Value, json};

const ROUTER_TOKEN: &str = "router-service-token-0123456789ab";

fn configure(c: &mut Config) {
    let mut grades = ServiceConfig::named("grades");
    grades.url = Some("http://127.0.0.1:10101".into());
    let mut router = ServiceConfig::named("router");
    router.api_token = Some(Secret::new(ROUTER_TOKEN));
    c.services = vec![grades, router];
    c.roles = vec![
        RoleConfig {
            name: "router".into(),
            scopes: vec!["proxy".into()],
            services: vec!["router".into()],
            ..RoleConfig::default()
        },
        // Everything about users and servers, but not the proxy.
        RoleConfig {
            name: "operator".into(),
            scopes: vec![
                "admin:users".into(),
                "admin:servers".into(),
                "read:hub".into(),
            ],
            users: vec!["opal".into()],
            ..RoleConfig::default()
        },
    ];
}

/// A hub with the fake spawner, the hub's own route and alice's running server.
async fn running() -> Setup {
    let base = hub_with(test_db().await, configure).await;
    let s = setup_on(base, Arc::default(), Duration::from_secs(5));
    let mut hub_data = Map::new();
    hub_data.insert("hub".into(), true.into());
    hub_data.insert("target".into(), "http://127.0.0.1:8081".into());
    s.table.add("/", hub_data).unwrap();
    let h = &s.hub;
    let r = h.admin(Method::POST, "/hub/api/users/alice", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    s
}

fn paths(body: &Value) -> Vec<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_routing_table_is_jupyterhubs_and_paginates() {
    let s = running().await;
    let h = &s.hub;
    // The service's route comes with the resync (start-up adds it in `main`).
    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.admin(Method::GET, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("get", "/proxy", 200, &r.body);
    assert_eq!(
        paths(&r.body),
        ["/", "/services/grades", "/user/alice"],
        "{}",
        r.text
    );
    let alice = &r.body["/user/alice"];
    assert_eq!(alice["routespec"], "/user/alice");
    assert!(
        alice["target"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert_eq!(alice["data"]["user"], "alice");
    assert_eq!(alice["data"]["server_name"], "");
    assert!(alice["data"].get("target").is_none(), "{}", r.text);
    assert_eq!(
        r.body["/"],
        json!({"routespec": "/", "target": "http://127.0.0.1:8081", "data": {"hub": true}})
    );
    assert_eq!(
        r.body["/services/grades"]["data"],
        json!({"service": "grades"})
    );

    // A bare page: sorted by routespec, `offset`/`limit` applied.
    let r = h
        .admin(Method::GET, "/hub/api/proxy?offset=1&limit=1", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(paths(&r.body), ["/services/grades"]);
    // The envelope: `items` is the same object, `next` the absolute URL of the next page.
    let req = Request::get("/hub/api/proxy?limit=2")
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .header("accept", "application/jupyterhub-pagination+json")
        .header("host", "hub.example")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(paths(&r.body["items"]), ["/", "/services/grades"]);
    let p = &r.body["_pagination"];
    assert_eq!(
        (p["offset"].as_i64(), p["limit"].as_i64()),
        (Some(0), Some(2))
    );
    assert_eq!(p["total"], 3);
    assert_eq!(
        p["next"]["url"],
        "http://hub.example/hub/api/proxy?offset=2&limit=2"
    );
    let r = h.admin(Method::GET, "/hub/api/proxy?limit=abc", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn resync_restores_expected_routes_and_drops_only_stale_ones() {
    let s = running().await;
    let h = &s.hub;
    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let alice_target = s.table.get("/user/alice").unwrap().data()["target"].clone();
    let grades_before = s.table.get("/services/grades").unwrap();
    // The proxy lost alice's route, kept a deleted user's and a removed service's, points the
    // service elsewhere... and carries a route the hub did not make.
    s.table.remove("/user/alice");
    let stale = |key: &str, value: &str| {
        let mut d = Map::new();
        d.insert(key.into(), value.into());
        d.insert("target".into(), "http://127.0.0.1:9".into());
        d
    };
    s.table.add("/user/ghost", stale("user", "ghost")).unwrap();
    s.table
        .add("/services/old", stale("service", "old"))
        .unwrap();
    let mut foreign = Map::new();
    foreign.insert("target".into(), "http://127.0.0.1:7".into());
    s.table.add("/extra", foreign).unwrap();

    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.is_empty(), "{}", r.text);
    let alice = s.table.get("/user/alice").expect("alice's route is back");
    assert_eq!(alice.data()["target"], alice_target);
    assert_eq!(alice.data()["user"], "alice");
    assert!(s.table.get("/user/ghost").is_none());
    assert!(s.table.get("/services/old").is_none());
    assert!(s.table.get("/extra").is_some(), "foreign routes are kept");
    assert!(s.table.get("/").is_some(), "the hub's route is kept");
    // A route already right is left as it was (its activity with it).
    assert!(Arc::ptr_eq(
        &grades_before,
        &s.table.get("/services/grades").unwrap()
    ));
    // A service route pointing elsewhere is put back.
    s.table
        .add("/services/grades", stale("service", "grades"))
        .unwrap();
    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        s.table.get("/services/grades").unwrap().data()["target"],
        "http://127.0.0.1:10101"
    );
    // A stopped server's route does not come back.
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(s.table.get("/user/alice").is_none());
}

/// Without `proxy` nobody reads the table (every server's internal address), resyncs or
/// moves it, whatever else they hold; with it (a service's role) all three answer.
#[tokio::test]
async fn only_the_proxy_scope_reaches_the_table() {
    let s = running().await;
    let h = &s.hub;
    let alice = h.user_token("alice", None).await;
    let almost_admin = h.user_token("opal", None).await;
    let r = h
        .call(Method::GET, "/hub/api/users", Some(&almost_admin), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the operator is powerful: {}",
        r.text
    );
    for token in [alice.as_str(), almost_admin.as_str()] {
        for (method, body) in [
            (Method::GET, None),
            (Method::POST, None),
            (Method::PATCH, Some(r#"{"api_url": "http://127.0.0.1:1"}"#)),
        ] {
            let r = h
                .call(method.clone(), "/hub/api/proxy", Some(token), body)
                .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}: {}", r.text);
            assert!(r.body["message"].as_str().unwrap().contains("'proxy'"));
            assert!(!r.text.contains("127.0.0.1"), "{}", r.text);
        }
    }
    let r = h
        .call(Method::GET, "/hub/api/proxy", Some(ROUTER_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body.get("/user/alice").is_some());
    let r = h
        .call(Method::POST, "/hub/api/proxy", Some(ROUTER_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// The embedded proxy cannot move: a clear 400 that never echoes the proxy token sent, and the
/// routes stay as they were. Bodies that are not JSON objects are JupyterHub's 400s.
#[tokio::test]
async fn patch_cannot_move_the_embedded_proxy_and_never_echoes_the_token() {
    let s = running().await;
    let h = &s.hub;
    let before = s.table.len();
    let secret = "proxy-auth-token-0123456789abcdef";
    let body = json!({"api_url": "http://10.0.0.9:8001", "auth_token": secret}).to_string();
    let r = h.admin(Method::PATCH, "/hub/api/proxy", Some(&body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["status"], 400);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("embedded proxy cannot be moved"),
        "{message}"
    );
    assert!(!r.text.contains(secret), "the proxy token is echoed");
    assert_eq!(s.table.len(), before);
    assert!(s.table.get("/user/alice").is_some());
    for bad in ["[1, 2]", "\"api_url\"", "not json"] {
        let r = h.admin(Method::PATCH, "/hub/api/proxy", Some(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = h.admin(Method::PATCH, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

/// A hub built without a spawner has no proxy: 501, not an empty table.
#[tokio::test]
async fn a_hub_without_a_proxy_says_so() {
    let h = common::hub().await;
    let r = h.admin(Method::GET, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text);
}
