//! The sites' health as the leading replica last checked it (see `crate::sites`).

use sqlx::{AnyConnection, Row};

/// One site's last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthRow {
    pub site: String,
    pub available: bool,
    /// JSON list of strings.
    pub reasons: String,
    /// Microseconds since the epoch.
    pub checked_at: i64,
    /// Why its Dask Gateway is not usable, if it is not.
    pub dask_problem: Option<String>,
}

/// Store the results of one round of checks (replacing each site's previous one).
pub(crate) async fn store(conn: &mut AnyConnection, rows: &[HealthRow]) -> Result<(), sqlx::Error> {
    for r in rows {
        sqlx::query(
            "INSERT INTO site_health (site, available, reasons, checked_at, dask_problem) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site) DO UPDATE SET \
             available = excluded.available, reasons = excluded.reasons, \
             checked_at = excluded.checked_at, dask_problem = excluded.dask_problem",
        )
        .bind(&r.site)
        .bind(i64::from(r.available))
        .bind(&r.reasons)
        .bind(r.checked_at)
        .bind(r.dask_problem.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every stored result.
pub(crate) async fn load(conn: &mut AnyConnection) -> Result<Vec<HealthRow>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT site, available, reasons, checked_at, dask_problem FROM site_health")
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(HealthRow {
                site: r.try_get("site")?,
                available: r.try_get::<i64, _>("available")? != 0,
                reasons: r.try_get("reasons")?,
                checked_at: r.try_get("checked_at")?,
                dask_problem: r.try_get("dask_problem")?,
            })
        })
        .collect()
}
