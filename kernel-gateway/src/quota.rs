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

use stackhub_common::{parse_cpus, parse_memory};

pub use stackhub_common::quota::{QuotaRole, default_quota_roles};

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

/// The first row of `table` (highest first) that one of `held` grants, else the row named
/// `fallback`. The gateway cannot tell roles from groups (a token's role claims may carry
/// Keycloak group paths, and the hub's tokens carry its group names), so each held name matches
/// as a group does: by name, by path in any spelling, or by the path's last segment
/// ([`stackhub_common::groups`]).
pub fn resolve(table: &[QuotaRole], held: &[String], fallback: Option<&str>) -> Option<Quota> {
    let row = stackhub_common::quota::highest_held::<&str, _>(table, &[], held)
        .or_else(|| fallback.and_then(|f| table.iter().find(|q| q.role == f)))?;
    Some(Quota {
        role: row.role.clone(),
        cpus: row.cpus,
        memory_bytes: row.memory_bytes().ok()?,
        memory: row.memory.clone(),
        gpus: row.gpus,
        max_kernels: row.max_kernels.map(i64::from),
    })
}

impl Quota {
    /// Forces this quota into `env` (see the module docs), keeping a client's request only when it
    /// parses and is within the limit.
    pub fn apply_env(&self, env: &mut BTreeMap<String, String>) {
        let cpus_limit = self.cpus.to_string();
        let cpus = env
            .get("KERNEL_CPUS")
            .map(|v| v.trim())
            .filter(|v| parse_cpus(v).is_ok_and(|c| c > 0.0 && c <= self.cpus))
            .map(str::to_owned)
            .unwrap_or_else(|| cpus_limit.clone());
        let memory = env
            .get("KERNEL_MEMORY")
            .map(|v| v.trim())
            .filter(|v| parse_memory(v).is_ok_and(|m| m > 0 && m <= self.memory_bytes))
            .map(str::to_owned)
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
        // The hub's group names (in the roles of the tokens it issues) match like paths.
        let q = resolve(&t, &roles(&["services:jupyter:stack-jupyter-high"]), None).unwrap();
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
        // Requests are read as Kubernetes quantities and passed on trimmed.
        for (cpus, memory, kept) in [
            (" 1500m ", "1.5Gi", true),
            ("0.5", "1e9", true),
            ("0", "0", false),
            ("-1", "-1Gi", false),
            ("2.001", "2049Mi", false),
            ("1 500m", "1 Gi", false),
        ] {
            let mut env = BTreeMap::from([
                ("KERNEL_CPUS".to_owned(), cpus.to_owned()),
                ("KERNEL_MEMORY".to_owned(), memory.to_owned()),
            ]);
            q.apply_env(&mut env);
            let want = if kept {
                (cpus.trim(), memory)
            } else {
                ("2", "2Gi")
            };
            assert_eq!(
                (env["KERNEL_CPUS"].as_str(), env["KERNEL_MEMORY"].as_str()),
                want,
                "{cpus} / {memory}"
            );
        }
    }
}
