//! Services (`[[services]]`): the API's service models, a service token holding only its
//! roles' scopes, custom scopes, OAuth login to a service, and start-up registration following
//! the config.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Hub, hub_with, test_db, validate, validate_component};
use hub::{Config, CustomScope, RoleConfig, Secret, ServiceConfig};

const GRADES_TOKEN: &str = "grades-service-token-0123456789ab";
const CULLER_TOKEN: &str = "culler-service-token-0123456789ab";

fn configure(c: &mut Config) {
    let mut grades = ServiceConfig::named("grades");
    grades.url = Some("http://127.0.0.1:10101".into());
    grades.api_token = Some(Secret::new(GRADES_TOKEN));
    grades
        .info
        .insert("owner".into(), serde_json::json!("teaching"));
    grades.oauth_client_allowed_scopes = vec!["custom:grades:read".into()];
    let mut culler = ServiceConfig::named("culler");
    culler.api_token = Some(Secret::new(CULLER_TOKEN));
    c.services = vec![grades, culler];
    c.custom_scopes.insert(
        "custom:grades:read".into(),
        CustomScope {
            description: "read grades".into(),
            subscopes: vec![],
        },
    );
    c.custom_scopes.insert(
        "custom:grades:write".into(),
        CustomScope {
            description: "enter grades".into(),
            subscopes: vec!["custom:grades:read".into()],
        },
    );
    c.roles = vec![
        RoleConfig {
            name: "culler".into(),
            scopes: vec![
                "list:users".into(),
                "read:users:activity".into(),
                "read:servers".into(),
                "delete:servers".into(),
            ],
            services: vec!["culler".into()],
            ..RoleConfig::default()
        },
        RoleConfig {
            name: "grader".into(),
            scopes: vec!["custom:grades:write".into()],
            users: vec!["gail".into()],
            ..RoleConfig::default()
        },
        RoleConfig {
            name: "students".into(),
            scopes: vec!["access:services!service=grades".into()],
            users: vec!["alice".into()],
            ..RoleConfig::default()
        },
    ];
}

async fn services_hub() -> Hub {
    hub_with(test_db().await, configure).await
}

