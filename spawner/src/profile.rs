//! Server profiles: what a user may choose on the server-options picker, and what each choice
//! changes in the launch. The one model the hub (which offers and resolves them) and every
//! spawner (which reads the resolved [`crate::LaunchSpec`]) share.
//!
//! The schema is KubeSpawner's `profile_list` (compat spec section 5): `display_name`,
//! `description`, `slug` (made from the display name when missing), `default`, spawner
//! overrides (`spawner_override`, also read as `kubespawner_override`) and `profile_options`
//! with `choices` and an optional validated free-text `unlisted_choice`. Added here:
//! `allowed_roles` / `allowed_groups` on profiles and on choices, a `kind` (`lab` or
//! `remote-kernels`), a `site` (where a remote-kernels profile's kernels run; a full Lab's S3
//! space) and a `warning` shown with the profile.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

/// The choice value meaning "the free text" (KubeSpawner's `unlisted-choice`).
pub const UNLISTED: &str = "unlisted-choice";

/// What a profile starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// A JupyterLab with its kernels next to it.
    #[default]
    Lab,
    /// A home-less JupyterLab whose kernels run at a remote site.
    RemoteKernels,
}

impl ProfileKind {
    /// The name in configs and JSON (`lab`, `remote-kernels`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lab => "lab",
            Self::RemoteKernels => "remote-kernels",
        }
    }
}

/// Spawner settings a profile, a choice or an unlisted choice changes (KubeSpawner's
/// `kubespawner_override`, by its key names where it has them). In an unlisted choice's
/// override, `{value}` stands for the text the user typed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnerOverride {
    /// Container image (Kubernetes spawner).
    pub image: Option<String>,
    /// CPU cores the server may use; never more than the user's quota.
    pub cpu_limit: Option<f64>,
    /// CPU cores reserved for the server (the request); never more than its limit.
    pub cpu_guarantee: Option<f64>,
    /// Memory limit, a Kubernetes quantity (`4Gi`); never more than the user's quota.
    pub mem_limit: Option<String>,
    /// Memory reserved for the server (the request), a quantity; never more than its limit.
    pub mem_guarantee: Option<String>,
    /// GPUs; never more than the user's quota grants.
    pub gpus: Option<u32>,
    /// The extended resource GPUs are requested as (default: the spawner's, `nvidia.com/gpu`).
    pub gpu_resource: Option<String>,
    /// Environment variables added to the server's (merged key by key).
    pub environment: BTreeMap<String, String>,
    /// The command (replaces the spawner's).
    pub cmd: Option<Vec<String>>,
    /// The arguments (replace the spawner's).
    pub args: Option<Vec<String>>,
    /// Node selector of the pod (merged key by key).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pod (appended).
    pub tolerations: Vec<Toleration>,
    /// No home: an empty working directory that does not outlive the server and no storage
    /// volume (always so for `remote-kernels` profiles, whose files live in S3).
    pub no_home: Option<bool>,
    /// A storage claim per named server instead of one per user.
    pub per_named_server_storage: Option<bool>,
}

impl SpawnerOverride {
    /// Apply `other` on top of `self` (later wins; environments merge), with `{value}`
    /// replaced by `value` in every string when given.
    pub fn merge(&mut self, other: &Self, value: Option<&str>) {
        let sub = |s: &String| match value {
            Some(v) => s.replace("{value}", v),
            None => s.clone(),
        };
        let subs = |l: &Vec<String>| l.iter().map(sub).collect::<Vec<_>>();
        if let Some(i) = &other.image {
            self.image = Some(sub(i));
        }
        if other.cpu_limit.is_some() {
            self.cpu_limit = other.cpu_limit;
        }
        if other.cpu_guarantee.is_some() {
            self.cpu_guarantee = other.cpu_guarantee;
        }
        if let Some(m) = &other.mem_limit {
            self.mem_limit = Some(sub(m));
        }
        if let Some(m) = &other.mem_guarantee {
            self.mem_guarantee = Some(sub(m));
        }
        if other.gpus.is_some() {
            self.gpus = other.gpus;
        }
        if let Some(g) = &other.gpu_resource {
            self.gpu_resource = Some(g.clone());
        }
        for (k, v) in &other.environment {
            self.environment.insert(k.clone(), sub(v));
        }
        if let Some(c) = &other.cmd {
            self.cmd = Some(subs(c));
        }
        if let Some(a) = &other.args {
            self.args = Some(subs(a));
        }
        for (k, v) in &other.node_selector {
            self.node_selector.insert(k.clone(), sub(v));
        }
        self.tolerations.extend(other.tolerations.iter().cloned());
        if other.no_home.is_some() {
            self.no_home = other.no_home;
        }
        if other.per_named_server_storage.is_some() {
            self.per_named_server_storage = other.per_named_server_storage;
        }
    }
}

