//! The change feed: how replicas of the hub sharing one PostgreSQL database keep what they cache
//! true.
//!
//! Every table carries a statement trigger (migration 6) calling `pg_notify(CHANNEL, table)` in
//! the writing transaction: PostgreSQL delivers it to every listener when, and only if, the
//! transaction commits, once per table and transaction. The payload is a table name, nothing
//! secret. Each replica listens on a dedicated connection ([`start`]); every notification moves
//! the local [generation](Feed::generation) on exactly as a local write does, so the
//! write-through caches ([`crate::cache`]) go stale, and one about `servers` wakes
//! [`crate::Db::servers_changed`] (the route table follows the database).
//!
//! While the replica cannot hear the feed (not yet listening, connection lost, or its own
//! heartbeat, a notification sent every second, not heard back within three) the generation
//! changes at every read, so nothing cached is ever used and every request reads the database.
//! When it hears again the generation moves on once more (changes may have been missed) and the
//! route table is re-synced. Notifications of the replica's own writes are applied too
//! (harmless: one more generation).
//!
//! SQLite has a single replica (the database file is locked for the process lifetime): the
//! feed is its own writes, always heard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The notification channel.
pub(crate) const CHANNEL: &str = "stackhub_changes";
/// The `application_name` of the feed's connections (to find them in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "stackhub-change-feed";
/// How often a heartbeat is sent.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat may take to come back before the feed counts as lost.
const PING_DEADLINE: Duration = Duration::from_secs(3);
/// First and longest wait between attempts to listen again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the feed says about the data, shared by a [`crate::Db`] and its clones.
#[derive(Debug)]
pub(crate) struct Feed {
    generation: AtomicU64,
    hearing: AtomicBool,
    servers: Notify,
    /// Moves on when spawn progress events were stored (by any replica).
    progress: watch::Sender<u64>,
    heard: AtomicU64,
    losses: AtomicU64,
    task: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

/// The state of a database's change feed (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStatus {
    /// Whether the feed is heard (caches in use). Always true on SQLite.
    pub listening: bool,
    /// Notifications heard from the database (heartbeats not counted).
    pub heard: u64,
    /// Times the feed was lost.
    pub losses: u64,
}

impl Feed {
    /// A feed that is heard from the start (`true`: SQLite, local writes only) or not yet.
    pub(crate) fn new(hearing: bool) -> Self {
        Self {
            generation: AtomicU64::new(0),
            hearing: AtomicBool::new(hearing),
            servers: Notify::new(),
            progress: watch::Sender::new(0),
            heard: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            task: Mutex::new(None),
        }
    }

    /// The data's generation: it changes after every write, local or announced, and at every
    /// call while the feed is not heard.
    pub(crate) fn generation(&self) -> u64 {
        if self.hearing.load(Ordering::Acquire) {
            self.generation.load(Ordering::Acquire)
        } else {
            self.generation.fetch_add(1, Ordering::AcqRel) + 1
        }
    }

    /// A write happened.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A notification about `table` arrived.
    fn heard(&self, table: &str) {
        self.heard.fetch_add(1, Ordering::Relaxed);
        match table {
            // Nothing cached comes from these: the sites' health (written by the leader at
            // every check), the spawns' leases (renewed every second) and progress events.
            "site_health" | "spawn_leases" => return,
            "spawn_events" => {
                self.progress_stored();
                return;
            }
            _ => {}
        }
        self.bump();
        if table == "servers" {
            self.servers.notify_one();
        }
    }

    /// The feed can no longer be heard: stop serving from the caches.
    fn lost(&self) {
        self.hearing.store(false, Ordering::Release);
        self.bump();
    }

    /// The feed is heard again (after `LISTEN` succeeded): what was missed is unknown, so the
    /// generation moves on and the routes are re-synced.
    fn regained(&self) {
        self.bump();
        self.hearing.store(true, Ordering::Release);
        self.servers.notify_one();
        self.progress_stored();
    }

    pub(crate) fn status(&self) -> FeedStatus {
        FeedStatus {
            listening: self.hearing.load(Ordering::Acquire),
            heard: self.heard.load(Ordering::Relaxed),
            losses: self.losses.load(Ordering::Relaxed),
        }
    }

