//! Replicas (issue 23, first slice): two real `stackhub` processes on one PostgreSQL database
//! with one cookie secret. What one replica writes, the other follows through the database's
//! change feed: a token revoked through A is refused by B within one second, a login cookie
//! issued by A works on B, a local-process server started through A's API is reachable through
//! B's proxy (the Lab through B's OAuth, its code exchanged with A) and leaves B's routes when
//! stopped through A. A replica that loses the feed stops serving from its caches at once (B's
//! listener is killed with `pg_terminate_backend` and kept from reconnecting). And a second
//! `stackhub` on one SQLite file is refused at start-up, saying why.
//!
//! PostgreSQL: `STACKHUB_TEST_POSTGRES_URL` (an admin URL; `scripts/test` starts a server and
//! sets it). The test fails when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hub_common::{
    ADMIN_TOKEN, Hub, Replica, admin, free_ports, log_tail, logged_in_browser, postgres_database,
    scratch_dir, until,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Executor;

impl Replica {
    fn log(&self) -> String {
        log_tail(&self.dir.join("hub.log"))
    }

    /// A gauge or counter from `GET /hub/metrics` (retried over 500s: while B's role may not
    /// log in, a request needing a new pooled connection fails).
    async fn metric(&self, api: &Client, name: &str) -> i64 {
        let mut tries = 0;
        let text = loop {
            let r = admin(api, Method::GET, format!("{}/hub/metrics", self.base))
                .send()
                .await
                .unwrap();
            let (status, text) = (r.status(), r.text().await.unwrap());
            tries += 1;
            if status == StatusCode::OK || tries == 100 {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in the metrics:\n{text}\n{}", self.log()))
            .trim()
            .parse()
            .unwrap()
    }

    /// Wait until `stackhub_change_feed_listening` is `want`; how long it took.
    async fn until_listening(&self, api: &Client, want: bool, within: Duration) -> Duration {
        let start = Instant::now();
        while self.metric(api, "stackhub_change_feed_listening").await != i64::from(want) {
            assert!(
                start.elapsed() < within,
                "the change feed is not {} after {within:?}; the log:\n{}",
                if want { "heard" } else { "lost" },
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    /// [`Self::status_with`] retried over 500s (see [`Self::metric`]): what the database says.
    async fn db_status_with(&self, api: &Client, token: &str) -> StatusCode {
        for _ in 0..100 {
            let s = self.status_with(api, token).await;
            if s != StatusCode::INTERNAL_SERVER_ERROR {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("B answers 500 only; its log:\n{}", self.log());
    }

    async fn status_with(&self, api: &Client, token: &str) -> StatusCode {
        api.get(format!("{}/hub/api/user", self.base))
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn routes(&self, api: &Client) -> Value {
        admin(api, Method::GET, format!("{}/hub/api/proxy", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Issue `user` a token through `r`: (its API id, the token).
async fn issue(api: &Client, r: &Replica, user: &str) -> (String, String) {
    let t: Value = admin(
        api,
        Method::POST,
        format!("{}/hub/api/users/{user}/tokens", r.base),
    )
    .json(&json!({"note": "replicas"}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    (
        t["id"].as_str().unwrap().to_owned(),
        t["token"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(api: &Client, r: &Replica, user: &str, id: &str) {
    let s = admin(
        api,
        Method::DELETE,
        format!("{}/hub/api/users/{user}/tokens/{id}", r.base),
    )
    .send()
    .await
    .unwrap()
    .status();
    assert_eq!(s, StatusCode::NO_CONTENT);
}

/// Use `token` on `r` until it is cached there: the first use records activity (a write, whose
/// notification comes back to `r` too); the next uses, once that is heard, are cached.
async fn warm(api: &Client, r: &Replica, token: &str) {
    assert_eq!(r.status_with(api, token).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        assert_eq!(r.status_with(api, token).await, StatusCode::OK);
    }
}

/// Revoke a fresh token through `a` that `b` has cached; how long until `b` refuses it.
async fn revocation_delay(api: &Client, a: &Replica, b: &Replica) -> Duration {
    let (id, token) = issue(api, a, "alice").await;
    warm(api, b, &token).await;
    revoke(api, a, "alice", &id).await;
    let start = Instant::now();
    loop {
        let s = b.status_with(api, &token).await;
        if s == StatusCode::FORBIDDEN {
            return start.elapsed();
        }
        assert_eq!(s, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a token revoked through A still works on B after 1 s; B's log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn server_model(api: &Client, r: &Replica) -> Value {
    let u: Value = admin(api, Method::GET, format!("{}/hub/api/users/alice", r.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    u["servers"][""].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql_follow_each_other() {
    let (dir, _cleanup) = scratch_dir("replicas");
    // One database; B connects as a role of its own, so the test can keep B (only) from
    // reconnecting its change feed.
    let (mut pg, db_name, url_a) = postgres_database(&dir).await;
    let role_b = format!("{}_b", db_name.trim_end_matches("_db"));
    pg.execute(format!("CREATE ROLE {role_b} LOGIN SUPERUSER").as_str())
        .await
        .unwrap();
    let mut url_b = url_a.clone();
    url_b.set_username(&role_b).unwrap();

    let api = Client::new();
    let a = Replica::start(&dir.join("a"), url_a.as_str(), &[]).await;
    let b = Replica::start(&dir.join("b"), url_b.as_str(), &[]).await;
    for r in [&a, &b] {
        r.until_listening(&api, true, Duration::from_secs(10)).await;
    }
    let s = admin(
        &api,
        Method::POST,
        format!("{}/hub/api/users/alice", a.base),
    )
    .send()
    .await
    .unwrap()
    .status();
    assert_eq!(s, StatusCode::CREATED);

    // A token revoked through A is refused by B within one second.
    let mut delays = Vec::new();
    for _ in 0..5 {
        delays.push(revocation_delay(&api, &a, &b).await);
    }
    delays.sort();
    eprintln!(
        "revoked through A, refused by B after: median {:?}, max {:?} ({delays:?})",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );

    // A login cookie issued by A works on B (no cookie: B sends to its login page).
    let browser = logged_in_browser(&a.base, "alice").await;
    let r = browser
        .get(format!("{}/hub/home", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.url().path(), "/hub/home", "A's cookie is honoured by B");
    let stranger = Client::builder().cookie_store(true).build().unwrap();
    let r = stranger
        .get(format!("{}/hub/home", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/hub/login");

    // A server started through A's API is reachable through B's proxy.
    let (_, token) = issue(&api, &a, "alice").await;
    let s = admin(
        &api,
        Method::POST,
        format!("{}/hub/api/users/alice/server", a.base),
    )
    .send()
    .await
    .unwrap()
    .status();
    assert!(matches!(s.as_u16(), 201 | 202), "start: {s}");
    until(
        "the server is ready on A",
        Duration::from_secs(90),
        || async { server_model(&api, &a).await["ready"] == true },
    )
    .await;
    let ready = Instant::now();
    let routed = until("B routes /user/alice", Duration::from_secs(5), || async {
        b.routes(&api).await.get("/user/alice").is_some()
    })
    .await;
    let r = api
        .get(format!("{}/user/alice/api/status", b.base))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the server's API through B");
    let status: Value = r.json().await.unwrap();
    assert!(status.get("started").is_some(), "{status}");
    // The Lab through B: B's OAuth provider issues the code, the server exchanges it with A.
    let r = browser
        .get(format!("{}/user/alice/lab", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.url().path(), "/user/alice/lab");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("hubUser") && html.contains("alice"),
        "the Lab's page config"
    );
    eprintln!(
        "server ready on A, routed on B after {routed:?} (polled from {:?} before)",
        ready.elapsed()
    );

    // Stopped through A: gone from B's routes, and B no longer reaches it.
    let s = admin(
        &api,
        Method::DELETE,
        format!("{}/hub/api/users/alice/server", a.base),
    )
    .send()
    .await
    .unwrap()
    .status();
    assert!(matches!(s.as_u16(), 202 | 204), "stop: {s}");
    until(
        "the server is stopped on A",
        Duration::from_secs(30),
        || async { server_model(&api, &a).await.is_null() },
    )
    .await;
    let unrouted = until("B drops /user/alice", Duration::from_secs(5), || async {
        b.routes(&api).await.get("/user/alice").is_none()
    })
    .await;
    eprintln!("server stopped through A, route gone on B after {unrouted:?}");
    let r = api
        .get(format!("{}/user/alice/api/status", b.base))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    // B's hub answers (its login page, the way a request for a server that is not running
    // goes), not the server.
    assert!(
        r.url().path().starts_with("/hub/"),
        "a stopped server through B: {} {}",
        r.status(),
        r.url()
    );

    // B loses its feed (listener killed, its role kept from logging in again): it stops
    // serving from its caches at once, so a token revoked through A meanwhile (a change B
    // cannot hear) is refused by B's next request.
    let (id, cached) = issue(&api, &a, "alice").await;
    warm(&api, &b, &cached).await;
    pg.execute(format!("ALTER ROLE {role_b} NOLOGIN").as_str())
        .await
        .unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = $1 AND application_name = $2",
    )
    .bind(&role_b)
    .bind(hub::FEED_APPLICATION_NAME)
    .fetch_all(&mut pg)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "B's change feed connection");
    let noticed = b.until_listening(&api, false, Duration::from_secs(2)).await;
    revoke(&api, &a, "alice", &id).await;
    // (A 500 here is B failing to open a new pooled connection while its role may not log in:
    // also the database, not the cache.)
    assert_eq!(
        b.db_status_with(&api, &cached).await,
        StatusCode::FORBIDDEN,
        "B, deaf, served a revoked token from its cache"
    );
    assert_eq!(b.db_status_with(&api, &token).await, StatusCode::OK);
    assert_eq!(
        b.metric(&api, "stackhub_change_feed_listening").await,
        0,
        "still deaf: the refusal came from the database, not from hearing again"
    );
    assert!(b.metric(&api, "stackhub_change_feed_losses").await >= 1);
    eprintln!("B noticed the lost feed after {noticed:?}");
    // Allowed back: B hears again and follows A as before.
    pg.execute(format!("ALTER ROLE {role_b} LOGIN").as_str())
        .await
        .unwrap();
    let back = b.until_listening(&api, true, Duration::from_secs(10)).await;
    eprintln!("B heard the feed again {back:?} after its role could log in");
    let delay = revocation_delay(&api, &a, &b).await;
    eprintln!("after recovery: revoked through A, refused by B after {delay:?}");

    drop((a, b));
    let _ = pg
        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
        .await;
    let _ = pg
        .execute(format!("DROP ROLE IF EXISTS {role_b}").as_str())
        .await;
    assert!(ADMIN_TOKEN.len() > 8);
}

#[tokio::test]
async fn a_second_replica_on_one_sqlite_file_is_refused() {
    let (dir, _cleanup) = scratch_dir("sqlite-replica");
    let [port, hub_port] = free_ports::<2>();
    let first = Hub::start(&dir, port, hub_port).await;
    let [port2, hub_port2] = free_ports::<2>();
    let log = dir.join("second.log");
    let mut second = Command::new(hub_common::stackhub_bin())
        .env("STACKHUB_PORT", port2.to_string())
        .env("STACKHUB_HUB_PORT", hub_port2.to_string())
        .env("STACKHUB_DATA_DIR", dir.join("data"))
        .env("STACKHUB_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("STACKHUB_VENV", hub_common::venv())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!(
                "a second stackhub on the same SQLite file is still running; its log:\n{}",
                log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the second hub started:\n{text}");
    assert!(
        text.contains("another stackhub is using the SQLite database")
            && text.contains("stackhub.sqlite.lock")
            && text.contains("PostgreSQL"),
        "{text}"
    );
    // The first one is unaffected.
    let r = reqwest::get(format!("http://127.0.0.1:{port}/hub/api"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(first);
}
