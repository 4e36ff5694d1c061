//! The `[dask]` section of the gateway's config.
//!
//! ```toml
//! [dask]
//! enabled = true                  # env STACKHUB_GATEWAY_DASK=false turns it off
//! python = "/opt/dedl/bin/python" # with distributed + dask-gateway; env STACKHUB_GATEWAY_DASK_PYTHON,
//!                                 # default $STACKHUB_DEDL_VENV/bin/python, else python3
//! max_clusters_per_user = 5       # unless the caller's quota role says otherwise
//! max_workers_per_cluster = 16    # the same
//! max_worker_cores = 4            # worker size for callers holding no quota role
//! max_worker_memory_gib = 8.0
//! require_quota_role = false      # true: callers holding no quota role are refused (403)
//! # hub_api_url = "https://hub.example/hub/api"  # checks `Authorization: jupyterhub <token>`
//! #                                              # (GET <hub_api_url>/user); env
//! #                                              # STACKHUB_GATEWAY_DASK_HUB_API_URL
//! hub_auth_cache_secs = 10        # how long the hub's answer for a token is reused
//! # hub_required_scope = "access:services!service=dask-gateway"  # a scope the token must carry
//! idle_timeout = 1800             # seconds without tasks before a cluster stops; 0 = never
//! heartbeat_period = 10           # seconds between the scheduler's heartbeats
//! heartbeat_timeout = 60          # seconds of silence before a running cluster is failed
//! start_timeout = 60              # seconds for a scheduler to report after launch
//! # runtime_dir = "/var/lib/stackhub/dask"  # per-cluster files; default: the temp dir
//! # api_url = "http://10.0.0.5:8888/api"    # how schedulers reach this gateway's API
//! # launcher = "slurm"            # local | slurm | kubernetes; default: default_launcher
//! # scheduler_cores = 1           # a Slurm job's / pod's size for the scheduler
//! # scheduler_memory_gib = 2.0
//! # slurm_profile = "dask"        # [slurm.profiles] entry of Dask jobs; default slurm.default_profile
//! # listen_host = "127.0.0.1"     # --host of schedulers and workers in Slurm jobs; default: all
//! #                               # interfaces, advertising the node's address
//! # image = "ghcr.io/dask/dask:2026.8.0"  # image of scheduler and worker pods; default: the
//! #                               # Kubernetes launcher's default_image
//! # gateway_pod_labels = { "app.kubernetes.io/component" = "gateway" }  # Kubernetes: labels of
//! #                               # this gateway's pods, the only pods besides a cluster's own
//! #                               # that its NetworkPolicy lets in; required to start clusters
//! #                               # as pods
//! # gateway_namespace = "site"    # their namespace; default: the Dask pods' namespace
//! warm_schedulers = 1             # local clusters: schedulers started ahead of demand; 0 = none
//! # dashboard_prefix = "/hub/dask/lumi"  # where browsers see this site's dashboards (the hub's
//! #                               # dashboard route for the site); env
//! #                               # STACKHUB_GATEWAY_DASK_DASHBOARD_PREFIX; default: none
//!
//! [[dask.quota_roles]]            # highest first; default: the Data Lake's stack-dask-*
//! role = "stack-dask-high"        # a role or group (`/services/dask/stack-dask-high`)
//! max_worker_cores = 12
//! max_worker_memory_gib = 24.0
//! # max_workers = 16              # default: max_workers_per_cluster
//! # max_clusters = 5              # default: max_clusters_per_user
//! ```
//!
//! The quota roles are explained in `quota`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::quota::{DaskQuotaRole, default_dask_quota_roles};
use crate::config::ConfigError;