/// One choice of a profile option.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Choice {
    /// Shown in the list.
    pub display_name: String,
    /// Chosen when the user names none (else the first choice).
    pub default: bool,
    /// What it changes.
    #[serde(alias = "kubespawner_override")]
    pub spawner_override: SpawnerOverride,
    /// Roles allowed to pick it (empty = everyone who may use the profile).
    pub allowed_roles: Vec<String>,
    /// Groups allowed to pick it (hub names or identity-provider paths).
    pub allowed_groups: Vec<String>,
}

/// A free-text choice, validated by a regular expression.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnlistedChoice {
    /// Offered at all.
    pub enabled: bool,
    /// Label of the text field.
    pub display_name: String,
    /// Label of the entry in the list (default `Other...`).
    pub display_name_in_choices: Option<String>,
    /// The whole text must match it.
    pub validation_regex: Option<String>,
    /// Shown when it does not match.
    pub validation_message: Option<String>,
    /// What it changes (`{value}` = the text).
    #[serde(alias = "kubespawner_override")]
    pub spawner_override: SpawnerOverride,
}

/// One option of a profile: a list of choices, maybe with free text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileOption {
    /// Label of the field.
    pub display_name: String,
    /// The choices, in order, by key.
    pub choices: IndexMap<String, Choice>,
    /// Free text instead of a listed choice.
    pub unlisted_choice: Option<UnlistedChoice>,
}

/// One profile (`[[profile_list]]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Title shown on the picker.
    pub display_name: String,
    /// A sentence under the title.
    pub description: String,
    /// Identifier in `user_options.profile`; made from `display_name` when empty.
    pub slug: String,
    /// Chosen when the user names none (else the first allowed profile).
    pub default: bool,
    /// What it starts.
    pub kind: ProfileKind,
    /// The site of a remote-kernels profile (`central`, `lumi`, …): where its kernels run. For
    /// a full JupyterLab, the site of the user's S3 space in its S3 browser (unset: `central`
    /// when the hub has such a site; empty: none).
    pub site: Option<String>,
    /// Shown with the profile (e.g. no home directory).
    pub warning: Option<String>,
    /// What it changes.
    #[serde(alias = "kubespawner_override")]
    pub spawner_override: SpawnerOverride,
    /// The options, in order, by key.
    pub profile_options: IndexMap<String, ProfileOption>,
    /// Roles allowed to use it (empty and no groups = everyone).
    pub allowed_roles: Vec<String>,
    /// Groups allowed to use it (hub names or identity-provider paths such as `/projects/x`).
    pub allowed_groups: Vec<String>,
}

/// The warning of the Data Lake's remote-kernel profiles.
pub const REMOTE_WARNING: &str =
    "Jupyter Home not available & use of Object Storage S3 for Data Exchange mandatory";

/// The Data Lake's six server options (dedl-stack.md sections 4 and 9).
pub fn default_profiles() -> Vec<Profile> {
    let mut list = vec![Profile {
        display_name: "JupyterLab (Full working environment)".to_owned(),
        description: "JupyterLab with your persistent home directory; kernels run next to it."
            .to_owned(),
        slug: "jupyterlab".to_owned(),
        default: true,
        ..Profile::default()
    }];
    for (site, label) in [
        ("central", "Central Site"),
        ("lumi", "LUMI Bridge"),
        ("leonardo", "LEONARDO Bridge"),
        ("eumetsat", "EUMETSAT Bridge"),
        ("marenostrum", "MareNostrum Bridge"),
    ] {
        list.push(Profile {
            display_name: format!("Remote Compute Kernels - {label}"),
            description: format!("JupyterLab whose kernels run at the {label}, next to its data."),
            slug: format!("remote-{site}"),
            kind: ProfileKind::RemoteKernels,
            site: Some(site.to_owned()),
            warning: Some(REMOTE_WARNING.to_owned()),
            ..Profile::default()
        });
    }
    list
}

/// A slug from a display name: lower-case letters, digits and single dashes.
pub fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Fill in what the config may leave out (slugs). Called when the config is loaded.
pub fn normalize(list: &mut [Profile]) {
    for p in list {
        if p.slug.is_empty() {
            p.slug = slugify(&p.display_name);
        }
    }
}

fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_override(key: &str, o: &SpawnerOverride) -> Result<(), (String, String)> {
    for (name, cpu) in [
        ("cpu_limit", o.cpu_limit),
        ("cpu_guarantee", o.cpu_guarantee),
    ] {
        if let Some(c) = cpu
            && !(c.is_finite() && c > 0.0)
        {
            return Err((format!("{key}.{name}"), "must be above 0".to_owned()));
        }
    }
    for (name, mem) in [
        ("mem_limit", &o.mem_limit),
        ("mem_guarantee", &o.mem_guarantee),
    ] {
        if let Some(m) = mem
            && !m.contains("{value}")
            && !stackhub_common::parse_memory(m).is_ok_and(|b| b > 0)
        {
            return Err((
                format!("{key}.{name}"),
                format!("`{m}` is not a memory quantity such as 2Gi"),
            ));
        }
    }
    if o.cmd.as_ref().is_some_and(Vec::is_empty) {
        return Err((format!("{key}.cmd"), "must name a program".to_owned()));
    }
    Ok(())
}

