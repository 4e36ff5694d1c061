//! Database-level tests, each run on SQLite and on PostgreSQL in the same test (so a missing
//! PostgreSQL server fails them): migrations, the row round trips the spawner relies on,
//! upserts, cascades, concurrent creation, durability across a reconnect ("hub restart"), and
//! the change feed between two connections to one PostgreSQL database (two replicas).

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{hub_on, postgres_db, sqlite_db};
use hub::{ClientRow, Db, hash_secret};
use serde_json::json;

/// Both backends, each a fresh database.
async fn both() -> Vec<(&'static str, Db)> {
    vec![
        ("sqlite", sqlite_db().await),
        ("postgres", postgres_db().await),
    ]
}

#[tokio::test]
async fn server_rows_round_trip() {
    for (backend, db) in both().await {
        let h = hub_on(db.clone()).await;
        let r = h.admin(Method::POST, "/hub/api/users/ada", None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend}: {}", r.text);
        assert!(
            db.server("nobody", "").await.unwrap().is_none(),
            "{backend}"
        );

        let mut row = db.server("ada", "gpu").await.unwrap().expect(backend);
        assert_eq!(row.name, "gpu", "{backend}");
        assert!(!row.active(), "{backend}: a new row is stopped");
        // Values at the edges of what the columns hold: big microsecond times, nested JSON,
        // non-ASCII text.
        row.url = Some("http://10.0.0.7:8888/user/ada/gpu/".to_owned());
        row.state =
            json!({"pod": "jupyter-ada--gpu", "uid": "é✓", "nested": {"n": [1, 2.5, null]}});
        row.user_options = json!({"profile": "large", "image": "r"});
        row.pending = Some("spawn".to_owned());
        row.started = Some(4_102_444_800_123_456);
        row.last_activity = Some(i64::MAX / 2);
        db.save_server(&row).await.unwrap();
        let again = db.server("ada", "gpu").await.unwrap().unwrap();
        assert_eq!(again, row, "{backend}: the saved row reads back unchanged");
        assert_eq!(
            again.id, row.id,
            "{backend}: server() does not create twice"
        );
    }
}

#[tokio::test]
async fn concurrent_server_creation_makes_one_row() {
    for (backend, db) in both().await {
        let h = hub_on(db.clone()).await;
        assert_eq!(
            h.admin(Method::POST, "/hub/api/users/bo", None)
                .await
                .status,
            StatusCode::CREATED
        );
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { db.server("bo", "x").await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(row) => ids.push(row.unwrap().id),
                // SQLite serialises writers; a busy error is allowed, a second row is not.
                Err(e) => assert_eq!(backend, "sqlite", "{backend}: {e}"),
            }
        }
        assert!(!ids.is_empty(), "{backend}");
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{backend}: {ids:?}");
    }
}

