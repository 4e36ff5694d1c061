//! Who may run how much Dask: the `[[dask.quota_roles]]` table, as the Data Lake grants it with
//! `stack-dask-{low,medium,high}` (per worker 1 core / 2 GiB, 4 / 8, 12 / 24) and
//! `stack-dask-tuw` (2 cores / 2 GiB, at most 2 workers).
//!
//! The table is ordered highest first and the first row the caller holds wins; a held name
//! matches a row as a group does ([`stackhub_common::groups`]: `stack-dask-medium`,
//! `/services/dask/stack-dask-medium`, the hub's `services:dask:stack-dask-medium`). A caller
//! holding none gets the site's limits (`max_worker_cores`, ...), or is refused (403 naming
//! the roles that grant access) with `require_quota_role`.
//!
//! The quota is resolved once per request into a [`DaskQuota`] and stored with each cluster
//! it creates: it decides the options offered (`GET /api/v1/options`), the options accepted
//! (422 beyond, naming the limit and the role), the clusters one user may have (409), and the
//! workers a cluster gets (`scale` / `adapt` beyond are clamped with a warning, as upstream's
//! `cluster_max_workers`; the scheduler's wanted count is capped in every heartbeat).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use stackhub_common::groups::group_matches;

use super::config::DaskConfig;
use super::error::DaskError;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaskQuotaRole {
    /// The role or group granting this row.
    pub role: String,
    /// Largest `worker_cores` option.
    pub max_worker_cores: u32,
    /// Largest `worker_memory` option, GiB.
    pub max_worker_memory_gib: f64,
    /// Workers one cluster may have; absent = `dask.max_workers_per_cluster`.
    #[serde(default)]
    pub max_workers: Option<u32>,
    /// Clusters (pending or running) the holder may have; absent =
    /// `dask.max_clusters_per_user`.
    #[serde(default)]
    pub max_clusters: Option<usize>,
}

impl DaskQuotaRole {
    fn new(role: &str, cores: u32, memory_gib: f64, max_workers: Option<u32>) -> Self {
        DaskQuotaRole {
            role: role.to_owned(),
            max_worker_cores: cores,
            max_worker_memory_gib: memory_gib,
            max_workers,
            max_clusters: None,
        }
    }
}

/// The Data Lake's `stack-dask` quota roles, highest first. `stack-dask-tuw` (a project's
/// special role) comes last: a caller holding a regular role as well gets that one.
pub fn default_dask_quota_roles() -> Vec<DaskQuotaRole> {
    vec![
        DaskQuotaRole::new("stack-dask-high", 12, 24.0, None),
        DaskQuotaRole::new("stack-dask-medium", 4, 8.0, None),
        DaskQuotaRole::new("stack-dask-low", 1, 2.0, None),
        DaskQuotaRole::new("stack-dask-tuw", 2, 2.0, Some(2)),
    ]
}

/// Smallest `worker_memory` accepted, GiB.
pub(crate) const MIN_WORKER_MEMORY_GIB: f64 = 0.25;

/// The limits that apply to one caller's clusters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaskQuota {
    /// The quota role held; `None`: none (the site's limits apply).
    pub(crate) role: Option<String>,
    /// Largest `worker_cores`.
    pub(crate) max_worker_cores: u32,
    /// Largest `worker_memory`, GiB.
    pub(crate) max_worker_memory_gib: f64,
    /// Workers per cluster.
    pub(crate) max_workers: u32,
    /// Active clusters per user.
    pub(crate) max_clusters: usize,
}

/// Validated cluster options: what the cluster model shows and the worker size.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerOptions {
    /// Threads per worker.
    pub(crate) cores: u32,
    /// Memory per worker, GiB.
    pub(crate) memory_gib: f64,
}

impl WorkerOptions {
    /// The options as the cluster model shows them.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("worker_cores".into(), self.cores.into());
        m.insert("worker_memory".into(), self.memory_gib.into());
        m
    }
}