/// Check the list (called by `Config::validate`): the key and reason of the first problem.
pub fn validate(list: &[Profile]) -> Result<(), (String, String)> {
    let mut slugs = std::collections::HashSet::new();
    let mut defaults = 0;
    for (i, p) in list.iter().enumerate() {
        let key = format!("profile_list[{i}]");
        if p.display_name.trim().is_empty() {
            return Err((
                format!("{key}.display_name"),
                "must not be empty".to_owned(),
            ));
        }
        let slug = if p.slug.is_empty() {
            slugify(&p.display_name)
        } else {
            p.slug.clone()
        };
        if !valid_key(&slug) {
            return Err((
                format!("{key}.slug"),
                format!("`{slug}` must be 1-64 letters, digits, `-`, `_` or `.`"),
            ));
        }
        if !slugs.insert(slug.clone()) {
            return Err((format!("{key}.slug"), format!("`{slug}` is used twice")));
        }
        defaults += usize::from(p.default);
        if p.kind == ProfileKind::RemoteKernels && p.site.as_deref().is_none_or(str::is_empty) {
            return Err((
                format!("{key}.site"),
                "a remote-kernels profile needs a site".to_owned(),
            ));
        }
        check_override(&format!("{key}.spawner_override"), &p.spawner_override)?;
        for (name, opt) in &p.profile_options {
            let okey = format!("{key}.profile_options.{name}");
            if !valid_key(name) || name == "profile" || name.contains("--") {
                return Err((
                    okey,
                    "option keys are letters, digits, `-`, `_` or `.`, without `--`, and not `profile`"
                        .to_owned(),
                ));
            }
            let unlisted = opt.unlisted_choice.as_ref().filter(|u| u.enabled);
            if opt.choices.is_empty() && unlisted.is_none() {
                return Err((
                    okey,
                    "needs choices or an enabled unlisted_choice".to_owned(),
                ));
            }
            for (ck, c) in &opt.choices {
                if !valid_key(ck) || ck == UNLISTED {
                    return Err((
                        format!("{okey}.choices.{ck}"),
                        "choice keys are letters, digits, `-`, `_` or `.` (not `unlisted-choice`)"
                            .to_owned(),
                    ));
                }
                check_override(
                    &format!("{okey}.choices.{ck}.spawner_override"),
                    &c.spawner_override,
                )?;
            }
            if let Some(u) = unlisted
                && let Some(re) = &u.validation_regex
                && let Err(e) = regex::Regex::new(&format!("^(?:{re})$"))
            {
                return Err((
                    format!("{okey}.unlisted_choice.validation_regex"),
                    format!("not a regular expression: {e}"),
                ));
            }
        }
    }
    if defaults > 1 {
        return Err((
            "profile_list".to_owned(),
            "at most one profile may be the default".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_six_data_lake_options() {
        let list = default_profiles();
        validate(&list).unwrap();
        let names: Vec<&str> = list.iter().map(|p| p.display_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "JupyterLab (Full working environment)",
                "Remote Compute Kernels - Central Site",
                "Remote Compute Kernels - LUMI Bridge",
                "Remote Compute Kernels - LEONARDO Bridge",
                "Remote Compute Kernels - EUMETSAT Bridge",
                "Remote Compute Kernels - MareNostrum Bridge",
            ]
        );
        assert!(
            list[1..]
                .iter()
                .all(|p| p.warning.as_deref() == Some(REMOTE_WARNING)
                    && p.kind == ProfileKind::RemoteKernels)
        );
        assert_eq!(slugify("GPU box (A6000)!"), "gpu-box-a6000");
    }

    #[test]
    fn bad_lists_name_the_key() {
        let mut list = default_profiles();
        list[2].slug = "remote-central".into();
        assert_eq!(validate(&list).unwrap_err().0, "profile_list[2].slug");
        let mut list = default_profiles();
        list[3].site = None;
        assert_eq!(validate(&list).unwrap_err().0, "profile_list[3].site");
        let mut list = default_profiles();
        list[0].profile_options.insert(
            "image".into(),
            ProfileOption {
                display_name: "Image".into(),
                unlisted_choice: Some(UnlistedChoice {
                    enabled: true,
                    validation_regex: Some("(".into()),
                    ..UnlistedChoice::default()
                }),
                ..ProfileOption::default()
            },
        );
        assert_eq!(
            validate(&list).unwrap_err().0,
            "profile_list[0].profile_options.image.unlisted_choice.validation_regex"
        );
    }
}