/// Settings of the Dask Gateway-compatible service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaskConfig {
    /// Serve Dask clusters on the gateway's port (default on).
    pub enabled: bool,
    /// The Python that runs `dask scheduler` / `dask worker` (needs `distributed` and
    /// `dask-gateway`).
    pub python: Option<PathBuf>,
    /// Clusters (pending or running) one user may have at once, unless the user's quota role
    /// sets `max_clusters`.
    pub max_clusters_per_user: usize,
    /// Workers one cluster may scale to, unless the owner's quota role sets `max_workers`.
    pub max_workers_per_cluster: u32,
    /// Largest `worker_cores` option of callers holding no quota role.
    pub max_worker_cores: u32,
    /// Largest `worker_memory` option of callers holding no quota role, GiB.
    pub max_worker_memory_gib: f64,
    /// Quota roles, highest first: the first the caller holds sets its limits.
    pub quota_roles: Vec<DaskQuotaRole>,
    /// Refuse callers holding none of `quota_roles` (403 naming them) instead of giving them
    /// the limits above.
    pub require_quota_role: bool,
    /// The hub's API (`https://hub.example/hub/api`): `Authorization: jupyterhub <token>`
    /// (the stock client's `auth="jupyterhub"`) is checked with `GET <hub_api_url>/user`.
    /// Unset: that scheme is refused. `https` (`http` only for loopback hosts).
    pub hub_api_url: Option<String>,
    /// Seconds the hub's answer for one token is reused.
    pub hub_auth_cache_secs: u64,
    /// A scope a jupyterhub token must carry (the hub lists the token's scopes in its answer),
    /// e.g. `access:services!service=dask-gateway` (upstream's `use_service_access_scopes`);
    /// `access:services` counts too. Unset: any token of the user, whatever its scopes (a
    /// token the user gave some service to read their name then also starts clusters).
    pub hub_required_scope: Option<String>,
    /// Seconds a cluster may run no task before it is stopped; 0 = never.
    pub idle_timeout: u64,
    /// Seconds between a scheduler's heartbeats.
    pub heartbeat_period: u64,
    /// Seconds a running cluster's scheduler may stay silent before the cluster is declared
    /// failed and stopped. The scheduler sends no heartbeat while it retires workers
    /// gracefully (moving their data), which takes long on a busy machine: keep this well above
    /// `heartbeat_period`.
    pub heartbeat_timeout: u64,
    /// Seconds a new cluster's scheduler has to send its first heartbeat.
    pub start_timeout: u64,
    /// Where each cluster's files (certificate, key, token, logs) live; default: a directory
    /// in the temp dir.
    pub runtime_dir: Option<PathBuf>,
    /// The API URL schedulers heartbeat to; default `http://<listen address>/api` (loopback
    /// when listening on all addresses).
    pub api_url: Option<String>,
    /// Where clusters run: `local`, `slurm` or `kubernetes` (that launcher must be configured);
    /// default: the gateway's `default_launcher`.
    pub launcher: Option<String>,
    /// CPUs of the scheduler's Slurm job or pod.
    pub scheduler_cores: u32,
    /// Memory of the scheduler's Slurm job or pod, GiB.
    pub scheduler_memory_gib: f64,
    /// The `[slurm.profiles]` entry of Dask jobs (partition, account, time); default
    /// `slurm.default_profile`.
    pub slurm_profile: Option<String>,
    /// The address schedulers and workers in Slurm jobs listen on and advertise (`--host`);
    /// default: all interfaces, advertising the node's primary address. The gateway must
    /// reach it (scheduler proxy, scale calls).
    pub listen_host: Option<String>,
    /// The image of scheduler and worker pods (`distributed` and `dask-gateway`, `python` on
    /// `PATH`); default: the Kubernetes launcher's `default_image`.
    pub image: Option<String>,
    /// Kubernetes: the labels of this gateway's pods. Each cluster's NetworkPolicy admits
    /// only them (to the scheduler's ports) and the cluster's own pods; without them no
    /// cluster starts as pods (their scheduler and dashboard would be open to every pod).
    pub gateway_pod_labels: BTreeMap<String, String>,
    /// Kubernetes: the namespace of this gateway's pods; default: the Dask pods' namespace.
    pub gateway_namespace: Option<String>,
    /// The path before `/clusters/<name>/` at which browsers reach this gateway's dashboards
    /// when something in front publishes them under its own path: the hub serves a site's at
    /// `<base_url>hub/dask/<site id>`. Schedulers run with the whole path as their dashboard
    /// prefix (bokeh links its assets and WebSockets absolutely), clusters' `dashboard_route`
    /// carries it, and this gateway serves dashboards both at `<prefix>/clusters/<name>/` and
    /// `/clusters/<name>/`. Empty (default): none. `/`-separated segments of letters, digits,
    /// `-`, `_`, `.` and `~`, starting with `/`, no trailing `/`.
    pub dashboard_prefix: String,
    /// Local clusters: how many schedulers are kept started (Python and Dask imported) ahead
    /// of demand, so a new cluster runs in a fraction of a cold start; 0 = none. Each holds
    /// an idle interpreter's memory (about 100 MiB). At most 8.
    pub warm_schedulers: usize,
}