#[tokio::test]
async fn oauth_client_upsert_and_delete() {
    for (backend, db) in both().await {
        let mut client = ClientRow {
            id: "jupyterhub-user-ada".to_owned(),
            secret_hash: Some(hash_secret("s1")),
            redirect_uri: "/user/ada/oauth_callback".to_owned(),
            description: "Server at /user/ada/".to_owned(),
            allowed_scopes: vec!["access:servers!server=ada/".to_owned()],
        };
        db.upsert_oauth_client(&client).await.unwrap();
        client.secret_hash = Some(hash_secret("s2"));
        client.redirect_uri = "/user/ada/x/oauth_callback".to_owned();
        // ON CONFLICT DO UPDATE: the second write replaces, no duplicate-key error.
        db.upsert_oauth_client(&client).await.unwrap();
        let (n, redirect): (i64, String) =
            sqlx::query_as("SELECT COUNT(*), MAX(redirect_uri) FROM oauth_clients WHERE id = $1")
                .bind(&client.id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(
            (n, redirect.as_str()),
            (1, "/user/ada/x/oauth_callback"),
            "{backend}"
        );
        db.delete_oauth_client(&client.id).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM oauth_clients")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0, "{backend}");
    }
}

#[tokio::test]
async fn deleting_a_user_cascades_and_rolls_back_nothing_half_written() {
    for (backend, db) in both().await {
        let h = hub_on(db.clone()).await;
        let token = h.user_token("cy", None).await;
        db.server("cy", "").await.unwrap().unwrap();
        assert_eq!(
            h.call(Method::GET, "/hub/api/user", Some(&token), None)
                .await
                .status,
            StatusCode::OK,
            "{backend}"
        );
        let r = h.admin(Method::DELETE, "/hub/api/users/cy", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{backend}: {}", r.text);
        for table in ["servers", "api_tokens WHERE user_id IS NOT NULL"] {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(n, 0, "{backend}: {table} emptied by the cascade");
        }
        assert_eq!(
            h.call(Method::GET, "/hub/api/user", Some(&token), None)
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{backend}: the deleted user's token is gone"
        );

        // A failing statement inside a transaction leaves nothing behind (on PostgreSQL it also
        // aborts the transaction, so code must not carry on after one).
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO users (name, admin, created) VALUES ('dup', 0, 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO users (name, admin, created) VALUES ('dup', 0, 1)")
            .execute(&mut *tx)
            .await;
        assert!(dup.is_err(), "{backend}: UNIQUE(name) holds");
        tx.rollback().await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE name = 'dup'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0, "{backend}");
    }
}

#[tokio::test]
async fn postgres_survives_a_reconnect_and_migrates_once() {
    // The hub restarting against the same PostgreSQL database: migrations are not re-applied,
    // users, tokens and server state are still there.
    let db = postgres_db().await;
    let url: String = {
        let (name,): (String,) = sqlx::query_as("SELECT current_database()::TEXT")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let mut u = url::Url::parse(&common::postgres_admin_url()).unwrap();
        u.set_path(&format!("/{name}"));
        u.into()
    };
    let h = hub_on(db.clone()).await;
    let token = h.user_token("dee", None).await;
    let mut row = db.server("dee", "").await.unwrap().unwrap();
    row.state = json!({"pod": "jupyter-dee"});
    db.save_server(&row).await.unwrap();
    db.pool().close().await;

    let db2 = Db::connect(&hub::Secret::new(url)).await.unwrap();
    let (migrations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(db2.pool())
        .await
        .unwrap();
    // Each migration recorded once: none ran again on the reconnect.
    let shipped = std::fs::read_dir(
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("migrations/postgres"),
    )
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
    })
    .count();
    assert_eq!(migrations, i64::try_from(shipped).unwrap());
    let h2 = hub_on(db2.clone()).await;
    let r = h2
        .call(Method::GET, "/hub/api/user", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "dee");
    assert_eq!(
        db2.server("dee", "").await.unwrap().unwrap().state,
        row.state
    );
}

/// The URL of `db`'s PostgreSQL database (a second connection to it: another replica).
async fn url_of(db: &Db) -> String {
    let (name,): (String,) = sqlx::query_as("SELECT current_database()::TEXT")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let mut u = url::Url::parse(&common::postgres_admin_url()).unwrap();
    u.set_path(&format!("/{name}"));
    u.into()
}

async fn until_listening(db: &Db) {
    let start = std::time::Instant::now();
    while !db.feed_status().listening {
        assert!(
            start.elapsed().as_secs() < 10,
            "the change feed is not heard"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_replicas_hear_each_others_writes() {
    // Two `Db`s on one database are two replicas: a write committed through one moves the
    // other's generation on (its caches go stale) and, for servers, wakes its route follower;
    // a rolled-back write announces nothing. Every table announces its writes.
    let a = postgres_db().await;
    let b = Db::connect(&hub::Secret::new(url_of(&a).await))
        .await
        .unwrap();
    until_listening(&a).await;
    until_listening(&b).await;
    let wait = |g: u64| {
        let b = b.clone();
        async move {
            let start = std::time::Instant::now();
            while b.generation() == g {
                assert!(
                    start.elapsed().as_secs() < 1,
                    "a write through A not heard by B within 1 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            start.elapsed()
        }
    };
    let h = hub_on(a.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let g = b.generation();
    assert_eq!(b.generation(), g, "heard: stable");
    h.user_token("eve", None).await;
    wait(g).await;
    // One commit: from its return to B's generation moving on.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let g = b.generation();
    let mut tx = a.begin().await.unwrap();
    sqlx::query("UPDATE users SET admin = 1 WHERE name = 'eve'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let heard = wait(g).await;
    eprintln!("a commit through A moved B's generation {heard:?} after it returned");
    // A rollback announces nothing.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (g, heard_before) = (b.generation(), b.feed_status().heard);
    let mut tx = a.begin().await.unwrap();
    sqlx::query("UPDATE users SET admin = 1 WHERE name = 'eve'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(b.generation(), g, "a rolled-back write is not announced");
    assert_eq!(b.feed_status().heard, heard_before);
    // A server written through A wakes B's route follower.
    let woke = tokio::spawn({
        let b = b.clone();
        async move { b.servers_changed().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    a.server("eve", "").await.unwrap().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), woke)
        .await
        .expect("B's route follower woken within 1 s")
        .unwrap();
    // Every table (but sqlx's own) carries the trigger: a new table must add it.
    let (untriggered,): (String,) = sqlx::query_as(
        "SELECT COALESCE(string_agg(t.tablename::TEXT, ' '), '') FROM pg_tables t \
         WHERE t.schemaname = current_schema() AND t.tablename NOT LIKE '\\_sqlx%' \
         AND NOT EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid \
         WHERE c.relname = t.tablename AND g.tgname = 'stackhub_change_feed')",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert!(
        untriggered.is_empty(),
        "tables without the change feed trigger: {untriggered:?}"
    );
    b.close().await;
    assert!(!b.feed_status().listening, "closed: caches off");
    let g = b.generation();
    assert_ne!(b.generation(), g);
}

#[tokio::test]
async fn postgres_replicas_elect_one_leader_and_another_takes_over() {
    // Two `Db`s on one database are two replicas: the first leads (it tried at connect), the
    // second follows and counts as alive; the leader gone, the second leads within seconds.
    let a = postgres_db().await;
    let b = Db::connect(&hub::Secret::new(url_of(&a).await))
        .await
        .unwrap();
    assert!(a.is_leader(), "the first replica leads");
    assert!(!b.is_leader(), "two leaders");
    assert_eq!(a.other_replicas().await.unwrap(), 1);
    assert_ne!(a.replica(), b.replica());
    let mut leading = b.leadership();
    a.close().await;
    assert!(!a.is_leader(), "closed: no longer leads");
    let start = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(5), leading.wait_for(|v| *v))
        .await
        .expect("B leads within 5 s of A leaving")
        .unwrap();
    eprintln!("A left, B led after {:?}", start.elapsed());
    assert_eq!(b.other_replicas().await.unwrap(), 0);
    b.close().await;
}

#[tokio::test]
async fn a_sqlite_hub_always_leads_alone() {
    let db = Db::connect(&hub::Secret::new("sqlite::memory:".to_owned()))
        .await
        .unwrap();
    assert!(db.is_leader());
    assert!(*db.leadership().borrow());
    assert_eq!(db.other_replicas().await.unwrap(), 0);
}
