//! The sharing API (JupyterHub 5.0+): shares, share codes, what is shared with users and
//! groups, and the accept page; responses validated against JupyterHub's OpenAPI file.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::shares::{sharing_hub, to_user};
use common::{validate, validate_component};
use serde_json::{Value, json};

const ACCESS: &str = "access:servers!server=alice/";

fn assert_json_error(r: &common::Resp, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["status"], status.as_u16(), "{}", r.text);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {}", r.text);
}

fn items(r: &common::Resp) -> &Vec<Value> {
    r.body["items"].as_array().unwrap()
}

#[tokio::test]
async fn grant_list_revoke_and_leave() {
    let (h, alice, bob, _) = sharing_hub().await;
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));

    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("POST", "/shares/{owner}/{server_name}", 200, &r.body);
    validate_component("Share", &r.body);
    assert_eq!(r.body["scopes"], json!([ACCESS]));
    assert_eq!(r.body["user"], json!({"name": "bob"}));
    assert_eq!(r.body["group"], Value::Null);
    assert_eq!(r.body["kind"], "user");
    assert_eq!(
        r.body["server"],
        json!({"user": {"name": "alice"}, "name": "", "url": "/user/alice/", "full_url": null, "ready": false})
    );
    // Granting again changes nothing.
    let again = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_eq!(again.body, r.body);

    // The share is bob's scope now, on that server only.
    let scopes = h.scopes_of(&bob).await;
    assert!(scopes.contains(&ACCESS.to_owned()), "{scopes:?}");
    assert!(!scopes.iter().any(|s| s.contains("alice") && s != ACCESS));

    for (path, template) in [
        ("/hub/api/shares/alice/", "/shares/{owner}/{server_name}"),
        ("/hub/api/shares/alice", "/shares/{owner}"),
    ] {
        let r = h.call(Method::GET, path, Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        validate("GET", template, 200, &r.body);
        assert_eq!(items(&r).len(), 1);
        assert_eq!(r.body["_pagination"]["total"], 1);
    }
    let r = h
        .call(Method::GET, "/hub/api/users/bob/shared", Some(&bob), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("GET", "/users/{name}/shared", 200, &r.body);
    assert_eq!(items(&r)[0]["server"]["user"]["name"], "alice");
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/bob/shared/alice/",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate(
        "GET",
        "/users/{name}/shared/{owner}/{server_name}",
        200,
        &r.body,
    );

    // PATCH without scopes revokes everything: `{}`.
    let r = h
        .json(
            Method::PATCH,
            "/hub/api/shares/alice/",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({}));
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));

    // Partial revocation keeps the rest.
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            json!({"user": "bob", "scopes": ["access:servers", "read:servers"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["scopes"],
        json!([ACCESS, "read:servers!server=alice/"])
    );
    let r = h
        .json(
            Method::PATCH,
            "/hub/api/shares/alice/",
            &alice,
            json!({"user": "bob", "scopes": ["read:servers!server=alice/"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("PATCH", "/shares/{owner}/{server_name}", 200, &r.body);
    assert_eq!(r.body["scopes"], json!([ACCESS]));

    // bob leaves the share himself.
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/users/bob/shared/alice/",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/bob/shared/alice/",
            Some(&bob),
            None,
        )
        .await;
    assert_json_error(&r, StatusCode::NOT_FOUND, "No such share for user bob");

    // DELETE revokes everyone's.
    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("bob"),
    )
    .await;
    h.json(
        Method::POST,
        "/hub/api/shares/alice/",
        &alice,
        to_user("carol"),
    )
    .await;
    let r = h
        .call(Method::DELETE, "/hub/api/shares/alice/", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = h
        .call(Method::GET, "/hub/api/shares/alice", Some(&alice), None)
        .await;
    assert_eq!(items(&r).len(), 0);
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
}

#[tokio::test]
async fn group_shares_reach_members_and_list_under_the_group() {
    let (h, alice, bob, carol) = sharing_hub().await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/team",
            Some(r#"{"users": ["bob"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            json!({"group": "team"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate_component("Share", &r.body);
    assert_eq!(r.body["kind"], "group");
    assert_eq!(r.body["group"], json!({"name": "team"}));
    assert_eq!(r.body["user"], Value::Null);
    assert!(h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
    assert!(!h.scopes_of(&carol).await.contains(&ACCESS.to_owned()));

    // bob sees it among what is shared with him (through the group).
    let r = h
        .call(Method::GET, "/hub/api/users/bob/shared", Some(&bob), None)
        .await;
    assert_eq!(items(&r).len(), 1, "{}", r.text);
    // The group's view needs read:groups:shares (the admin has it).
    let r = h
        .admin(Method::GET, "/hub/api/groups/team/shared", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("GET", "/groups/{name}/shared", 200, &r.body);
    let r = h
        .admin(Method::GET, "/hub/api/groups/team/shared/alice/", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate(
        "GET",
        "/groups/{name}/shared/{owner}/{server_name}",
        200,
        &r.body,
    );
    let r = h
        .call(Method::GET, "/hub/api/groups/team/shared", Some(&bob), None)
        .await;
    // bob holds read:groups:shares only on himself (through `shares!user`): not on the group.
    assert_json_error(&r, StatusCode::NOT_FOUND, "No access");
    let r = h
        .admin(Method::DELETE, "/hub/api/groups/team/shared/alice/", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!h.scopes_of(&bob).await.contains(&ACCESS.to_owned()));
}

#[tokio::test]
async fn share_codes_issue_list_accept_revoke() {
    let (h, alice, _, _) = sharing_hub().await;
    let r = h
        .issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    validate("POST", "/share-codes/{owner}/{server_name}", 200, &r.body);
    validate_component("ShareCode", &r.body);
    let code = r.body["code"].as_str().unwrap().to_owned();
    assert!(code.len() >= 43, "256-bit code: {code}");
    assert_eq!(
        r.body["accept_url"],
        format!("/hub/accept-share?code={code}")
    );
    assert_eq!(r.body["full_accept_url"], Value::Null);
    assert_eq!(r.body["exchange_count"], 0);
    assert_eq!(r.body["scopes"], json!([ACCESS]));
    // Expires in a day by default.
    let created =
        chrono::DateTime::parse_from_rfc3339(r.body["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 86_400);
    let id = r.body["id"].as_str().unwrap().to_owned();

    // The code is shown once: lists never carry it.
    for (path, template) in [
        (
            "/hub/api/share-codes/alice/",
            "/share-codes/{owner}/{server_name}",
        ),
        ("/hub/api/share-codes/alice", "/share-codes/{owner}"),
    ] {
        let r = h.call(Method::GET, path, Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        validate("GET", template, 200, &r.body);
        assert_eq!(items(&r).len(), 1);
        assert!(!r.text.contains(&code));
        assert_eq!(items(&r)[0]["id"], id.as_str());
    }

    // bob and carol both accept the same code (a code works many times).
    for who in ["bob", "carol"] {
        let (cookie, cookies) = h.login(who).await;
        let page = h.accept_page(&cookie, &code).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(page.text.contains("alice"), "{}", page.text);
        assert!(page.text.contains("Accept invitation"));
        let r = h.accept_post(&cookie, &code, &cookies["_xsrf"]).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        assert_eq!(r.headers["location"], "/user/alice/");
        let r = h
            .call(
                Method::GET,
                &format!("/hub/api/users/{who}/shared/alice/"),
                Some(&h.user_token(who, None).await),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["scopes"], json!([ACCESS]));
    }
    let r = h
        .call(
            Method::GET,
            "/hub/api/share-codes/alice/",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(items(&r)[0]["exchange_count"], 2);
    assert!(items(&r)[0]["last_exchanged_at"].is_string());

    // Revoked by id: the page now refuses it.
    let r = h
        .call(
            Method::DELETE,
            &format!("/hub/api/share-codes/alice/?id={id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    h.user_token("dave", None).await;
    let (cookie, cookies) = h.login("dave").await;
    let page = h.accept_page(&cookie, &code).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
    assert!(page.text.contains("revoked"), "{}", page.text);
    assert!(!page.text.contains(&code));
    let r = h.accept_post(&cookie, &code, &cookies["_xsrf"]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains(&code));

    // Revoked by the code itself, and all at once.
    let c2 = h
        .issue_code(
            &alice,
            "/hub/api/share-codes/alice/",
            json!({"expires_in": 3600}),
        )
        .await;
    let code2 = c2.body["code"].as_str().unwrap();
    let r = h
        .call(
            Method::DELETE,
            &format!("/hub/api/share-codes/alice/?code={code2}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    h.issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    h.issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    let r = h
        .call(
            Method::DELETE,
            "/hub/api/share-codes/alice/",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = h
        .call(
            Method::GET,
            "/hub/api/share-codes/alice",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(items(&r).len(), 0, "{}", r.text);
}

#[tokio::test]
async fn accept_page_needs_login_and_xsrf_and_refuses_own_code() {
    let (h, alice, _, _) = sharing_hub().await;
    let r = h
        .issue_code(&alice, "/hub/api/share-codes/alice/", json!({}))
        .await;
    let code = r.body["code"].as_str().unwrap().to_owned();
    let r = h
        .send(
            axum::http::Request::get(format!("/hub/accept-share?code={code}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/hub/login?next=")
    );
    let (cookie, _) = h.login("bob").await;
    let r = h.accept_post(&cookie, &code, "wrong").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let (cookie, cookies) = h.login("alice").await;
    let r = h.accept_page(&cookie, &code).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h.accept_post(&cookie, &code, &cookies["_xsrf"]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = h.accept_page(&cookie, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn bad_input_is_a_json_error_naming_it() {
    let (h, alice, _, _) = sharing_hub().await;
    let post = |body: Value| h.json(Method::POST, "/hub/api/shares/alice/", &alice, body);
    assert_json_error(
        &post(json!({})).await,
        StatusCode::BAD_REQUEST,
        "exactly one",
    );
    assert_json_error(
        &post(json!({"user": "bob", "group": "team"})).await,
        StatusCode::BAD_REQUEST,
        "not both",
    );
    assert_json_error(
        &post(json!({"user": "bob", "expires_in": 60})).await,
        StatusCode::BAD_REQUEST,
        "expires_in",
    );
    assert_json_error(
        &post(json!({"user": "nobody"})).await,
        StatusCode::BAD_REQUEST,
        "No such user: nobody",
    );
    assert_json_error(
        &post(json!({"group": "nogroup"})).await,
        StatusCode::BAD_REQUEST,
        "No such group: nogroup",
    );
    assert_json_error(
        &post(json!({"user": "bob", "scopes": ["nonsense"]})).await,
        StatusCode::BAD_REQUEST,
        "nonsense",
    );
    let r = h
        .call(
            Method::POST,
            "/hub/api/shares/alice/",
            Some(&alice),
            Some("{not json"),
        )
        .await;
    assert_json_error(&r, StatusCode::BAD_REQUEST, "Invalid JSON");
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/nope",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_json_error(&r, StatusCode::NOT_FOUND, "No such server: alice/nope");
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/Bad_Name",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_json_error(&r, StatusCode::BAD_REQUEST, "Bad_Name");
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED, "name a server");
    for bad in [
        json!({"expires_in": 59}),
        json!({"expires_in": 31_536_001}),
        json!({"expires_in": "soon"}),
    ] {
        let r = h
            .issue_code(&alice, "/hub/api/share-codes/alice/", bad)
            .await;
        assert_json_error(&r, StatusCode::BAD_REQUEST, "expires_in");
    }
    for q in ["id=sc_999", "id=999", "code=guess"] {
        let r = h
            .call(
                Method::DELETE,
                &format!("/hub/api/share-codes/alice/?{q}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{q}: {}", r.text);
    }
    let r = h
        .call(
            Method::GET,
            "/hub/api/shares/alice/?limit=x",
            Some(&alice),
            None,
        )
        .await;
    assert_json_error(&r, StatusCode::BAD_REQUEST, "limit");
    // Revoking from someone unknown is revoking nothing.
    let r = h
        .json(
            Method::PATCH,
            "/hub/api/shares/alice/",
            &alice,
            to_user("nobody"),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn share_lists_are_paginated() {
    let (h, alice, _, _) = sharing_hub().await;
    for who in ["bob", "carol", "dave", "erin", "frank"] {
        h.user_token(who, None).await;
        let r = h
            .json(Method::POST, "/hub/api/shares/alice/", &alice, to_user(who))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let mut seen = Vec::new();
    let mut url = "/hub/api/shares/alice/?limit=2".to_owned();
    loop {
        let r = h.call(Method::GET, &url, Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        validate("GET", "/shares/{owner}/{server_name}", 200, &r.body);
        assert_eq!(r.body["_pagination"]["total"], 5);
        assert!(items(&r).len() <= 2);
        seen.extend(items(&r).iter().map(|s| s["user"]["name"].clone()));
        let next = &r.body["_pagination"]["next"];
        if next.is_null() {
            break;
        }
        let next_url = next["url"].as_str().unwrap();
        url = next_url[next_url.find("/hub/").unwrap()..].to_owned();
    }
    assert_eq!(
        seen,
        json!(["bob", "carol", "dave", "erin", "frank"])
            .as_array()
            .unwrap()
            .clone()
    );
    let r = h
        .call(
            Method::GET,
            "/hub/api/shares/alice?offset=4&limit=10",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(items(&r).len(), 1);
    assert_eq!(r.body["_pagination"]["next"], Value::Null);
}

#[tokio::test]
async fn named_servers_are_shared_separately() {
    let (h, alice, bob, _) = sharing_hub().await;
    let r = h
        .call(
            Method::PUT,
            "/hub/api/users/alice/servers/lab2",
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/lab2",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["server"]["name"], "lab2");
    assert_eq!(r.body["server"]["url"], "/user/alice/lab2/");
    assert_eq!(
        r.body["scopes"],
        json!(["access:servers!server=alice/lab2"])
    );
    let scopes = h.scopes_of(&bob).await;
    assert!(scopes.contains(&"access:servers!server=alice/lab2".to_owned()));
    assert!(!scopes.contains(&ACCESS.to_owned()));
    let r = h
        .call(Method::GET, "/hub/api/shares/alice/", Some(&alice), None)
        .await;
    assert_eq!(items(&r).len(), 0);
    let r = h
        .call(Method::GET, "/hub/api/shares/alice", Some(&alice), None)
        .await;
    assert_eq!(items(&r).len(), 1);
}

/// With `shares!user` alone (no right to read names), users share by code only, as the
/// JupyterHub docs describe.
#[tokio::test]
async fn naming_a_recipient_needs_the_right_to_read_names() {
    let h = common::hub_with(common::test_db().await, |c| {
        c.roles.push(hub::RoleConfig {
            name: "user".into(),
            scopes: vec!["self".into(), "shares!user".into()],
            ..hub::RoleConfig::default()
        });
    })
    .await;
    let alice = h.user_token("alice", None).await;
    h.user_token("bob", None).await;
    h.admin(Method::POST, "/hub/api/groups/team", Some("{}"))
        .await;
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            to_user("bob"),
        )
        .await;
    assert_json_error(&r, StatusCode::FORBIDDEN, "read:users:name");
    // Nor may she probe which names exist: an unknown user is refused the same way.
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            to_user("nobody"),
        )
        .await;
    assert_json_error(&r, StatusCode::FORBIDDEN, "read:users:name");
    let r = h
        .json(
            Method::POST,
            "/hub/api/shares/alice/",
            &alice,
            json!({"group": "team"}),
        )
        .await;
    assert_json_error(&r, StatusCode::FORBIDDEN, "read:groups:name");
    let r = h
        .json(
            Method::POST,
            "/hub/api/share-codes/alice/",
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
