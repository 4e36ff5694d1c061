//! The launch specification: a user's chosen profile, resolved by the hub against access rules
//! and the user's quota into what every spawner reads. Built once per start, stored with the
//! server (pages, admin, metrics and proxy routes read it), never re-derived from the raw
//! `user_options`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

use crate::Quota;
use crate::profile::{Profile, ProfileKind, SpawnerOverride};
use stackhub_common::parse_memory;

/// The profile a server was started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenProfile {
    /// Its slug (`jupyterlab`, `remote-lumi`).
    pub slug: String,
    /// Its title.
    pub display_name: String,
    /// What it starts.
    #[serde(default)]
    pub kind: ProfileKind,
    /// The site of a remote-kernels profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Option key → the chosen choice key, or the free text of an unlisted choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<(String, String)>,
}

/// CPU, memory and GPUs of one server: limits within the user's quota, requests within the
/// limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// CPU cores the server may use.
    pub cpu_limit: Option<f64>,
    /// CPU cores reserved (the limit when the profile asks for no less).
    pub cpu_request: Option<f64>,
    /// Memory bytes the server may use.
    pub memory_limit: Option<u64>,
    /// Memory bytes reserved (the limit when the profile asks for no less).
    pub memory_request: Option<u64>,
    /// GPUs.
    pub gpus: u32,
    /// The extended resource GPUs are requested as; the spawner's default when unset.
    pub gpu_resource: Option<String>,
}

/// Everything a spawner needs to know about what to launch, besides the server's identity and
/// environment. Spawners apply what they understand: the local one `cmd`, `args` and `no_home`;
/// the Kubernetes one all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LaunchSpec {
    /// The profile, when profiles are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ChosenProfile>,
    /// Container image; the spawner's when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The command; the spawner's when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// The arguments; the spawner's when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment the profile adds. The hub has already merged it into
    /// [`crate::SpawnRequest::env`]; kept here as part of the record.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// CPU, memory and GPUs.
    pub resources: Resources,
    /// Node selector of the pod.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// No home directory and no storage volume.
    pub no_home: bool,
    /// A storage claim per named server; the spawner's setting when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_named_server_storage: Option<bool>,
}

/// Why a choice cannot be launched within the user's quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A memory value (after `{value}` substitution) is not a quantity.
    #[error("{field} `{value}` is not a memory quantity such as 2Gi")]
    Quantity {
        /// `mem_limit` or `mem_guarantee`.
        field: &'static str,
        /// What it said.
        value: String,
    },
    /// The profile asks for more GPUs than the user's quota grants.
    #[error("{profile} needs {wanted} GPU(s); your quota grants {granted}")]
    Gpus {
        /// The profile's title.
        profile: String,
        /// GPUs it asks for.
        wanted: u32,
        /// GPUs the quota grants.
        granted: u32,
    },
}

