//! Quota roles: a config table mapping roles or groups to resource limits, as the Data Lake does
//! with `stack-jupyter-{low,medium,high}` (2 CPU / 2 GiB, 6 CPU / 18 GiB, 12 CPU / 32 GiB: the
//! figures the gateway enforces for remote kernels, see `kernel-gateway/src/quota.rs`).
//!
//! The table and its matching are shared with the gateway ([`stackhub_common::quota`]): ordered
//! highest first, the first row the user holds (a role, or a group by its hub name, its
//! identity-provider path or the path's last segment) wins. The result is stored
//! with the user at every login (`user_quotas`), shown on the home page, added to the REST user
//! model as an extra `quota` field (JupyterHub clients ignore unknown fields), and handed to
//! spawners (`SpawnRequest::quota` plus `CPU_LIMIT` / `MEM_LIMIT` / `STACKHUB_QUOTA*`).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::db::placeholders;

pub use stackhub_common::quota::{QuotaRole, default_quota_roles};

/// The quota a user holds, as stored and shown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct UserQuota {
    /// The quota role that applied.
    pub role: String,
    /// CPU cores per server.
    pub cpus: f64,
    /// Memory per server in bytes.
    pub memory_bytes: u64,
    /// Memory as configured.
    pub memory: String,
    /// GPUs per server.
    pub gpus: u32,
    /// Servers at once, if limited.
    pub max_servers: Option<u32>,
    /// Remote kernels at once, if limited.
    pub max_kernels: Option<u32>,
}

impl UserQuota {
    /// What spawners get.
    pub(crate) fn spawner_quota(&self) -> spawner::Quota {
        spawner::Quota {
            cpu: Some(self.cpus),
            memory_bytes: Some(self.memory_bytes),
            gpus: Some(self.gpus),
        }
    }

    /// Environment variables for the single-user server (JupyterHub's informational
    /// `CPU_LIMIT` / `MEM_LIMIT`, plus ours).
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("CPU_LIMIT".to_owned(), format!("{}", self.cpus));
        env.insert("MEM_LIMIT".to_owned(), self.memory_bytes.to_string());
        env.insert("STACKHUB_QUOTA_ROLE".to_owned(), self.role.clone());
        env.insert(
            "STACKHUB_QUOTA".to_owned(),
            serde_json::to_string(self).unwrap_or_default(),
        );
        env
    }

    /// One line for people: `stack-jupyter-medium: 6 CPUs, 18 GiB memory, no GPU`.
    pub(crate) fn describe(&self) -> String {
        let gib = self.memory_bytes as f64 / f64::from(1u32 << 30);
        let gpus = match self.gpus {
            0 => "no GPU".to_owned(),
            1 => "1 GPU".to_owned(),
            n => format!("{n} GPUs"),
        };
        let mut s = format!(
            "{}: {} CPUs, {} GiB memory, {gpus}",
            self.role,
            trim_float(self.cpus),
            trim_float((gib * 100.0).round() / 100.0)
        );
        if let Some(n) = self.max_servers {
            s.push_str(&format!(", up to {n} servers"));
        }
        if let Some(n) = self.max_kernels {
            s.push_str(&format!(", up to {n} remote kernels"));
        }
        s
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The highest quota in `table` that `roles` (by name) or `groups` grant. Groups match by hub
/// name, by identity-provider path (`/services/jupyter/stack-jupyter-high`) or by the path's
/// last segment ([`stackhub_common::groups`]).
pub(crate) fn resolve(
    table: &[QuotaRole],
    roles: &[String],
    groups: &[String],
) -> Option<UserQuota> {
    stackhub_common::quota::highest_held(table, roles, groups).map(|q| UserQuota {
        role: q.role.clone(),
        cpus: q.cpus,
        memory_bytes: q.memory_bytes().unwrap_or(0),
        memory: q.memory.clone(),
        gpus: q.gpus,
        max_servers: q.max_servers,
        max_kernels: q.max_kernels,
    })
}

/// Store (or clear) a user's quota.
pub(crate) async fn store(
    conn: &mut AnyConnection,
    user_id: i64,
    quota: Option<&UserQuota>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_quotas WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    if let Some(q) = quota {
        sqlx::query("INSERT INTO user_quotas (user_id, quota, updated) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(serde_json::to_string(q).unwrap_or_default())
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The stored quotas of a page of users, in one query.
pub(crate) async fn for_users(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<HashMap<i64, UserQuota>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT user_id, quota FROM user_quotas WHERE user_id IN ({})",
        placeholders(1, ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(*id);
    }
    let mut out = HashMap::new();
    for row in q.fetch_all(conn).await? {
        let text: String = row.try_get("quota")?;
        if let Ok(quota) = serde_json::from_str::<UserQuota>(&text) {
            out.insert(row.try_get("user_id")?, quota);
        }
    }
    Ok(out)
}

/// A user's stored quota.
pub(crate) async fn of_user(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<UserQuota>, sqlx::Error> {
    Ok(for_users(conn, &[user_id]).await?.remove(&user_id))
}

/// Add the `quota` field to user models that show `created` (those the caller may read in
/// full), loading the quotas of the whole page in one query.
pub(crate) async fn attach(
    conn: &mut AnyConnection,
    users: &mut [(i64, &mut Value)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<i64> = users
        .iter()
        .filter(|(_, m)| m.get("created").is_some())
        .map(|(id, _)| *id)
        .collect();
    let mut quotas = for_users(conn, &ids).await?;
    for (id, model) in users.iter_mut() {
        if let Some(obj) = model.as_object_mut()
            && obj.contains_key("created")
        {
            let q = quotas
                .remove(id)
                .and_then(|q| serde_json::to_value(q).ok())
                .unwrap_or(Value::Null);
            obj.insert("quota".to_owned(), q);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_quota_is_stored_and_described() {
        let table = default_quota_roles();
        let groups = vec!["/services/jupyter/stack-jupyter-medium".to_owned()];
        let q = resolve(&table, &["stack-jupyter".to_owned()], &groups).unwrap();
        assert_eq!((q.role.as_str(), q.cpus), ("stack-jupyter-medium", 6.0));
        assert_eq!(q.memory_bytes, 18 << 30);
        assert!(resolve(&table, &["stack-jupyter".to_owned()], &[]).is_none());
        assert_eq!(
            q.describe(),
            "stack-jupyter-medium: 6 CPUs, 18 GiB memory, no GPU"
        );
        assert_eq!(q.env()["MEM_LIMIT"], (18u64 << 30).to_string());
    }
}
