//! Readiness of replicas (issue 23, shared decision 3): `GET /hub/ready` is what a load balancer
//! or the chart's readiness probe asks. Two real `stackhub` processes on one PostgreSQL
//! database, B connecting as a role of its own: B's change-feed listener killed and its role
//! kept from reconnecting, B answers 503 naming the feed while A stays ready, and 200 again once
//! B hears the feed. Every connection of B's killed (the database gone, as far as B can tell),
//! B answers 503 naming the database, and 200 once it may connect again. `GET /hub/health`, the
//! liveness check, answers 200 throughout.
//!
//! PostgreSQL: `STACKHUB_TEST_POSTGRES_URL` (an admin URL; `scripts/test` starts a server and
//! sets it). The test fails when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;

use std::time::{Duration, Instant};

use hub_common::{Replica, log_tail, postgres_database, scratch_dir};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sqlx::{Executor, PgConnection};

impl Replica {
    /// `GET /hub/ready`, no credentials: (status, body).
    async fn ready(&self, api: &Client) -> (StatusCode, Value) {
        let r = api
            .get(format!("{}/hub/ready", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("/hub/ready answered {status} with no JSON ({e}): {text}"));
        (status, body)
    }

    /// Poll `/hub/ready` until it answers `want`; the body and how long it took.
    async fn until_ready(
        &self,
        api: &Client,
        want: StatusCode,
        within: Duration,
    ) -> (Value, Duration) {
        self.until(api, want.as_str(), within, |s, _| s == want)
            .await
    }

    /// Poll `/hub/ready` until `check` holds for its answer; the body and how long it took.
    async fn until(
        &self,
        api: &Client,
        what: &str,
        within: Duration,
        check: impl Fn(StatusCode, &Value) -> bool,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let (status, body) = self.ready(api).await;
            if check(status, &body) {
                return (body, start.elapsed());
            }
            assert!(
                start.elapsed() < within,
                "/hub/ready: not {what} after {within:?} ({status} {body}); the log:\n{}",
                log_tail(&self.dir.join("hub.log"))
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn alive(&self, api: &Client) -> bool {
        api.get(format!("{}/hub/health", self.base))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    }
}

/// Kill `role`'s connections (those of `application_name` only, when given).
async fn terminate(pg: &mut PgConnection, role: &str, application_name: Option<&str>) -> usize {
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = $1 AND ($2::text IS NULL OR application_name = $2)",
    )
    .bind(role)
    .bind(application_name)
    .fetch_all(pg)
    .await
    .unwrap();
    killed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_ready_only_while_its_database_answers_and_it_hears_the_feed() {
    let (dir, _cleanup) = scratch_dir("replicas-ready");
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
    let mut leaders = 0;
    for r in [&a, &b] {
        let (body, _) = r
            .until_ready(&api, StatusCode::OK, Duration::from_secs(10))
            .await;
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["database"], "ok", "{body}");
        assert_eq!(body["change_feed"], "listening", "{body}");
        leaders += usize::from(body["leader"].as_bool().expect("leader: a bool"));
    }
    // The election may still be settling; never two leaders.
    assert!(leaders <= 1, "two replicas say they lead");

    // B's feed listener killed, its role kept from logging in again: B is not ready (it would
    // serve everything from the database, slower, and it is the one cut off), A still is.
    pg.execute(format!("ALTER ROLE {role_b} NOLOGIN").as_str())
        .await
        .unwrap();
    let killed = terminate(&mut pg, &role_b, Some(hub::FEED_APPLICATION_NAME)).await;
    assert!(killed > 0, "B's change feed connection");
    let (body, noticed) = b
        .until_ready(
            &api,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(body["ready"], false, "{body}");
    let message = body["message"].as_str().unwrap();
    // (It may name the database too: B's role may not open a new pooled connection.)
    assert!(message.contains("change feed"), "{message}");
    assert!(
        !message.contains(&role_b) && !message.contains("://"),
        "{message}"
    );
    assert_eq!(a.ready(&api).await.0, StatusCode::OK, "A is unaffected");
    assert!(b.alive(&api).await, "B's liveness stays 200");
    eprintln!("B, deaf, unready after {noticed:?}");
    pg.execute(format!("ALTER ROLE {role_b} LOGIN").as_str())
        .await
        .unwrap();
    let (_, back) = b
        .until_ready(&api, StatusCode::OK, Duration::from_secs(15))
        .await;
    eprintln!("B ready again {back:?} after its role could log in");

    // Every connection of B's gone and none allowed: the database is gone as far as B can tell.
    pg.execute(format!("ALTER ROLE {role_b} NOLOGIN").as_str())
        .await
        .unwrap();
    assert!(terminate(&mut pg, &role_b, None).await > 0);
    // (The first answers may name only the feed, lost at once, until a request finds the
    // pool's connections dead.)
    let (body, noticed) = b
        .until(
            &api,
            "503 naming the database",
            Duration::from_secs(5),
            |s, body| {
                s == StatusCode::SERVICE_UNAVAILABLE
                    && body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("readiness query"))
            },
        )
        .await;
    let message = body["message"].as_str().unwrap();
    // 28000: invalid authorization (the role may not log in); its name is not in the answer.
    assert!(
        message.contains("the database refused the readiness query (SQLSTATE 28000)"),
        "{message}"
    );
    assert!(
        !message.contains(&role_b) && !message.contains("://"),
        "{message}"
    );
    assert!(b.alive(&api).await, "B's liveness stays 200");
    assert_eq!(a.ready(&api).await.0, StatusCode::OK, "A is unaffected");
    eprintln!("B without its database unready after {noticed:?}: {message}");
    pg.execute(format!("ALTER ROLE {role_b} LOGIN").as_str())
        .await
        .unwrap();
    let (_, back) = b
        .until_ready(&api, StatusCode::OK, Duration::from_secs(15))
        .await;
    eprintln!("B ready again {back:?} after its role could log in");

    drop((a, b));
    let _ = pg
        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
        .await;
    let _ = pg
        .execute(format!("DROP ROLE IF EXISTS {role_b}").as_str())
        .await;
}