impl DaskQuota {
    /// The quota of a caller holding `held` (roles and groups), per `config`.
    ///
    /// # Errors
    /// [`DaskError::Forbidden`] naming the roles that grant access, when the caller holds none
    /// and `require_quota_role` is set.
    pub(crate) fn resolve(
        config: &DaskConfig,
        user: &str,
        held: &[String],
    ) -> Result<Self, DaskError> {
        let row = config
            .quota_roles
            .iter()
            .find(|row| held.iter().any(|h| group_matches(h, &row.role)));
        match row {
            Some(row) => Ok(DaskQuota {
                role: Some(row.role.clone()),
                max_worker_cores: row.max_worker_cores,
                max_worker_memory_gib: row.max_worker_memory_gib,
                max_workers: row.max_workers.unwrap_or(config.max_workers_per_cluster),
                max_clusters: row.max_clusters.unwrap_or(config.max_clusters_per_user),
            }),
            None if config.require_quota_role => {
                let roles: Vec<&str> = config.quota_roles.iter().map(|r| r.role.as_str()).collect();
                Err(DaskError::Forbidden(format!(
                    "User {user} holds no Dask quota role; one of {} grants access to Dask clusters at this site",
                    roles.join(", ")
                )))
            }
            None => Ok(DaskQuota {
                role: None,
                max_worker_cores: config.max_worker_cores,
                max_worker_memory_gib: config.max_worker_memory_gib,
                max_workers: config.max_workers_per_cluster,
                max_clusters: config.max_clusters_per_user,
            }),
        }
    }

    /// Where a limit comes from, for messages: `quota role stack-dask-low`, or the `[dask]`
    /// `setting` for callers holding no quota role.
    pub(crate) fn source(&self, setting: &str) -> String {
        match &self.role {
            Some(r) => format!("quota role {r}"),
            None => format!("dask.{setting}, for users holding no Dask quota role"),
        }
    }

    /// The default options: 1 core and 2 GiB, within the limits.
    fn defaults(&self) -> WorkerOptions {
        WorkerOptions {
            cores: 1u32.min(self.max_worker_cores),
            memory_gib: 2.0f64.min(self.max_worker_memory_gib),
        }
    }

    /// The options form (`GET /api/v1/options`): only what this quota allows.
    pub(crate) fn options_spec(&self) -> Value {
        let d = self.defaults();
        json!({ "cluster_options": [
            {"field": "worker_cores", "label": "Worker cores", "default": d.cores,
             "spec": {"type": "int", "min": 1, "max": self.max_worker_cores}},
            {"field": "worker_memory", "label": "Worker memory (GiB)", "default": d.memory_gib,
             "spec": {"type": "float", "min": MIN_WORKER_MEMORY_GIB, "max": self.max_worker_memory_gib}},
        ]})
    }

