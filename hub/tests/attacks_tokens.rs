//! Attacks on tokens, scopes, OAuth consent, pagination, request bodies and the spawn page,
//! each written as the requests a hostile user (or a hostile page the victim visits) sends.
//! They run on SQLite and, with `STACKHUB_TEST_DB=postgres`, on PostgreSQL.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::{Setup, setup, setup_on};
use common::{ADMIN_TOKEN, Hub, hub, hub_with, test_db};
use hub::ClientRow;
use serde_json::{Value, json};

/// A JSON error body: `{"status": N, "message": "..."}` with a non-empty message.
fn assert_json_error(r: &common::Resp, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["status"], status.as_u16(), "{}", r.text);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
}

// ---- 1. `inherit` and the `token` role -------------------------------------------------------

/// A token that may only manage alice's tokens asks for a token with everything alice holds.
#[tokio::test]
async fn token_manager_token_cannot_mint_an_inherit_token() {
    let h = hub().await;
    let manager = h.user_token("alice", Some(&["tokens!user=alice"])).await;
    for body in [
        json!({"scopes": ["inherit"]}),
        json!({"roles": ["token"]}),
        json!({"scopes": ["read:tokens!user=alice", "inherit"]}),
        // No scopes and no roles means the `token` role, i.e. `inherit`.
        json!({}),
    ] {
        let r = h
            .call(
                Method::POST,
                "/hub/api/users/alice/tokens",
                Some(&manager),
                Some(&body.to_string()),
            )
            .await;
        assert_json_error(&r, StatusCode::FORBIDDEN);
    }
    // What the manager token holds itself it may still hand out.
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&manager),
            Some(r#"{"scopes": ["read:tokens!user=alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A token with all of alice's rights (and the admin) may mint an `inherit` token.
    let full = h.user_token("alice", None).await;
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&full),
            Some(r#"{"scopes": ["inherit"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let minted = r.body["token"].as_str().unwrap().to_owned();
    let r = h
        .call(Method::GET, "/hub/api/users/alice", Some(&minted), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"roles": ["token"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// A server's OAuth client (run by alice) asks an admin visiting it for `scope=inherit` (or the
/// `token` role) and would get a token with all of the admin's rights.
#[tokio::test]
async fn oauth_client_cannot_get_an_admins_inherit_consent() {
    let h = hub().await;
    h.user_token("alice", None).await;
    let secret = "server-api-token-0123456789abcdef";
    h.state
        .db()
        .upsert_oauth_client(&ClientRow {
            id: "jupyterhub-user-alice".into(),
            secret_hash: Some(hub::hash_secret(secret)),
            redirect_uri: "/user/alice/oauth_callback".into(),
            description: "Server at /user/alice/".into(),
            allowed_scopes: vec!["access:servers!server=alice/".into()],
        })
        .await
        .unwrap();
    // `root` is an admin (admin_users in the test config).
    let (cookie, cookies) = h.login("root").await;
    for scope in ["inherit", "token", "inherit%20read:users"] {
        let params = format!(
            "client_id=jupyterhub-user-alice&redirect_uri=%2Fuser%2Falice%2Foauth_callback\
             &response_type=code&state=s&scope={scope}"
        );
        let req = Request::get(format!("/hub/api/oauth2/authorize?{params}"))
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // The admin accepts the consent: the token gives no more than who they are and access
        // to alice's server.
        let req = Request::post("/hub/api/oauth2/authorize")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("{params}&_xsrf={}", cookies["_xsrf"])))
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        let location = r.headers["location"].to_str().unwrap().to_owned();
        let r = h
            .exchange_code(
                &location,
                "jupyterhub-user-alice",
                secret,
                "/user/alice/oauth_callback",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(
            !r.body["scope"].as_str().unwrap().contains("inherit"),
            "{}",
            r.text
        );
        let stolen = r.body["access_token"].as_str().unwrap().to_owned();
        let r = h
            .call(Method::GET, "/hub/api/users", Some(&stolen), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let r = h
            .call(
                Method::POST,
                "/hub/api/users/alice/tokens",
                Some(&stolen),
                Some("{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let r = h
            .call(Method::GET, "/hub/api/users/alice", Some(&stolen), None)
            .await;
        assert_ne!(r.status, StatusCode::OK, "{}", r.text);
        let r = h
            .call(Method::GET, "/hub/api/user", Some(&stolen), None)
            .await;
        assert_eq!(r.body["name"], "root", "{}", r.text);
    }
}

// ---- 2. Arithmetic on client-supplied numbers -----------------------------------------------

#[tokio::test]
async fn huge_expires_in_is_refused_with_400_not_a_panic() {
    let h = hub().await;
    h.user_token("alice", None).await;
    for body in [
        r#"{"expires_in": 9223372036854775807}"#,
        r#"{"expires_in": 9223372036854}"#,
        r#"{"expires_in": -9223372036854775808}"#,
        r#"{"expires_in": 18446744073709551615}"#,
        r#"{"expires_in": 1e300}"#,
        r#"{"expires_in": 0}"#,
    ] {
        let r = h
            .admin(Method::POST, "/hub/api/users/alice/tokens", Some(body))
            .await;
        assert_json_error(&r, StatusCode::BAD_REQUEST);
    }
    // A lifetime that fits still works.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"expires_in": 3600}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["expires_at"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn huge_offset_is_refused_with_400_not_a_panic() {
    let h = hub().await;
    h.user_token("alice", None).await;
    h.admin(Method::POST, "/hub/api/groups/g", None).await;
    for path in ["/hub/api/users", "/hub/api/groups"] {
        for query in [
            "offset=9223372036854775807&limit=200",
            "offset=9223372036854775800&limit=50",
            "offset=18446744073709551615&limit=1",
            "offset=0&limit=18446744073709551615",
            "offset=-1",
        ] {
            let req = Request::get(format!("{path}?{query}"))
                .header("authorization", format!("token {ADMIN_TOKEN}"))
                .header("accept", "application/jupyterhub-pagination+json")
                .body(Body::empty())
                .unwrap();
            let r = h.send(req).await;
            assert_json_error(&r, StatusCode::BAD_REQUEST);
        }
        // The largest offset that fits answers an empty page.
        let req = Request::get(format!("{path}?offset=9223372036854775000&limit=200"))
            .header("authorization", format!("token {ADMIN_TOKEN}"))
            .header("accept", "application/jupyterhub-pagination+json")
            .body(Body::empty())
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["items"], json!([]), "{}", r.text);
        assert_eq!(r.body["_pagination"]["next"], Value::Null, "{}", r.text);
    }
}

// ---- 4. Request body limits ----------------------------------------------------------------

fn big_token_request(bytes: usize, declare_length: bool) -> Request<Body> {
    let body = format!(r#"{{"note": "{}"}}"#, "x".repeat(bytes));
    let mut b = Request::post("/hub/api/users/alice/tokens")
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .header("content-type", "application/json");
    if declare_length {
        b = b.header("content-length", body.len());
        b.body(Body::from(body)).unwrap()
    } else {
        // A streamed body: no length known before it is read.
        let chunks: Vec<Result<String, std::io::Error>> = body
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
            .collect();
        b.body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap()
    }
}

#[tokio::test]
async fn two_mib_json_body_to_a_token_route_is_refused_with_413() {
    let h = hub().await;
    h.user_token("alice", None).await;
    for declare_length in [true, false] {
        let r = h
            .send(big_token_request(2 * 1024 * 1024, declare_length))
            .await;
        assert_json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
        // Unauthenticated too: the size is refused before anything else is done.
        let mut req = big_token_request(2 * 1024 * 1024, declare_length);
        req.headers_mut().remove("authorization");
        let r = h.send(req).await;
        assert!(
            r.status == StatusCode::PAYLOAD_TOO_LARGE || r.status == StatusCode::FORBIDDEN,
            "{}",
            r.text
        );
    }
    // The hub is still up and a normal body still works.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"note": "small"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The login form is capped too.
    let req = Request::post("/hub/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", 2 * 1024 * 1024)
        .body(Body::from(format!(
            "username={}",
            "a".repeat(2 * 1024 * 1024 - 9)
        )))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn body_limit_follows_max_body_bytes() {
    let h = hub_with(test_db().await, |c| c.max_body_bytes = 4096).await;
    h.user_token("alice", None).await;
    for declare_length in [true, false] {
        let r = h.send(big_token_request(8192, declare_length)).await;
        assert_json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    }
    let r = h.send(big_token_request(1024, true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

// ---- 3. Spawns start on a GET ---------------------------------------------------------------

fn get(path: &str, cookie: &str) -> Request<Body> {
    // What a cross-site `<img src=…>` sends: a GET with the victim's cookies.
    Request::get(path)
        .header("cookie", cookie)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "no-cors")
        .header("sec-fetch-dest", "image")
        .body(Body::empty())
        .unwrap()
}

async fn servers_of(h: &Hub, name: &str) -> Value {
    let r = h
        .admin(Method::GET, &format!("/hub/api/users/{name}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["servers"].clone()
}

async fn assert_nothing_started(s: &Setup, name: &str) {
    // Give a spawn that was wrongly started the time to reach the spawner.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.spawner.envs.lock().await.is_empty(), "a server started");
    assert_eq!(servers_of(&s.hub, name).await, json!({}));
}

#[tokio::test]
async fn cross_site_get_of_spawn_with_query_options_does_not_start_a_server() {
    let s = setup(Arc::default(), Duration::from_secs(5)).await;
    let h = &s.hub;
    let (cookie, cookies) = h.login("alice").await;
    for path in [
        "/hub/spawn?profile=jupyterlab",
        "/hub/spawn/alice?profile=jupyterlab",
        "/hub/spawn/alice?opt-profile=jupyterlab&next=%2Fhub%2Fhome",
        "/hub/spawn/alice/evil?opt-profile=jupyterlab&display_name=Evil",
    ] {
        let r = h.send(get(path, &cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        // The page is the form, with the choice selected, posting with `_xsrf`.
        assert!(r.text.contains("method=\"post\""), "{}", r.text);
        assert!(r.text.contains("id=\"start\""), "{}", r.text);
        assert!(
            r.text.contains("id=\"profile-jupyterlab\" checked"),
            "{}",
            r.text
        );
        assert!(r.text.contains(&cookies["_xsrf"]), "{}", r.text);
    }
    assert_nothing_started(&s, "alice").await;
    // A refused choice named in the query is said on the page, still without starting.
    let r = h
        .send(get("/hub/spawn/alice?profile=no-such-profile", &cookie))
        .await;
    assert!(r.status.is_client_error(), "{}", r.text);
    assert_nothing_started(&s, "alice").await;
}

#[tokio::test]
async fn cross_site_get_of_spawn_without_choices_does_not_start_a_server() {
    let base = hub_with(test_db().await, |c| c.profile_list = Vec::new()).await;
    let s = setup_on(base, Arc::default(), Duration::from_secs(5));
    let h = &s.hub;
    let (cookie, cookies) = h.login("alice").await;
    for path in ["/hub/spawn", "/hub/spawn/alice", "/hub/spawn/alice/evil"] {
        let r = h.send(get(path, &cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(r.text.contains("id=\"start\""), "{}", r.text);
        assert!(r.text.contains("name=\"_xsrf\""), "{}", r.text);
    }
    // The not-running page of `/hub/user/alice/...` only links to that page.
    let r = h.send(get("/hub/user/alice/lab", &cookie)).await;
    assert_eq!(r.status, StatusCode::FAILED_DEPENDENCY, "{}", r.text);
    assert_nothing_started(&s, "alice").await;
    // The button's POST (with `_xsrf`) starts it; without `_xsrf` it is refused.
    let post = |xsrf: Option<&str>| {
        let body = xsrf.map(|x| format!("_xsrf={x}")).unwrap_or_default();
        Request::post("/hub/spawn/alice?next=%2Fhub%2Fhome")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let r = h.send(post(None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_nothing_started(&s, "alice").await;
    let r = h.send(post(Some(&cookies["_xsrf"]))).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert_eq!(
        r.headers["location"],
        "/hub/spawn-pending/alice?next=%2Fhub%2Fhome"
    );
    assert_eq!(s.spawner.envs.lock().await.len(), 1);
}
