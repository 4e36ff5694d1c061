//! Hub start-up: servers marked running are polled and get their routes back, or are cleaned
//! up when gone; spawns or stops cut short by a hub exit are stopped; pods (or other servers)
//! the spawner finds of its own that no row re-attached to are removed; stale `/user/…` routes
//! are dropped. [`SpawnOrchestrator::resync_routes`] is JupyterHub's `check_routes` (`POST
//! /hub/api/proxy`): the proxy is brought back in line with the database and the services.
//! [`SpawnOrchestrator::follow_routes`] runs it whenever the change feed says servers changed,
//! so a replica's routes follow servers other replicas start and stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::Instrument;

use serde_json::{Map, Value};
use spawner::{State, Status};

use super::pipeline::SpawnOrchestrator;
use super::txn;
use crate::db;
use crate::error::ApiError;
use crate::services::Services;

/// What a route check changed: the route paths added (or re-pointed) and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCheck {
    /// Routes added because they were missing or pointed elsewhere.
    pub added: Vec<String>,
    /// Stale routes deleted.
    pub deleted: Vec<String>,
}

impl SpawnOrchestrator {
    /// Start-up reconciliation: re-attach to running servers, clean up the rest, drop stale
    /// routes. Only for a hub alone on its database (SQLite, or the leader seeing no other
    /// replica): pending spawns and stops it finds are stopped.
    ///
    /// # Errors
    /// A database error.
    pub async fn reconcile(&self) -> Result<(), sqlx::Error> {
        self.reconcile_rows(true).await
    }

    /// Start-up reconciliation of a leader beside other live replicas: as
    /// [`Self::reconcile`], but pending spawns and stops (maybe another replica's, in flight)
    /// are left alone, and the servers they start are not removed as orphans.
    ///
    /// # Errors
    /// A database error.
    pub async fn reconcile_beside_replicas(&self) -> Result<(), sqlx::Error> {
        self.reconcile_rows(false).await
    }

    async fn reconcile_rows(&self, stop_pending: bool) -> Result<(), sqlx::Error> {
        let active = {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::servers::active_all(&mut conn).await?
        };
        let mut live = HashSet::new();
        let mut live_ids = Vec::new();
        for (user, mut row) in active {
            let n = self.names(&user, &row.name);
            if !stop_pending && row.pending.is_some() {
                tracing::info!(server = %n.id, pending = ?row.pending,
                    "left alone: pending, maybe on another live replica");
                live_ids.push(n.id.clone());
                continue;
            }
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
            txn::clear(&self.inner.db, &n, &mut row, false, None).await?;
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

impl SpawnOrchestrator {
    /// JupyterHub's `check_routes`: every ready server in the database and every service with
    /// a `url` gets its route back when it is missing or points elsewhere (a route already
    /// right is left alone, keeping its activity); routes of servers or services the hub no
    /// longer knows are deleted. Pending servers keep whatever route they have. The hub's own
    /// route is added when missing ([`crate::proxy::Proxy::ensure_hub_route`]) and never
    /// deleted, nor are routes the hub did not make (no `user` or `service` data).
    ///
    /// # Errors
    /// A database or proxy failure (500).
    pub async fn resync_routes(
        &self,
        services: &Services,
        why: Resync,
    ) -> Result<RouteCheck, ApiError> {
        self.inner
            .proxy
            .ensure_hub_route()
            .await
            .map_err(ApiError::internal)?;
        let current: HashMap<String, (String, Map<String, Value>)> = self
            .inner
            .proxy
            .routes()
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|(path, data)| (proxy_key(&path), (path, data)))
            .collect();
        let points_at = |key: &str, url: &str| {
            current
                .get(key)
                .and_then(|(_, d)| d.get("target"))
                .and_then(Value::as_str)
                == Some(url)
        };
        let active = {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::servers::active_all(&mut conn).await?
        };
        let mut check = RouteCheck::default();
        let mut good = HashSet::new();
        for (user, row) in active {
            let n = self.names(&user, &row.name);
            let key = proxy_key(&n.route);
            good.insert(key.clone());
            let Some(url) = row.url.as_deref().filter(|_| row.ready()) else {
                continue;
            };
            if !points_at(&key, url) {
                why.note(&n.route, "adding missing route");
                self.add_route(&n, url, row.launch.as_ref())
                    .await
                    .map_err(ApiError::internal)?;
                check.added.push(n.route.clone());
            }
        }
        for s in services.iter() {
            let Some(url) = &s.config.url else { continue };
            let key = proxy_key(&s.prefix);
            good.insert(key.clone());
            if !points_at(&key, url) {
                why.note(&s.prefix, "adding missing route");
                self.inner
                    .proxy
                    .add_route(&s.prefix, url, s.route_data())
                    .await
                    .map_err(ApiError::internal)?;
                check.added.push(s.prefix.clone());
            }
        }
        for (key, (path, data)) in &current {
            let ours = data.contains_key("user") || data.contains_key("service");
            if ours && !data.contains_key("hub") && !good.contains(key) {
                why.note(path, "deleting stale route");
                self.inner
                    .proxy
                    .delete_route(path)
                    .await
                    .map_err(ApiError::internal)?;
                check.deleted.push(path.clone());
            }
        }
        check.added.sort();
        check.deleted.sort();
        Ok(check)
    }
}

/// Why the routes are re-synced, which decides how loudly each change is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// A check or repair (`POST /hub/api/proxy`): a change means the proxy had drifted (warn).
    Repair,
    /// Following the change feed: changes are other replicas' routine work (debug; the
    /// follower logs a summary).
    FollowFeed,
}

impl Resync {
    fn note(self, route: &str, what: &str) {
        match self {
            Self::Repair => tracing::warn!(route, "{what}"),
            Self::FollowFeed => tracing::debug!(route, "{what}"),
        }
    }
}

impl SpawnOrchestrator {
    /// Replicas on PostgreSQL: re-sync the routes ([`Self::resync_routes`]) each time the change
    /// feed says servers changed (written by any replica) or was heard again after a loss, until
    /// `stop` resolves. Changes during a re-sync make one more. The task is owned by the caller.
    pub fn follow_routes(
        &self,
        services: Arc<Services>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        let db = self.inner.db.clone();
        let task = async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    () = db.servers_changed() => {}
                }
                match this.resync_routes(&services, Resync::FollowFeed).await {
                    Ok(check) if check != RouteCheck::default() => {
                        tracing::info!(added = ?check.added, deleted = ?check.deleted,
                            "routes follow the database");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot re-sync the routes"),
                }
            }
        };
        tokio::spawn(task.instrument(tracing::info_span!("route_follower")))
    }
}

fn proxy_key(path: &str) -> String {
    ::proxy::normalize(path)
}