    /// Checks a create request's `options` against this quota.
    ///
    /// # Errors
    /// [`DaskError::Invalid`] naming the option, its limit and where the limit comes from.
    pub(crate) fn check_options(
        &self,
        options: &Map<String, Value>,
    ) -> Result<WorkerOptions, DaskError> {
        let mut out = self.defaults();
        for (key, value) in options {
            match key.as_str() {
                "worker_cores" => {
                    out.cores = value
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .filter(|v| (1..=self.max_worker_cores).contains(v))
                        .ok_or_else(|| {
                            DaskError::Invalid(format!(
                                "worker_cores must be an integer from 1 to {} (the limit of {}), got {value}",
                                self.max_worker_cores,
                                self.source("max_worker_cores")
                            ))
                        })?;
                }
                "worker_memory" => {
                    out.memory_gib = value
                        .as_f64()
                        .filter(|v| *v >= MIN_WORKER_MEMORY_GIB && *v <= self.max_worker_memory_gib)
                        .ok_or_else(|| {
                            DaskError::Invalid(format!(
                                "worker_memory must be a number of GiB from {MIN_WORKER_MEMORY_GIB} to {} (the limit of {}), got {value}",
                                self.max_worker_memory_gib,
                                self.source("max_worker_memory_gib")
                            ))
                        })?;
                }
                other => {
                    return Err(DaskError::Invalid(format!(
                        "unknown cluster option {other:?}; this site offers worker_cores and worker_memory"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// `count` workers within `max_workers`, with the warning the stock client shows when it
    /// had to be lowered (`{"ok": false, "msg": ...}`).
    pub(crate) fn clamp_scale(&self, count: u32) -> (u32, Option<String>) {
        let max = self.max_workers;
        if count > max {
            (
                max,
                Some(format!(
                    "Scale request of {count} workers exceeds the limit of {max} workers per cluster of {}; scaling to {max} instead",
                    self.source("max_workers_per_cluster")
                )),
            )
        } else {
            (count, None)
        }
    }

    /// Adaptive bounds within `max_workers` (an absent maximum is the limit), with the warning
    /// when they had to be lowered.
    pub(crate) fn clamp_adapt(
        &self,
        minimum: Option<u32>,
        maximum: Option<u32>,
    ) -> (Option<u32>, u32, Option<String>) {
        let max = self.max_workers;
        let hi = maximum.unwrap_or(max);
        let over = hi > max || minimum.is_some_and(|lo| lo > max);
        let (lo, hi) = (minimum.map(|lo| lo.min(max)), hi.min(max));
        let msg = over.then(|| {
            format!(
                "Adapt with maximum={}, minimum={} workers exceeds the limit of {max} workers per cluster of {}; using maximum={hi}, minimum={} instead",
                maximum.map_or("none".to_owned(), |m| m.to_string()),
                minimum.map_or("none".to_owned(), |m| m.to_string()),
                self.source("max_workers_per_cluster"),
                lo.unwrap_or(0)
            )
        });
        (lo, hi, msg)
    }

    /// The refusal of one cluster too many.
    pub(crate) fn too_many_clusters(&self, user: &str, active: usize) -> DaskError {
        DaskError::Conflict(format!(
            "User {user} already has {active} clusters, the limit of {} clusters per user of {}; stop one first",
            self.max_clusters,
            self.source("max_clusters_per_user")
        ))
    }
}

/// Checks the table's rows.
///
/// # Errors
/// The first bad row's problem, naming its index and role.
pub(crate) fn validate_table(table: &[DaskQuotaRole]) -> Result<(), String> {
    for (i, row) in table.iter().enumerate() {
        let bad = |what: String| Err(format!("row {i} (role {:?}): {what}", row.role));
        if row.role.trim().trim_start_matches('/').is_empty() {
            return bad("role must name a role or group".into());
        }
        if row.max_worker_cores == 0 {
            return bad("max_worker_cores must be >= 1".into());
        }
        if !(row.max_worker_memory_gib.is_finite()
            && row.max_worker_memory_gib >= MIN_WORKER_MEMORY_GIB)
        {
            return bad(format!(
                "max_worker_memory_gib must be >= {MIN_WORKER_MEMORY_GIB}"
            ));
        }
        if row.max_clusters == Some(0) {
            return bad("max_clusters must be >= 1 (remove the role to grant no clusters)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn held(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn highest_held_role_wins_by_name_or_group_path() {
        let c = DaskConfig::default();
        let q = DaskQuota::resolve(
            &c,
            "a",
            &held(&["stack-dask-low", "/services/dask/stack-dask-high"]),
        )
        .unwrap();
        assert_eq!(q.role.as_deref(), Some("stack-dask-high"));
        assert_eq!((q.max_worker_cores, q.max_worker_memory_gib), (12, 24.0));
        assert_eq!(q.max_workers, c.max_workers_per_cluster);
        let q = DaskQuota::resolve(&c, "a", &held(&["services:dask:stack-dask-medium"])).unwrap();
        assert_eq!((q.max_worker_cores, q.max_worker_memory_gib), (4, 8.0));
        let q = DaskQuota::resolve(&c, "a", &held(&["stack-dask-tuw"])).unwrap();
        assert_eq!(
            (q.max_worker_cores, q.max_worker_memory_gib, q.max_workers),
            (2, 2.0, 2)
        );
        let q = DaskQuota::resolve(&c, "a", &held(&["stack-dask-tuw", "stack-dask-low"])).unwrap();
        assert_eq!(q.role.as_deref(), Some("stack-dask-low"));
        // No role: the site's limits, or refused naming the roles that grant access.
        let q = DaskQuota::resolve(&c, "a", &held(&["stack-jupyter-high"])).unwrap();
        assert_eq!((q.role, q.max_worker_cores), (None, c.max_worker_cores));
        let strict = DaskConfig {
            require_quota_role: true,
            ..DaskConfig::default()
        };
        let e = DaskQuota::resolve(&strict, "bob", &held(&["stack-dask"])).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN);
        let e = e.to_string();
        assert!(
            e.contains("bob") && e.contains("stack-dask-low") && e.contains("stack-dask-high"),
            "{e}"
        );
    }

    #[test]
    fn options_beyond_the_role_are_refused_naming_limit_and_role() {
        let c = DaskConfig::default();
        let low = DaskQuota::resolve(&c, "a", &held(&["stack-dask-low"])).unwrap();
        let spec = low.options_spec();
        assert_eq!(spec["cluster_options"][0]["spec"]["max"], 1);
        assert_eq!(spec["cluster_options"][1]["spec"]["max"], 2.0);
        let opts = |v: Value| v.as_object().unwrap().clone();
        let e = low
            .check_options(&opts(json!({"worker_cores": 4})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("worker_cores")
                && e.contains("from 1 to 1")
                && e.contains("stack-dask-low")
                && e.contains("got 4"),
            "{e}"
        );
        let e = low
            .check_options(&opts(json!({"worker_memory": 2.5})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("worker_memory") && e.contains("stack-dask-low"),
            "{e}"
        );
        let ok = low
            .check_options(&opts(json!({"worker_memory": 1.5})))
            .unwrap();
        assert_eq!(
            ok,
            WorkerOptions {
                cores: 1,
                memory_gib: 1.5
            }
        );
        let e = low
            .check_options(&opts(json!({"image": "x"})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"image\""), "{e}");
    }

    #[test]
    fn scale_and_adapt_are_clamped_with_a_message_naming_the_role() {
        let c = DaskConfig::default();
        let tuw = DaskQuota::resolve(&c, "a", &held(&["stack-dask-tuw"])).unwrap();
        assert_eq!(tuw.clamp_scale(2), (2, None));
        let (n, msg) = tuw.clamp_scale(5);
        let msg = msg.unwrap();
        assert!(
            n == 2 && msg.contains("limit of 2 workers") && msg.contains("stack-dask-tuw"),
            "{msg}"
        );
        assert_eq!(tuw.clamp_adapt(Some(1), Some(2)), (Some(1), 2, None));
        assert_eq!(tuw.clamp_adapt(None, None), (None, 2, None));
        let (lo, hi, msg) = tuw.clamp_adapt(Some(3), Some(10));
        assert_eq!((lo, hi), (Some(2), 2));
        assert!(msg.unwrap().contains("stack-dask-tuw"));
    }

    #[test]
    fn bad_rows_are_named() {
        assert_eq!(validate_table(&default_dask_quota_roles()), Ok(()));
        let mut t = default_dask_quota_roles();
        t[1].max_worker_cores = 0;
        let e = validate_table(&t).unwrap_err();
        assert!(
            e.contains("row 1") && e.contains("stack-dask-medium"),
            "{e}"
        );
        let mut t = default_dask_quota_roles();
        t[0].max_worker_memory_gib = f64::NAN;
        assert!(
            validate_table(&t)
                .unwrap_err()
                .contains("max_worker_memory_gib")
        );
        t[0].max_worker_memory_gib = 1.0;
        t[0].role = "/".into();
        assert!(validate_table(&t).unwrap_err().contains("role"));
    }

    proptest! {
        /// Whatever a client asks, what is accepted is within the quota, and what is refused
        /// names the option.
        #[test]
        fn accepted_options_are_within_the_quota(cores in any::<i64>(), memory in any::<f64>(), role in 0usize..4) {
            let c = DaskConfig::default();
            let q = DaskQuota::resolve(&c, "a", &[c.quota_roles[role].role.clone()]).unwrap();
            let mut m = Map::new();
            m.insert("worker_cores".into(), cores.into());
            m.insert("worker_memory".into(), serde_json::Number::from_f64(memory).map_or(Value::Null, Value::Number));
            match q.check_options(&m) {
                Ok(w) => {
                    prop_assert!(w.cores >= 1 && w.cores <= q.max_worker_cores);
                    prop_assert!(w.memory_gib >= MIN_WORKER_MEMORY_GIB && w.memory_gib <= q.max_worker_memory_gib);
                }
                Err(e) => prop_assert!(e.to_string().contains("worker_")),
            }
            let (n, _) = q.clamp_scale(u32::try_from(cores.unsigned_abs() % 10_000).unwrap());
            prop_assert!(n <= q.max_workers);
        }
    }
}
