//! Leases: each pending spawn or stop is owned by the replica that runs it, through a row in
//! `spawn_leases` it renews every [`RENEW_EVERY`] for [`LEASE`]. Its writes to the server's row
//! are made only while it holds the lease (`save_leased`, `txn::clear`), so a replica that lost
//! its lease (it stalled) leaves the work to the one that took it.
//!
//! The leader looks every [`RENEW_EVERY`] for pending servers whose lease ran out (their
//! replica died, or shut down: it lets its leases run out at once) and takes the work over:
//! - a spawn whose launch reported back (state and URL saved) is re-attached: if the server
//!   still runs, the leader waits for it to answer, routes it and marks it ready; if not, the
//!   spawn fails cleanly;
//! - a spawn whose launch did not report back is looked for through the spawner
//!   ([`spawner::Spawner::find`]: the pod, or the local process's state file), else planned
//!   again from the stored options and launched again;
//! - a spawn a stop asked to cancel (the stop came to another replica) is cancelled;
//! - a pending stop is finished.
//!
//! The progress events go on in the database, so a client following the spawn's progress on
//! any replica sees it through (`progress`). A stop of a server whose spawn runs on another
//! replica marks the lease (`cancel`); the owner sees it at its next renewal and cancels.
//!
//! SQLite has one replica: leases are written (one code path) but never taken over; start-up
//! reconciliation cleans up after a hub that died.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spawner::{Spawned, State, Status};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::ServerRef;
use super::names::Names;
use super::pipeline::{SpawnFailure, SpawnOrchestrator};
use super::track::Track;
use crate::db::{self, ServerRow};

/// How long a lease lasts unless renewed.
pub(crate) const LEASE: Duration = Duration::from_secs(5);
/// How often leases are renewed and expired ones looked for.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// The least time a re-attached server gets to answer, however long ago it was launched.
const REATTACH_GRACE: Duration = Duration::from_secs(10);

/// The end of a lease taken or renewed now (µs).
pub(super) fn until() -> i64 {
    db::now_micros() + i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX)
}

