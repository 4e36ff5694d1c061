//! Browser-facing hardening on real responses of the hub's router: security headers on every
//! page and API answer, cookie flags, and per-user origins (`subdomain_host`): the hub's pages
//! are not answered on a user's host, servers are routed, announced and OAuth-redirected on
//! their own host.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::FakeSpawner;
use common::{PASSWORD, hub_with, test_db};
use hub::{SubdomainHost, ViaPublicProxy};

fn sub() -> SubdomainHost {
    SubdomainHost::parse("https://hub.example").unwrap()
}

/// A browser request through the public proxy to `host`.
fn browser(method: Method, host: &str, path: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(ViaPublicProxy);
    req
}

fn login_request(forwarded_proto: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/hub/login?next=%2Fhub%2Fhome")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(p) = forwarded_proto {
        b = b.header("x-forwarded-proto", p);
    }
    b.body(Body::from(format!("username=alice&password={PASSWORD}")))
        .unwrap()
}

fn set_cookies(r: &common::Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn attrs(cookie: &str) -> Vec<String> {
    cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn a_hostile_page_cannot_frame_or_sniff_any_hub_answer() {
    let h = hub_with(test_db().await, |_| {}).await;
    let (cookie, _) = h.login("alice").await;
    let mut answers = Vec::new();
    for path in [
        "/hub/login",
        "/hub/api",
        "/hub/api/user",
        "/hub/home",
        "/hub/nope",
        "/user/alice/lab",
        "/hub/user/alice/lab",
    ] {
        answers.push((path, h.call(Method::GET, path, None, None).await));
        let req = Request::get(path)
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap();
        answers.push((path, h.send(req).await));
    }
    answers.push(("POST /hub/login", h.send(login_request(None)).await));
    let bad = Request::post("/hub/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=wrong"))
        .unwrap();
    answers.push(("bad login", h.send(bad).await));
    for (what, r) in answers {
        let csp = r
            .headers
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap());
        assert!(
            csp.is_some_and(|c| c.contains("frame-ancestors 'self'")),
            "{what} ({}): CSP {csp:?}",
            r.status
        );
        assert_eq!(
            r.headers
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what} ({})",
            r.status
        );
    }
}

