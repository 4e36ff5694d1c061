//! Identity attacks (issue 18), each written as the requests a hostile user or a careless
//! operator sends: names that are wildcards downstream, a group admin making admins, a deleted
//! or renamed user's servers, routes, tokens and OAuth clients passing to the next user of the
//! name, and `next=` values a browser turns into an off-site redirect. (The provider-account
//! binding is attacked end to end in `tests/tests/oidc_e2e.rs`, against a real provider.)

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::{FakeSpawner, Setup, settings};
use common::{Hub, PASSWORD, hub, hub_with, test_db};
use hub::RoleConfig;
use hub::SpawnOrchestrator;
use hub::proxy::EmbeddedProxy;
use proptest::prelude::*;
use serde_json::{Value, json};
use spawner::{ProgressSink, ServerId, SpawnError, SpawnRequest, Spawned, State};

// ---------------------------------------------------------------------------------------------
// Names that are wildcards or separators downstream.

#[tokio::test]
async fn user_names_with_wildcards_or_separators_cannot_be_created() {
    let h = hub().await;
    // `*` and `?` are IAM wildcards, `${…}` a policy variable, `:` `!` `=` `,` separate scope
    // filters and label selectors, spaces and quotes break S3 keys and shell-quoted scripts.
    for (raw, path) in [
        ("*", "%2A"),
        ("a*", "a*"),
        ("a?", "a%3F"),
        ("${aws:username}", "%24%7Baws%3Ausername%7D"),
        ("mal:lory", "mal:lory"),
        ("mal!lory", "mal!lory"),
        ("a b", "a%20b"),
        ("-rf", "-rf"),
    ] {
        let r = h
            .admin(Method::POST, &format!("/hub/api/users/{path}"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{raw:?}: {}", r.text);
        assert_eq!(r.body["status"], 400, "{}", r.text);
        let msg = r.body["message"].as_str().unwrap();
        assert!(
            msg.contains("Invalid user name") && msg.contains("letters, digits"),
            "{raw:?}: {msg}"
        );
        let r = h
            .admin(
                Method::POST,
                "/hub/api/users",
                Some(&json!({"usernames": ["fine", raw]}).to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{raw:?}: {}", r.text);
    }
    // None of them exists now, and neither does the valid name sent beside them.
    let r = h.admin(Method::GET, "/hub/api/users", None).await;
    let names: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c))),
        "{names:?}"
    );

    // Renaming into a wildcard is a creation of that name too.
    h.user_token("mallory", None).await;
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/mallory",
            Some(r#"{"name": "mall*"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // A login (here the dev form) with such a name makes no user either.
    let req = Request::post("/hub/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("username=a%2A&password={PASSWORD}")))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h.admin(Method::GET, "/hub/api/users/a*", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Ordinary names, e-mail-like ones included, still work.
    for ok in ["alice.smith", "a-x.org", "bob@example.org", "c+d", "jürgen"] {
        let r = h
            .admin(
                Method::POST,
                &format!("/hub/api/users/{}", urlenc(ok)),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{ok:?}: {}", r.text);
    }
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

// ---------------------------------------------------------------------------------------------
// The admin flag.

#[tokio::test]
async fn group_admin_cannot_grant_or_revoke_admin() {
    let h = hub_with(test_db().await, |c| {
        c.roles.push(RoleConfig {
            name: "lab-manager".into(),
            scopes: vec!["admin:users!group=lab".into(), "list:users".into()],
            users: vec!["mallory".into()],
            ..RoleConfig::default()
        });
    })
    .await;
    for u in ["alice", "carol"] {
        let r = h
            .admin(Method::POST, &format!("/hub/api/users/{u}"), None)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let mallory = h.user_token("mallory", None).await;
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/carol",
            Some(r#"{"admin": true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.admin(Method::POST, "/hub/api/groups/lab", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/lab/users",
            Some(r#"{"users": ["mallory", "alice", "carol"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Mallory manages the users of `lab`: she makes herself, then alice, an admin.
    for target in ["mallory", "alice"] {
        let r = h
            .call(
                Method::PATCH,
                &format!("/hub/api/users/{target}"),
                Some(&mallory),
                Some(r#"{"admin": true}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.text);
        assert!(
            r.body["message"].as_str().unwrap().contains("admin"),
            "{}",
            r.text
        );
    }
    // ... or takes the flag away from carol, or renames the admin.
    for body in [r#"{"admin": false}"#, r#"{"name": "carol2"}"#] {
        let r = h
            .call(
                Method::PATCH,
                "/hub/api/users/carol",
                Some(&mallory),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.text);
    }
    // Creating an admin needs unfiltered admin:users as well.
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/trojan",
            Some(&mallory),
            Some(r#"{"admin": true}"#),
        )
        .await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{}",
        r.text
    );
    for (name, admin) in [("mallory", false), ("alice", false), ("carol", true)] {
        let r = h
            .admin(Method::GET, &format!("/hub/api/users/{name}"), None)
            .await;
        assert_eq!(r.body["admin"], admin, "{name}: {}", r.text);
    }
    assert_eq!(
        h.admin(Method::GET, "/hub/api/users/trojan", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // What the filtered scope is for still works: managing a non-admin member of `lab`.
    let r = h
        .call(
            Method::PATCH,
            "/hub/api/users/alice",
            Some(&mallory),
            Some(r#"{"name": "alice2", "admin": false}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // An admin may still grant the flag.
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/mallory",
            Some(r#"{"admin": true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["admin"], true);
}

// ---------------------------------------------------------------------------------------------
// Deleting and renaming users with servers.

/// The fake spawner, with a stop that takes `stop_delay` and may fail.
#[derive(Debug)]
struct SlowStop {
    inner: FakeSpawner,
    stop_delay: Duration,
    stop_fails: bool,
}

#[async_trait::async_trait]
impl spawner::Spawner for SlowStop {
    fn kind(&self) -> &'static str {
        "slow-stop"
    }

    async fn start(
        &self,
        req: SpawnRequest,
        progress: ProgressSink,
    ) -> Result<Spawned, SpawnError> {
        self.inner.start(req, progress).await
    }

    async fn poll(&self, id: &ServerId, state: &State) -> Result<spawner::Status, SpawnError> {
        self.inner.poll(id, state).await
    }

    async fn stop(&self, id: &ServerId, state: &State, now: bool) -> Result<(), SpawnError> {
        tokio::time::sleep(self.stop_delay).await;
        if self.stop_fails {
            return Err(SpawnError::Stop {
                server: id.clone(),
                reason: "the node is unreachable".into(),
            });
        }
        self.inner.stop(id, state, now).await
    }
}

fn setup_with(spawner: Arc<SlowStop>, base: Hub) -> (Setup, Arc<SlowStop>) {
    let table = Arc::new(proxy::RouteTable::new());
    let orchestrator = SpawnOrchestrator::new(
        base.state.db().clone(),
        spawner.clone(),
        Arc::new(EmbeddedProxy::new(Arc::clone(&table))),
        settings(Duration::from_secs(5)),
    );
    let state = base
        .state
        .clone()
        .with_orchestrator(Arc::new(orchestrator.clone()));
    let setup = Setup {
        hub: Hub {
            app: hub::app(state.clone()),
            state,
        },
        table,
        spawner: Arc::new(FakeSpawner::default()),
        orchestrator,
    };
    (setup, spawner)
}

async fn oauth_clients(h: &Hub) -> Vec<String> {
    use sqlx::Row;
    let mut conn = h.state.db().pool().acquire().await.unwrap();
    sqlx::query("SELECT id FROM oauth_clients ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("id").unwrap())
        .collect()
}

/// Start mallory's default server; returns its server token.
async fn start_mallory(s: &Setup, spawner: &SlowStop) -> String {
    let h = &s.hub;
    h.user_token("mallory", None).await;
    let r = h
        .admin(Method::POST, "/hub/api/users/mallory/server", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(s.table.get("/user/mallory").is_some());
    assert_eq!(oauth_clients(h).await, ["jupyterhub-user-mallory"]);
    let envs = spawner.inner.envs.lock().await;
    envs.last().unwrap()["JUPYTERHUB_API_TOKEN"].clone()
}

#[tokio::test]
async fn deleted_users_server_route_token_and_oauth_client_do_not_pass_to_the_next_mallory() {
    // A stop slower than the hub's `slow_spawn_timeout` (2 s here): the stop answers "pending".
    let spawner = Arc::new(SlowStop {
        inner: FakeSpawner::default(),
        stop_delay: Duration::from_millis(2500),
        stop_fails: false,
    });
    let (s, spawner) = setup_with(spawner, hub().await);
    let h = &s.hub;
    let old_server_token = start_mallory(&s, &spawner).await;

    let r = h
        .admin(Method::DELETE, "/hub/api/users/mallory", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // A new user takes the name at once.
    let r = h.admin(Method::POST, "/hub/api/users/mallory", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    assert!(
        s.table.get("/user/mallory").is_none(),
        "no route of the old mallory"
    );
    assert_eq!(
        oauth_clients(h).await,
        Vec::<String>::new(),
        "no OAuth client of the old mallory"
    );
    assert!(
        spawner.inner.running.lock().await.is_empty(),
        "the old server was stopped"
    );
    let r = h.admin(Method::GET, "/hub/api/users/mallory", None).await;
    assert_eq!(r.body["server"], Value::Null, "{}", r.text);
    assert_eq!(r.body["servers"], json!({}), "{}", r.text);
    let r = h
        .admin(Method::GET, "/hub/api/users/mallory/tokens", None)
        .await;
    assert_eq!(r.body["api_tokens"], json!([]), "{}", r.text);
    let r = h
        .call(Method::GET, "/hub/api/user", Some(&old_server_token), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the old server token is dead: {}",
        r.text
    );
    // The new mallory's own server gets its own route, token and client.
    let r = h
        .admin(Method::POST, "/hub/api/users/mallory/server", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(spawner.inner.running.lock().await.len(), 1);
}

#[tokio::test]
async fn user_whose_server_cannot_be_stopped_is_not_deleted() {
    let spawner = Arc::new(SlowStop {
        inner: FakeSpawner::default(),
        stop_delay: Duration::ZERO,
        stop_fails: true,
    });
    let (s, spawner) = setup_with(spawner, hub().await);
    let h = &s.hub;
    start_mallory(&s, &spawner).await;
    let r = h
        .admin(Method::DELETE, "/hub/api/users/mallory", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("could not be stopped"),
        "{}",
        r.text
    );
    // The name stays taken: nobody else can become the mallory whose server still runs.
    let r = h.admin(Method::POST, "/hub/api/users/mallory", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
}

#[tokio::test]
async fn renaming_a_user_with_a_running_server_is_refused() {
    let spawner = Arc::new(SlowStop {
        inner: FakeSpawner::default(),
        stop_delay: Duration::ZERO,
        stop_fails: false,
    });
    let (s, spawner) = setup_with(spawner, hub().await);
    let h = &s.hub;
    start_mallory(&s, &spawner).await;
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/mallory",
            Some(r#"{"name": "mallory2"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.body["message"].as_str().unwrap().contains("stop"),
        "{}",
        r.text
    );
    // Nobody else can now take the name and with it the running server's route and client.
    let r = h.admin(Method::POST, "/hub/api/users/mallory", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Stopped, the rename goes through and leaves nothing under the old name.
    let r = h
        .admin(Method::DELETE, "/hub/api/users/mallory/server", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = h
        .admin(
            Method::PATCH,
            "/hub/api/users/mallory",
            Some(r#"{"name": "mallory2"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.admin(Method::POST, "/hub/api/users/mallory", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(s.table.get("/user/mallory").is_none());
    assert!(oauth_clients(h).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// `next=`: same-origin paths only.

/// Log in through the form with `next` (raw, form-encoded here); the redirect target.
async fn login_redirect(h: &Hub, next: &str) -> String {
    let body = format!(
        "username=alice&password={PASSWORD}&next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    let req = Request::post("/hub/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    r.headers["location"].to_str().unwrap().to_owned()
}

/// Where a browser on `https://hub.example/` goes for `location`.
fn browser_host(location: &str) -> Option<String> {
    let base = url::Url::parse("https://hub.example/").unwrap();
    base.join(location)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
}

#[tokio::test]
async fn next_with_tab_newline_or_backslash_cannot_redirect_off_site() {
    let h = hub().await;
    for evil in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r/evil.example",
        "/\\evil.example",
        "/%09/evil.example",
        "/%5C/evil.example",
        "/%2F/evil.example",
        "//evil.example",
        "/ /evil.example",
        "https://evil.example/",
        "/\u{0}/evil.example",
    ] {
        let location = login_redirect(&h, evil).await;
        assert_eq!(location, "/hub/home", "{evil:?}");
        // The OpenID Connect start and the spawn-pending page use the same rule: the login
        // page hands the sanitized value on.
        let r = h
            .call(
                Method::GET,
                &format!(
                    "/hub/login?next={}",
                    url::form_urlencoded::byte_serialize(evil.as_bytes()).collect::<String>()
                ),
                None,
                None,
            )
            .await;
        assert!(!r.text.contains("evil.example"), "{evil:?}: {}", r.text);
    }
    // Local paths still work.
    assert_eq!(
        login_redirect(&h, "/user/alice/lab?x=1").await,
        "/user/alice/lab?x=1"
    );
    assert_eq!(login_redirect(&h, "/hub/spawn").await, "/hub/spawn");
}

#[tokio::test]
async fn spawn_pending_page_next_cannot_point_off_site() {
    let h = hub().await;
    let (cookie, _) = h.login("alice").await;
    for evil in ["/\t/evil.example", "/\\evil.example", "/%09/evil.example"] {
        let req = Request::get(format!(
            "/hub/spawn-pending/alice?next={}",
            url::form_urlencoded::byte_serialize(evil.as_bytes()).collect::<String>()
        ))
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
        let r = h.send(req).await;
        let location = r
            .headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        assert!(
            !r.text.contains("evil.example")
                && location
                    .as_ref()
                    .is_none_or(|l| !l.contains("evil.example")),
            "{evil:?}: {} {location:?}",
            r.status
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever `next` an attacker puts in a login link, the browser stays on the hub.
    #[test]
    fn any_accepted_next_stays_on_the_hub(
        next in prop_oneof![
            any::<String>(),
            "/[\\t\\n\\r \\\\/%0-9a-fA-F.:@?#a-z]{0,12}",
            "[/\\\\\\t\\n ]{1,4}(evil\\.example|%0[9aAdD]|%5[cC]|%2[fF])[/a-z.]{0,8}",
        ]
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let location = rt.block_on(async {
            let h = hub_with(common::sqlite_db().await, |_| {}).await;
            login_redirect(&h, &next).await
        });
        let host = browser_host(&location);
        prop_assert_eq!(host.as_deref(), Some("hub.example"), "next {:?} -> {:?}", next, location);
    }
}
