//! The hub over configurable-http-proxy's REST API ([`hub::proxy::ChpProxy`], here against
//! `stackhub-proxy`'s API server): routes land in the external table, `GET /hub/api/proxy`
//! reads it, and `PATCH /hub/api/proxy` moves the hub to another proxy, which gets the hub's,
//! the servers' and the services' routes. Attacks: a move to a proxy that refuses the token (or
//! to a bad URL) changes nothing, and no proxy token ever reaches a response or the log.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::fake::{FakeSpawner, settings};
use common::{Hub, hub_with, test_db};
use hub::proxy::ChpProxy;
use hub::{Config, HubBuilder, Secret, ServiceConfig};
use serde_json::json;

const TOKEN_A: &str = "proxy-a-token-0123456789abcdef";
const TOKEN_B: &str = "proxy-b-token-0123456789abcdef";
const WRONG: &str = "wrong-proxy-token-0123456789abcdef";
const HUB_TARGET: &str = "http://127.0.0.1:8081";

/// A configurable-http-proxy API (stackhub-proxy's) on a free port, guarded by `token`.
struct Chp {
    table: Arc<proxy::RouteTable>,
    url: String,
}

async fn chp(token: &str) -> Chp {
    let table = Arc::new(proxy::RouteTable::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = proxy::Api::new(Arc::clone(&table), Some(token.to_owned()));
    tokio::spawn(proxy::serve_api(
        listener,
        api,
        None,
        std::future::pending::<()>(),
    ));
    Chp { table, url }
}

fn configure(c: &mut Config) {
    let mut grades = ServiceConfig::named("grades");
    grades.url = Some("http://127.0.0.1:10101".into());
    c.services = vec![grades];
}

/// A hub routing through the proxy API at `a`.
async fn hub_over(a: &Chp) -> (Hub, Arc<ChpProxy>) {
    let base = hub_with(test_db().await, configure).await;
    let chp = Arc::new(
        ChpProxy::new(
            &a.url,
            Some(Secret::new(TOKEN_A)),
            Some(("/".to_owned(), HUB_TARGET.to_owned())),
        )
        .unwrap(),
    );
    let s = settings(Duration::from_secs(5));
    let built = HubBuilder::new(base.state.config().clone(), base.state.db().clone())
        .hub_api_url(s.hub_api_url.clone())
        .spawn_settings(s)
        .spawner(Arc::new(FakeSpawner::default()), chp.clone())
        .build();
    (
        Hub {
            app: built.app,
            state: built.state,
        },
        chp,
    )
}

fn paths(table: &proxy::RouteTable) -> Vec<String> {
    let mut p: Vec<String> = table.all().iter().map(|r| r.path().to_owned()).collect();
    p.sort();
    p
}

/// A log writer handing every line to the test through a channel.
#[derive(Clone)]
struct Captured(mpsc::Sender<Vec<u8>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn routes_go_to_the_external_proxy_and_patch_moves_them() {
    let (tx, rx) = mpsc::channel();
    let writer = Captured(tx);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let a = chp(TOKEN_A).await;
    let b = chp(TOKEN_B).await;
    let (h, chp_proxy) = hub_over(&a).await;
    let r = h.admin(Method::POST, "/hub/api/users/alice", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(paths(&a.table), ["/user/alice"]);
    // The resync adds the hub's and the service's routes.
    let r = h.admin(Method::POST, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(paths(&a.table), ["/", "/services/grades", "/user/alice"]);
    let r = h.admin(Method::GET, "/hub/api/proxy", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["/"],
        json!({"routespec": "/", "target": HUB_TARGET, "data": {"hub": true}})
    );
    let alice_target = r.body["/user/alice"]["target"].clone();
    assert!(alice_target.is_string(), "{}", r.text);

    // A move with a token the new proxy refuses, or to a URL that is no proxy API URL, changes
    // nothing and never echoes the token.
    for body in [
        json!({"api_url": b.url, "auth_token": WRONG}),
        json!({"api_url": b.url}),
        json!({"api_url": "ftp://127.0.0.1:1", "auth_token": TOKEN_B}),
        json!({"api_url": "http://127.0.0.1:1", "auth_token": TOKEN_B}),
        json!({"api_url": b.url, "auth_token": 42}),
    ] {
        let r = h
            .admin(Method::PATCH, "/hub/api/proxy", Some(&body.to_string()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        for secret in [TOKEN_A, TOKEN_B, WRONG] {
            assert!(!r.text.contains(secret), "a proxy token in {}", r.text);
        }
        assert_eq!(chp_proxy.api_url().await, a.url);
    }
    assert!(b.table.is_empty());

    // The real move: the new proxy gets every route the hub expects.
    let body = json!({"api_url": b.url, "auth_token": TOKEN_B}).to_string();
    let r = h.admin(Method::PATCH, "/hub/api/proxy", Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(chp_proxy.api_url().await, b.url);
    assert_eq!(paths(&b.table), ["/", "/services/grades", "/user/alice"]);
    assert_eq!(
        b.table.get("/user/alice").unwrap().data()["target"],
        alice_target
    );
    assert_eq!(b.table.get("/").unwrap().data()["hub"], true);
    // From now on the hub edits the new proxy only.
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(b.table.get("/user/alice").is_none());
    assert!(
        a.table.get("/user/alice").is_some(),
        "the old proxy is left alone"
    );

    let logs: String = rx
        .try_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(logs.contains("proxy moved"), "{logs}");
    for secret in [TOKEN_A, TOKEN_B, WRONG] {
        assert!(!logs.contains(secret), "a proxy token is in the log");
    }
}
