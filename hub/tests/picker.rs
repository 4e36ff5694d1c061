//! The server-options picker over the hub's real pipeline (fake spawner: a tiny HTTP server per
//! spawn): profiles and choices restricted by roles and groups through the REST API, the form
//! and the query transport (403 / 400 with messages), the options endpoint, options kept across
//! a hub restart, named servers within the quota (also under concurrent creation), cancelling a
//! pending spawn, the admin page at 10,000 users, and the metrics.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::fake::{FakeSpawner, Setup};
use common::{Hub, hub_with, sqlite_db, test_db};
use hub::{Config, Db, Profile, QuotaRole, RoleConfig, Secret};
use serde_json::{Value, json};

const PROFILES: &str = r#"
[[profile_list]]
display_name = "JupyterLab (Full working environment)"
slug = "jupyterlab"
default = true
spawner_override = { environment = { A = "1" } }
[profile_list.profile_options.image]
display_name = "Image"
[profile_list.profile_options.image.choices.python]
display_name = "Python"
spawner_override = { environment = { IMAGE = "python" }, cmd = ["python-lab"] }
[profile_list.profile_options.image.choices.gpu]
display_name = "GPU"
allowed_roles = ["gpu-users"]
spawner_override = { environment = { IMAGE = "gpu" } }
[profile_list.profile_options.image.unlisted_choice]
enabled = true
display_name = "Custom image"
validation_regex = "[a-z0-9./-]+:[a-z0-9.]+"
validation_message = "Give an image as name:tag"
spawner_override = { environment = { IMAGE = "custom {value}" } }

[[profile_list]]
display_name = "Secret project"
slug = "secret"
allowed_groups = ["/projects/secret"]

[[profile_list]]
display_name = "Remote Compute Kernels - LUMI Bridge"
slug = "remote-lumi"
kind = "remote-kernels"
site = "lumi"
warning = "Jupyter Home not available & use of Object Storage S3 for Data Exchange mandatory"
"#;

fn profiles() -> Vec<Profile> {
    #[derive(serde::Deserialize)]
    struct List {
        profile_list: Vec<Profile>,
    }
    toml::from_str::<List>(PROFILES).unwrap().profile_list
}

fn configure(c: &mut Config) {
    c.profile_list = profiles();
    c.roles = vec![
        RoleConfig {
            name: "gpu-users".into(),
            users: vec!["gail".into()],
            ..RoleConfig::default()
        },
        RoleConfig {
            name: "metrics-reader".into(),
            scopes: vec!["read:metrics".into()],
            users: vec!["prom".into()],
            ..RoleConfig::default()
        },
        RoleConfig {
            name: "two-servers".into(),
            users: vec!["alice".into()],
            ..RoleConfig::default()
        },
    ];
    let mut limited = hub::default_quota_roles()[2].clone();
    limited.role = "two-servers".into();
    limited.max_servers = Some(2);
    let quotas: Vec<QuotaRole> = vec![limited];
    c.quotas = quotas;
    c.validate().unwrap();
}

/// The hub on `db` with the test profiles, the real pipeline with the hub's own preparation
/// (profile overrides, quota) over a fake spawner.
async fn setup(db: Db) -> Setup {
    let base = hub_with(db, configure).await;
    common::fake::setup_on(
        base,
        Arc::new(FakeSpawner::default()),
        Duration::from_secs(5),
    )
}

