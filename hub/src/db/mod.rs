//! The database: one [`Db`] over `sqlx::Any`, SQLite by default, PostgreSQL by URL, with the
//! same SQL for both (`$N` parameters, `RETURNING`, `ON CONFLICT`; no dialect-only SQL).
//!
//! Storage conventions: times are microseconds since the Unix epoch (`BIGINT`), JSON values are
//! `TEXT`, flags are `BIGINT` 0/1. Every durable change runs in one transaction.
//!
//! # Layout
//! - `migrate`: the embedded migrations, one directory per database (only id columns differ).
//! - `feed`: the change feed that keeps replicas' caches true on PostgreSQL; `lock`: SQLite's
//!   one-replica lock; `leader`: the election of the replica that does what must happen once.
//! - `users`, `groups`, `servers`, `tokens`, `oauth`, `sessions`, `shares`, `site_health`:
//!   queries per table family.

mod feed;
pub(crate) mod groups;
mod leader;
pub(crate) mod leases;
mod lock;
mod migrate;
pub(crate) mod oauth;
pub(crate) mod servers;
pub(crate) mod sessions;
pub(crate) mod shares;
pub(crate) mod site_health;
pub(crate) mod tokens;
pub(crate) mod users;

pub use self::feed::{APPLICATION_NAME as FEED_APPLICATION_NAME, FeedStatus};
pub(crate) use self::groups::GroupRow;
pub use self::leader::APPLICATION_NAME as LEADER_APPLICATION_NAME;
pub use self::oauth::ClientRow;
pub(crate) use self::oauth::{CodeRow, NewCode};
pub use self::servers::ServerRow;
pub(crate) use self::sessions::SessionRow;
pub(crate) use self::tokens::{NewToken, TokenOwner, TokenRow};
pub(crate) use self::users::{UserRow, UserSort, UserState, UsersQuery};

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions};

