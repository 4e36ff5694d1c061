//! Leases on pending spawns and stops across replicas (issue 23), on PostgreSQL: two replicas
//! of the hub in one process, each with its own connection to one database (own replica id,
//! change feed and leader election), over one fake spawner (`spawner::testing`).
//!
//! - A spawn whose replica stops is taken over by the leader: re-attached through the saved
//!   state, waited for, routed and marked ready; its progress events go on and are served by
//!   the other replica.
//! - A spawn whose launch never reported back is planned and launched again, once.
//! - A stop sent to one replica cancels the spawn the other runs.
//! - A replica whose lease was taken writes nothing more about the server and does not stop it.
//!
//! `STACKHUB_TEST_POSTGRES_URL` must be set (`scripts/test` does): these tests fail without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::fake::{FakeSpawner, Setup, setup_on};
use common::{Hub, hub_on, postgres_replicas};
use hub::Db;
use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(30);

async fn replicas(spawner: &Arc<FakeSpawner>) -> (Setup, Setup) {
    let (a, b) = postgres_replicas().await;
    let a = setup_on(hub_on(a).await, Arc::clone(spawner), START_TIMEOUT);
    let b = setup_on(hub_on(b).await, Arc::clone(spawner), START_TIMEOUT);
    (a, b)
}

