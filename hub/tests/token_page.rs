//! The token page `/hub/token`: the user's API tokens and authorized applications, making a
//! token (shown once) and revoking. Attacks: another user's tokens through the page, forged
//! form posts without the session's `_xsrf`, the token value on any later page, markup in a
//! note.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Hub, hub};
use hub::ClientRow;

const CLIENT_SECRET: &str = "server-api-token-0123456789abcdef";

/// Alice holds an OAuth token of the client "Server at /user/alice/" (two, from two logins).
async fn oauth_tokens(h: &Hub, cookie: &str) -> Vec<String> {
    h.state
        .db()
        .upsert_oauth_client(&ClientRow {
            id: "jupyterhub-user-alice".into(),
            secret_hash: Some(hub::hash_secret(CLIENT_SECRET)),
            redirect_uri: "/user/alice/oauth_callback".into(),
            description: "Server at /user/alice/".into(),
            allowed_scopes: vec!["access:servers!server=alice/".into()],
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..2 {
        let req = Request::get("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&redirect_uri=%2Fuser%2Falice%2Foauth_callback&response_type=code&state=xyz")
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        let loc = r.headers["location"].to_str().unwrap().to_owned();
        let q = loc.split_once('?').unwrap().1;
        let code = url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "jupyterhub-user-alice")
            .append_pair("client_secret", CLIENT_SECRET)
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", "/user/alice/oauth_callback")
            .finish();
        let req = Request::post("/hub/api/oauth2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        out.push(r.body["access_token"].as_str().unwrap().to_owned());
    }
    out
}

async fn get_page(h: &Hub, cookie: &str) -> common::Resp {
    let req = Request::get("/hub/token")
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    h.send(req).await
}

async fn post_form(h: &Hub, cookie: &str, path: &str, fields: &[(&str, &str)]) -> common::Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let req = Request::post(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    h.send(req).await
}

fn shown_token(page: &str) -> String {
    let at = page.find("id=\"new-token-value\">").unwrap() + "id=\"new-token-value\">".len();
    page[at..].split('<').next().unwrap().to_owned()
}

/// The API token ids (`a<id>`) listed in the API tokens table.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("data-token-id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect()
}

/// The admin's view of `user`'s tokens: (id, note, oauth_client).
async fn tokens_of(h: &Hub, user: &str) -> Vec<serde_json::Value> {
    let r = h
        .admin(Method::GET, &format!("/hub/api/users/{user}/tokens"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["api_tokens"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_page_lists_tokens_and_applications_and_makes_a_token_shown_once() {
    let h = hub().await;
    let (cookie, cookies) = h.login("alice").await;
    let xsrf = cookies["_xsrf"].clone();
    let oauth = oauth_tokens(&h, &cookie).await;
    let r = get_page(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("id=\"no-api-tokens\""), "{}", r.text);
    // The two OAuth tokens are one authorized application, named by its description.
    assert!(r.text.contains("data-client-id=\"jupyterhub-user-alice\""));
    // (minijinja escapes `/` in HTML text as `&#x2f;`)
    assert!(
        r.text.contains("Server at &#x2f;user&#x2f;alice&#x2f;"),
        "{}",
        r.text
    );
    assert_eq!(r.text.matches("data-client-id=").count(), 1);

    let r = post_form(
        &h,
        &cookie,
        "/hub/token",
        &[
            ("_xsrf", &xsrf),
            ("note", "nightly backup"),
            ("expires_in", "86400"),
            ("scopes", "read:users!user=alice, access:servers!user=alice"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let value = shown_token(&r.text);
    assert!(value.len() >= 32, "{value}");
    // The token works, with just the scopes asked for.
    let who = h
        .call(Method::GET, "/hub/api/user", Some(&value), None)
        .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.text);
    assert_eq!(who.body["name"], "alice");
    let scopes: Vec<String> = serde_json::from_value(who.body["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"access:servers!user=alice".to_owned()),
        "{scopes:?}"
    );
    assert!(
        !scopes.iter().any(|s| s.starts_with("tokens")),
        "{scopes:?}"
    );
    let stored = tokens_of(&h, "alice").await;
    let made = stored
        .iter()
        .find(|t| t["note"] == "nightly backup")
        .unwrap();
    assert!(made["expires_at"].is_string());

    // Listed from now on, with its note, scopes and expiry, never with its value.
    let r = get_page(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("nightly backup"));
    assert!(r.text.contains("access:servers!user=alice"));
    assert_eq!(listed_ids(&r.text), vec![made["id"].as_str().unwrap()]);
    for secret in std::iter::once(&value).chain(&oauth) {
        assert!(
            !r.text.contains(secret.as_str()),
            "a token value is on the page"
        );
    }
    assert!(
        r.headers
            .get("cache-control")
            .is_none_or(|v| v != "no-store")
    );

    // Blank fields: all of alice's permissions, never expiring, the default note.
    let r = post_form(&h, &cookie, "/hub/token", &[("_xsrf", &xsrf)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored = tokens_of(&h, "alice").await;
    let plain = stored
        .iter()
        .find(|t| t["note"] == "Requested via token page")
        .unwrap();
    assert_eq!(plain["scopes"], serde_json::json!(["inherit"]));
    assert!(plain["expires_at"].is_null());
}

#[tokio::test]
async fn bad_forms_get_a_clear_error_and_make_nothing() {
    let h = hub().await;
    let (cookie, cookies) = h.login("alice").await;
    let xsrf = cookies["_xsrf"].clone();
    for (fields, needle) in [
        (vec![("expires_in", "soon")], "soon"),
        (vec![("expires_in", "-5")], "-5"),
        (vec![("scopes", "admin:users")], "admin:users"),
        (vec![("scopes", "no-such-scope")], "no-such-scope"),
    ] {
        let mut all = vec![("_xsrf", xsrf.as_str())];
        all.extend(fields);
        let r = post_form(&h, &cookie, "/hub/token", &all).await;
        assert!(r.status.is_client_error(), "{needle}: {}", r.status);
        assert!(r.text.contains("id=\"error\""), "{}", r.text);
        assert!(
            r.text.contains(needle),
            "the error names {needle}: {}",
            r.text
        );
        assert!(!r.text.contains("id=\"new-token\""));
    }
    assert!(tokens_of(&h, "alice").await.is_empty());
}

/// Forged posts (a page on another site submitting the forms with the victim's cookie) carry no
/// valid `_xsrf`: nothing is made or revoked.
#[tokio::test]
async fn forms_without_the_sessions_xsrf_are_refused() {
    let h = hub().await;
    let (cookie, cookies) = h.login("alice").await;
    let (_, bob_cookies) = h.login("bob").await;
    let api = h.user_token("alice", None).await;
    let id = tokens_of(&h, "alice").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for xsrf in [
        None,
        Some("0123456789abcdef0123456789abcdef"),
        Some(bob_cookies["_xsrf"].as_str()),
    ] {
        let mut fields = vec![("note", "forged")];
        if let Some(x) = xsrf {
            fields.push(("_xsrf", x));
        }
        let r = post_form(&h, &cookie, "/hub/token", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{xsrf:?}: {}", r.text);
        assert!(!r.text.contains("new-token-value"));
        let mut fields = vec![("id", id.as_str())];
        if let Some(x) = xsrf {
            fields.push(("_xsrf", x));
        }
        let r = post_form(&h, &cookie, "/hub/token/revoke", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{xsrf:?}: {}", r.text);
    }
    assert_eq!(tokens_of(&h, "alice").await.len(), 1);
    let who = h.call(Method::GET, "/hub/api/user", Some(&api), None).await;
    assert_eq!(who.status, StatusCode::OK);
    // With the session's own `_xsrf` the revoke goes through.
    let r = post_form(
        &h,
        &cookie,
        "/hub/token/revoke",
        &[("_xsrf", &cookies["_xsrf"]), ("id", &id)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert_eq!(r.headers["location"], "/hub/token");
    let who = h.call(Method::GET, "/hub/api/user", Some(&api), None).await;
    assert_eq!(who.status, StatusCode::FORBIDDEN);
    // Not logged in: the login page, nothing else.
    let r = h
        .send(Request::get("/hub/token").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/hub/login")
    );
}

/// Bob's page shows only bob's tokens, and bob cannot revoke alice's API or OAuth tokens by
/// posting their ids (ids are small integers, easy to guess).
#[tokio::test]
async fn a_user_cannot_list_or_revoke_another_users_tokens() {
    let h = hub().await;
    let (alice_cookie, _) = h.login("alice").await;
    let oauth = oauth_tokens(&h, &alice_cookie).await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"note": "alice secret note"}"#),
        )
        .await;
    let alice_api = r.body["token"].as_str().unwrap().to_owned();
    let (bob_cookie, bob_cookies) = h.login("bob").await;
    let r = get_page(&h, &bob_cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text.contains("alice secret note"), "{}", r.text);
    assert!(!r.text.contains("jupyterhub-user-alice"), "{}", r.text);
    assert!(listed_ids(&r.text).is_empty());
    let before = tokens_of(&h, "alice").await;
    for t in &before {
        let id = t["id"].as_str().unwrap();
        let r = post_form(
            &h,
            &bob_cookie,
            "/hub/token/revoke",
            &[("_xsrf", &bob_cookies["_xsrf"]), ("id", id)],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.text);
        assert!(
            r.text.contains(&format!("No such token: {id}")),
            "{}",
            r.text
        );
    }
    assert_eq!(tokens_of(&h, "alice").await.len(), before.len());
    for token in std::iter::once(&alice_api).chain(&oauth) {
        let who = h
            .call(Method::GET, "/hub/api/user", Some(token), None)
            .await;
        assert_eq!(who.status, StatusCode::OK, "alice's token survives bob");
    }
    // A form field naming a user is not how the page picks its user.
    let r = post_form(
        &h,
        &bob_cookie,
        "/hub/token",
        &[
            ("_xsrf", &bob_cookies["_xsrf"]),
            ("user", "alice"),
            ("name", "alice"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let made = shown_token(&r.text);
    let who = h
        .call(Method::GET, "/hub/api/user", Some(&made), None)
        .await;
    assert_eq!(who.body["name"], "bob");
}

#[tokio::test]
async fn revoking_an_application_revokes_all_its_tokens() {
    let h = hub().await;
    let (cookie, cookies) = h.login("alice").await;
    let oauth = oauth_tokens(&h, &cookie).await;
    let r = get_page(&h, &cookie).await;
    let at = r
        .text
        .find("data-client-id=\"jupyterhub-user-alice\"")
        .unwrap();
    let row = &r.text[at..];
    let id_at = row.find("name=\"id\" value=\"").unwrap() + "name=\"id\" value=\"".len();
    let id = row[id_at..].split('"').next().unwrap().to_owned();
    let r = post_form(
        &h,
        &cookie,
        "/hub/token/revoke",
        &[("_xsrf", &cookies["_xsrf"]), ("id", &id)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    for token in &oauth {
        let who = h
            .call(Method::GET, "/hub/api/user", Some(token), None)
            .await;
        assert_eq!(who.status, StatusCode::FORBIDDEN);
    }
    let r = get_page(&h, &cookie).await;
    assert!(r.text.contains("id=\"no-oauth-clients\""), "{}", r.text);
}

/// A note is the user's own text, but a token made by an admin for the user (or through the
/// API by a script) carries whatever note it was given: the page shows it as text.
#[tokio::test]
async fn a_note_with_markup_is_shown_as_text() {
    let h = hub().await;
    let (cookie, _) = h.login("alice").await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(r#"{"note": "<script>alert(1)</script>"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = get_page(&h, &cookie).await;
    assert!(!r.text.contains("<script>alert(1)"), "{}", r.text);
    assert!(r.text.contains("&lt;script&gt;alert(1)"), "{}", r.text);
}