    /// Spawn progress events were stored (here, or announced by another replica).
    pub(crate) fn progress_stored(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Follow [`Self::progress_stored`].
    pub(crate) fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Wait until servers changed (or may have) since the last call returned.
    pub(crate) async fn servers_changed(&self) {
        self.servers.notified().await;
    }

    /// Stop listening (the caches stay off) and wait for the task to end.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().await.take();
        if let Some((stop, task)) = task {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Start listening to the feed of the database at `options`, in a task owned by `feed`.
pub(crate) async fn start(feed: &Arc<Feed>, options: PgConnectOptions, replica: &str) {
    let replica = replica.to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(PING_DEADLINE)
        .connect_lazy_with(options.application_name(APPLICATION_NAME));
    let (stop_tx, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("change_feed", replica = %replica);
    let task = tokio::spawn(run(Arc::clone(feed), pool, replica, stop_rx).instrument(span));
    *feed.task.lock().await = Some((stop_tx, task));
}

/// Why hearing ended.
enum End {
    Stopped,
    Lost(String),
}

async fn run(feed: Arc<Feed>, pool: PgPool, replica: String, mut stop: watch::Receiver<bool>) {
    let ping = format!("ping:{replica}");
    let mut retry = RETRY_MIN;
    loop {
        let connected = tokio::select! {
            () = stopped(&mut stop) => break,
            l = listen(&pool) => l,
        };
        let listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry,
                    "cannot listen to the database's change feed; caches are off");
                tokio::select! {
                    () = stopped(&mut stop) => break,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_MIN;
        feed.regained();
        tracing::info!("listening to the database's change feed; caches are on");
        match hear(&feed, &pool, listener, &ping, &mut stop).await {
            End::Stopped => break,
            End::Lost(why) => {
                feed.lost();
                feed.losses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = %why,
                    "lost the database's change feed; caches are off until it is heard again");
            }
        }
    }
    feed.lost();
    pool.close().await;
}

/// Resolves once stop is asked (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends this listener; [`run`] makes a new one and says so.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Hear notifications until stopped or lost; send a heartbeat every second and count the
/// feed as lost when one is not heard back in time.
async fn hear(
    feed: &Feed,
    pool: &PgPool,
    listener: PgListener,
    ping: &str,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let (tx, mut rx) = mpsc::channel(1024);
    let receiver = Receiver(tokio::spawn(
        receive(listener, tx).instrument(tracing::info_span!("change_feed_receive")),
    ));
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: Option<Instant> = None;
    let end = loop {
        tokio::select! {
            () = stopped(stop) => break End::Stopped,
            msg = rx.recv() => match msg {
                Some(Ok(payload)) if payload == ping => sent = None,
                Some(Ok(payload)) if payload.starts_with("ping:") => {}
                Some(Ok(table)) => feed.heard(&table),
                Some(Err(why)) => break End::Lost(why),
                None => break End::Lost("the receiving task ended".to_owned()),
            },
            _ = tick.tick() => {
                if let Some(at) = sent {
                    if at.elapsed() > PING_DEADLINE {
                        break End::Lost(format!("a heartbeat was not heard back within {PING_DEADLINE:?}"));
                    }
                    continue;
                }
                sent = Some(Instant::now());
                let send = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(ping)
                    .execute(pool);
                match tokio::time::timeout(PING_DEADLINE, send).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break End::Lost(format!("cannot send a heartbeat: {e}")),
                    Err(_) => break End::Lost("sending a heartbeat timed out".to_owned()),
                }
            }
        }
    };
    drop(receiver);
    end
}

/// The task reading the listener's connection; aborted (closing the connection) when dropped.
struct Receiver(JoinHandle<()>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn receive(mut listener: PgListener, tx: mpsc::Sender<Result<String, String>>) {
    loop {
        let msg = match listener.try_recv().await {
            Ok(Some(n)) => Ok(n.payload().to_owned()),
            Ok(None) => Err("the connection was closed".to_owned()),
            Err(e) => Err(format!("the connection failed: {e}")),
        };
        let end = msg.is_err();
        if tx.send(msg).await.is_err() || end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_not_heard_gives_a_new_generation_at_every_read() {
        let f = Feed::new(false);
        let (a, b, c) = (f.generation(), f.generation(), f.generation());
        assert!(a < b && b < c, "{a} {b} {c}");
        f.regained();
        let d = f.generation();
        assert!(d > c);
        assert_eq!(f.generation(), d, "heard: stable until a write");
        f.heard("tokens");
        let e = f.generation();
        assert!(e > d);
        assert_eq!(f.generation(), e);
        f.lost();
        let g = f.generation();
        assert!(g > e && f.generation() > g, "lost: never stable");
        assert_eq!(
            f.status(),
            FeedStatus {
                listening: false,
                heard: 1,
                losses: 0
            }
        );
    }

    #[tokio::test]
    async fn cached_entries_die_with_the_feed() {
        use crate::cache::{Caches, CallerKey, ResponseKey};
        let f = Feed::new(true);
        let c = Caches::default();
        let key = ResponseKey::User {
            caller: CallerKey::Token(1),
            name: "alice".to_owned(),
            include_stopped: false,
        };
        let store = async |c: &Caches, f: &Feed| {
            let read_at = f.generation();
            let body = bytes::Bytes::from_static(b"{}");
            c.put_response(read_at, f.generation(), key.clone(), body)
                .await;
        };
        let cached = async |c: &Caches, f: &Feed| c.response(f.generation(), &key).await.is_some();
        store(&c, &f).await;
        assert!(cached(&c, &f).await);
        f.lost();
        assert!(
            !cached(&c, &f).await,
            "lost: the next read goes to the database"
        );
        store(&c, &f).await;
        assert!(!cached(&c, &f).await, "stored while lost: never used");
        f.regained();
        assert!(!cached(&c, &f).await);
        store(&c, &f).await;
        assert!(cached(&c, &f).await, "heard again: caching again");
    }

    #[tokio::test]
    async fn servers_changes_and_regaining_wake_the_route_follower() {
        let f = Feed::new(false);
        let wait = Duration::from_millis(50);
        f.heard("users");
        assert!(
            tokio::time::timeout(wait, f.servers_changed())
                .await
                .is_err()
        );
        f.heard("servers");
        f.heard("servers");
        tokio::time::timeout(wait, f.servers_changed())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(wait, f.servers_changed())
                .await
                .is_err(),
            "two changes before a wake-up: one re-sync"
        );
        f.regained();
        tokio::time::timeout(wait, f.servers_changed())
            .await
            .unwrap();
    }
}