/// The SSE progress events of `user`'s default server, read through `hub`.
async fn progress(hub: &Hub, user: &str) -> Vec<Value> {
    let r = hub
        .admin(
            Method::GET,
            &format!("/hub/api/users/{user}/server/progress"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let began = Instant::now();
    while !check().await {
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lease_owner(db: &Db, user: &str) -> Option<String> {
    let row = db.server(user, "").await.unwrap().unwrap();
    sqlx::query_scalar("SELECT owner FROM spawn_leases WHERE server_id = $1")
        .bind(row.id)
        .fetch_optional(db.pool())
        .await
        .unwrap()
}

/// The replica `gone` stops (its tasks end, its leases are handed over, its database
/// connections close, so it leads no more).
async fn stop_replica(gone: Setup) {
    gone.orchestrator.shutdown().await;
    gone.hub.state.db().close().await;
}

#[tokio::test]
async fn a_spawn_whose_replica_stops_is_finished_by_the_leader() {
    let spawner = Arc::new(FakeSpawner::default());
    let (a, b) = replicas(&spawner).await;
    assert!(a.hub.state.db().is_leader(), "the first replica leads");
    let _leases = b.orchestrator.keep_leases(std::future::pending());
    a.hub
        .admin(Method::POST, "/hub/api/users/slowann", None)
        .await;
    let r = a
        .hub
        .admin(Method::POST, "/hub/api/users/slowann/server", None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let db_b = b.hub.state.db().clone();
    wait_for("the launch saved", Duration::from_secs(10), async || {
        let row = db_b.server("slowann", "").await.unwrap().unwrap();
        row.url.is_some() && row.state.get("port").is_some()
    })
    .await;
    let a_replica = a.hub.state.db().replica().to_owned();
    assert_eq!(
        lease_owner(&db_b, "slowann").await.as_deref(),
        Some(&*a_replica)
    );
    stop_replica(a).await;

    // B leads and takes the spawn over while the server still does not answer.
    wait_for("B takes the lease", Duration::from_secs(10), async || {
        lease_owner(&db_b, "slowann").await.as_deref() == Some(db_b.replica())
    })
    .await;
    let row = db_b.server("slowann", "").await.unwrap().unwrap();
    assert_eq!(
        row.pending.as_deref(),
        Some("spawn"),
        "still waiting: {row:?}"
    );
    // A client follows the progress through B (from the start: A's events too) until ready.
    let follow = {
        let (app, state) = (b.hub.app.clone(), b.hub.state.clone());
        tokio::spawn(async move { progress(&Hub { app, state }, "slowann").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    spawner.open_slow.store(true, Ordering::SeqCst);
    wait_for("ready on B", Duration::from_secs(10), async || {
        db_b.server("slowann", "").await.unwrap().unwrap().ready()
    })
    .await;
    assert!(b.table.get("/user/slowann/").is_some(), "routed on B");
    assert_eq!(
        spawner.envs.lock().await.len(),
        1,
        "launched once, not twice"
    );
    assert_eq!(lease_owner(&db_b, "slowann").await, None, "lease released");

    // The progress began on A and went on through B.
    let events = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .unwrap()
        .unwrap();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(messages[0], "Server requested", "{events:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("another one carries it on")),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
}

#[tokio::test]
async fn a_spawn_whose_launch_never_reported_back_is_launched_again_once() {
    let spawner = Arc::new(FakeSpawner::default());
    let (a, b) = replicas(&spawner).await;
    let db = a.hub.state.db().clone();
    a.hub.admin(Method::POST, "/hub/api/users/carl", None).await;
    // What a replica that died right after the start's transaction leaves: a pending row with
    // no state, its lease (run out) and its first progress event.
    let mut row = db.server("carl", "").await.unwrap().unwrap();
    row.pending = Some("spawn".to_owned());
    row.started = Some(1);
    db.save_server(&row).await.unwrap();
    for sql in [
        "INSERT INTO spawn_leases (server_id, owner, until) VALUES ($1, 'dead0000', 0)",
        "INSERT INTO spawn_events (server_id, seq, event) \
         VALUES ($1, 0, '{\"progress\": 0, \"message\": \"Server requested\"}')",
    ] {
        sqlx::query(sql)
            .bind(row.id)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let _leases = a.orchestrator.keep_leases(std::future::pending());
    wait_for(
        "ready after the relaunch",
        Duration::from_secs(10),
        async || db.server("carl", "").await.unwrap().unwrap().ready(),
    )
    .await;
    assert_eq!(spawner.envs.lock().await.len(), 1, "launched exactly once");
    assert!(a.table.get("/user/carl/").is_some());
    // The stored progress tells the story, in order, ready at the end.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event FROM spawn_events WHERE server_id = $1 ORDER BY seq")
            .bind(row.id)
            .fetch_all(b.hub.state.db().pool())
            .await
            .unwrap();
    let events: Vec<Value> = stored
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(messages[0], "Server requested", "{events:?}");
    assert!(
        messages.contains(&"Starting the server again"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
}

#[tokio::test]
async fn a_stop_on_one_replica_cancels_the_spawn_another_runs() {
    let spawner = Arc::new(FakeSpawner::default());
    let (a, b) = replicas(&spawner).await;
    let _leases = a.orchestrator.keep_leases(std::future::pending());
    a.hub.admin(Method::POST, "/hub/api/users/mute", None).await;
    let r = a
        .hub
        .admin(Method::POST, "/hub/api/users/mute/server", None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let db = b.hub.state.db().clone();
    wait_for("the launch saved", Duration::from_secs(10), async || {
        db.server("mute", "").await.unwrap().unwrap().url.is_some()
    })
    .await;
    assert_eq!(spawner.running.lock().await.len(), 1);
    let r = b
        .hub
        .admin(Method::DELETE, "/hub/api/users/mute/server", None)
        .await;
    assert!(
        r.status == StatusCode::NO_CONTENT || r.status == StatusCode::ACCEPTED,
        "{} {}",
        r.status,
        r.text
    );
    wait_for("stopped", Duration::from_secs(10), async || {
        !db.server("mute", "").await.unwrap().unwrap().active()
    })
    .await;
    assert!(
        spawner.running.lock().await.is_empty(),
        "the launched server was stopped by its replica"
    );
    let events = progress(&b.hub, "mute").await;
    let last = events.last().unwrap();
    assert_eq!(last["failed"], true, "{events:?}");
    assert_eq!(last["message"], "Spawn cancelled", "{events:?}");
    // A stop of a server nobody runs a spawn for, with no lease, is still a plain stop.
    let r = b
        .hub
        .admin(Method::DELETE, "/hub/api/users/mute/server", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn a_replica_whose_lease_was_taken_writes_nothing_more() {
    let spawner = Arc::new(FakeSpawner::default());
    let (a, _b) = replicas(&spawner).await;
    let db = a.hub.state.db().clone();
    a.hub
        .admin(Method::POST, "/hub/api/users/slowdee", None)
        .await;
    let r = a
        .hub
        .admin(Method::POST, "/hub/api/users/slowdee/server", None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_for("the launch saved", Duration::from_secs(10), async || {
        db.server("slowdee", "")
            .await
            .unwrap()
            .unwrap()
            .url
            .is_some()
    })
    .await;
    // Another replica took the work over (A stalled past its lease).
    let id = db.server("slowdee", "").await.unwrap().unwrap().id;
    sqlx::query("UPDATE spawn_leases SET owner = 'other000', until = $2 WHERE server_id = $1")
        .bind(id)
        .bind(i64::MAX)
        .execute(db.pool())
        .await
        .unwrap();
    spawner.open_slow.store(true, Ordering::SeqCst);
    // A sees the server answer, but may not mark it ready, nor stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let row = db.server("slowdee", "").await.unwrap().unwrap();
    assert_eq!(row.pending.as_deref(), Some("spawn"), "{row:?}");
    assert_eq!(spawner.running.lock().await.len(), 1, "not stopped by A");
    assert_eq!(
        lease_owner(&db, "slowdee").await.as_deref(),
        Some("other000")
    );
}
