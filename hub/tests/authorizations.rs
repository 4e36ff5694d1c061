//! The deprecated `GET /hub/api/authorizations/token/{token}` (JupyterHub's `TokenAPIHandler`):
//! the token owner's model for any token-authenticated caller, as the owner's identify scopes
//! plus the caller's own show it; 404 for unknown tokens; a deprecation warning that never
//! carries the looked-up token. Written as the requests of a user fishing for another user's
//! token details.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::mpsc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Hub, hub, hub_with, test_db, validate_component};
use hub::{Config, RoleConfig, Secret, ServiceConfig};
use serde_json::Value;

const CULLER_TOKEN: &str = "culler-service-token-0123456789ab";

fn with_culler(c: &mut Config) {
    let mut culler = ServiceConfig::named("culler");
    culler.api_token = Some(Secret::new(CULLER_TOKEN));
    c.services = vec![culler];
    c.roles = vec![RoleConfig {
        name: "culler".into(),
        scopes: vec![
            "list:users".into(),
            "read:users:activity".into(),
            "read:servers".into(),
        ],
        services: vec!["culler".into()],
        ..RoleConfig::default()
    }];
}

fn lookup_path(token: &str) -> String {
    format!("/hub/api/authorizations/token/{token}")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Alice's token id and last activity as the admin sees them.
async fn token_activity(h: &Hub, user: &str) -> Vec<Value> {
    let r = h
        .admin(Method::GET, &format!("/hub/api/users/{user}/tokens"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["api_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["last_activity"].clone())
        .collect()
}

#[tokio::test]
async fn a_service_resolves_a_users_token_to_the_users_model_and_records_activity() {
    let h = hub_with(test_db().await, with_culler).await;
    let alice = h.user_token("alice", None).await;
    assert_eq!(token_activity(&h, "alice").await, vec![Value::Null]);
    let r = h
        .call(Method::GET, &lookup_path(&alice), Some(CULLER_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate_component("User", &r.body);
    assert_eq!(r.body["kind"], "user");
    assert_eq!(r.body["name"], "alice");
    assert_eq!(r.body["groups"], serde_json::json!([]));
    // The culler's own scopes add what they show (activity, servers).
    assert!(r.body.get("last_activity").is_some(), "{}", r.text);
    assert!(r.body.get("servers").is_some(), "{}", r.text);
    // Seeing the token is its activity.
    assert!(token_activity(&h, "alice").await[0].is_string());
}

/// Bob holds alice's token (found in a shared notebook): the lookup tells him whose it is
/// (JupyterHub's identify scopes: name, admin, groups), nothing about alice's servers, roles or
/// activity, and nothing about the token (its scopes, note, id).
#[tokio::test]
async fn a_user_learns_only_the_owners_identity_from_a_foreign_token() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let bob = h.user_token("bob", None).await;
    let r = h
        .call(Method::GET, &lookup_path(&alice), Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate_component("User", &r.body);
    assert_eq!(r.body["name"], "alice");
    let expected: BTreeSet<String> = ["kind", "name", "admin", "user_info", "groups"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(keys(&r.body), expected, "{}", r.text);
    for field in [
        "scopes",
        "note",
        "id",
        "token_id",
        "session_id",
        "expires_at",
    ] {
        assert!(!r.text.contains(field), "{field} leaked: {}", r.text);
    }
    // Bob looking up his own token sees his own full model, as `GET /user` would show it.
    let r = h
        .call(Method::GET, &lookup_path(&bob), Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "bob");
    assert!(r.body.get("servers").is_some(), "{}", r.text);
}

#[tokio::test]
async fn a_services_token_resolves_to_its_identity_only() {
    let h = hub_with(test_db().await, with_culler).await;
    let bob = h.user_token("bob", None).await;
    let r = h
        .call(Method::GET, &lookup_path(CULLER_TOKEN), Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate_component("Service", &r.body);
    let expected: BTreeSet<String> = ["kind", "name", "admin"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(keys(&r.body), expected, "{}", r.text);
    assert_eq!(r.body["kind"], "service");
    assert_eq!(r.body["name"], "culler");
    assert_eq!(r.body["admin"], false);
}

/// Unknown, expired and revoked tokens are all the same 404, which never echoes the token.
#[tokio::test]
async fn unknown_expired_and_revoked_tokens_are_404_without_echo() {
    let h = hub().await;
    let bob = h.user_token("bob", None).await;
    h.user_token("alice", None).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"expires_in": 1}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let expiring = r.body["token"].as_str().unwrap().to_owned();
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/tokens", Some("{}"))
        .await;
    let revoked = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = h
        .admin(
            Method::DELETE,
            &format!("/hub/api/users/alice/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for token in [
        "never-issued-token-0123456789abcdef".to_owned(),
        expiring,
        revoked,
    ] {
        let r = h
            .call(Method::GET, &lookup_path(&token), Some(&bob), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(r.body["status"], 404);
        assert!(!r.text.contains(&token), "the 404 echoes the token");
    }
}

/// A page the victim visits cannot make the victim's browser resolve tokens: the endpoint takes
/// token authentication only, not the login cookie (even with a valid `_xsrf`).
#[tokio::test]
async fn a_browser_session_cannot_resolve_tokens() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let (cookie, cookies) = h.login("bob").await;
    let req = Request::get(lookup_path(&alice))
        .header("cookie", &cookie)
        .header("x-xsrftoken", &cookies["_xsrf"])
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(!r.text.contains("alice"));
    // And without any credentials.
    let r = h.call(Method::GET, &lookup_path(&alice), None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn the_removed_post_endpoint_says_where_to_go() {
    let h = hub().await;
    let r = h
        .admin(Method::POST, "/hub/api/authorizations/token", Some("{}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("/hub/api/users/:user/tokens"),
        "{}",
        r.text
    );
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

/// The looked-up token (found or not) never reaches the log; the deprecation warning does.
#[tokio::test]
async fn the_looked_up_token_is_never_logged() {
    let (tx, rx) = mpsc::channel();
    let writer = Captured(tx);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = hub_with(test_db().await, with_culler).await;
    let alice = h.user_token("alice", None).await;
    let unknown = "never-issued-token-0123456789abcdef";
    for token in [alice.as_str(), unknown] {
        h.call(Method::GET, &lookup_path(token), Some(CULLER_TOKEN), None)
            .await;
    }
    let text: String = rx
        .try_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(
        text.contains("/authorizations/token/:token endpoint is deprecated"),
        "no deprecation warning in:\n{text}"
    );
    for token in [alice.as_str(), unknown] {
        assert!(!text.contains(token), "a looked-up token is in the log");
        assert!(
            !text.contains(&token[..12]),
            "part of a token is in the log"
        );
    }
}
