//! The hub caches token callers and the answers of `GET /hub/api/users[/{name}]` per database
//! generation. Every kind of write must show in the next read of a warm cache: user create,
//! modify, rename and delete, group membership, activity, login, server create / start / stop
//! (written by the spawn pipeline in the background), raw transactions, and token deletion or
//! expiry (refused at once).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::fake::setup;
use common::{Hub, Resp, hub, validate};
use serde_json::Value;

/// GET `path` with `token`, then twice more (the last answer comes from the cache when
/// cacheable) and check those two answers are the same; the last one. (The first use of a user
/// token records the user's activity, so the first answer may differ.)
async fn get_twice(h: &Hub, path: &str, token: &str) -> Resp {
    h.call(Method::GET, path, Some(token), None).await;
    let first = h.call(Method::GET, path, Some(token), None).await;
    let second = h.call(Method::GET, path, Some(token), None).await;
    assert_eq!(first.status, second.status, "{path}");
    assert_eq!(
        first.text, second.text,
        "{path}: the cached answer is the same"
    );
    assert_eq!(
        first.headers.get("content-type"),
        second.headers.get("content-type"),
        "{path}"
    );
    second
}

async fn admin_get(h: &Hub, path: &str) -> Resp {
    get_twice(h, path, common::ADMIN_TOKEN).await
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn cached_reads_reflect_every_user_write() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let r = admin_get(&h, "/hub/api/users").await;
    assert_eq!(r.status, StatusCode::OK);
    validate("get", "/users", 200, &r.body);
    assert_eq!(names(&r.body), ["alice"]);
    let r = admin_get(&h, "/hub/api/users/alice").await;
    validate("get", "/users/{name}", 200, &r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.body["admin"], false);
    assert_eq!(r.body["groups"], serde_json::json!([]));

    // Create.
    let r = h.admin(Method::POST, "/hub/api/users/bob", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        names(&admin_get(&h, "/hub/api/users").await.body),
        ["alice", "bob"]
    );
    // Modify (admin flag), and the user's own token gains the admin's scopes at once.
    assert_eq!(
        get_twice(&h, "/hub/api/users", &alice).await.status,
        StatusCode::FORBIDDEN
    );
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/alice",
            Some(r#"{"admin":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        admin_get(&h, "/hub/api/users/alice").await.body["admin"],
        true
    );
    assert_eq!(
        get_twice(&h, "/hub/api/users", &alice).await.status,
        StatusCode::OK
    );
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/alice",
            Some(r#"{"admin":false}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        get_twice(&h, "/hub/api/users", &alice).await.status,
        StatusCode::FORBIDDEN,
        "a revoked admin flag is refused at once"
    );
    // Group membership.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/lab",
            Some(r#"{"users":["bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        admin_get(&h, "/hub/api/users/bob").await.body["groups"],
        serde_json::json!(["lab"])
    );
    let r = h
        .admin(
            Method::DELETE,
            "/hub/api/groups/lab/users",
            Some(r#"{"users":["bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        admin_get(&h, "/hub/api/users/bob").await.body["groups"],
        serde_json::json!([])
    );
    // Activity.
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/activity",
            Some(&alice),
            Some(r#"{"last_activity":"2026-01-01T12:00:00Z"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let activity = admin_get(&h, "/hub/api/users/alice").await.body["last_activity"].clone();
    assert!(
        activity.as_str().unwrap() >= "2026-01-01T12:00:00Z",
        "{activity}"
    );
    // A login (the login pipeline writes the user's activity).
    let before = admin_get(&h, "/hub/api/users/carol").await;
    assert_eq!(before.status, StatusCode::NOT_FOUND);
    h.login("carol").await;
    let r = admin_get(&h, "/hub/api/users/carol").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["last_activity"].is_string());
    // Rename.
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/bob",
            Some(r#"{"name":"bobby"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        admin_get(&h, "/hub/api/users/bob").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        names(&admin_get(&h, "/hub/api/users").await.body),
        ["alice", "bobby", "carol"]
    );
    // A named server (stopped servers show with include_stopped_servers).
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = admin_get(&h, "/hub/api/users/alice?include_stopped_servers").await;
    assert!(r.body["servers"]["gpu"].is_object(), "{}", r.text);
    // A raw transaction, as the spawn pipeline writes.
    let mut row = h.state.db().server("alice", "gpu").await.unwrap().unwrap();
    row.pending = Some("spawn".to_owned());
    h.state.db().save_server(&row).await.unwrap();
    let r = admin_get(&h, "/hub/api/users/alice").await;
    assert_eq!(r.body["servers"]["gpu"]["pending"], "spawn", "{}", r.text);
    {
        let mut tx = h.state.db().begin().await.unwrap();
        sqlx::query("UPDATE users SET admin = 1 WHERE name = 'carol'")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        admin_get(&h, "/hub/api/users/carol").await.body["admin"],
        true
    );
    // Delete.
    let r = h.admin(Method::DELETE, "/hub/api/users/carol", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        admin_get(&h, "/hub/api/users/carol").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        names(&admin_get(&h, "/hub/api/users").await.body),
        ["alice", "bobby"]
    );
}

#[tokio::test]
async fn answers_are_cached_per_caller_and_query() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    h.user_token("bob", None).await;
    // The admin sees everything, alice only her own model, and the cached answers stay apart.
    let admin = admin_get(&h, "/hub/api/users/alice").await;
    let own = get_twice(&h, "/hub/api/users/alice", &alice).await;
    assert!(admin.body.get("roles").is_some(), "{}", admin.text);
    assert!(own.body.get("roles").is_none(), "{}", own.text);
    assert_eq!(own.body["name"], "alice");
    assert_eq!(
        get_twice(&h, "/hub/api/users/bob", &alice).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin_get(&h, "/hub/api/users/bob").await.status,
        StatusCode::OK
    );
    let page = admin_get(&h, "/hub/api/users?limit=1").await;
    assert_eq!(names(&page.body), ["alice"]);
    let page = admin_get(&h, "/hub/api/users?limit=1&offset=1").await;
    assert_eq!(names(&page.body), ["bob"]);
    // The envelope is keyed apart from the bare list.
    let envelope = h
        .send(
            axum::http::Request::get("/hub/api/users?limit=1")
                .header("authorization", format!("token {}", common::ADMIN_TOKEN))
                .header("accept", "application/jupyterhub-pagination+json")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        envelope.body["_pagination"]["total"], 2,
        "{}",
        envelope.text
    );
}

