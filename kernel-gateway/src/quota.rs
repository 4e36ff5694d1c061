//! Quota roles: a table mapping roles (or groups) a caller holds to per-kernel CPU / memory / GPU
//! limits and a maximum number of kernels, as the Data Lake's API gateway does today with
//! `stack-jupyter-{low,medium,high}` (2 CPU / 2 GiB, 6 CPU / 18 GiB, 12 CPU / 32 GiB).
//!
//! The table is ordered from the highest role to the lowest: the first entry the caller holds wins.
//! The resolved [`Quota`] is forced into the kernel's environment, overriding what the client sent:
//!
//! | variable | value |
//! |---|---|
//! | `KERNEL_CPUS`, `KERNEL_MEMORY`, `KERNEL_GPUS` | the client's request if it parses and is within the limit, else the limit |
//! | `KERNEL_CPUS_LIMIT`, `KERNEL_MEMORY_LIMIT`, `KERNEL_GPUS_LIMIT` | the limit (EG's `kernel-pod.yaml.j2` names) |
//! | `KERNEL_QUOTA_ROLE` | the quota role that applied |
//!
//! Memory is a Kubernetes quantity (`2Gi`, `512Mi`, `1G`, bytes); CPUs a number or millicores (`500m`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One row of the quota table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaRole {
    /// The role (or group, or the last segment of a group path) that grants this quota.
    pub role: String,
    /// CPUs per kernel.
    pub cpus: f64,
    /// Memory per kernel, a Kubernetes quantity (`2Gi`).
    pub memory: String,
    /// GPUs per kernel.
    #[serde(default)]
    pub gpus: u32,
    /// Kernels (running + starting) the holder may have; absent = `max_kernels_per_user`.
    #[serde(default)]
    pub max_kernels: Option<i64>,
}

impl QuotaRole {
    fn new(role: &str, cpus: f64, memory: &str) -> Self {
        QuotaRole {
            role: role.to_owned(),
            cpus,
            memory: memory.to_owned(),
            gpus: 0,
            max_kernels: None,
        }
    }
}

/// The Data Lake's `stack-jupyter` quota roles, highest first.
pub fn default_quota_roles() -> Vec<QuotaRole> {
    vec![
        QuotaRole::new("stack-jupyter-high", 12.0, "32Gi"),
        QuotaRole::new("stack-jupyter-medium", 6.0, "18Gi"),
        QuotaRole::new("stack-jupyter-low", 2.0, "2Gi"),
    ]
}

/// The limits that apply to one caller's kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The quota role that applied.
    pub role: String,
    /// CPUs per kernel.
    pub cpus: f64,
    /// Memory per kernel in bytes.
    pub memory_bytes: u64,
    /// Memory per kernel as configured (a Kubernetes quantity).
    pub memory: String,
    /// GPUs per kernel.
    pub gpus: u32,
    /// Maximum kernels for the holder, if the role sets one.
    pub max_kernels: Option<i64>,
}

/// Parses a Kubernetes memory quantity (`2Gi`, `512Mi`, `1G`, `1e9`, `1024`) into bytes.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses a CPU quantity (`2`, `0.5`, `500m`).
pub fn parse_cpus(s: &str) -> Option<f64> {
    let s = s.trim();
    let n = match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => s.parse::<f64>().ok()?,
    };
    (n.is_finite() && n > 0.0).then_some(n)
}

/// Whether `held` (a role, a group name or a group path like `/services/jupyter/x`) is `role`.
fn holds(held: &str, role: &str) -> bool {
    held == role || held.rsplit('/').next() == Some(role)
}

/// The first row of `table` (highest first) that one of `roles` grants, else the row named
/// `fallback`.
pub fn resolve(table: &[QuotaRole], roles: &[String], fallback: Option<&str>) -> Option<Quota> {
    let row = table
        .iter()
        .find(|q| roles.iter().any(|r| holds(r, &q.role)))
        .or_else(|| fallback.and_then(|f| table.iter().find(|q| q.role == f)))?;
    Some(Quota {
        role: row.role.clone(),
        cpus: row.cpus,
        memory_bytes: parse_memory(&row.memory)?,
        memory: row.memory.clone(),
        gpus: row.gpus,
        max_kernels: row.max_kernels,
    })
}