#[tokio::test]
async fn the_api_lists_services_with_jupyterhubs_model() {
    let h = services_hub().await;
    let r = h.admin(Method::GET, "/hub/api/services", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // JupyterHub answers a map from name to model (apihandlers/services.py), although its
    // OpenAPI file says a list: we answer as JupyterHub does and check each model against the
    // file's Service schema.
    for model in r.body.as_object().unwrap().values() {
        validate_component("Service", model);
    }
    let grades = &r.body["grades"];
    assert_eq!(grades["kind"], "service");
    assert_eq!(grades["url"], "http://127.0.0.1:10101");
    assert_eq!(grades["prefix"], "/services/grades/");
    assert_eq!(grades["info"]["owner"], "teaching");
    assert_eq!(r.body["culler"]["roles"], serde_json::json!(["culler"]));
    assert_eq!(r.body["culler"]["prefix"], "", "no url, no prefix");
    assert!(
        r.body.get("admin-bootstrap").is_some(),
        "the bootstrap token's service is listed too"
    );
    let r = h.admin(Method::GET, "/hub/api/services/grades", None).await;
    assert_eq!(r.status, StatusCode::OK);
    validate("get", "/services/{name}", 200, &r.body);
    let r = h.admin(Method::GET, "/hub/api/services/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn a_user_cannot_list_or_read_services_without_the_scope() {
    let h = services_hub().await;
    let alice = h.user_token("alice", None).await;
    let r = h
        .call(Method::GET, "/hub/api/services", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h
        .call(Method::GET, "/hub/api/services/grades", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn a_service_token_holds_only_its_roles_scopes() {
    let h = services_hub().await;
    h.user_token("alice", None).await;
    // Who am I: the service, with its role.
    let r = h
        .call(Method::GET, "/hub/api/user", Some(CULLER_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["kind"], "service");
    assert_eq!(r.body["name"], "culler");
    assert_eq!(r.body["roles"], serde_json::json!(["culler"]));
    // What its role allows.
    let r = h
        .call(Method::GET, "/hub/api/users", Some(CULLER_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "alice")
    );
    // What it does not: make users, tokens, admins; read the hub's info.
    for (method, path, body) in [
        (Method::POST, "/hub/api/users/mallory", None),
        (Method::POST, "/hub/api/users/alice/tokens", Some("{}")),
        (
            Method::PATCH,
            "/hub/api/users/alice",
            Some(r#"{"admin": true}"#),
        ),
        (Method::GET, "/hub/api/info", None),
        (Method::POST, "/hub/api/users/alice/server", None),
    ] {
        let r = h.call(method.clone(), path, Some(CULLER_TOKEN), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path} with the culler's token: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn custom_scopes_reach_users_with_their_subscopes() {
    let h = services_hub().await;
    // Gail's own session (an admin cannot hand out scopes it does not hold itself).
    h.user_token("bob", None).await;
    let (cookie, cookies) = h.login("gail").await;
    let req = Request::get("/hub/api/user")
        .header("cookie", &cookie)
        .header("x-xsrftoken", &cookies["_xsrf"])
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let scopes: Vec<String> = serde_json::from_value(r.body["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"custom:grades:write".to_owned()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"custom:grades:read".to_owned()),
        "a subscope comes with its scope: {scopes:?}"
    );
    // A user without the role has neither, and cannot ask for it on a token.
    let bob = h.user_token("bob", None).await;
    let r = h.call(Method::GET, "/hub/api/user", Some(&bob), None).await;
    let scopes: Vec<String> = serde_json::from_value(r.body["scopes"].clone()).unwrap();
    assert!(
        !scopes.iter().any(|s| s.starts_with("custom:")),
        "{scopes:?}"
    );
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/bob/tokens",
            Some(&bob),
            Some(r#"{"scopes": ["custom:grades:write"]}"#),
        )
        .await;
    assert!(
        r.status == StatusCode::FORBIDDEN || r.status == StatusCode::BAD_REQUEST,
        "{} {}",
        r.status,
        r.text
    );
}

const AUTHORIZE: &str = "/hub/api/oauth2/authorize?client_id=service-grades&redirect_uri=%2Fservices%2Fgrades%2Foauth_callback&response_type=code&state=s1";

async fn authorize(h: &Hub, cookie: &str) -> common::Resp {
    let req = Request::get(AUTHORIZE)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    h.send(req).await
}

#[tokio::test]
async fn a_user_without_access_to_a_service_cannot_log_in_to_it() {
    let h = services_hub().await;
    h.user_token("mallory", None).await;
    let (cookie, _) = h.login("mallory").await;
    let r = authorize(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("do not have permission"), "{}", r.text);
}

#[tokio::test]
async fn a_user_with_access_logs_in_to_a_service_and_gets_only_its_access_scope() {
    let h = services_hub().await;
    h.user_token("alice", None).await;
    let (cookie, cookies) = h.login("alice").await;
    // Not `oauth_no_confirm`: the consent form first, then the code after posting it.
    let r = authorize(&h, &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let xsrf = cookies.get("_xsrf").cloned().unwrap_or_default();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "service-grades")
        .append_pair("redirect_uri", "/services/grades/oauth_callback")
        .append_pair("response_type", "code")
        .append_pair("state", "s1")
        .append_pair("_xsrf", &xsrf_from(&r.text).unwrap_or(xsrf))
        .finish();
    let req = Request::post("/hub/api/oauth2/authorize")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.headers["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/services/grades/oauth_callback?"));
    // The client secret is the service's API token (JupyterHub's HubOAuth sends it).
    let r = h
        .exchange_code(
            &location,
            "service-grades",
            GRADES_TOKEN,
            "/services/grades/oauth_callback",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&token), None)
        .await;
    assert_eq!(r.body["name"], "alice");
    let scopes: Vec<String> = serde_json::from_value(r.body["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"access:services!service=grades".to_owned()),
        "{scopes:?}"
    );
    assert!(
        !scopes
            .iter()
            .any(|s| s.starts_with("servers") || s == "tokens"),
        "the service's token cannot act as alice elsewhere: {scopes:?}"
    );
}

fn xsrf_from(page: &str) -> Option<String> {
    let at = page.find("name=\"_xsrf\" value=\"")? + "name=\"_xsrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_owned())
}

#[tokio::test]
async fn a_service_removed_from_the_config_loses_its_token_and_client() {
    let db = test_db().await;
    let h = hub_with(db.clone(), configure).await;
    let r = h
        .call(Method::GET, "/hub/api/user", Some(GRADES_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The next start has no `grades`.
    let h = hub_with(db, |c| {
        configure(c);
        c.services.retain(|s| s.name != "grades");
    })
    .await;
    let r = h
        .call(Method::GET, "/hub/api/user", Some(GRADES_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let (cookie, _) = {
        h.user_token("alice", None).await;
        h.login("alice").await
    };
    let r = authorize(&h, &cookie).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "the client is gone: {}",
        r.text
    );
}

#[tokio::test]
async fn a_managed_service_gets_a_fresh_token_at_every_start() {
    let db = test_db().await;
    let managed = |c: &mut Config| {
        let mut s = ServiceConfig::named("announce");
        s.command = vec!["true".into()];
        c.services = vec![s];
    };
    let first = hub_with(db.clone(), managed).await;
    let token1 = first
        .state
        .services()
        .get("announce")
        .unwrap()
        .api_token()
        .unwrap()
        .expose()
        .to_owned();
    let r = first
        .call(Method::GET, "/hub/api/user", Some(&token1), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "announce");
    let second = hub_with(db, managed).await;
    let token2 = second
        .state
        .services()
        .get("announce")
        .unwrap()
        .api_token()
        .unwrap()
        .expose()
        .to_owned();
    assert_ne!(token1, token2);
    let r = second
        .call(Method::GET, "/hub/api/user", Some(&token1), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the last run's token is revoked"
    );
}

async fn home_page(h: &Hub, user: &str) -> String {
    h.user_token(user, None).await;
    let (cookie, _) = h.login(user).await;
    let req = Request::get("/hub/home")
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
}

#[tokio::test]
async fn the_home_page_menu_lists_only_services_the_user_may_access() {
    let h = services_hub().await;
    // alice holds access to grades: its link, to its prefix. The culler has no URL.
    let page = home_page(&h, "alice").await;
    // (minijinja escapes `/` in attributes.)
    assert!(
        page.contains(r#"<a href="&#x2f;services&#x2f;grades&#x2f;" data-service="grades">"#),
        "{page}"
    );
    assert!(!page.contains(r#"data-service="culler""#), "{page}");
    // mallory holds no access to any service: no menu at all.
    let page = home_page(&h, "mallory").await;
    assert!(!page.contains(r#"id="services""#), "{page}");
    assert!(!page.contains("grades"), "{page}");
}
