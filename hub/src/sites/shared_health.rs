//! The sites' health across replicas: only the leading replica checks the sites (at start and
//! every `[s3] health_interval_secs`); on PostgreSQL it stores each round's results in the
//! `site_health` table and the other replicas read that table once a second (one query of a
//! few rows), so every replica answers `GET /hub/api/sites` and picks sites for spawns with the
//! leader's results, at most a second older. Reading is simpler than following the change feed
//! for them and keeps working while a replica cannot hear the feed. When the leader changes,
//! the new one checks at once. A SQLite hub is alone: it checks and keeps the results in
//! memory only.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use tracing::Instrument;

use super::{SiteHealth, SiteRegistry};
use crate::db::site_health::{self, HealthRow};
use crate::db::{Backend, Db};

/// How often a follower reads the leader's results.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

impl SiteRegistry {
    /// Check (leading) or read the leader's results (following) until `stop` resolves.
    pub fn spawn_health_checks(
        self: &Arc<Self>,
        db: Db,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let task = async move {
            tokio::pin!(stop);
            let mut leading = db.leadership();
            loop {
                let leader = *leading.borrow_and_update();
                let wait = if leader {
                    this.check_all().await;
                    if db.backend() == Backend::Postgres
                        && let Err(e) = this.store_health(&db).await
                    {
                        tracing::warn!(error = %e, "cannot store the sites' health");
                    }
                    this.interval
                } else {
                    if let Err(e) = this.load_health(&db).await {
                        tracing::warn!(error = %e, "cannot read the sites' health");
                    }
                    FOLLOW_EVERY
                };
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(wait) => {}
                    _ = leading.changed() => {}
                }
            }
        };
        tokio::spawn(task.instrument(tracing::info_span!("site_health")))
    }

    async fn store_health(&self, db: &Db) -> Result<(), sqlx::Error> {
        let rows: Vec<HealthRow> = {
            let health = self.health.read().await;
            health
                .iter()
                .map(|(site, h)| HealthRow {
                    site: site.clone(),
                    available: h.available,
                    reasons: serde_json::to_string(&h.reasons).unwrap_or_else(|_| "[]".into()),
                    checked_at: h.checked_at.timestamp_micros(),
                    dask_problem: h.dask_problem.clone(),
                })
                .collect()
        };
        // Not `Db::begin`: nothing cached depends on this table (see `crate::db::feed`).
        let mut tx = db.pool().begin().await?;
        site_health::store(&mut tx, &rows).await?;
        tx.commit().await
    }

    async fn load_health(&self, db: &Db) -> Result<(), sqlx::Error> {
        let rows = {
            let mut conn = db.pool().acquire().await?;
            site_health::load(&mut conn).await?
        };
        let mut health = self.health.write().await;
        for row in rows {
            if !self.sites.iter().any(|s| s.id == row.site) {
                continue;
            }
            let Some(checked_at) = DateTime::from_timestamp_micros(row.checked_at) else {
                continue;
            };
            health.insert(
                row.site,
                SiteHealth {
                    available: row.available,
                    reasons: serde_json::from_str(&row.reasons).unwrap_or_default(),
                    checked_at,
                    dask_problem: row.dask_problem,
                },
            );
        }
        Ok(())
    }
}
