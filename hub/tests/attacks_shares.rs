//! Attacks on sharing, each written as the requests a hostile user sends: sharing someone
//! else's server, widening a share beyond access to one server, reaching the owner's other
//! servers, reusing expired or revoked codes, guessing codes, keeping a group share after
//! leaving the group, and keeping an OAuth login to a server after the share is revoked.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::shares::{sharing_hub, to_user};
use serde_json::json;

const ACCESS: &str = "access:servers!server=alice/";

/// mallory (a user who may share her own servers) shares alice's server with herself and
/// issues codes for it: refused, and nothing is stored.
#[tokio::test]
async fn sharing_someone_elses_server_is_refused() {
    let (h, alice, _, _) = sharing_hub().await;
    let mallory = h.user_token("mallory", None).await;
    for path in ["/hub/api/shares/alice/", "/hub/api/share-codes/alice/"] {
        let body = if path.contains("codes") {
            json!({})
        } else {
            to_user("mallory")
        };
        let r = h.json(Method::POST, path, &mallory, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        let r = h.call(Method::GET, path, Some(&mallory), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        let r = h.call(Method::DELETE, path, Some(&mallory), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
    }
    let r = h
        .json(
            Method::POST,
            "/hub/api/share-codes/alice/",
            &mallory,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(!h.scopes_of(&mallory).await.contains(&ACCESS.to_owned()));
    let r = h
        .call(Method::GET, "/hub/api/shares/alice", Some(&alice), None)
        .await;
    assert_eq!(r.body["items"], json!([]));
    // A token of alice's that may only read her shares cannot grant any.
    let reader = h
        .user_token("alice", Some(&["read:shares!user=alice"]))
        .await;
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &reader,
            to_user("mallory"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Without `shares!user` in the user role (JupyterHub's default), nobody may share.
    let plain = common::hub().await;
    let alice_plain = plain.user_token("alice", None).await;
    plain.user_token("bob", None).await;
    let r = plain
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice_plain,
            to_user("bob"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

/// alice (compromised page, or alice herself) tries to make a share grant more than access
/// to that one server.
#[tokio::test]
async fn a_share_cannot_grant_more_than_that_server() {
    let (h, alice, bob, _) = sharing_hub().await;
    for (scopes, status) in [
        (
            json!(["access:servers!user=alice"]),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!(["access:servers!server=alice/other"]),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!(["access:servers!server=carol/"]),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!(["access:servers!group=team"]),
            StatusCode::BAD_REQUEST,
        ),
        (json!(["inherit"]), StatusCode::BAD_REQUEST),
        (json!(["self"]), StatusCode::BAD_REQUEST),
        (json!(["admin"]), StatusCode::BAD_REQUEST),
        // Scopes alice does not hold herself.
        (json!(["admin:users"]), StatusCode::FORBIDDEN),
        (json!(["admin:server_state"]), StatusCode::FORBIDDEN),
        (json!(["access:servers", "shutdown"]), StatusCode::FORBIDDEN),
    ] {
        for path in ["/hub/api/shares/alice/", "/hub/api/share-codes/alice/"] {
            let body = if path.contains("codes") {
                json!({"scopes": scopes})
            } else {
                json!({"user": "bob", "scopes": scopes})
            };
            let r = h.json(Method::POST, path, &alice, body).await;
            assert_eq!(r.status, status, "{scopes} on {path}: {}", r.text);
            assert_eq!(r.body["status"], status.as_u16());
        }
    }
    let scopes = h.scopes_of(&bob).await;
    assert!(
        !scopes.iter().any(|s| s.contains("alice")),
        "nothing granted: {scopes:?}"
    );
    // Whatever alice asks for, what bob gets is filtered on that server.
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            json!({"user": "bob", "scopes": ["access:servers", "read:servers"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for s in h.scopes_of(&bob).await {
        if s.contains("alice") {
            assert!(s.ends_with("!server=alice/"), "{s}");
        }
    }
}

/// bob, with access to alice's default server, goes for her named server: refused by the
/// OAuth provider and the REST API.
#[tokio::test]
async fn a_recipient_cannot_reach_the_owners_other_servers() {
    let (h, alice, bob, _) = sharing_hub().await;
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/private",
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let shared = h.server_client("alice", "").await;
    let private = h.server_client("alice", "private").await;
    let (cookie, _) = h.login("bob").await;
    assert_eq!(
        h.authorize_status(&cookie, &shared).await,
        StatusCode::FORBIDDEN
    );
    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("bob"),
    )
    .await;
    // The shared server: the consent page (someone else's server).
    assert_eq!(h.authorize_status(&cookie, &shared).await, StatusCode::OK);
    assert_eq!(
        h.authorize_status(&cookie, &private).await,
        StatusCode::FORBIDDEN
    );
    for (method, path) in [
        (Method::GET, "/hub/api/users/alice/servers/private"),
        (Method::GET, "/hub/api/users/alice/server"),
        (Method::POST, "/hub/api/users/alice/servers/private"),
        (Method::DELETE, "/hub/api/users/alice/server"),
        (Method::GET, "/hub/api/shares/alice"),
    ] {
        let r = h.call(method.clone(), path, Some(&bob), None).await;
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.text
        );
    }
    // Nor can he pass the share on.
    h.user_token("mallory", None).await;
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &bob,
            to_user("mallory"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = h
        .json(Method::POST, "/hub/api/share-codes/alice/", &bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

async fn expire_all_codes(h: &common::Hub) {
    sqlx::query("UPDATE share_codes SET expires_at = 1")
        .execute(h.state.db().pool())
        .await
        .unwrap();
    h.state.db().changed();
}

/// mallory kept a code past its expiry, or after alice revoked it.
#[tokio::test]
async fn expired_or_revoked_codes_grant_nothing() {
    let (h, alice, _, _) = sharing_hub().await;
    let mallory = h.user_token("mallory", None).await;
    let (cookie, cookies) = h.login("mallory").await;
    let r = h
        .issue_code(
            &alice,
            "/hub/api/share-codes/alice/",
            json!({"expires_in": 60}),
        )
        .await;
    let code = r.body["code"].as_str().unwrap().to_owned();
    expire_all_codes(&h).await;
    let page = h.accept_page(&cookie, &code).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
    assert!(page.text.contains("expired"), "{}", page.text);
    let r = h.accept_post(&cookie, &code, &cookies["_xsrf"]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!h.scopes_of(&mallory).await.contains(&ACCESS.to_owned()));
    // Expired codes are not listed.
    let r = h
        .call(
            Method::GET,
            "/hub/api/share-codes/alice",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.body["items"], json!([]), "{}", r.text);

    // Revoked after mallory opened the page, before she submits it.
    let r = h
        .issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    let code = r.body["code"].as_str().unwrap().to_owned();
    let page = h.accept_page(&cookie, &code).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/share-codes/alice/",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.accept_post(&cookie, &code, &cookies["_xsrf"]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!h.scopes_of(&mallory).await.contains(&ACCESS.to_owned()));
}

/// mallory guesses codes, and tries a code of one server on another server's path.
#[tokio::test]
async fn codes_cannot_be_guessed_and_are_stored_hashed() {
    let (h, alice, _, _) = sharing_hub().await;
    let r = h
        .issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    let code = r.body["code"].as_str().unwrap().to_owned();
    h.user_token("mallory", None).await;
    let (cookie, cookies) = h.login("mallory").await;
    let mut guesses = vec![
        String::new(),
        code[..code.len() - 1].to_owned(),
        format!("{code}x"),
        code.to_uppercase(),
        "sc_1".to_owned(),
        "1".to_owned(),
    ];
    guesses.extend((0..20).map(|i| format!("{i:0>43}")));
    for guess in &guesses {
        let r = h.accept_post(&cookie, guess, &cookies["_xsrf"]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{guess}: {}", r.text);
    }
    let r = h
        .call(
            Method::GET,
            "/hub/api/share-codes/alice/",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["exchange_count"], 0);
    // The database holds only the code's hash.
    let rows: Vec<(String,)> = sqlx::query_as("SELECT code_hash FROM share_codes")
        .fetch_all(h.state.db().pool())
        .await
        .unwrap();
    assert_eq!(rows, vec![(hub::hash_secret(&code),)]);
    // A code of alice's default server does not revoke through her other server's path.
    h.call(
        Method::PUT,
        "/hub/api/users/alice/servers/other",
        Some(&alice),
        Some("{}"),
    )
    .await;
    let r = h
        .call(
            Method::DELETE,
            &format!("/hub/api/share-codes/alice/other?code={code}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// bob was in the group alice shared with; he is removed from it (or the group is deleted).
#[tokio::test]
async fn a_group_share_ends_with_membership() {
    let (h, alice, bob, _) = sharing_hub().await;
    h.admin(
        Method::POST,
        "/hub/api/groups/team",
        Some(r#"{"users": ["bob"]}"#),
    )
    .await;
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            json!({"group": "team"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let client = h.server_client("alice", "").await;
    let (cookie, _) = h.login("bob").await;
    assert!(h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
    assert_eq!(h.authorize_status(&cookie, &client).await, StatusCode::OK);
    let r = h
        .admin(
            Method::DELETE,
            "/hub/api/groups/team/users",
            Some(r#"{"users": ["bob"]}"#),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
    assert_eq!(
        h.authorize_status(&cookie, &client).await,
        StatusCode::FORBIDDEN
    );
    // Back in, then the group is deleted: its shares go with it.
    h.admin(
        Method::POST,
        "/hub/api/groups/team/users",
        Some(r#"{"users": ["bob"]}"#),
    )
    .await;
    assert!(h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
    let r = h.admin(Method::DELETE, "/hub/api/groups/team", None).await;
    assert!(r.status.is_success(), "{}", r.text);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM shares")
        .fetch_one(h.state.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A new group of the same name does not inherit the share.
    h.admin(
        Method::POST,
        "/hub/api/groups/team",
        Some(r#"{"users": ["bob"]}"#),
    )
    .await;
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
}

/// bob logged into alice's server through OAuth while shared; alice revokes. His OAuth token
/// stops reporting access at once and a new login is refused.
#[tokio::test]
async fn revoking_ends_oauth_access_at_once() {
    let (h, alice, _, _) = sharing_hub().await;
    let client = h.server_client("alice", "").await;
    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("bob"),
    )
    .await;
    let (cookie, cookies) = h.login("bob").await;
    // Consent (someone else's server), then the code for a token.
    let body = format!(
        "client_id={client}&redirect_uri=%2Fuser%2Falice%2Foauth_callback&response_type=code&_xsrf={}",
        cookies["_xsrf"]
    );
    let r = h
        .send(
            Request::post("/hub/api/oauth2/authorize")
                .header("cookie", &cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.headers["location"].to_str().unwrap();
    let code = url::Url::parse(&format!("http://x{location}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &client)
        .append_pair("client_secret", "client-secret-0123456789")
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", "/user/alice/oauth_callback")
        .finish();
    let r = h
        .send(
            Request::post("/hub/api/oauth2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    assert!(h.scopes_of(&token).await.contains(&ACCESS.to_owned()));

    let r = h
        .json(
            Method::PATCH,
            "/hub/api/shares/alice/",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!h.scopes_of(&token).await.contains(&ACCESS.to_owned()));
    assert_eq!(
        h.authorize_status(&cookie, &client).await,
        StatusCode::FORBIDDEN
    );
}

/// Deleting the owner's server, the owner or the recipient removes shares and codes (a
/// recreated server or user of the same name starts with none).
#[tokio::test]
async fn deleting_servers_and_users_removes_their_shares() {
    let (h, alice, bob, _) = sharing_hub().await;
    let count = |table: &'static str| {
        let pool = h.state.db().pool().clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    h.call(
        Method::PUT,
        "/hub/api/users/alice/servers/lab",
        Some(&alice),
        Some("{}"),
    )
    .await;
    h.json(
        Method::POST,
        "/hub/api/shares/alice/lab",
        &alice,
        to_user("bob"),
    )
    .await;
    h.issue_code(&alice, "/hub/api/share-codes/alice/lab", json!({}))
        .await;
    assert_eq!((count("shares").await, count("share_codes").await), (1, 1));
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/users/alice/servers/lab",
            Some(&alice),
            Some(r#"{"remove": true}"#),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!((count("shares").await, count("share_codes").await), (0, 0));
    h.call(
        Method::PUT,
        "/hub/api/users/alice/servers/lab",
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert!(
        !h.scopes_of(&bob)
            .await
            .contains(&"access:servers!server=alice/lab".to_owned())
    );

    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("bob"),
    )
    .await;
    let r = h.admin(Method::DELETE, "/hub/api/users/bob", None).await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(count("shares").await, 0);
    let bob2 = h.user_token("bob", None).await;
    assert!(!h.scopes_of(&bob2).await.contains(&ACCESS.to_owned()));

    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("bob"),
    )
    .await;
    h.issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    let r = h.admin(Method::DELETE, "/hub/api/users/alice", None).await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!((count("shares").await, count("share_codes").await), (0, 0));
}