fn min_some<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl LaunchSpec {
    /// The launch of `profile` with its merged `overrides` (the profile's, then each chosen
    /// option's) and `choices`, within `quota`: limits are the quota's, lowered by the
    /// profile; requests are the profile's guarantees, never above the limits, else the limits.
    ///
    /// # Errors
    /// [`LaunchError`] for a memory value that is not a quantity or GPUs beyond the quota.
    pub fn build(
        profile: Option<&Profile>,
        choices: Vec<(String, String)>,
        overrides: &SpawnerOverride,
        quota: &Quota,
    ) -> Result<Self, LaunchError> {
        let memory = |field: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|m| {
                    parse_memory(m)
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or(LaunchError::Quantity {
                            field,
                            value: m.to_owned(),
                        })
                })
                .transpose()
        };
        let cpu_limit = min_some(quota.cpu, overrides.cpu_limit);
        let memory_limit = min_some(
            quota.memory_bytes,
            memory("mem_limit", &overrides.mem_limit)?,
        );
        let cpu_request = min_some(overrides.cpu_guarantee, cpu_limit);
        let memory_request = min_some(
            memory("mem_guarantee", &overrides.mem_guarantee)?,
            memory_limit,
        );
        let granted = quota.gpus.unwrap_or(0);
        let gpus = match overrides.gpus {
            Some(wanted) if quota.gpus.is_some() && wanted > granted => {
                return Err(LaunchError::Gpus {
                    profile: profile.map_or_else(String::new, |p| p.display_name.clone()),
                    wanted,
                    granted,
                });
            }
            Some(wanted) => wanted,
            None => granted,
        };
        let remote = profile.is_some_and(|p| p.kind == ProfileKind::RemoteKernels);
        Ok(Self {
            profile: profile.map(|p| ChosenProfile {
                slug: p.slug.clone(),
                display_name: p.display_name.clone(),
                kind: p.kind,
                site: p.site.clone(),
                choices,
            }),
            image: overrides.image.clone(),
            cmd: overrides.cmd.clone(),
            args: overrides.args.clone(),
            environment: overrides.environment.clone(),
            resources: Resources {
                cpu_limit,
                cpu_request,
                memory_limit,
                memory_request,
                gpus,
                gpu_resource: overrides.gpu_resource.clone(),
            },
            node_selector: overrides.node_selector.clone(),
            tolerations: overrides.tolerations.clone(),
            no_home: remote || overrides.no_home.unwrap_or(false),
            per_named_server_storage: overrides.per_named_server_storage,
        })
    }

    /// A launch without a profile: the spawner's own image and command, limits and GPUs from
    /// `quota` (what the hub plans when no profiles are configured).
    pub fn within_quota(quota: &Quota) -> Self {
        Self {
            resources: Resources {
                cpu_limit: quota.cpu,
                cpu_request: quota.cpu,
                memory_limit: quota.memory_bytes,
                memory_request: quota.memory_bytes,
                gpus: quota.gpus.unwrap_or(0),
                gpu_resource: None,
            },
            ..Self::default()
        }
    }

    /// The profile's slug, if any.
    pub fn profile_slug(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.slug.as_str())
    }

    /// The site of a remote-kernels launch.
    pub fn remote_site(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .filter(|p| p.kind == ProfileKind::RemoteKernels)
            .and_then(|p| p.site.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::default_profiles;

    const GI: u64 = 1 << 30;

    fn quota(cpu: f64, gib: u64, gpus: u32) -> Quota {
        Quota {
            cpu: Some(cpu),
            memory_bytes: Some(gib * GI),
            gpus: Some(gpus),
        }
    }

    #[test]
    fn limits_come_from_the_quota_and_the_profile_only_lowers_them() {
        let lab = &default_profiles()[0];
        let o = SpawnerOverride {
            cpu_limit: Some(16.0),
            mem_limit: Some("1Gi".into()),
            cpu_guarantee: Some(0.5),
            mem_guarantee: Some("8Gi".into()),
            ..SpawnerOverride::default()
        };
        let s = LaunchSpec::build(Some(lab), vec![], &o, &quota(6.0, 18, 0)).unwrap();
        assert_eq!(
            s.resources.cpu_limit,
            Some(6.0),
            "quota caps the profile's 16"
        );
        assert_eq!(
            s.resources.memory_limit,
            Some(GI),
            "the profile lowers memory"
        );
        assert_eq!(s.resources.cpu_request, Some(0.5));
        assert_eq!(
            s.resources.memory_request,
            Some(GI),
            "request never above limit"
        );
        assert_eq!(s.profile_slug(), Some("jupyterlab"));
        assert!(!s.no_home);
        let plain = LaunchSpec::build(
            Some(lab),
            vec![],
            &SpawnerOverride::default(),
            &quota(2.0, 2, 1),
        )
        .unwrap();
        assert_eq!(
            plain.resources.cpu_request,
            Some(2.0),
            "guaranteed QoS by default"
        );
        assert_eq!(plain.resources.gpus, 1);
    }

    #[test]
    fn remote_kernels_have_no_home_and_gpus_stay_within_the_quota() {
        let list = default_profiles();
        let s = LaunchSpec::build(
            Some(&list[2]),
            vec![],
            &SpawnerOverride::default(),
            &quota(2.0, 2, 0),
        )
        .unwrap();
        assert!(s.no_home);
        assert_eq!(s.remote_site(), Some("lumi"));
        let greedy = SpawnerOverride {
            gpus: Some(2),
            ..SpawnerOverride::default()
        };
        let e = LaunchSpec::build(Some(&list[0]), vec![], &greedy, &quota(2.0, 2, 1)).unwrap_err();
        assert!(
            matches!(
                e,
                LaunchError::Gpus {
                    wanted: 2,
                    granted: 1,
                    ..
                }
            ),
            "{e}"
        );
        let bad = SpawnerOverride {
            mem_limit: Some("lots".into()),
            ..SpawnerOverride::default()
        };
        assert!(matches!(
            LaunchSpec::build(Some(&list[0]), vec![], &bad, &Quota::default()),
            Err(LaunchError::Quantity {
                field: "mem_limit",
                ..
            })
        ));
    }

    #[test]
    fn a_launch_without_profile_is_the_quota() {
        for q in [quota(2.0, 2, 1), Quota::default()] {
            assert_eq!(
                LaunchSpec::within_quota(&q),
                LaunchSpec::build(None, vec![], &SpawnerOverride::default(), &q).unwrap()
            );
        }
    }

    #[test]
    fn the_stored_form_round_trips() {
        let list = default_profiles();
        let o = SpawnerOverride {
            image: Some("img:1".into()),
            node_selector: [("pool".to_owned(), "gpu".to_owned())].into(),
            ..SpawnerOverride::default()
        };
        let s = LaunchSpec::build(
            Some(&list[0]),
            vec![("image".into(), "python".into())],
            &o,
            &quota(2.0, 2, 0),
        )
        .unwrap();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LaunchSpec>(&text).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<LaunchSpec>("{}").unwrap(),
            LaunchSpec::default()
        );
    }
}
