//! End to end: OpenID Connect login against the real test identity provider (npm
//! `oidc-provider`, Keycloak-shaped tokens) and the real `stackhub` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod oidc_common;

use std::time::{Duration, Instant};

use oidc_common::{Browser, Stack, TestDir};
use serde_json::{Value, json};

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect()
}

/// Login through the provider's form; the user has the right admin flag, groups (synced on every
/// login, added and removed) and quota in the REST API and on the home page; a user lacking the
/// role gets the 403 page naming it and no user is created.
#[tokio::test]
async fn login_maps_roles_groups_and_quota() {
    let dir = TestDir::new("login");
    let stack = Stack::start(&dir.0, 300, "").await;
    let hub = &stack.hub;

    // The login page offers the provider, not a password form.
    let b = Browser::new();
    let p = b.get(&format!("{hub}/hub/login")).await;
    assert!(p.body.contains("hub/oauth_login"), "{}", p.body);
    assert!(!p.body.contains("name=\"password\""), "{}", p.body);

    let t0 = Instant::now();
    let home = b.login(hub, "alice", "alice-pw").await;
    eprintln!(
        "alice's login took {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.url.ends_with("/hub/home"), "{}", home.url);
    assert!(
        home.body.contains("<strong id=\"user\">alice</strong>"),
        "{}",
        home.body
    );
    assert!(
        home.body
            .contains("Quota: stack-jupyter-medium: 6 CPUs, 18 GiB memory, no GPU"),
        "{}",
        home.body
    );

    let (status, alice) = stack.admin_get("/hub/api/users/alice").await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(alice["admin"], false);
    assert_eq!(
        names(&alice["groups"]),
        ["projects:eo-lab", "services:dask:stack-dask-medium"]
    );
    assert_eq!(alice["quota"]["role"], "stack-jupyter-medium");
    assert_eq!(alice["quota"]["cpus"], 6.0);
    assert_eq!(alice["quota"]["memory_bytes"], 18u64 << 30);
    assert_eq!(alice["auth_state"]["oidc"]["sub"], "alice");
    assert!(alice["auth_state"].get("refresh_token").is_none());

    // carol holds low and high: the highest wins; her admin role makes her admin.
    let b2 = Browser::new();
    let home = b2.login(hub, "carol", "carol-pw").await;
    assert_eq!(home.status, 200, "{home:?}");
    let (_, list) = stack.admin_get("/hub/api/users").await;
    let carol = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "carol")
        .expect("carol listed")
        .clone();
    assert_eq!(carol["admin"], true);
    assert_eq!(carol["quota"]["role"], "stack-jupyter-high");
    assert_eq!(carol["quota"]["cpus"], 12.0);
    assert_eq!(names(&carol["groups"]), ["admins"]);

    // The groups API shows the synced groups; an admin adds alice to another group, and her next
    // login removes it again (the provider is the source of truth) and keeps the provider's.
    let (status, groups) = stack.admin_get("/hub/api/groups").await;
    assert_eq!(status, 200);
    let dask = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "services:dask:stack-dask-medium")
        .expect("synced group listed");
    assert_eq!(names(&dask["users"]), ["alice"]);
    let r = stack
        .admin(reqwest::Method::POST, "/hub/api/groups/stale")
        .json(&json!({"users": ["alice"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    assert!(names(&alice["groups"]).contains(&"stale".to_owned()));
    let again = Browser::new().login(hub, "alice", "alice-pw").await;
    assert_eq!(again.status, 200);
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    assert_eq!(
        names(&alice["groups"]),
        ["projects:eo-lab", "services:dask:stack-dask-medium"]
    );
    let (_, stale) = stack.admin_get("/hub/api/groups/stale").await;
    assert_eq!(stale["users"], json!([]));

    // bob lacks stack-jupyter: a 403 page naming the role and the roles he holds; no user.
    let b3 = Browser::new();
    let page = b3.login(hub, "bob", "bob-pw").await;
    assert_eq!(page.status, 403, "{page:?}");
    assert!(
        page.body
            .contains("<code class=\"missing\">stack-jupyter</code>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<code class=\"held\">stack-dask</code>"),
        "{}",
        page.body
    );
    let (status, _) = stack.admin_get("/hub/api/users/bob").await;
    assert_eq!(status, 404, "no half-created user");
    assert!(
        stack
            .hub_log()
            .contains("login refused: required role missing")
    );
}

/// Logout ends the hub session, revokes what was issued to that browser session (the OAuth token
/// the user's server got, the provider's tokens) and sends the browser to the provider's
/// end-session endpoint. The spawned server got the quota and a valid access token from the
/// provider. This hub also reads userinfo.
#[tokio::test]
async fn logout_ends_the_session_and_server_tokens() {
    let dir = TestDir::new("logout");
    // Also reads the claims from the userinfo endpoint (its subject must match the id_token's).
    let stack = Stack::start(&dir.0, 300, "userinfo = true").await;
    let hub = &stack.hub;
    let b = Browser::new();
    let home = b.login(hub, "alice", "alice-pw").await;
    assert_eq!(home.status, 200, "{home:?}");

    // Start alice's server; wait until ready.
    let r = stack
        .admin(reqwest::Method::POST, "/hub/api/users/alice/server")
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(90);
    let pid = loop {
        let (_, s) = stack.admin_get("/hub/api/users/alice/server").await;
        if s["ready"] == true {
            break s["state"]["pid"].as_i64().expect("pid in state");
        }
        assert!(Instant::now() < deadline, "server not ready: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The server's environment carries the quota and the provider's access token.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let var = |k: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_owned))
    };
    assert_eq!(var("CPU_LIMIT").as_deref(), Some("6"));
    assert_eq!(var("MEM_LIMIT").as_deref(), Some("19327352832"));
    assert_eq!(
        var("STACKHUB_QUOTA_ROLE").as_deref(),
        Some("stack-jupyter-medium")
    );
    let access = var("STACKHUB_ACCESS_TOKEN").expect("access token handed to the server");
    let me = reqwest::Client::new()
        .get(format!("{}/me", stack.idp))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        200,
        "the handed-out token works at the provider"
    );

    // The Lab through the hub's OAuth provider: the server gets an OAuth token for this session.
    let lab = b
        .following()
        .get(format!("{hub}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(lab.status(), 200);
    let html = lab.text().await.unwrap();
    let start = html
        .find("id=\"jupyter-config-data\"")
        .expect("page config");
    let open = start + html[start..].find('>').unwrap() + 1;
    let close = open + html[open..].find("</script>").unwrap();
    let config: Value = serde_json::from_str(&html[open..close]).unwrap();
    let oauth_token = config["token"].as_str().expect("OAuth token").to_owned();
    let whoami = |t: String| {
        let hub = hub.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{hub}/hub/api/user"))
                .header("Authorization", format!("token {t}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(whoami(oauth_token.clone()).await, 200);

    // Later on, the server fetches a fresh provider token from the hub with its own API token;
    // the Lab's OAuth token may not.
    let token_url = var("STACKHUB_ACCESS_TOKEN_URL").expect("token URL handed to the server");
    let server_token = var("JUPYTERHUB_API_TOKEN").unwrap();
    let fetch = |t: String| {
        let url = token_url.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("Authorization", format!("token {t}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, fresh) = fetch(server_token.clone()).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["token_type"], "Bearer");
    let me = reqwest::Client::new()
        .get(format!("{}/me", stack.idp))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(fetch(oauth_token.clone()).await.0, 403, "Lab OAuth token");
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    let old_access = alice["auth_state"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Logout: the hub session ends, the provider's end-session endpoint is next.
    use reqwest::cookie::CookieStore;
    let login_cookie = b
        .jar
        .as_ref()
        .cookies(&url::Url::parse(&format!("{hub}/hub/")).unwrap())
        .expect("cookies")
        .to_str()
        .unwrap()
        .to_owned();
    let out = b.get(&format!("{hub}/hub/logout")).await;
    assert_eq!(out.status, 302);
    let end = out.location.clone().unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end?", stack.idp)),
        "{end}"
    );
    assert!(end.contains("post_logout_redirect_uri="), "{end}");
    assert!(!end.contains("token"), "no token in the URL: {end}");

    // The provider signs the browser out and sends it back to the hub's login page.
    let form = b.get(&end).await;
    assert_eq!(form.status, 200, "{form:?}");
    let action_at = form.body.find("action=\"").unwrap() + 8;
    let action = &form.body[action_at..action_at + form.body[action_at..].find('"').unwrap()];
    let xsrf_at = form.body.find("name=\"xsrf\" value=\"").unwrap() + 19;
    let xsrf = &form.body[xsrf_at..xsrf_at + form.body[xsrf_at..].find('"').unwrap()];
    let action = action.replace("&amp;", "&");
    let action = if action.starts_with("http") {
        action
    } else {
        format!("{}{action}", stack.idp)
    };
    let done = b
        .post_form(&action, &[("xsrf", xsrf), ("logout", "yes")])
        .await;
    let back = b
        .follow_until(&done.location.clone().unwrap_or_default(), |_| true)
        .await;
    assert!(
        back.url.starts_with(&format!("{hub}/hub/login"))
            || done
                .location
                .as_deref()
                .is_some_and(|l| l.starts_with(&format!("{hub}/hub/login"))),
        "{done:?} {back:?}"
    );

    // The old cookie and the server's OAuth token are refused, and so is the provider's token.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{hub}/hub/home"))
        .header("Cookie", login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 302, "old cookie refused");
    assert!(
        replay.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/hub/login"),
    );
    assert_eq!(whoami(oauth_token).await, 403, "server OAuth token revoked");
    let me = reqwest::Client::new()
        .get(format!("{}/me", stack.idp))
        .bearer_auth(&old_access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "the provider's access token was revoked");
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    assert!(alice["auth_state"].get("access_token").is_none(), "{alice}");
    assert_eq!(
        fetch(server_token).await.0,
        404,
        "no provider token after logout"
    );

    let r = stack
        .admin(reqwest::Method::DELETE, "/hub/api/users/alice/server")
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 202 | 204));
}

/// The access token expires fast in the provider; the hub refreshes it (with the stored,
/// encrypted refresh token) before handing it out.
#[tokio::test]
async fn expired_access_token_is_refreshed() {
    let dir = TestDir::new("refresh");
    let stack = Stack::start(&dir.0, 2, "refresh_margin_secs = 0").await;
    let b = Browser::new();
    assert_eq!(b.login(&stack.hub, "alice", "alice-pw").await.status, 200);
    let userinfo = |t: String| {
        let idp = stack.idp.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{idp}/me"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    let first = alice["auth_state"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(userinfo(first.clone()).await, 200);

    // Nothing in the database is readable as a token.
    let db = std::fs::read(dir.0.join("data/stackhub.sqlite")).unwrap();
    let text = String::from_utf8_lossy(&db);
    assert!(!text.contains(&first), "access token stored in clear");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        userinfo(first.clone()).await,
        401,
        "expired at the provider"
    );
    let (_, alice) = stack.admin_get("/hub/api/users/alice").await;
    let second = alice["auth_state"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second, "a new access token");
    assert_eq!(userinfo(second).await, 200, "the refreshed token works");
    assert!(
        stack
            .hub_log()
            .contains("refreshed the identity provider's access token")
    );
}

/// Tampered logins are refused with an error page and a log line, and leave no user behind:
/// a wrong `state`, a wrong `nonce`, a replayed callback, a replayed code, and an id_token
/// signed by a key the provider does not publish.
#[tokio::test]
async fn tampered_logins_are_refused() {
    let dir = TestDir::new("tamper");
    let stack = Stack::start(&dir.0, 300, "").await;
    let hub = &stack.hub;

    // Bad state: the callback's state differs from the one bound to this browser.
    let b = Browser::new();
    let authorize = b.start_login(hub).await;
    let callback = b.provider_login(hub, &authorize, "alice", "alice-pw").await;
    let mut url = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "forged".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let p = b.get(url.as_str()).await;
    assert_eq!(p.status, 400, "{p:?}");
    assert!(p.body.contains("Login state mismatch"), "{}", p.body);
    assert_eq!(stack.admin_get("/hub/api/users/alice").await.0, 404);

    // Bad nonce: the authorization request is altered on its way to the provider.
    let b = Browser::new();
    let authorize = b.start_login(hub).await;
    let mut url = url::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "attacker-nonce".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = b
        .provider_login(hub, url.as_str(), "alice", "alice-pw")
        .await;
    let p = b.get(&callback).await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.body.contains("id_token is not valid"), "{}", p.body);
    assert!(p.body.to_lowercase().contains("nonce"), "{}", p.body);
    assert_eq!(stack.admin_get("/hub/api/users/alice").await.0, 404);

    // A good login, then its callback replayed (same state: already used) and its code replayed
    // with a fresh state (the provider refuses the used code).
    let b = Browser::new();
    let authorize = b.start_login(hub).await;
    let good = b.provider_login(hub, &authorize, "alice", "alice-pw").await;
    let state = url::Url::parse(&good)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let code = url::Url::parse(&good)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let ok = b.get(&good).await;
    assert_eq!(ok.status, 302, "{ok:?}");
    assert_eq!(stack.admin_get("/hub/api/users/alice").await.0, 200);
    let hub_url = url::Url::parse(hub).unwrap();
    b.jar.add_cookie_str(
        &format!("stackhub-oidc-state={state}; Path=/hub/"),
        &hub_url,
    );
    let p = b.get(&good).await;
    assert_eq!(p.status, 400, "{p:?}");
    assert!(p.body.contains("already used"), "{}", p.body);
    let fresh = b.start_login(hub).await;
    let fresh_state = url::Url::parse(&fresh)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let replayed = format!("{hub}/hub/oauth_callback?code={code}&state={fresh_state}");
    let p = b.get(&replayed).await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.body.contains("refused the login"), "{}", p.body);

    // An id_token signed by another key: the provider now publishes a different key under the
    // signing key's id. The hub re-fetches the keys once, then refuses.
    let r = reqwest::Client::new()
        .post(format!("{}/__test/rogue-keys", stack.idp))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let b = Browser::new();
    let p = b.login(hub, "carol", "carol-pw").await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.body.contains("id_token is not valid"), "{}", p.body);
    assert!(p.body.to_lowercase().contains("signature"), "{}", p.body);
    assert_eq!(stack.admin_get("/hub/api/users/carol").await.0, 404);
    // With the real key back, the same user logs in.
    reqwest::Client::new()
        .delete(format!("{}/__test/rogue-keys", stack.idp))
        .send()
        .await
        .unwrap();
    let p = Browser::new().login(hub, "carol", "carol-pw").await;
    assert_eq!(p.status, 200, "{p:?}");

    let log = stack.hub_log();
    for line in [
        "state does not match",
        "OpenID Connect login refused",
        "unknown, expired or already used state",
    ] {
        assert!(log.contains(line), "no log line {line:?}");
    }
    assert!(!log.contains("panicked"));
}

/// id_tokens validly signed by the provider's own key but with a wrong issuer, a wrong audience,
/// or long expired (beyond the leeway) are refused with an error page naming the defect, and no
/// user is created; with the claims back to normal the same login succeeds.
#[tokio::test]
async fn wrong_issuer_audience_or_expiry_is_refused() {
    let dir = TestDir::new("claims");
    let stack = Stack::start(&dir.0, 300, "leeway_secs = 30").await;
    let set = |claims: Value| {
        let idp = stack.idp.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{idp}/__test/id-token"))
                .body(claims.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (claims, expect) in [
        (json!({"iss": "https://evil.example.org"}), "issuer"),
        (json!({"aud": "another-client"}), "audience"),
        (json!({"exp": now - 120, "iat": now - 3720}), "expired"),
    ] {
        set(claims.clone()).await;
        let p = Browser::new().login(&stack.hub, "alice", "alice-pw").await;
        assert_eq!(p.status, 403, "{claims}: {p:?}");
        assert!(p.body.contains("id_token is not valid"), "{}", p.body);
        assert!(
            p.body.to_lowercase().contains(expect),
            "{claims}: expected {expect:?} in {}",
            p.body
        );
        assert_eq!(stack.admin_get("/hub/api/users/alice").await.0, 404);
    }
    // Within the leeway an expired id_token is still accepted (clock skew).
    set(json!({"exp": now - 5})).await;
    let p = Browser::new().login(&stack.hub, "alice", "alice-pw").await;
    assert_eq!(p.status, 200, "{p:?}");
    reqwest::Client::new()
        .delete(format!("{}/__test/id-token", stack.idp))
        .send()
        .await
        .unwrap();
    let p = Browser::new().login(&stack.hub, "carol", "carol-pw").await;
    assert_eq!(p.status, 200, "{p:?}");
}

/// Two provider accounts whose names normalize to the same hub user (`eve@x.org` and
/// `eve+x.org` both become `eve-x.org`): the user is bound to the issuer and `sub` of the
/// account that first logs in as them (here a user an admin created, bound at that first
/// login), and the other account gets a 403 page saying the name is taken, showing nothing of
/// the owner; the owner still logs in.
#[tokio::test]
async fn second_account_normalizing_to_a_taken_name_cannot_log_in_as_its_user() {
    let dir = TestDir::new("binding");
    let stack = Stack::start(&dir.0, 300, "").await;
    let hub = &stack.hub;
    let r = stack
        .admin(reqwest::Method::POST, "/hub/api/users/eve-x.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let owner = Browser::new();
    let home = owner.login(hub, "eve@x.org", "eve@x.org-pw").await;
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.body.contains("eve-x.org"), "{}", home.body);

    let intruder = Browser::new();
    let page = intruder.login(hub, "eve+x.org", "eve+x.org-pw").await;
    assert_eq!(page.status, 403, "{page:?}");
    assert!(
        page.body.contains("already taken by another account"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("eve@x.org"), "{}", page.body);
    // No hub session for the intruder.
    let p = intruder.get(&format!("{hub}/hub/home")).await;
    assert_eq!(p.status, 302, "{p:?}");
    assert!(p.location.unwrap().contains("/hub/login"));
    assert!(
        stack
            .hub_log()
            .contains("identity-provider account does not own the user")
    );

    // The owner's account still logs in, and the user is unchanged.
    let again = Browser::new().login(hub, "eve@x.org", "eve@x.org-pw").await;
    assert_eq!(again.status, 200, "{again:?}");
    let (status, users) = stack.admin_get("/hub/api/users").await;
    assert_eq!(status, 200);
    let eves: Vec<&Value> = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"].as_str().unwrap().starts_with("eve"))
        .collect();
    assert_eq!(eves.len(), 1, "{users}");
}

/// `next=` values a browser turns into another host (`/\t/evil.example` is `//evil.example`
/// once the tab is dropped) do not survive the OpenID Connect login: it ends on the hub.
#[tokio::test]
async fn oidc_login_next_cannot_leave_the_hub() {
    let dir = TestDir::new("next");
    let stack = Stack::start(&dir.0, 300, "").await;
    let hub = &stack.hub;
    for evil in [
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        let b = Browser::new();
        let p = b.get(&format!("{hub}/hub/oauth_login?next={evil}")).await;
        assert_eq!(p.status, 302, "{p:?}");
        let authorize = p.location.unwrap();
        let callback = b.provider_login(hub, &authorize, "alice", "alice-pw").await;
        let p = b.get(&callback).await;
        assert_eq!(p.status, 302, "{p:?}");
        let target = p.location.unwrap();
        assert_eq!(target, format!("{hub}/hub/home"), "{evil}");
    }
}