impl SpawnOrchestrator {
    /// Replicas on PostgreSQL: renew this replica's leases and act on cancel requests every
    /// second, and while it leads take over the pending work of replicas that died. A replica
    /// that starts leading after start-up also reconciles (routes, orphans), as the leader
    /// does at start-up. Runs until `stop` resolves.
    pub fn keep_leases(&self, stop: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let this = self.clone();
        let task = async move {
            tokio::pin!(stop);
            let mut leading = this.inner.db.leadership();
            leading.borrow_and_update();
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                }
                let took_lead =
                    leading.has_changed().unwrap_or(false) && *leading.borrow_and_update();
                if took_lead {
                    tracing::info!("this replica now leads: reconciling beside the others");
                    if let Err(e) = this.reconcile_beside_replicas().await {
                        tracing::warn!(error = %e, "cannot reconcile on taking the lead");
                    }
                }
                if let Err(e) = this.lease_round(this.inner.db.is_leader()).await {
                    tracing::warn!(error = %e, "cannot renew or take over spawn leases");
                }
            }
        };
        tokio::spawn(task.instrument(tracing::info_span!("leases", replica = %self.me())))
    }

    /// Let this replica's leases run out now (it shuts down): the leader takes its pending
    /// work over without waiting for them to expire.
    pub(super) async fn expire_own_leases(&self) {
        let done = async {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::leases::renew(&mut conn, self.me(), 0).await
        }
        .await;
        match done {
            Ok(0) => {}
            Ok(n) => tracing::info!(leases = n, "handed this replica's pending work over"),
            Err(e) => tracing::warn!(error = %e, "cannot hand the pending work over"),
        }
    }

    async fn lease_round(&self, leading: bool) -> Result<(), sqlx::Error> {
        let mut conn = self.inner.db.pool().acquire().await?;
        db::leases::renew(&mut conn, self.me(), until()).await?;
        let cancels: HashSet<i64> = db::leases::cancel_requests(&mut conn, self.me())
            .await?
            .into_iter()
            .collect();
        if !cancels.is_empty() {
            for track in self.inner.tracks.lock().await.values() {
                if cancels.contains(&track.server_id) && !track.finished() && !track.is_cancelled()
                {
                    tracing::info!(
                        server_id = track.server_id,
                        "a stop on another replica cancels this spawn"
                    );
                    track.cancel();
                }
            }
        }
        if !leading {
            return Ok(());
        }
        let now = db::now_micros();
        for (user, row) in db::leases::expired(&mut conn, now).await? {
            if self
                .track(&user, &row.name)
                .await
                .is_some_and(|t| !t.finished())
            {
                // Ours and running (a renewal failed): keep it.
                db::leases::hold(&mut conn, row.id, self.me(), until()).await?;
                continue;
            }
            if db::leases::take_expired(&mut conn, row.id, self.me(), until(), now).await? {
                let cancel = db::leases::cancel_requested(&mut conn, row.id).await?;
                self.take_over(user, row, cancel).await;
            }
        }
        Ok(())
    }

    /// This replica holds the lease of `row`'s pending work, whose owner died: carry it on.
    async fn take_over(&self, user: String, row: ServerRow, cancel: bool) {
        let n = self.names(&user, &row.name);
        let span = tracing::info_span!("take_over", user = %user, server = %row.name);
        match row.pending.as_deref() {
            Some("stop") => {
                tracing::info!(server = %n.id, "taking over a stop whose replica stopped");
                let this = self.clone();
                tokio::spawn(
                    async move { this.do_stop(&n, row, false).await }.instrument(span.clone()),
                );
            }
            Some(_) => {
                tracing::info!(server = %n.id, cancel, "taking over a spawn whose replica stopped");
                let events = async {
                    let mut conn = self.inner.db.pool().acquire().await?;
                    db::leases::events(&mut conn, row.id, 0).await
                }
                .await
                .unwrap_or_default();
                let events: Vec<Value> = events.into_iter().map(|(_, e)| e).collect();
                let stored = events.len();
                let track = Arc::new(Track::resume(&self.inner.db, row.id, events, stored));
                track.push(json!({
                    "progress": 40,
                    "message": "The hub replica running this spawn stopped; another one carries it on",
                }));
                self.inner
                    .tracks
                    .lock()
                    .await
                    .insert((user, row.name.clone()), Arc::clone(&track));
                let this = self.clone();
                let resumed = Arc::clone(&track);
                let task = tokio::spawn(
                    async move { this.resume_spawn(n, row, resumed, cancel).await }
                        .instrument(span.clone()),
                );
                *track.task.lock().await = Some(task.abort_handle());
            }
            None => {}
        }
    }

    /// Carry on a spawn taken over (see the module's documentation).
    async fn resume_spawn(self, n: Names, mut row: ServerRow, track: Arc<Track>, cancel: bool) {
        let began = Instant::now();
        let saved = (!row.state.as_object().is_none_or(serde_json::Map::is_empty))
            .then(|| row.url.clone())
            .flatten()
            .map(|url| Spawned {
                url,
                state: State(row.state.clone()),
            });
        let spawned = match saved {
            Some(s) => Some(s),
            None => self.find(&n, &mut row).await,
        };
        if cancel {
            let outcome = Err(SpawnFailure::Cancelled);
            return self.finish(&n, &mut row, outcome, &track, began).await;
        }
        let Some(spawned) = spawned else {
            return self.relaunch(&n, row, &track, began).await;
        };
        let outcome = match self.inner.spawner.poll(&n.id, &spawned.state).await {
            Ok(Status::Running) => {
                let start_timeout = self.inner.settings.start_timeout;
                let launched_at = row.started.unwrap_or_else(db::now_micros);
                let left = Duration::from_micros(
                    u64::try_from(
                        launched_at + i64::try_from(start_timeout.as_micros()).unwrap_or(0)
                            - db::now_micros(),
                    )
                    .unwrap_or(0),
                );
                let deadline = Instant::now() + left.max(REATTACH_GRACE);
                tracing::info!(server = %n.id, "re-attached to the launched server");
                self.await_ready(&n, &mut row, &spawned, deadline, &track)
                    .await
            }
            Ok(Status::Exited(code)) => Err(SpawnFailure::Exited(code)),
            Err(e) => Err(SpawnFailure::Launch(e)),
        };
        self.finish(&n, &mut row, outcome, &track, began).await;
    }

    /// Look for a server whose launch did not report back; saves what is found.
    async fn find(&self, n: &Names, row: &mut ServerRow) -> Option<Spawned> {
        match self.inner.spawner.find(&n.id).await {
            Ok(Some(found)) => {
                tracing::info!(server = %n.id, "found the server the stopped replica launched");
                row.state = found.state.0.clone();
                row.url = Some(found.url.clone());
                if let Err(e) = self.save_owned(row).await {
                    tracing::warn!(server = %n.id, error = %e, "cannot save the server found");
                }
                Some(found)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(server = %n.id, error = %e, "cannot look for the server");
                None
            }
        }
    }

    /// Launch a spawn again whose launch never reported back, planned again from its stored
    /// options (the quota and profiles as they are now).
    async fn relaunch(&self, n: &Names, mut row: ServerRow, track: &Arc<Track>, began: Instant) {
        let planned = match &self.inner.planner {
            None => Err("this hub cannot plan spawns".to_owned()),
            Some(planner) => {
                let owner = async {
                    let mut conn = self.inner.db.pool().acquire().await?;
                    db::users::get_by_id(&mut conn, row.user_id).await
                }
                .await;
                match owner {
                    Ok(Some(owner)) => planner
                        .plan(&owner, &row.user_options)
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(None) => Err("its user is gone".to_owned()),
                    Err(e) => Err(format!("database error: {e}")),
                }
            }
        };
        let server = ServerRef {
            user_id: row.user_id,
            user: n.id.user.clone(),
            server: n.id.name.clone(),
        };
        let launched = match planned {
            Ok(plan) => {
                tracing::info!(server = %n.id, "launching the spawn again");
                track.push(json!({"progress": 10, "message": "Starting the server again"}));
                self.launch(&server, plan, Some(track.events()))
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        if let Err(why) = launched {
            let outcome = Err(SpawnFailure::Relaunch(why));
            self.finish(n, &mut row, outcome, track, began).await;
        }
    }
}