#[tokio::test]
async fn deleted_and_expired_tokens_are_refused_at_once() {
    let h = hub().await;
    h.user_token("alice", None).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"expires_in":1}"#),
        )
        .await;
    let short = r.body["token"].as_str().unwrap().to_owned();
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/tokens", Some("{}"))
        .await;
    let secret = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    for t in [&short, &secret] {
        assert_eq!(
            get_twice(&h, "/hub/api/users/alice", t).await.status,
            StatusCode::OK
        );
    }
    let r = h
        .admin(
            Method::DELETE,
            &format!("/hub/api/users/alice/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(Method::GET, "/hub/api/users/alice", Some(&secret), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a deleted token is refused"
    );
    // Expiry is checked on every cached hit, with no write in between.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = h
            .call(Method::GET, "/hub/api/users/alice", Some(&short), None)
            .await;
        if r.status == StatusCode::FORBIDDEN {
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(Instant::now() < deadline, "the expired token still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleting the user refuses the rest of their tokens.
    let other = h.user_token("bob", None).await;
    assert_eq!(
        get_twice(&h, "/hub/api/user", &other).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.admin(Method::DELETE, "/hub/api/users/bob", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call(Method::GET, "/hub/api/user", Some(&other), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// Poll the admin's (cached) model of `alice` until `check` holds.
async fn until(h: &Hub, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin_get(h, "/hub/api/users/alice").await;
        if check(&r.body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {}", r.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn spawn_pipeline_writes_show_in_cached_models() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    assert_eq!(
        h.admin(Method::POST, "/hub/api/users/alice", None)
            .await
            .status,
        StatusCode::CREATED
    );
    until(h, "no server", |m| m["servers"] == serde_json::json!({})).await;
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", Some("{}"))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    until(h, "ready", |m| m["servers"][""]["ready"] == true).await;
    until(h, "server URL", |m| m["server"] == "/user/alice/").await;
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/server", None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    until(h, "stopped", |m| {
        m["servers"] == serde_json::json!({}) && m["server"].is_null()
    })
    .await;
}
