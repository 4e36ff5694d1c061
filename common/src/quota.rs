//! The quota table: rows mapping a role or group to resource limits, ordered highest first, as
//! the Data Lake does with `stack-jupyter-{low,medium,high}` (2 CPU / 2 GiB, 6 CPU / 18 GiB,
//! 12 CPU / 32 GiB).
//!
//! The hub reads it as `[[quotas]]` (per server: CPUs, memory, GPUs, `max_servers`), the
//! gateway as `[[quota_roles]]` (per kernel: CPUs, memory, GPUs, `max_kernels`); a row has the
//! same keys in both, and each ignores the limit that is not its own. The first row a user
//! holds wins ([`highest_held`]): a role by its exact name, a group by any of its spellings
//! ([`crate::groups`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::groups::group_matches;
use crate::quantity::{QuantityError, parse_memory};

/// One row of the quota table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRole {
    /// The role or group granting this quota.
    pub role: String,
    /// CPU cores per server or kernel.
    pub cpus: f64,
    /// Memory per server or kernel, a Kubernetes quantity (`2Gi`, `512Mi`, `1G`, bytes).
    pub memory: String,
    /// GPUs per server or kernel.
    #[serde(default)]
    pub gpus: u32,
    /// Servers (default + named) the holder may run at once; absent = no limit (the hub's).
    #[serde(default)]
    pub max_servers: Option<u32>,
    /// Remote kernels the holder may run at once; absent = the gateway's
    /// `max_kernels_per_user` (the gateway's; the hub shows it).
    #[serde(default)]
    pub max_kernels: Option<u32>,
}

impl QuotaRole {
    /// A row granting `cpus` and `memory` to holders of `role`, no GPU, no count limits.
    pub fn new(role: impl Into<String>, cpus: f64, memory: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            cpus,
            memory: memory.into(),
            gpus: 0,
            max_servers: None,
            max_kernels: None,
        }
    }

    /// The row's memory in bytes.
    ///
    /// # Errors
    /// The memory is not a quantity ([`QuantityError`] naming it).
    pub fn memory_bytes(&self) -> Result<u64, QuantityError> {
        parse_memory(&self.memory)
    }
}

/// The Data Lake's `stack-jupyter` quota roles, highest first (the default table).
pub fn default_quota_roles() -> Vec<QuotaRole> {
    vec![
        QuotaRole::new("stack-jupyter-high", 12.0, "32Gi"),
        QuotaRole::new("stack-jupyter-medium", 6.0, "18Gi"),
        QuotaRole::new("stack-jupyter-low", 2.0, "2Gi"),
    ]
}

/// A row of the table that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("quota row {index} (role `{role}`): {problem}")]
pub struct QuotaRowError {
    /// The row's position in the table, from 0.
    pub index: usize,
    /// The row's role, as written.
    pub role: String,
    /// What is wrong.
    pub problem: QuotaRowProblem,
}

impl QuotaRowError {
    /// The key of the row that is wrong (`role`, `cpus`, `memory`).
    pub fn field(&self) -> &'static str {
        match self.problem {
            QuotaRowProblem::EmptyRole => "role",
            QuotaRowProblem::Cpus(_) => "cpus",
            QuotaRowProblem::Memory(_) | QuotaRowProblem::NoMemory(_) => "memory",
        }
    }
}

/// What is wrong with a quota row.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum QuotaRowProblem {
    /// The role is empty (or only `/`): no one could hold it.
    #[error("role must name a role or group")]
    EmptyRole,
    /// CPUs not above 0 (or not finite).
    #[error("cpus must be above 0, not {0}")]
    Cpus(f64),
    /// Memory is not a quantity.
    #[error("memory: {0}")]
    Memory(QuantityError),
    /// Memory is zero.
    #[error("memory `{0}` must be above 0")]
    NoMemory(String),
}

/// Checks every row: a role, CPUs above 0, memory a quantity above 0.
///
/// # Errors
/// The first bad row, naming its index, role and problem.
pub fn validate(table: &[QuotaRole]) -> Result<(), QuotaRowError> {
    for (index, row) in table.iter().enumerate() {
        let problem = if row.role.trim().trim_start_matches('/').is_empty() {
            Some(QuotaRowProblem::EmptyRole)
        } else if !(row.cpus.is_finite() && row.cpus > 0.0) {
            Some(QuotaRowProblem::Cpus(row.cpus))
        } else {
            match row.memory_bytes() {
                Err(e) => Some(QuotaRowProblem::Memory(e)),
                Ok(0) => Some(QuotaRowProblem::NoMemory(row.memory.clone())),
                Ok(_) => None,
            }
        };
        if let Some(problem) = problem {
            return Err(QuotaRowError {
                index,
                role: row.role.clone(),
                problem,
            });
        }
    }
    Ok(())
}