impl Quota {
    /// Forces this quota into `env` (see the module docs), keeping a client's request only when it
    /// parses and is within the limit.
    pub fn apply_env(&self, env: &mut BTreeMap<String, String>) {
        let cpus_limit = self.cpus.to_string();
        let cpus = env
            .get("KERNEL_CPUS")
            .filter(|v| parse_cpus(v).is_some_and(|c| c <= self.cpus))
            .cloned()
            .unwrap_or_else(|| cpus_limit.clone());
        let memory = env
            .get("KERNEL_MEMORY")
            .filter(|v| parse_memory(v).is_some_and(|m| m > 0 && m <= self.memory_bytes))
            .cloned()
            .unwrap_or_else(|| self.memory.clone());
        let gpus = env
            .get("KERNEL_GPUS")
            .filter(|v| v.trim().parse::<u32>().is_ok_and(|g| g <= self.gpus))
            .cloned()
            .unwrap_or_else(|| self.gpus.to_string());
        env.insert("KERNEL_CPUS".into(), cpus);
        env.insert("KERNEL_MEMORY".into(), memory);
        env.insert("KERNEL_GPUS".into(), gpus);
        env.insert("KERNEL_CPUS_LIMIT".into(), cpus_limit);
        env.insert("KERNEL_MEMORY_LIMIT".into(), self.memory.clone());
        env.insert("KERNEL_GPUS_LIMIT".into(), self.gpus.to_string());
        env.insert("KERNEL_QUOTA_ROLE".into(), self.role.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn memory_and_cpu_quantities() {
        assert_eq!(parse_memory("2Gi"), Some(2 << 30));
        assert_eq!(parse_memory("512Mi"), Some(512 << 20));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1e3"), Some(1000));
        assert_eq!(parse_memory("1024"), Some(1024));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("-1Gi"), None);
        assert_eq!(parse_cpus("500m"), Some(0.5));
        assert_eq!(parse_cpus("6"), Some(6.0));
        assert_eq!(parse_cpus("0"), None);
        assert_eq!(parse_cpus("x"), None);
    }

    #[test]
    fn highest_held_role_wins_and_groups_match_by_last_segment() {
        let t = default_quota_roles();
        let q = resolve(
            &t,
            &roles(&["stack-jupyter-low", "stack-jupyter-medium"]),
            None,
        )
        .unwrap();
        assert_eq!((q.role.as_str(), q.cpus), ("stack-jupyter-medium", 6.0));
        assert_eq!(q.memory_bytes, 18 << 30);
        let q = resolve(&t, &roles(&["/services/jupyter/stack-jupyter-high"]), None).unwrap();
        assert_eq!(q.role, "stack-jupyter-high");
        assert!(resolve(&t, &roles(&["stack-jupyter"]), None).is_none());
        let q = resolve(&t, &roles(&["stack-jupyter"]), Some("stack-jupyter-low")).unwrap();
        assert_eq!(q.role, "stack-jupyter-low");
    }

    #[test]
    fn quota_overrides_client_requests_above_the_limit() {
        let q = resolve(&default_quota_roles(), &roles(&["stack-jupyter-low"]), None).unwrap();
        let mut env = BTreeMap::from([
            ("KERNEL_CPUS".to_owned(), "64".to_owned()),
            ("KERNEL_MEMORY".to_owned(), "1Gi".to_owned()),
            ("KERNEL_GPUS".to_owned(), "4".to_owned()),
            ("KERNEL_MEMORY_LIMIT".to_owned(), "1Ti".to_owned()),
        ]);
        q.apply_env(&mut env);
        assert_eq!(env["KERNEL_CPUS"], "2");
        assert_eq!(
            env["KERNEL_MEMORY"], "1Gi",
            "a request within the quota is kept"
        );
        assert_eq!(env["KERNEL_GPUS"], "0");
        assert_eq!(env["KERNEL_CPUS_LIMIT"], "2");
        assert_eq!(env["KERNEL_MEMORY_LIMIT"], "2Gi");
        assert_eq!(env["KERNEL_QUOTA_ROLE"], "stack-jupyter-low");
    }
}