fn req(
    method: Method,
    path: &str,
    cookie: &str,
    ctype: Option<&str>,
    body: String,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie);
    if let Some(c) = ctype {
        b = b.header("content-type", c);
    }
    b.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn rest_refuses_what_the_user_may_not_use() {
    let s = setup(test_db().await).await;
    let h = &s.hub;
    h.login("alice").await;
    let alice = h.user_token("alice", None).await;
    let post = |body: Value| {
        let alice = alice.clone();
        async move {
            h.call(
                Method::POST,
                "/hub/api/users/alice/server",
                Some(&alice),
                Some(&body.to_string()),
            )
            .await
        }
    };
    // A profile limited to a group alice is not in: 403 naming the group.
    let r = post(json!({"profile": "secret"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("/projects/secret"),
        "{}",
        r.text
    );
    // A choice limited to a role she lacks: 403.
    let r = post(json!({"profile": "jupyterlab", "image": "gpu"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("gpu-users"));
    // Free text failing the regex: 400 with the configured message (6.0 body form too).
    let r = post(
        json!({"user_options": {"profile": "jupyterlab", "image": "unlisted-choice",
        "image--unlisted-choice": "Not An Image"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["message"], "Give an image as name:tag");
    // Unknown profile and choice: 400.
    let r = post(json!({"profile": "nope"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Unknown profile 'nope'")
    );
    let r = post(json!({"image": "perl"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A remote-kernels profile on a hub without sites: a clear 400, nothing started.
    let r = post(json!({"profile": "remote-lumi"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("site 'lumi' is unavailable: no sites are configured"),
        "{}",
        r.text
    );
    assert!(
        s.spawner.envs.lock().await.is_empty(),
        "nothing was spawned"
    );

    // Once in the group, the profile works; a gpu-users member gets the gpu choice.
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/secret",
            Some(r#"{"users": ["alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The group's hub name is `secret`, the allowed entry the path `/projects/secret`: the
    // path's last segment matches.
    let r = post(json!({"profile": "secret"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let gail = h.user_token("gail", None).await;
    let r = h
        .call(
            Method::POST,
            "/hub/api/users/gail/server",
            Some(&gail),
            Some(r#"{"profile": "jupyterlab", "image": "gpu"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let envs = s.spawner.envs.lock().await.clone();
    let gail_env = envs
        .iter()
        .find(|e| e["JUPYTERHUB_USER"] == "gail")
        .unwrap();
    assert_eq!(gail_env["IMAGE"], "gpu");
    assert_eq!(gail_env["A"], "1");
    assert_eq!(gail_env["STACKHUB_PROFILE"], "jupyterlab");

    // The options endpoint lists what each may use, same choices as the picker.
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/gail/spawn-options",
            Some(&gail),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let slugs: Vec<&str> = r.body["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["jupyterlab", "remote-lumi"]);
    let choices: Vec<&str> = r.body["profiles"][0]["options"][0]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(choices, ["python", "gpu"]);
    assert_eq!(
        r.body["profiles"][1]["warning"],
        "Jupyter Home not available & use of Object Storage S3 for Data Exchange mandatory"
    );
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/spawn-options",
            Some(&alice),
            None,
        )
        .await;
    let choices = r.body["profiles"][0]["options"][0]["choices"]
        .as_array()
        .unwrap();
    assert_eq!(choices.len(), 1, "no gpu choice for alice: {}", r.text);
    assert_eq!(r.body["quota"]["servers_max"], 2);
    assert_eq!(r.body["quota"]["servers_used"], 1);
    // Someone else's options are not readable with a user token.
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/gail/spawn-options",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

#[tokio::test]
async fn options_survive_a_hub_restart() {
    let dir = std::env::temp_dir().join(format!("stackhub-picker-{}", hub::new_secret()));
    let url = format!("sqlite://{}/hub.sqlite?mode=rwc", dir.display());
    let db = if std::env::var("STACKHUB_TEST_DB").as_deref() == Ok("postgres") {
        test_db().await
    } else {
        Db::connect(&Secret::new(url.clone())).await.unwrap()
    };
    let s = setup(db.clone()).await;
    let h = &s.hub;
    h.admin(Method::POST, "/hub/api/users/alice", None).await;
    let opts = json!({"profile": "jupyterlab", "image": "unlisted-choice",
        "image--unlisted-choice": "my/lab:2"});
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/alice/servers/work",
            Some(&json!({"display_name": "Work", "user_options": opts}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .admin(Method::DELETE, "/hub/api/users/alice/servers/work", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    drop(s);

    // A new hub over the same database: the server keeps its options and display name, and a
    // start without a body uses them.
    let s = setup(db).await;
    let h = &s.hub;
    let r = h
        .admin(Method::GET, "/hub/api/users/alice/servers/work", None)
        .await;
    assert_eq!(r.body["user_options"], opts, "{}", r.text);
    assert_eq!(r.body["display_name"], "Work");
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/servers/work", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let env = s.spawner.envs.lock().await[0].clone();
    assert_eq!(env["IMAGE"], "custom my/lab:2");
    assert_eq!(env["JUPYTERHUB_SERVER_NAME"], "work");
    // The picker of that server shows the saved choice selected.
    let (cookie, _) = h.login("alice").await;
    h.admin(Method::DELETE, "/hub/api/users/alice/servers/work", None)
        .await;
    let r = h
        .send(req(
            Method::GET,
            "/hub/spawn/alice/work",
            &cookie,
            None,
            String::new(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = r.text.replace("&#x2f;", "/");
    assert!(text.contains("value=\"my/lab:2\""), "{text}");
    assert!(
        r.text
            .contains("<option value=\"unlisted-choice\" selected>"),
        "{}",
        r.text
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn form_and_query_transports() {
    let s = setup(test_db().await).await;
    let h = &s.hub;
    let (cookie, cookies) = h.login("alice").await;
    let xsrf = cookies["_xsrf"].clone();

    // The picker: only allowed profiles, the quota beside them.
    let r = h
        .send(req(Method::GET, "/hub/spawn", &cookie, None, String::new()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("JupyterLab (Full working environment)"));
    assert!(r.text.contains("Remote Compute Kernels - LUMI Bridge"));
    assert!(!r.text.contains("Secret project"), "{}", r.text);
    assert!(!r.text.contains("value=\"gpu\""), "no gpu choice offered");
    assert!(r.text.contains("id=\"max\">2<"), "{}", r.text);
    // What survives a restart: said for the Lab (a local server keeps its home); the remote
    // profile's own warning says it has no home.
    assert!(
        r.text
            .contains("JupyterLab servers keep your home directory when they stop or restart."),
        "{}",
        r.text
    );
    assert_eq!(r.text.matches("data-kept").count(), 1, "{}", r.text);

    // A form post without `_xsrf` is refused.
    let form = "profile=jupyterlab&profile-option-jupyterlab--image=python".to_owned();
    let r = h
        .send(req(
            Method::POST,
            "/hub/spawn/alice",
            &cookie,
            Some("application/x-www-form-urlencoded"),
            form.clone(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Free text failing the regex: the form again, 400, the message next to the field.
    let bad = format!(
        "_xsrf={xsrf}&profile=jupyterlab&profile-option-jupyterlab--image=unlisted-choice&\
         profile-option-jupyterlab--image--unlisted-choice=Bad+Image"
    );
    let r = h
        .send(req(
            Method::POST,
            "/hub/spawn/alice",
            &cookie,
            Some("application/x-www-form-urlencoded"),
            bad,
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.contains(
            "id=\"err-profile-option-jupyterlab--image--unlisted-choice\">Give an image as name:tag"
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains("value=\"Bad Image\""), "the text is kept");

    // A multipart post (JupyterHub's transport, `_xsrf` in the query) starts the server.
    let boundary = "XyZ";
    let mut body = String::new();
    for (k, v) in [
        ("profile", "jupyterlab"),
        ("profile-option-jupyterlab--image", "python"),
        ("profile-option-remote-lumi--x", "ignored"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let r = h
        .send(req(
            Method::POST,
            &format!("/hub/spawn/alice?_xsrf={xsrf}"),
            &cookie,
            Some(&format!("multipart/form-data; boundary={boundary}")),
            body,
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/hub/spawn-pending/alice"),
        "{:?}",
        r.headers
    );
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/server", None)
        .await;
    assert_eq!(
        model.body["user_options"],
        json!({"profile": "jupyterlab", "image": "python"})
    );
    let env = s.spawner.envs.lock().await[0].clone();
    assert_eq!(env["IMAGE"], "python");

    // A query naming options of a new named server (6.0 `opt-` prefix), with a display name,
    // shows them selected on the form (a GET never starts a server) and its post starts it; a
    // disallowed profile by query is refused on the picker with 403.
    let r = h
        .send(req(
            Method::GET,
            "/hub/spawn/alice/big?opt-profile=secret",
            &cookie,
            None,
            String::new(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("id=\"err-profile\""), "{}", r.text);
    let r = h
        .send(req(
            Method::GET,
            "/hub/spawn/alice/big?opt-profile=jupyterlab&opt-image=python&display_name=Big+one",
            &cookie,
            None,
            String::new(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains("<option value=\"python\" selected>"),
        "{}",
        r.text
    );
    assert!(r.text.contains("value=\"Big one\""), "{}", r.text);
    assert_eq!(
        s.spawner.envs.lock().await.len(),
        1,
        "the GET started nothing"
    );
    let r = h
        .send(req(
            Method::POST,
            "/hub/spawn/alice/big",
            &cookie,
            Some("application/x-www-form-urlencoded"),
            format!(
                "_xsrf={xsrf}&display_name=Big+one&profile=jupyterlab&\
                 profile-option-jupyterlab--image=python"
            ),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let model = h
        .admin(Method::GET, "/hub/api/users/alice/servers/big", None)
        .await;
    assert_eq!(model.body["display_name"], "Big one");
    // Two running of two allowed: a third named server is refused, on the page and by REST.
    let r = h
        .send(req(
            Method::POST,
            "/hub/spawn/alice/third",
            &cookie,
            Some("application/x-www-form-urlencoded"),
            format!("_xsrf={xsrf}&profile=jupyterlab"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // The home page lists the named server with its display name and profile.
    let r = h
        .send(req(Method::GET, "/hub/home", &cookie, None, String::new()))
        .await;
    assert!(
        r.text.contains("Big one") && r.text.contains("data-server=\"big\""),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn named_server_limit_holds_under_concurrent_creation() {
    let s = setup(test_db().await).await;
    let h = &s.hub;
    // alice's quota (role two-servers) allows 2 named servers; the quota is stored at login.
    h.login("alice").await;
    let tasks = (0..6).map(|i| {
        let h = Hub {
            app: h.app.clone(),
            state: h.state.clone(),
        };
        async move {
            h.admin(
                Method::PUT,
                &format!("/hub/api/users/alice/servers/s{i}"),
                Some(r#"{"user_options": {"profile": "jupyterlab"}}"#),
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(tasks).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    let names: Vec<&String> = r.body["servers"]
        .as_object()
        .map_or(vec![], |m| m.keys().collect());
    assert!(names.is_empty(), "created servers are stopped: {names:?}");
    // Deleting one makes room again.
    let r = h
        .admin(
            Method::GET,
            "/hub/api/users/alice?include_stopped_servers=1",
            None,
        )
        .await;
    let first = r.body["servers"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let r = h
        .admin(
            Method::DELETE,
            &format!("/hub/api/users/alice/servers/{first}"),
            Some(r#"{"remove": true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .admin(Method::PUT, "/hub/api/users/alice/servers/again", None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_pending_spawn_can_be_cancelled() {
    let s = setup(test_db().await).await;
    let h = &s.hub;
    // `mute` never answers: its spawn stays pending.
    let (cookie, cookies) = h.login("mute").await;
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/mute/server",
            Some(r#"{"profile": "jupyterlab"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = h
        .send(req(
            Method::GET,
            "/hub/spawn-pending/mute",
            &cookie,
            None,
            String::new(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("id=\"cancel\""), "{}", r.text);
    let r = h
        .send(req(
            Method::POST,
            "/hub/spawn-pending/mute",
            &cookie,
            Some("application/x-www-form-urlencoded"),
            format!("_xsrf={}", cookies["_xsrf"]),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = h
            .admin(Method::GET, "/hub/api/users/mute/server", None)
            .await;
        if m.body["pending"].is_null() && m.body["ready"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "not stopped: {}", m.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.spawner.running.lock().await.is_empty(), "process stopped");
    let r = h
        .admin(Method::GET, "/hub/api/users/mute/server/progress", None)
        .await;
    assert!(r.text.contains("Spawn cancelled"), "{}", r.text);
}

#[tokio::test]
async fn admin_page_and_metrics() {
    let s = setup(sqlite_db().await).await;
    let h = &s.hub;
    // 10,000 users, inserted in one transaction.
    {
        let mut tx = h.state.db().begin().await.unwrap();
        for i in 0..10_000 {
            sqlx::query("INSERT INTO users (name, admin, created) VALUES ($1, 0, $2)")
                .bind(format!("user{i:05}"))
                .bind(1_700_000_000_000_000_i64)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let r = h
        .admin(
            Method::POST,
            "/hub/api/users/user04242/server",
            Some(r#"{"profile": "jupyterlab"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let (root, root_cookies) = h.login("root").await;
    let t0 = Instant::now();
    let r = h
        .send(req(
            Method::GET,
            "/hub/admin?q=user0424",
            &root,
            None,
            String::new(),
        ))
        .await;
    let search = t0.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Users 1-10 of 10"), "{}", r.text);
    assert!(r.text.contains("data-user=\"user04242\""));
    assert!(r.text.contains("running"));
    let t0 = Instant::now();
    let r = h
        .send(req(
            Method::GET,
            "/hub/admin?offset=9960",
            &root,
            None,
            String::new(),
        ))
        .await;
    let last_page = t0.elapsed();
    assert!(r.text.contains("Users 9961-10001 of 10001"), "{}", r.text);
    assert!(r.text.contains("id=\"prev\"") && !r.text.contains("id=\"next\""));
    eprintln!(
        "admin page at 10,001 users: search {:.1} ms, last page {:.1} ms",
        search.as_secs_f64() * 1e3,
        last_page.as_secs_f64() * 1e3
    );
    assert!(search < Duration::from_millis(1500) && last_page < Duration::from_millis(1500));
    let (alice, _) = h.login("alice").await;
    let r = h
        .send(req(Method::GET, "/hub/admin", &alice, None, String::new()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Metrics: a token with read:metrics; others refused.
    let alice_token = h.user_token("alice", None).await;
    let m = h
        .call(Method::GET, "/hub/metrics", Some(&alice_token), None)
        .await;
    assert_eq!(m.status, StatusCode::FORBIDDEN, "{}", m.text);
    let metrics = h.user_token("prom", Some(&["read:metrics"])).await;
    let m = h
        .call(Method::GET, "/hub/metrics", Some(&metrics), None)
        .await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    assert!(m.text.contains("stackhub_users 10003"), "{}", m.text);
    assert!(
        m.text
            .contains("stackhub_servers{state=\"running\",profile=\"jupyterlab\"} 1"),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("stackhub_spawn_duration_seconds_count{status=\"success\"}")
    );
    assert!(m.text.contains(
        "stackhub_request_duration_seconds_count{method=\"GET\",handler=\"/hub/admin\",code=\"200\"}"
    ));

    // The admin stops the user's server from the page.
    let r = h
        .send(req(
            Method::POST,
            "/hub/admin/stop",
            &root,
            Some("application/x-www-form-urlencoded"),
            format!(
                "_xsrf={}&user=user04242&server=&back=%2Fhub%2Fadmin%3Fq%3Duser04242",
                root_cookies["_xsrf"]
            ),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    assert_eq!(r.headers["location"], "/hub/admin?q=user04242");
    let m = h
        .admin(Method::GET, "/hub/api/users/user04242/server", None)
        .await;
    assert_eq!(m.body["ready"], false, "{}", m.text);
}
