//! Stopping a server: cancel a spawn this replica runs, ask the replica running one elsewhere to
//! cancel it (through its lease), or stop a running server under this replica's lease.

use std::time::Duration;

use spawner::State;
use tracing::Instrument;

use super::names::Names;
use super::pipeline::{SpawnOrchestrator, db_err};
use super::{ServerRef, StopOutcome, txn};
use crate::db::{self, ServerRow};
use crate::error::ApiError;

/// How often a stop waits on another replica's cancelled spawn checks the row.
const CANCEL_POLL: Duration = Duration::from_millis(100);

impl SpawnOrchestrator {
    /// Stop `server`; `remove` also deletes a named server.
    pub(super) async fn stop_server(
        &self,
        server: &ServerRef,
        remove: bool,
    ) -> Result<StopOutcome, ApiError> {
        let wait = self.inner.settings.slow_spawn_timeout;
        if let Some(track) = self.track(&server.user, &server.server).await
            && !track.finished()
        {
            // Cancel the pending spawn: it stops what it launched and marks the server stopped.
            tracing::info!(server = %server.user, name = %server.server, "spawn cancelled");
            track.cancel();
            let done = tokio::time::timeout(wait, track.done()).await;
            return Ok(if done.is_ok() {
                StopOutcome::Stopped
            } else {
                StopOutcome::Pending
            });
        }
        let mut row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .map_err(db_err)?
            .ok_or_else(ApiError::no_access)?;
        match row.pending.as_deref() {
            Some("stop") => return Ok(StopOutcome::Pending),
            Some("spawn") => return self.cancel_elsewhere(server, &row).await,
            _ => {}
        }
        row.pending = Some("stop".to_owned());
        {
            let mut tx = self.inner.db.begin().await.map_err(db_err)?;
            db::servers::save(&mut tx, &row).await.map_err(db_err)?;
            db::leases::hold(&mut tx, row.id, self.me(), super::lease::until())
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        }
        let n = self.names(&server.user, &server.server);
        let this = self.clone();
        let span = tracing::info_span!("stop", server = %n.id);
        let task =
            tokio::spawn(async move { this.do_stop(&n, row, remove).await }.instrument(span));
        match tokio::time::timeout(wait, task).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(_) => Ok(StopOutcome::Pending),
        }
    }

    /// The spawn of `row` runs on another replica (or did, on one that died): ask its owner to
    /// cancel it through its lease (a dead owner's lease is taken over by the leader, which
    /// honours the request), and wait a while for the server to be stopped.
    async fn cancel_elsewhere(
        &self,
        server: &ServerRef,
        row: &ServerRow,
    ) -> Result<StopOutcome, ApiError> {
        let asked = {
            let mut tx = self.inner.db.begin().await.map_err(db_err)?;
            let asked = db::leases::request_cancel(&mut tx, row.id)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            asked
        };
        if !asked {
            return Err(ApiError::BadRequest(format!(
                "Server {}/{} is pending spawn",
                server.user, server.server
            )));
        }
        tracing::info!(server = %server.user, name = %server.server,
            "asked the replica running the spawn to cancel it");
        let deadline = tokio::time::Instant::now() + self.inner.settings.slow_spawn_timeout;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(CANCEL_POLL).await;
            let now = self
                .inner
                .db
                .server(&server.user, &server.server)
                .await
                .map_err(db_err)?;
            if now.is_none_or(|r| !r.active()) {
                return Ok(StopOutcome::Stopped);
            }
        }
        Ok(StopOutcome::Pending)
    }

    /// Stop the running server of `row` under this replica's lease: route, process, token and
    /// client, then the row (or the server, with `remove`).
    pub(super) async fn do_stop(&self, n: &Names, mut row: ServerRow, remove: bool) {
        if let Err(e) = self.inner.proxy.delete_route(&n.route).await {
            tracing::error!(server = %n.id, error = %e, "cannot delete route");
        }
        if let Err(e) = self
            .inner
            .spawner
            .stop(&n.id, &State(row.state.clone()), false)
            .await
        {
            tracing::error!(server = %n.id, error = %e, "cannot stop server");
            row.pending = None;
            if let Err(e) = self.save_owned(&row).await {
                tracing::warn!(server = %n.id, error = %e, "cannot clear the pending stop");
            }
            self.release(row.id).await;
            return;
        }
        match txn::clear(&self.inner.db, n, &mut row, remove, Some(self.me())).await {
            Ok(true) => tracing::info!(server = %n.id, "server stopped"),
            Ok(false) => tracing::warn!(server = %n.id, "another replica took this stop over"),
            Err(e) => tracing::error!(server = %n.id, error = %e, "cannot mark server stopped"),
        }
    }
}
