//! Leader election: work that must happen once (managed services, the sites' health checks,
//! the start-up reconciliation) runs on one replica, the leader.
//!
//! On PostgreSQL each replica keeps a dedicated connection (`application_name =
//! stackhub-leader`) and tries `pg_try_advisory_lock(LOCK_KEY)` on it every [`TRY_EVERY`]; the
//! one that gets it leads for as long as that connection lives. The leader checks the
//! connection every [`TRY_EVERY`] and stops leading when a check fails or takes longer than
//! [`CHECK_DEADLINE`]; a replica that dies (even by SIGKILL) closes its connection and the
//! database releases the lock at once, so another replica leads within about [`TRY_EVERY`].
//! The same connections tell the leader whether other replicas are alive
//! ([`crate::Db::other_replicas`]).
//!
//! SQLite has one replica (see `lock`): it always leads.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The `application_name` of the leader-election connections (one per replica).
pub const APPLICATION_NAME: &str = "stackhub-leader";
/// The advisory lock's key (`"stackhub"` in ASCII, truncated to 64 bits).
const LOCK_KEY: i64 = 0x7374_6163_6b68_7562;
/// How often a follower tries to lead and the leader checks its connection.
const TRY_EVERY: Duration = Duration::from_secs(1);
/// How long connecting, trying or checking may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(3);

/// Whether this replica leads, shared by a [`crate::Db`] and its clones.
#[derive(Debug)]
pub(crate) struct Leader {
    leading: watch::Sender<bool>,
    task: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Leader {
    /// A leader from the start (SQLite) or not yet (PostgreSQL).
    pub(crate) fn new(leading: bool) -> Self {
        Self {
            leading: watch::Sender::new(leading),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn set(&self, leading: bool) {
        self.leading
            .send_if_modified(|v| std::mem::replace(v, leading) != leading);
    }

    /// Stop trying (a leader gives the lock up) and wait for the task to end.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().await.take();
        if let Some((stop, task)) = task {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Try to lead once now (so the caller knows at start-up), then keep trying or leading in a
/// task owned by `leader`.
pub(crate) async fn start(leader: &Arc<Leader>, options: PgConnectOptions, replica: &str) {
    let options = options.application_name(APPLICATION_NAME);
    let span = tracing::info_span!("leader", replica = %replica);
    let mut conn = attempt(leader, &options, None)
        .instrument(span.clone())
        .await;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let this = Arc::clone(leader);
    let task = async move {
        loop {
            tokio::select! {
                _ = stop_rx.wait_for(|v| *v) => break,
                () = tokio::time::sleep(TRY_EVERY) => {}
            }
            conn = attempt(&this, &options, conn.take()).await;
        }
        this.set(false);
        if let Some(c) = conn {
            // Closing the session releases the lock.
            let _ = tokio::time::timeout(CHECK_DEADLINE, c.close()).await;
        }
    };
    let task = tokio::spawn(task.instrument(span));
    *leader.task.lock().await = Some((stop_tx, task));
}

/// One round: connect if needed, then try to lock (follower) or check the connection (leader).
/// Returns the connection to keep (none after a failure: the next round connects again).
async fn attempt(
    leader: &Leader,
    options: &PgConnectOptions,
    conn: Option<PgConnection>,
) -> Option<PgConnection> {
    let mut conn = match conn {
        Some(c) => c,
        None => match tokio::time::timeout(CHECK_DEADLINE, options.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                lost(leader, &format!("cannot connect: {e}"));
                return None;
            }
            Err(_) => {
                lost(leader, "connecting timed out");
                return None;
            }
        },
    };
    let round = async {
        if leader.is_leader() {
            sqlx::query("SELECT 1")
                .execute(&mut conn)
                .await
                .map(|_| true)
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await
        }
    };
    match tokio::time::timeout(CHECK_DEADLINE, round).await {
        Ok(Ok(true)) => {
            if !leader.is_leader() {
                tracing::info!("this replica leads (it holds the database's leader lock)");
                leader.set(true);
            }
            Some(conn)
        }
        Ok(Ok(false)) => Some(conn),
        Ok(Err(e)) => {
            lost(leader, &format!("the connection failed: {e}"));
            None
        }
        Err(_) => {
            lost(leader, &format!("no answer within {CHECK_DEADLINE:?}"));
            None
        }
    }
}

/// The election connection failed: a leader stops leading.
fn lost(leader: &Leader, why: &str) {
    if leader.is_leader() {
        tracing::warn!(reason = %why, "this replica no longer leads");
        leader.set(false);
    } else {
        tracing::debug!(reason = %why, "cannot take part in the leader election");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_leadership_change_once_per_change() {
        let l = Leader::new(false);
        let mut rx = l.watch();
        l.set(false);
        assert!(!rx.has_changed().unwrap(), "no change, no wake-up");
        l.set(true);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        assert!(l.is_leader());
        l.stop().await;
    }
}