impl Default for DaskConfig {
    fn default() -> Self {
        DaskConfig {
            enabled: true,
            python: None,
            max_clusters_per_user: 5,
            max_workers_per_cluster: 16,
            max_worker_cores: 4,
            max_worker_memory_gib: 8.0,
            quota_roles: default_dask_quota_roles(),
            require_quota_role: false,
            hub_api_url: None,
            hub_auth_cache_secs: 10,
            hub_required_scope: None,
            idle_timeout: 1800,
            heartbeat_period: 10,
            heartbeat_timeout: 60,
            start_timeout: 60,
            runtime_dir: None,
            api_url: None,
            launcher: None,
            scheduler_cores: 1,
            scheduler_memory_gib: 2.0,
            slurm_profile: None,
            listen_host: None,
            image: None,
            gateway_pod_labels: BTreeMap::new(),
            gateway_namespace: None,
            dashboard_prefix: String::new(),
            warm_schedulers: 1,
        }
    }
}

impl DaskConfig {
    /// Applies `STACKHUB_GATEWAY_DASK` (`false`/`0` = off), `STACKHUB_GATEWAY_DASK_PYTHON` and,
    /// when no Python is set, `STACKHUB_DEDL_VENV` (`<venv>/bin/python`).
    pub fn apply_env(&mut self, lookup: &impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup("STACKHUB_GATEWAY_DASK") {
            self.enabled = !(v.eq_ignore_ascii_case("false") || v == "0");
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_DASK_PYTHON").filter(|v| !v.is_empty()) {
            self.python = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_DASK_DASHBOARD_PREFIX") {
            self.dashboard_prefix = v;
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_DASK_HUB_API_URL") {
            self.hub_api_url = Some(v).filter(|v| !v.is_empty());
        }
        if self.python.is_none()
            && let Some(venv) = lookup("STACKHUB_DEDL_VENV").filter(|v| !v.is_empty())
        {
            self.python = Some(PathBuf::from(venv).join("bin/python"));
        }
    }

    /// The Python to run Dask with.
    pub fn python(&self) -> PathBuf {
        self.python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.max_worker_cores == 0 {
            return bad("dask.max_worker_cores", "must be >= 1");
        }
        if !(self.max_worker_memory_gib.is_finite() && self.max_worker_memory_gib >= 0.25) {
            return bad("dask.max_worker_memory_gib", "must be >= 0.25");
        }
        if self.heartbeat_period == 0 {
            return bad("dask.heartbeat_period", "must be >= 1");
        }
        if self.heartbeat_timeout <= self.heartbeat_period {
            return bad(
                "dask.heartbeat_timeout",
                &format!(
                    "must be more than dask.heartbeat_period ({} s), got {}",
                    self.heartbeat_period, self.heartbeat_timeout
                ),
            );
        }
        if let Some(l) = &self.launcher
            && !matches!(l.as_str(), "local" | "slurm" | "kubernetes")
        {
            return bad(
                "dask.launcher",
                &format!("{l:?} is not one of \"local\", \"slurm\", \"kubernetes\""),
            );
        }
        if self.scheduler_cores == 0 {
            return bad("dask.scheduler_cores", "must be >= 1");
        }
        if !(self.scheduler_memory_gib.is_finite() && self.scheduler_memory_gib >= 0.25) {
            return bad("dask.scheduler_memory_gib", "must be >= 0.25");
        }
        if self.start_timeout == 0 {
            return bad("dask.start_timeout", "must be >= 1");
        }
        if let Some(url) = &self.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("dask.api_url", &format!("{url} is not an http(s) URL"));
        }
        if self.max_clusters_per_user == 0 {
            return bad("dask.max_clusters_per_user", "must be >= 1");
        }
        super::quota::validate_table(&self.quota_roles)
            .or_else(|reason| bad("dask.quota_roles", &reason))?;
        if let Some(url) = &self.hub_api_url {
            crate::config::https_or_loopback("dask.hub_api_url", url)?;
        }
        for (k, v) in &self.gateway_pod_labels {
            if k.is_empty() || crate::launcher::k8s::label_value(v) != *v {
                return bad(
                    "dask.gateway_pod_labels",
                    &format!("{k:?} = {v:?} is not a Kubernetes label"),
                );
            }
        }
        if self.warm_schedulers > 8 {
            return bad(
                "dask.warm_schedulers",
                &format!("{} is more than 8", self.warm_schedulers),
            );
        }
        if let Err(why) = check_dashboard_prefix(&self.dashboard_prefix) {
            return bad("dask.dashboard_prefix", &why);
        }
        if self.hub_auth_cache_secs > 300 {
            return bad(
                "dask.hub_auth_cache_secs",
                &format!(
                    "{} is too long: a token the hub revoked would stay usable that long (at most 300)",
                    self.hub_auth_cache_secs
                ),
            );
        }
        Ok(())
    }
}