use stackhub_common::Secret;

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// Connecting failed (the URL is not printed: it may hold a password).
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Migrating failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The SQLite database is in use by another `stackhub`.
    #[error(
        "another stackhub is using the SQLite database {db} (it holds the lock {lock}): SQLite \
         serves a single hub; stop the other one, or run several replicas on one PostgreSQL \
         database (db_url = \"postgres://...\" with the same cookie_secret on each)"
    )]
    InUse {
        /// The database file.
        db: String,
        /// The lock file beside it.
        lock: String,
    },
    /// The lock file beside the SQLite database cannot be opened or locked.
    #[error("cannot lock the SQLite database with {lock}: {source}")]
    Lock {
        /// The lock file.
        lock: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (file or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The hub's database.
///
/// Every committed transaction ([`Tx::commit`]) and every write outside one ([`Db::changed`])
/// moves the [generation](Db::generation) on; on PostgreSQL so does every write another replica
/// commits (the change feed, see `feed`). Caches of what was read tag their entries with the
/// generation read *before* reading, and use them only while it is still current.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    feed: Arc<feed::Feed>,
    /// Whether this replica leads (always on SQLite).
    leader: Arc<leader::Leader>,
    /// This replica's id (random, for the log).
    replica: Arc<str>,
    /// SQLite files: the lock held while any clone lives (one hub per file).
    _lock: Option<Arc<std::fs::File>>,
}

impl Db {
    /// Connect to `url` and run the migrations.
    ///
    /// An in-memory SQLite URL (`sqlite::memory:`) gets a single connection, since each
    /// connection would otherwise see its own empty database.
    ///
    /// # Errors
    /// [`DbError`] if the database cannot be reached or migrated.
    pub async fn connect(url: &Secret) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = url.expose();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let lock = match (backend, sqlite_path(url)) {
            (Backend::Sqlite, Some(path)) if !memory => {
                create_sqlite_parent(&path);
                Some(Arc::new(lock::exclusive(&path)?))
            }
            _ => None,
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(DbError::Connect)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                _ if memory => 1,
                // One writer at a time and readers that never wait (WAL). Each connection is a
                // thread with its own statements and malloc arena (~1 MB resident each at
                // 10,000 users): two keep two cores busy (`bench/run scale`).
                Backend::Sqlite => 2,
                Backend::Postgres => 8,
            })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite && !memory {
                        // Readers never wait for a writer and a commit costs one fsync of the
                        // log, not two of the database; a crash loses at most the last
                        // commits, never consistency.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        // 512 KiB of page cache per connection (SQLite's default is 2 MiB):
                        // what misses it is read from the OS's cache of the file (a pread of
                        // a few microseconds). Each connection's cache fills up to its size
                        // (at 10,000 users the file is larger), all of it in the hub's RSS;
                        // with 256 KiB, a page of 100 users took ~0.5 ms more.
                        sqlx::query("PRAGMA cache_size = -512")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(DbError::Connect)?;
        let db = Self {
            pool,
            backend,
            // SQLite: one replica, whose writes are all local. PostgreSQL: not heard until the
            // feed listens.
            feed: Arc::new(feed::Feed::new(backend == Backend::Sqlite)),
            leader: Arc::new(leader::Leader::new(backend == Backend::Sqlite)),
            replica: hex::encode(rand::random::<[u8; 4]>()).into(),
            _lock: lock,
        };
        migrate::run(&db).await.map_err(DbError::Migrate)?;
        if backend == Backend::Postgres {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(DbError::Connect)?
                .disable_statement_logging();
            feed::start(&db.feed, options.clone(), &db.replica).await;
            leader::start(&db.leader, options, &db.replica).await;
        }
        Ok(db)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Create or replace an OAuth client (the spawn pipeline registers one per server).
    ///
    /// # Errors
    /// The database error.
    pub async fn upsert_oauth_client(&self, client: &ClientRow) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        oauth::upsert_client(&mut tx, client, now_micros()).await?;
        tx.commit().await
    }

    /// Delete an OAuth client with its codes and tokens.
    ///
    /// # Errors
    /// The database error.
    pub async fn delete_oauth_client(&self, id: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        oauth::delete_client(&mut tx, id).await?;
        tx.commit().await
    }

    /// A user's server row, creating it (stopped) if missing; `None` if the user does not exist.
    ///
    /// # Errors
    /// The database error.
    pub async fn server(&self, user: &str, server: &str) -> Result<Option<ServerRow>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let Some(u) = users::get(&mut tx, user).await? else {
            return Ok(None);
        };
        if servers::get(&mut tx, u.id, server).await?.is_none() {
            servers::create(&mut tx, u.id, server, None, &serde_json::json!({})).await?;
        }
        let row = servers::get(&mut tx, u.id, server).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Save a server row's spawn fields (`url`, `state`, `pending`, times, options) in one
    /// transaction.
    ///
    /// # Errors
    /// The database error.
    pub async fn save_server(&self, row: &ServerRow) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        servers::save(&mut tx, row).await?;
        tx.commit().await
    }

    /// Start a transaction; committing it moves the [generation](Self::generation) on.
    ///
    /// # Errors
    /// The database error.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        // SQLite: take the write lock at BEGIN, so a second writer waits (busy timeout) instead
        // of failing with SQLITE_BUSY when its read snapshot is upgraded after another commit.
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            feed: Arc::clone(&self.feed),
        })
    }

    /// The data's generation: it changes after every write (see [`Db`]), and at every call
    /// while this replica cannot hear the change feed (nothing cached is then used).
    pub fn generation(&self) -> u64 {
        self.feed.generation()
    }

    /// Record a write made outside [`Tx`] (call it after the write, before answering).
    pub fn changed(&self) {
        self.feed.bump();
    }

    /// The change feed's state (always listening on SQLite).
    pub fn feed_status(&self) -> FeedStatus {
        self.feed.status()
    }

    /// Wait until another replica (or this one) changed servers, or the feed was heard again
    /// after a loss; changes while nobody waits wake the next call once. Never returns on
    /// SQLite.
    pub async fn servers_changed(&self) {
        self.feed.servers_changed().await;
    }

    /// Spawn progress events were stored by this replica (others hear it through the feed).
    pub(crate) fn progress_stored(&self) {
        self.feed.progress_stored();
    }

    /// Moves on whenever spawn progress events are stored by any replica (on SQLite: this one).
    pub(crate) fn progress_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feed.progress()
    }

    /// This replica's id (random at each start; in the log's `change_feed` and `leader` spans).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica leads: runs what must happen once (always true on SQLite).
    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// Follow [`Self::is_leader`].
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leader.watch()
    }

    /// How many other replicas are alive: the leader-election connections of this database
    /// other than this replica's, as the leader counts them (0 on SQLite, which has one
    /// replica).
    ///
    /// # Errors
    /// The database error.
    pub async fn other_replicas(&self) -> Result<i64, sqlx::Error> {
        if self.backend == Backend::Sqlite {
            return Ok(0);
        }
        let all: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(leader::APPLICATION_NAME)
        .fetch_one(&self.pool)
        .await?;
        // This replica's own connection, when it has one (a leader always does).
        Ok(all.saturating_sub(i64::from(self.is_leader())))
    }

    /// Stop listening to the change feed (on shutdown; caches stay off afterwards).
    pub async fn close(&self) {
        self.leader.stop().await;
        self.feed.stop().await;
    }
}

