//! The OAuth2 provider (compat spec section 2.2) and the login/logout pages.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use common::{Hub, code_of, hub};
use hub::ClientRow;
use sha2::{Digest, Sha256};

const SECRET: &str = "server-api-token-0123456789abcdef";

async fn with_client() -> Hub {
    let h = hub().await;
    h.user_token("alice", None).await;
    h.user_token("bob", None).await;
    h.state
        .db()
        .upsert_oauth_client(&ClientRow {
            id: "jupyterhub-user-alice".into(),
            secret_hash: Some(hub::hash_secret(SECRET)),
            redirect_uri: "/user/alice/oauth_callback".into(),
            description: "Server at /user/alice/".into(),
            allowed_scopes: vec!["access:servers!server=alice/".into()],
        })
        .await
        .unwrap();
    h
}

const AUTHORIZE: &str = "/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&redirect_uri=%2Fuser%2Falice%2Foauth_callback&response_type=code&state=xyz";

async fn authorize(h: &Hub, cookie: &str, extra: &str) -> (StatusCode, String) {
    let req = Request::get(format!("{AUTHORIZE}{extra}"))
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    let loc = r
        .headers
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status, loc)
}

async fn exchange(h: &Hub, form: &str) -> common::Resp {
    h.token_request(form).await
}

fn form(code: &str, secret: &str, redirect: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "jupyterhub-user-alice")
        .append_pair("client_secret", secret)
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect)
        .finish()
}

#[tokio::test]
async fn authorize_requires_login() {
    let h = with_client().await;
    let r = h
        .send(Request::get(AUTHORIZE).body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let loc = r.headers["location"].to_str().unwrap();
    assert!(
        loc.starts_with("/hub/login?next=%2Fhub%2Fapi%2Foauth2%2Fauthorize%3Fclient_id%3D"),
        "{loc}"
    );
}

#[tokio::test]
async fn code_flow_single_use_and_checks() {
    let h = with_client().await;
    let (cookie, cookies) = h.login("alice").await;
    // Wrong redirect URI and unknown client are refused without redirecting.
    let req = Request::get(AUTHORIZE.replace("oauth_callback", "evil"))
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::BAD_REQUEST);
    let req = Request::get(AUTHORIZE.replace("user-alice", "user-nobody"))
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::BAD_REQUEST);

    let (status, loc) = authorize(&h, &cookie, "").await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(loc.starts_with("/user/alice/oauth_callback?code="), "{loc}");
    assert!(loc.ends_with("&state=xyz"));
    let code = code_of(&loc);

    // Wrong secret → invalid_client; wrong redirect → invalid_grant (code still usable).
    let r = exchange(&h, &form(&code, "wrong", "/user/alice/oauth_callback")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "invalid_client");
    let r = exchange(&h, &form(&code, SECRET, "/user/alice/other")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_grant");
    let r = exchange(&h, &form(&code, SECRET, "/user/alice/oauth_callback")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 14 * 24 * 3600);
    assert!(
        r.body["scope"]
            .as_str()
            .unwrap()
            .contains("access:servers!server=alice/")
    );
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    // Replay → invalid_grant.
    let r = exchange(&h, &form(&code, SECRET, "/user/alice/oauth_callback")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_grant");
    let r = exchange(&h, "grant_type=password").await;
    assert_eq!(r.body["error"], "unsupported_grant_type");

    // Call C: whoami with the user's access token.
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&access), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    common::validate("GET", "/user", 200, &r.body);
    assert_eq!(r.body["name"], "alice");
    assert_eq!(
        r.body["session_id"],
        cookies["jupyterhub-session-id"].as_str()
    );
    let scopes: Vec<String> = serde_json::from_value(r.body["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"access:servers!server=alice/".to_owned()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"read:users:name!user=alice".to_owned()),
        "{scopes:?}"
    );
    // The token is listed with its client; logout deletes the session's tokens.
    let r = h
        .admin(Method::GET, "/hub/api/users/alice/tokens", None)
        .await;
    assert!(r.text.contains("jupyterhub-user-alice"));
    let req = Request::get("/hub/logout")
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&access), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let req = Request::get("/hub/home")
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.send(req).await.status,
        StatusCode::FOUND,
        "the login session is gone"
    );
}

#[tokio::test]
async fn pkce_s256_and_plain() {
    let h = with_client().await;
    let (cookie, _) = h.login("alice").await;
    let verifier = "a-very-long-verifier-string-with-enough-entropy-1234567890";
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let (_, loc) = authorize(
        &h,
        &cookie,
        &format!("&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;
    let code = code_of(&loc);
    let base = form(&code, SECRET, "/user/alice/oauth_callback");
    let r = exchange(&h, &base).await;
    assert_eq!(r.body["error"], "invalid_grant", "verifier required");
    let r = exchange(&h, &format!("{base}&code_verifier=wrong")).await;
    assert_eq!(r.body["error"], "invalid_grant");
    let r = exchange(&h, &format!("{base}&code_verifier={verifier}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (_, loc) = authorize(
        &h,
        &cookie,
        "&code_challenge=plainvalue&code_challenge_method=plain",
    )
    .await;
    let r = exchange(
        &h,
        &format!(
            "{}&code_verifier=plainvalue",
            form(&code_of(&loc), SECRET, "/user/alice/oauth_callback")
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn other_users_are_forbidden_admins_get_consent() {
    let h = with_client().await;
    let (cookie, cookies) = h.login("bob").await;
    let (status, _) = authorize(&h, &cookie, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `root` is an admin (admin_users): access:servers, but someone else's server → consent.
    let (cookie, cookies_root) = h.login("root").await;
    let req = Request::get(AUTHORIZE)
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Authorize"), "{}", r.text);
    let body = format!(
        "client_id=jupyterhub-user-alice&redirect_uri=%2Fuser%2Falice%2Foauth_callback&response_type=code&state=s&_xsrf={}",
        cookies_root["_xsrf"]
    );
    let req = Request::post("/hub/api/oauth2/authorize")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    // Without the right _xsrf the consent POST is refused.
    let req = Request::post("/hub/api/oauth2/authorize")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "client_id=jupyterhub-user-alice&response_type=code&_xsrf={}",
            cookies["_xsrf"]
        )))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
}