/// Why `prefix` cannot be a dashboard prefix (see [`DaskConfig::dashboard_prefix`]).
fn check_dashboard_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err(format!("{prefix:?} does not start with /"));
    };
    for segment in rest.split('/') {
        let plain = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
        if segment.is_empty() || segment == "." || segment == ".." || !plain {
            return Err(format!(
                "{prefix:?}: the segment {segment:?} is not a plain path segment (letters, \
                 digits, - _ . ~; no empty, . or .. segment, no trailing /)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key_of(c: &DaskConfig) -> Option<&'static str> {
        match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(key_of(&DaskConfig::default()), None);
        let mut c = DaskConfig {
            heartbeat_period: 30,
            ..DaskConfig::default()
        };
        assert_eq!(key_of(&c), None);
        c.heartbeat_timeout = 30;
        assert_eq!(key_of(&c), Some("dask.heartbeat_timeout"));
        c.heartbeat_timeout = 31;
        c.start_timeout = 0;
        assert_eq!(key_of(&c), Some("dask.start_timeout"));
        let c = DaskConfig {
            api_url: Some("ftp://x".into()),
            ..DaskConfig::default()
        };
        assert_eq!(key_of(&c), Some("dask.api_url"));
        let c = DaskConfig {
            launcher: Some("yarn".into()),
            ..DaskConfig::default()
        };
        assert_eq!(key_of(&c), Some("dask.launcher"));
        let c = DaskConfig {
            hub_api_url: Some("http://hub.example/hub/api".into()),
            ..DaskConfig::default()
        };
        assert_eq!(key_of(&c), Some("dask.hub_api_url"));
        let c = DaskConfig {
            hub_auth_cache_secs: 3600,
            ..DaskConfig::default()
        };
        assert_eq!(key_of(&c), Some("dask.hub_auth_cache_secs"));
        let mut c = DaskConfig::default();
        c.gateway_pod_labels
            .insert("app.kubernetes.io/name".into(), "bridge site".into());
        assert_eq!(key_of(&c), Some("dask.gateway_pod_labels"));
        let mut c = DaskConfig::default();
        c.quota_roles[2].max_worker_cores = 0;
        assert_eq!(key_of(&c), Some("dask.quota_roles"));
    }

    #[test]
    fn dashboard_prefixes_are_plain_paths() {
        for ok in ["", "/hub/dask/lumi", "/jh/hub/dask/central", "/a.b~c_d-e"] {
            let c = DaskConfig {
                dashboard_prefix: ok.into(),
                ..DaskConfig::default()
            };
            assert_eq!(key_of(&c), None, "{ok}");
        }
        for bad in [
            "hub/dask", "/hub/", "//x", "/a//b", "/a/../b", "/a/.", "/a%2e", "/a b", "/a?b",
            "/a#b", "/a\\b",
        ] {
            let c = DaskConfig {
                dashboard_prefix: bad.into(),
                ..DaskConfig::default()
            };
            assert_eq!(key_of(&c), Some("dask.dashboard_prefix"), "{bad}");
        }
    }

    #[test]
    fn quota_roles_read_from_toml() {
        let c: crate::Config = toml::from_str(
            "[dask]\nrequire_quota_role = true\nhub_api_url = \"https://hub.example/hub/api\"\n\
             [[dask.quota_roles]]\nrole = \"/projects/big\"\nmax_worker_cores = 32\n\
             max_worker_memory_gib = 64.0\nmax_workers = 50\nmax_clusters = 2\n",
        )
        .unwrap();
        assert!(c.dask.require_quota_role);
        assert_eq!(c.dask.quota_roles.len(), 1);
        assert_eq!(c.dask.quota_roles[0].max_clusters, Some(2));
        assert!(c.validate().is_ok());
        let e = toml::from_str::<crate::Config>(
            "[[dask.quota_roles]]\nrole = \"x\"\nmax_worker_cores = 1\nmax_worker_memory_gib = 1.0\ncores = 2\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cores"), "{e}");
    }
}