/// A transaction on the hub's database (a connection through `Deref`); [`Tx::commit`] moves
/// the database's generation on once the data is committed.
#[derive(Debug)]
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    feed: Arc<feed::Feed>,
}

impl Tx {
    /// Commit, then move the generation on (also when the commit failed: its outcome is then
    /// unknown).
    ///
    /// # Errors
    /// The database error.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let result = self.inner.commit().await;
        self.feed.bump();
        result
    }

    /// Roll back (nothing changed, so the generation stays).
    ///
    /// # Errors
    /// The database error.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// The file of a SQLite URL; `None` for memory databases.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

fn create_sqlite_parent(path: &std::path::Path) {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(parent);
    }
}

/// Now, in microseconds since the epoch.
pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Format stored microseconds as JupyterHub does: ISO-8601 UTC with `Z`, microseconds only
/// when non-zero.
pub(crate) fn iso(micros: i64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return String::new();
    };
    if micros.rem_euclid(1_000_000) == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// [`iso`] of an optional time, as a JSON value (`null` when absent).
pub(crate) fn iso_opt(micros: Option<i64>) -> serde_json::Value {
    micros.map_or(serde_json::Value::Null, |m| iso(m).into())
}

/// The stored form of a secret token or code: its SHA-256 in hex. Tokens are 128 random bits,
/// so an unsalted fast hash is enough to make a database leak useless.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret (128 bits, 32 hex characters), as JupyterHub's tokens.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Decode a `TEXT` JSON column, treating garbage as `default`.
pub(crate) fn json_value(s: &str, default: serde_json::Value) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(default)
}

/// Decode a `TEXT` column holding a JSON list of strings.
pub(crate) fn json_strings(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// `$start, $start+1, …` placeholders for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_files_use_write_ahead_logging() {
        use sqlx::Row;
        let dir = std::env::temp_dir().join(format!("stackhub-wal-{}", new_secret()));
        let url = format!("sqlite://{}/hub.sqlite?mode=rwc", dir.display());
        let db = Db::connect(&Secret::new(url)).await.unwrap();
        // Every pooled connection, not only the first: hold two at once.
        let mut conns = vec![
            db.pool().acquire().await.unwrap(),
            db.pool().acquire().await.unwrap(),
        ];
        for conn in &mut conns {
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(sync, 1, "synchronous = NORMAL");
        }
        drop(conns);
        db.pool().close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn iso_formats() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_500_000), "1970-01-01T00:00:01.500000Z");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
