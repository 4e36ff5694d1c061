//! REST API tests over `app(state).oneshot(...)` on in-memory SQLite; responses are validated
//! against the upstream OpenAPI file.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{ADMIN_TOKEN, hub, validate, validate_component};
use serde_json::json;

#[tokio::test]
async fn version_is_open_with_cors_and_header() {
    let h = hub().await;
    let r = h.call(Method::GET, "/hub/api", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.body["version"], hub::JUPYTERHUB_VERSION);
    validate("GET", "/", 200, &r.body);
    // Even a 404 carries the version header (checked in `send`).
    let r = h.call(Method::GET, "/hub/nowhere", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["status"], 404);
    // Paths outside /hub/ that reach the hub (no proxy route) go to the hub's copy (spec 2.6).
    let r = h.call(Method::GET, "/user/alice/lab?x=1", None, None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/hub/user/alice/lab?x=1");
}

#[tokio::test]
async fn info_needs_read_hub() {
    let h = hub().await;
    let r = h.admin(Method::GET, "/hub/api/info", None).await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/info", 200, &r.body);
    let t = h.user_token("alice", None).await;
    let r = h.call(Method::GET, "/hub/api/info", Some(&t), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("requires any of ['read:hub']")
    );
}

#[tokio::test]
async fn whoami_is_403_never_401() {
    let h = hub().await;
    let r = h.call(Method::GET, "/hub/api/user", None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body,
        json!({"status": 403, "message": "Missing or invalid credentials."})
    );
    let r = h
        .call(Method::GET, "/hub/api/user", Some("nope"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let req = Request::get("/hub/api/user")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["kind"], "service");
    validate("GET", "/user", 200, &r.body);

    let t = h.user_token("alice", None).await;
    let r = h.call(Method::GET, "/hub/api/user", Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("GET", "/user", 200, &r.body);
    assert_eq!(r.body["name"], "alice");
    assert_eq!(r.body["kind"], "user");
    assert!(r.body["token_id"].as_str().unwrap().starts_with('a'));
    assert!(r.body["session_id"].is_null());
    let scopes: Vec<String> = serde_json::from_value(r.body["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"access:servers!user=alice".to_owned()),
        "{scopes:?}"
    );
    let mut sorted = scopes.clone();
    sorted.sort();
    assert_eq!(scopes, sorted);
}

#[tokio::test]
async fn create_list_get_patch_delete_users() {
    let h = hub().await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users",
            Some(r#"{"usernames":["Alice","bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    validate("POST", "/users", 201, &r.body);
    assert_eq!(r.body[0]["name"], "alice");
    // All exist → 409; partial → only the new one.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users",
            Some(r#"{"usernames":["alice","bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["status"], 409);
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users",
            Some(r#"{"usernames":["bob","carol"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    // Invalid name → 400 and nothing written.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users",
            Some(r#"{"usernames":["dave","a/b"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.admin(Method::GET, "/hub/api/users/dave", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Malformed JSON → 400.
    let r = h
        .admin(Method::POST, "/hub/api/users", Some(r#"{"usernames":["#))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["status"], 400);
    // Single create.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/erin",
            Some(r#"{"admin":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    validate("POST", "/users/{name}", 201, &r.body);
    assert_eq!(r.body["admin"], true);
    let r = h.admin(Method::POST, "/hub/api/users/erin", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/users/{name}", 200, &r.body);
    assert_eq!(r.body["servers"], json!({}));
    assert!(r.body["server"].is_null());
    let r = h.admin(Method::GET, "/hub/api/users/nobody", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = h.admin(Method::GET, "/hub/api/users", None).await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/users", 200, &r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 4);
    let r = h
        .admin(
            Method::GET,
            "/hub/api/users?name_filter=AR&sort=-name",
            None,
        )
        .await;
    let names: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol"]);
    let r = h
        .admin(Method::GET, "/hub/api/users?sort=-name", None)
        .await;
    let names: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["erin", "carol", "bob", "alice"]);
    let r = h
        .admin(Method::GET, "/hub/api/users?state=ready", None)
        .await;
    assert_eq!(r.body, json!([]));
    let r = h
        .admin(Method::GET, "/hub/api/users?state=inactive", None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 4);
    let r = h
        .admin(Method::GET, "/hub/api/users?state=bogus", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .admin(Method::GET, "/hub/api/users?sort=bogus", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/alice",
            Some(r#"{"admin":true,"name":"alicia"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "alicia");
    assert_eq!(r.body["admin"], true);
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/alicia",
            Some(r#"{"name":"bob"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/alicia",
            Some(r#"{"auth_state":{"k":1}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.admin(Method::GET, "/hub/api/users/alicia", None).await;
    assert_eq!(r.body["auth_state"], json!({"k": 1}));

    let r = h.admin(Method::DELETE, "/hub/api/users/alicia", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.admin(Method::DELETE, "/hub/api/users/alicia", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pagination_envelope_only_when_asked() {
    let h = hub().await;
    let names: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
    let body = json!({"usernames": names}).to_string();
    assert_eq!(
        h.admin(Method::POST, "/hub/api/users", Some(&body))
            .await
            .status,
        StatusCode::CREATED
    );
    let req = Request::get("/hub/api/users?limit=2&state=inactive")
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .header("accept", "application/jupyterhub-pagination+json")
        .header("host", "hub.test:8000")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    validate_component("PaginatedList", &r.body);
    let p = &r.body["_pagination"];
    assert_eq!(p["total"], 5);
    assert_eq!(p["limit"], 2);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let next = p["next"]["url"].as_str().unwrap();
    assert!(
        next.starts_with("http://hub.test:8000/hub/api/users?"),
        "{next}"
    );
    assert!(
        next.contains("offset=2") && next.contains("limit=2") && next.contains("state=inactive")
    );
    let req = Request::get("/hub/api/users?offset=4&limit=2")
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .header("accept", "application/jupyterhub-pagination+json")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert!(r.body["_pagination"]["next"].is_null());
    let r = h
        .admin(Method::GET, "/hub/api/users?limit=1000", None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 5);
    let r = h.admin(Method::GET, "/hub/api/users?offset=x", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scopes_filter_and_deny() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    h.user_token("bob", None).await;
    // Own model: fine. Someone else's: filtered away → 404. Listing: no list:users → 403.
    let r = h
        .call(Method::GET, "/hub/api/users/alice", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/users/{name}", 200, &r.body);
    let r = h
        .call(Method::GET, "/hub/api/users/bob", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body["message"],
        "No access to resources or resources not found"
    );
    let r = h
        .call(Method::GET, "/hub/api/users", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Action is not authorized with current scopes; requires any of")
    );
    let r = h
        .call(Method::POST, "/hub/api/users/mallory", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A narrow token sees only its fields.
    let narrow = h
        .user_token("carol", Some(&["read:users:name!user=carol"]))
        .await;
    let r = h
        .call(Method::GET, "/hub/api/users/carol", Some(&narrow), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("last_activity").is_none() && r.body.get("servers").is_none());
    // A filtered list:users lists only what it covers.
    h.user_token("dave", None).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/dave/tokens",
            Some(r#"{"scopes":["list:users"]}"#),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "scopes beyond the owner's"
    );
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/boss",
            Some(r#"{"admin":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let lister = h.user_token("boss", Some(&["list:users!user=dave"])).await;
    let r = h
        .call(Method::GET, "/hub/api/users", Some(&lister), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let names: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dave"]);
}

#[tokio::test]
async fn tokens_lifecycle() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&alice),
            Some(r#"{"note":"mine","expires_in":3600,"scopes":["read:users!user=alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    validate("POST", "/users/{name}/tokens", 201, &r.body);
    assert_eq!(r.body["note"], "mine");
    assert!(r.body["expires_at"].is_string());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["token"].as_str().unwrap().to_owned();
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&alice),
            Some(r#"{"scopes":["admin:users"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&alice),
            Some(r#"{"scopes":["no-such-scope"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(&alice),
            Some(r#"{"roles":["no-such-role"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/tokens",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/users/{name}/tokens", 200, &r.body);
    assert_eq!(r.body["api_tokens"].as_array().unwrap().len(), 2);
    assert!(r.text.find(&secret).is_none(), "secrets are never listed");
    let r = h
        .call(
            Method::GET,
            &format!("/hub/api/users/alice/tokens/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    validate("GET", "/users/{name}/tokens/{token_id}", 200, &r.body);
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/tokens/a999",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&secret), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .call(
            Method::DELETE,
            &format!("/hub/api/users/alice/tokens/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&secret), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_token_is_403() {
    let h = hub().await;
    h.user_token("alice", None).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"expires_in":1}"#),
        )
        .await;
    let secret = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.call(Method::GET, "/hub/api/user", Some(&secret), None)
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&secret), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn activity_rules() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            Some(r#"{"display_name":"GPU"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let ok = r#"{"last_activity":"2026-01-01T12:00:00.123456Z","servers":{"gpu":{"last_activity":"2026-01-01T12:00:00"}}}"#;
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/activity",
            Some(&alice),
            Some(ok),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .admin(
            Method::GET,
            "/hub/api/users/alice?include_stopped_servers",
            None,
        )
        .await;
    assert_eq!(
        r.body["servers"]["gpu"]["last_activity"],
        "2026-01-01T12:00:00Z"
    );
    // Older values never move time back.
    let old = r#"{"last_activity":"2020-01-01T00:00:00Z"}"#;
    assert_eq!(
        h.call(
            Method::POST,
            "/hub/api/users/alice/activity",
            Some(&alice),
            Some(old)
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    assert_ne!(r.body["last_activity"], "2020-01-01T00:00:00Z");
    for bad in [
        r#"{}"#,
        r#"{"servers":{"nope":{"last_activity":"2026-01-01T00:00:00Z"}}}"#,
        r#"{"last_activity":"2999-01-01T00:00:00Z"}"#,
        r#"{"last_activity":"yesterday"}"#,
    ] {
        let r = h
            .call(
                Method::POST,
                "/hub/api/users/alice/activity",
                Some(&alice),
                Some(bad),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // A failed request leaves nothing half-written: the valid user time in a body whose server
    // part is bad is not applied.
    let mixed = r#"{"last_activity":"2026-06-01T00:00:00Z","servers":{"nope":{"last_activity":"2026-06-01T00:00:00Z"}}}"#;
    let before = h
        .admin(Method::GET, "/hub/api/users/alice", None)
        .await
        .body["last_activity"]
        .clone();
    assert_eq!(
        h.call(
            Method::POST,
            "/hub/api/users/alice/activity",
            Some(&alice),
            Some(mixed)
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    let after = h
        .admin(Method::GET, "/hub/api/users/alice", None)
        .await
        .body["last_activity"]
        .clone();
    assert_eq!(before, after);
}

#[tokio::test]
async fn servers_models_and_orchestrator_seam() {
    // No profiles: any `user_options` pass through to the orchestrator seam.
    let h = common::hub_with(common::test_db().await, |c| c.profile_list.clear()).await;
    let alice = h.user_token("alice", None).await;
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            Some(r#"{"user_options":{"profile":"gpu"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    validate_component("Server", &r.body);
    assert_eq!(r.body["url"], "/user/alice/gpu/");
    assert_eq!(
        r.body["progress_url"],
        "/hub/api/users/alice/servers/gpu/progress"
    );
    assert_eq!(r.body["ready"], false);
    assert_eq!(r.body["stopped"], true);
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/Bad_Name",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["user_options"], json!({"profile": "gpu"}));
    // Stopped servers show only with include_stopped_servers.
    let r = h
        .call(Method::GET, "/hub/api/users/alice", Some(&alice), None)
        .await;
    assert_eq!(r.body["servers"], json!({}));
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice?include_stopped_servers=1",
            Some(&alice),
            None,
        )
        .await;
    validate("GET", "/users/{name}", 200, &r.body);
    assert!(r.body["servers"]["gpu"].is_object());
    // A running server (as the orchestrator would record it) is ready and listed as such.
    let mut row = h.state.db().server("alice", "").await.unwrap().unwrap();
    row.url = Some("http://127.0.0.1:9999".into());
    row.started = Some(1_700_000_000_000_000);
    row.state = json!({"pid": 1});
    h.state.db().save_server(&row).await.unwrap();
    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    validate("GET", "/users/{name}", 200, &r.body);
    assert_eq!(r.body["server"], "/user/alice/");
    assert_eq!(r.body["servers"][""]["ready"], true);
    assert_eq!(
        r.body["servers"][""]["state"],
        json!({"pid": 1}),
        "admin sees state"
    );
    let r = h
        .call(Method::GET, "/hub/api/users/alice", Some(&alice), None)
        .await;
    assert!(
        r.body["servers"][""].get("state").is_none(),
        "owner does not see state"
    );
    let r = h
        .admin(Method::GET, "/hub/api/users?state=ready", None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    // Start of a running server → 400; start/stop of others → the orchestrator (501 here).
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/server",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            Some(r#"{"profile":"cpu"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(r.body["status"], 501);
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/users/alice/server",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/servers/nope/progress",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Removing a stopped named server deletes it.
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            Some(r#"{"remove":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/servers/gpu",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Another user's token: 404 (filtered away).
    let bob = h.user_token("bob", None).await;
    let r = h
        .call(Method::GET, "/hub/api/users/alice/server", Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn groups_endpoints() {
    let h = hub().await;
    h.user_token("alice", None).await;
    h.user_token("bob", None).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups",
            Some(r#"{"groups":["physics"],"users":["alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    validate_component("Group", &r.body[0]);
    let r = h.admin(Method::POST, "/hub/api/groups/physics", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/chem",
            Some(r#"{"users":["nobody"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.admin(Method::GET, "/hub/api/groups/chem", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing half-written");
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/physics/users",
            Some(r#"{"users":["bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["users"], json!(["alice", "bob"]));
    let r = h
        .admin(
            Method::DELETE,
            "/hub/api/groups/physics/users",
            Some(r#"{"users":["alice"]}"#),
        )
        .await;
    assert_eq!(r.body["users"], json!(["bob"]));
    let r = h
        .admin(
            Method::PUT,
            "/hub/api/groups/physics/properties",
            Some(r#"{"lab":"x"}"#),
        )
        .await;
    assert_eq!(r.body["properties"], json!({"lab": "x"}));
    let r = h.admin(Method::GET, "/hub/api/groups", None).await;
    validate("GET", "/groups", 200, &r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = h.admin(Method::GET, "/hub/api/users/bob", None).await;
    assert_eq!(r.body["groups"], json!(["physics"]));
    let r = h
        .admin(Method::DELETE, "/hub/api/groups/physics", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.admin(Method::GET, "/hub/api/groups/physics", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cookie_auth_needs_xsrf() {
    let h = hub().await;
    let (cookie, cookies) = h.login("alice").await;
    let req = Request::get("/hub/api/user")
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
    let req = Request::get("/hub/api/user")
        .header("cookie", &cookie)
        .header("x-xsrftoken", &cookies["_xsrf"])
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "alice");
    assert_eq!(
        r.body["session_id"],
        cookies["jupyterhub-session-id"].as_str()
    );
    // Pages: home with the cookie, redirect to login without.
    let req = Request::get("/hub/home")
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("alice"));
    let r = h
        .send(Request::get("/hub/home").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/hub/login?next=%2Fhub%2Fhome");
    // Wrong password.
    let req = Request::post("/hub/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=wrong"))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn login_page_renders() {
    let h = hub().await;
    let r = h
        .send(
            Request::get("/hub/login?next=/hub/user/alice/lab")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("next=%2Fhub%2Fuser%2Falice%2Flab"),
        "{}",
        r.text
    );
    assert!(r.text.contains("For local use only"));
}

#[tokio::test]
async fn health_answers_probes_without_credentials() {
    let h = hub().await;
    for method in [Method::GET, Method::HEAD] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/hub/health")
            .body(Body::empty())
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.text);
        assert!(r.text.is_empty(), "{method}: {}", r.text);
    }
    // Only GET and HEAD: a probe path is not a way to change anything.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/hub/health")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn ready_says_whether_the_database_answers_and_its_feed_is_heard() {
    let h = hub().await;
    let db = h.state.db().clone();
    let postgres = db.backend() == hub::Backend::Postgres;
    let ready = |method: Method| {
        Request::builder()
            .method(method)
            .uri("/hub/ready")
            .body(Body::empty())
            .unwrap()
    };
    // PostgreSQL: ready once the change feed listens (its connection opens after start-up).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = h.send(ready(Method::GET)).await;
        if r.status == StatusCode::OK || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let feed = if postgres { "listening" } else { "local" };
    assert_eq!(
        r.body,
        json!({"ready": true, "database": "ok", "change_feed": feed, "leader": db.is_leader()})
    );
    assert!(postgres || db.is_leader(), "SQLite's one hub leads");
    let r = h.send(ready(Method::HEAD)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.is_empty(), "{}", r.text);
    assert_eq!(
        h.send(ready(Method::POST)).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let unready = async |why: &str| {
        let r = h.send(ready(Method::GET)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{why}: {}",
            r.text
        );
        assert_eq!(r.body["ready"], false, "{why}: {}", r.text);
        let message = r.body["message"].as_str().unwrap().to_owned();
        assert!(!message.contains("://"), "{why}: a URL in {message}");
        message
    };
    if postgres {
        // The feed stops (as when its connection is lost): not ready, though the database
        // answers.
        db.close().await;
        let message = unready("feed stopped").await;
        assert!(message.contains("change feed"), "{message}");
    }
    // The database is gone: not ready, saying so.
    db.pool().close().await;
    let message = unready("pool closed").await;
    assert!(message.contains("database refused"), "{message}");
}