#[tokio::test]
async fn no_script_can_read_the_hubs_cookies_and_https_makes_them_secure() {
    let h = hub_with(test_db().await, |_| {}).await;
    let r = h.send(login_request(None)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let cookies = set_cookies(&r);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for c in &cookies {
        let a = attrs(c);
        assert!(a.contains(&"httponly".to_owned()), "{c}");
        assert!(a.contains(&"samesite=lax".to_owned()), "{c}");
        assert!(
            !a.iter().any(|x| x.starts_with("domain=")),
            "host-only: {c}"
        );
        assert!(!a.contains(&"secure".to_owned()), "plain http: {c}");
    }
    assert!(cookies.iter().any(|c| c.starts_with("_xsrf=")));

    // Behind https (the proxy's X-Forwarded-Proto), or with an https public URL.
    let r = h.send(login_request(Some("https"))).await;
    for c in set_cookies(&r) {
        assert!(attrs(&c).contains(&"secure".to_owned()), "{c}");
    }
    let h = hub_with(test_db().await, |c| {
        c.public_url = Some("https://hub.example/".to_owned());
    })
    .await;
    let r = h.send(login_request(None)).await;
    let cookies = set_cookies(&r);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for c in cookies {
        assert!(attrs(&c).contains(&"secure".to_owned()), "{c}");
        assert!(attrs(&c).contains(&"httponly".to_owned()), "{c}");
    }
    // Logging out clears them with the same flags.
    let r = h
        .send(Request::get("/hub/logout").body(Body::empty()).unwrap())
        .await;
    for c in set_cookies(&r) {
        assert!(attrs(&c).contains(&"secure".to_owned()), "{c}");
    }
}

#[tokio::test]
async fn a_users_host_gets_no_hub_page_and_no_hub_api_answer() {
    let h = hub_with(test_db().await, |c| c.subdomain_host = Some(sub())).await;
    let r = h
        .send(browser(
            Method::GET,
            "mallory.hub.example",
            "/hub/login?next=%2Fx",
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "https://hub.example/hub/login?next=%2Fx"
    );
    let r = h
        .send(browser(
            Method::GET,
            "mallory.hub.example:443",
            "/hub/api/user",
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "https://hub.example/hub/api/user");
    let r = h
        .send(browser(
            Method::POST,
            "mallory.hub.example",
            "/hub/api/users/alice/tokens",
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["status"], 404);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("https://hub.example"),
        "{}",
        r.text
    );
    assert!(r.headers.get("content-security-policy").is_some());
    // The hub host, and hosts that are no user's (a health probe's IP), are answered.
    for host in ["hub.example", "HUB.example:443", "10.0.0.7:8000"] {
        let r = h.send(browser(Method::GET, host, "/hub/api")).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
    }
    // A single-user server calling the hub's own listener (no proxy) is answered too.
    let req = Request::get("/hub/api")
        .header("host", "alice.hub.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_server_is_routed_announced_and_oauth_redirected_on_its_own_host() {
    let base = hub_with(test_db().await, |c| {
        c.subdomain_host = Some(sub());
        c.public_url = Some("https://hub.example/".to_owned());
    })
    .await;
    // The pipeline's settings come from the test config of `fake`; give it the host.
    let mut settings = common::fake::settings(Duration::from_secs(5));
    settings.subdomain_host = Some(sub());
    settings.public_url = Some("https://hub.example/".to_owned());
    let s = common::fake::setup_with(base, Arc::<FakeSpawner>::default(), settings);
    let h = &s.hub;
    for name in ["alice", "a.b"] {
        let r = h
            .admin(Method::POST, &format!("/hub/api/users/{name}"), None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = h
            .admin(Method::POST, &format!("/hub/api/users/{name}/server"), None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    // Routed by host, as configurable-http-proxy's `/HOST/PATH` keys.
    assert!(s.table.get("/user/alice").is_none());
    let route = s
        .table
        .get("/alice.hub.example/user/alice")
        .expect("host route");
    assert_eq!(route.data()["user"], "alice");
    let dotted = hub::dns_label("a.b");
    assert!(!dotted.contains('.'));
    assert!(
        s.table
            .get(&format!("/{dotted}.hub.example/user/a.b"))
            .is_some()
    );

    // The server's environment and OAuth client use its host.
    let env = s.spawner.envs.lock().await[0].clone();
    assert_eq!(
        env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
        "https://alice.hub.example/user/alice/oauth_callback"
    );
    assert_eq!(
        env["JUPYTERHUB_PUBLIC_URL"],
        "https://alice.hub.example/user/alice/"
    );
    assert_eq!(env["JUPYTERHUB_HOST"], "https://hub.example");
    assert_eq!(env["JUPYTERHUB_PUBLIC_HUB_URL"], "https://hub.example/hub/");
    assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], "/user/alice/");

    // The API announces the server on its host.
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(model.body["url"], "https://alice.hub.example/user/alice/");
    assert_eq!(
        model.body["full_url"],
        "https://alice.hub.example/user/alice/"
    );

    // The browser is sent to the server's host.
    let (cookie, _) = h.login("alice").await;
    let req = Request::get("/hub/user/alice/lab?x=1")
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "https://alice.hub.example/user/alice/lab?x=1&redirects=1"
    );

    // The OAuth flow: only the server's own callback on its host is accepted.
    let authorize = |redirect: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "jupyterhub-user-alice")
            .append_pair("redirect_uri", redirect)
            .append_pair("response_type", "code")
            .append_pair("state", "s1")
            .finish();
        Request::get(format!("/hub/api/oauth2/authorize?{q}"))
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap()
    };
    let r = h
        .send(authorize(
            "https://alice.hub.example/user/alice/oauth_callback",
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.headers["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://alice.hub.example/user/alice/oauth_callback?code="),
        "{location}"
    );
    for other in [
        "/user/alice/oauth_callback",
        "https://mallory.hub.example/user/alice/oauth_callback",
    ] {
        let r = h.send(authorize(other)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{other}");
    }

    // Stopping removes the host route.
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/server", None)
        .await;
    assert!(matches!(r.status.as_u16(), 202 | 204), "{}", r.status);
    for _ in 0..100 {
        if s.table.get("/alice.hub.example/user/alice").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.table.get("/alice.hub.example/user/alice").is_none());
}