/// The first row of `table` (highest first) that one of `roles` (by exact name) or one of
/// `groups` (by hub name, provider path or the path's last segment) grants.
pub fn highest_held<'t, R: AsRef<str>, G: AsRef<str>>(
    table: &'t [QuotaRole],
    roles: &[R],
    groups: &[G],
) -> Option<&'t QuotaRole> {
    table.iter().find(|row| {
        roles.iter().any(|r| r.as_ref() == row.role)
            || groups.iter().any(|g| group_matches(g.as_ref(), &row.role))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NONE: &[&str] = &[];

    #[test]
    fn highest_held_row_wins() {
        let table = default_quota_roles();
        let held = highest_held(
            &table,
            &["stack-jupyter", "stack-jupyter-low", "stack-jupyter-high"],
            NONE,
        );
        assert_eq!(held.map(|r| r.role.as_str()), Some("stack-jupyter-high"));
        let held = highest_held(&table, &["stack-jupyter-low"], NONE);
        assert_eq!(held.map(|r| r.cpus), Some(2.0));
        assert_eq!(highest_held(&table, &["stack-jupyter"], NONE), None);
        assert_eq!(highest_held(&table, NONE, NONE), None);
    }

    #[test]
    fn groups_grant_by_any_spelling_roles_only_by_name() {
        let table = default_quota_roles();
        for group in [
            "/services/jupyter/stack-jupyter-medium",
            "services:jupyter:stack-jupyter-medium",
            "stack-jupyter-medium",
            "/stack-jupyter-medium",
        ] {
            let held = highest_held(&table, NONE, &[group]);
            assert_eq!(held.map(|r| r.cpus), Some(6.0), "{group}");
        }
        // A role is a name, not a path.
        assert_eq!(
            highest_held(&table, &["/services/jupyter/stack-jupyter-medium"], NONE),
            None
        );
        // A row naming a path is held through that path in any spelling, not a bare name.
        let table = vec![QuotaRole::new("/projects/big", 64.0, "1Ti")];
        assert!(highest_held(&table, NONE, &["projects:big"]).is_some());
        assert!(highest_held(&table, NONE, &["big"]).is_none());
        assert!(highest_held(&table, NONE, &["/other/big"]).is_none());
    }

    #[test]
    fn rows_are_read_with_the_config_keys() {
        #[derive(Debug, Deserialize)]
        struct File {
            quotas: Vec<QuotaRole>,
        }
        let f: File = toml::from_str(
            "[[quotas]]\nrole = \"big\"\ncpus = 1.5\nmemory = \"3Gi\"\ngpus = 1\n\
             max_servers = 2\nmax_kernels = 4\n",
        )
        .unwrap();
        let row = &f.quotas[0];
        assert_eq!(
            (row.gpus, row.max_servers, row.max_kernels),
            (1, Some(2), Some(4))
        );
        assert_eq!(row.memory_bytes(), Ok(3 << 30));
        let unknown = toml::from_str::<File>(
            "[[quotas]]\nrole = \"x\"\ncpus = 1\nmemory = \"1Gi\"\nram = 2\n",
        );
        assert!(unknown.unwrap_err().to_string().contains("ram"));
        let negative = toml::from_str::<File>(
            "[[quotas]]\nrole = \"x\"\ncpus = 1\nmemory = \"1Gi\"\nmax_kernels = -1\n",
        );
        assert!(negative.is_err());
    }

    #[test]
    fn bad_rows_name_index_field_and_value() {
        let mut t = default_quota_roles();
        assert_eq!(validate(&t), Ok(()));
        t[1].memory = "lots".into();
        let e = validate(&t).unwrap_err();
        assert_eq!((e.index, e.field()), (1, "memory"));
        assert!(e.to_string().contains("`lots`"), "{e}");
        assert!(e.to_string().contains("stack-jupyter-medium"), "{e}");
        t[1].memory = "0Gi".into();
        assert_eq!(validate(&t).unwrap_err().field(), "memory");
        t[1].memory = "1Gi".into();
        t[2].cpus = 0.0;
        let e = validate(&t).unwrap_err();
        assert_eq!((e.index, e.field()), (2, "cpus"));
        t[2].cpus = f64::NAN;
        assert_eq!(validate(&t).unwrap_err().field(), "cpus");
        t[2].cpus = 1.0;
        t[0].role = " / ".into();
        assert_eq!(validate(&t).unwrap_err().field(), "role");
    }

    proptest! {
        #[test]
        fn the_first_held_row_is_chosen(held in prop::collection::vec(0usize..6, 0..6)) {
            let table: Vec<QuotaRole> = (0..6)
                .map(|i| QuotaRole::new(format!("r{i}"), 1.0, "1Gi"))
                .collect();
            let roles: Vec<String> = held.iter().map(|i| format!("r{i}")).collect();
            let groups: Vec<String> = held.iter().map(|i| format!("/g/r{i}")).collect();
            let want = held.iter().min().map(|i| format!("r{i}"));
            let by_role = highest_held(&table, &roles, NONE).map(|r| r.role.clone());
            let by_group = highest_held(&table, NONE, &groups).map(|r| r.role.clone());
            prop_assert_eq!(&by_role, &want);
            prop_assert_eq!(&by_group, &want);
        }
    }
}
