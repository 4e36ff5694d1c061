//! Hub start-up: servers marked running are polled and get their routes back, or are cleaned
//! up when gone; spawns or stops cut short by a hub exit are stopped; pods (or other servers)
//! the spawner finds of its own that no row re-attached to are removed; stale `/user/…` routes
//! are dropped.

use std::collections::HashSet;

use spawner::{State, Status};

use super::pipeline::SpawnOrchestrator;
use super::txn;
use crate::db;

impl SpawnOrchestrator {
    /// Start-up reconciliation: re-attach to running servers, clean up the rest, drop stale
    /// routes.
    ///
    /// # Errors
    /// A database error.
    pub async fn reconcile(&self) -> Result<(), sqlx::Error> {
        let active = {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::servers::active_all(&mut conn).await?
        };
        let mut live = HashSet::new();
        let mut live_ids = Vec::new();
        for (user, mut row) in active {
            let n = self.names(&user, &row.name);
            let state = State(row.state.clone());
            let running = row.pending.is_none()
                && row.url.is_some()
                && matches!(
                    self.inner.spawner.poll(&n.id, &state).await,
                    Ok(Status::Running)
                );
            if running && let Some(url) = row.url.clone() {
                match self.add_route(&n, &url, row.launch.as_ref()).await {
                    Ok(()) => {
                        tracing::info!(server = %n.id, "re-attached to running server");
                        live.insert(proxy_key(&n.route));
                        live_ids.push(n.id.clone());
                        continue;
                    }
                    Err(e) => tracing::error!(server = %n.id, error = %e, "cannot re-add route"),
                }
            }
            tracing::info!(server = %n.id, pending = ?row.pending, "server gone or interrupted; cleaning up");
            if let Err(e) = self.inner.spawner.stop(&n.id, &state, false).await {
                tracing::error!(server = %n.id, error = %e, "cannot stop server");
            }
            txn::clear(&self.inner.db, &n, &mut row, false).await?;
        }
        // Pods (or other servers) the spawner finds of its own that no row re-attached to.
        match self.inner.spawner.remove_orphans(&live_ids).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(count = removed.len(), "removed orphaned servers");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot remove orphaned servers"),
        }
        if let Ok(routes) = self.inner.proxy.routes().await {
            for (path, data) in routes {
                if data.contains_key("user") && !live.contains(&proxy_key(&path)) {
                    tracing::info!(route = %path, "removing stale route");
                    let _ = self.inner.proxy.delete_route(&path).await;
                }
            }
        }
        Ok(())
    }
}

fn proxy_key(path: &str) -> String {
    ::proxy::normalize(path)
}
