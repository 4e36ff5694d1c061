//! `[slurm]` in the gateway's TOML config.
//!
//! ```toml
//! [slurm]
//! slurm_conf = "/etc/slurm/slurm.conf"     # SLURM_CONF for sbatch/squeue/scancel (default: theirs)
//! callback_listen = "0.0.0.0:8877"          # where kernel-side launchers call back
//! callback_url = "https://gw.lumi.example/slurm-callback"  # as the compute nodes reach it
//! launcher_command = ["stackhub-kernel-launcher"]          # on the compute node's PATH
//! state_dir = "/var/lib/stackhub-gateway/slurm"            # kernel records + the master key
//! instance = "lumi"                         # tags jobs (--comment), so orphans are ours only
//! poll_interval = 1.0                       # seconds between squeue polls
//! launch_timeout = 600                      # seconds a job may queue + start (server-side)
//! submit_prefix = ["sudo", "-n", "-u", "{user}", "--"]   # run sbatch/scancel as the mapped user
//! user_map = { "alice@example.org" = "alice01" }          # identity -> site account
//! secrets_dir = "/home/{user}/.stackhub/secrets"          # one-time tokens (see below)
//! default_profile = "small"
//! [slurm.profiles.small]
//! partition = "debug"
//! account = "project_465000"
//! qos = "normal"
//! reservation = ""
//! time = "04:00:00"
//! launch_timeout = 900                      # overrides the site-wide value
//! extra_args = ["--constraint=cpu"]
//! ```
//! No secret goes into the job script, `sbatch`'s arguments or the job's `--export`
//! environment: the job trades a one-time token, in a file only its user reads (mode 0600,
//! written as that user through `submit_prefix` when one is set), for the kernel key, the
//! call-back secret and the credentials of the kernel's environment. `secrets_dir` must be
//! visible from the compute nodes (a shared filesystem on a real cluster).
//!
//! Hazard: without `submit_prefix` every user's job runs under the gateway's own Unix account,
//! so one user's kernel can read another's files, tokens and processes; the gateway warns at
//! start. Give each user their site account (`submit_prefix = ["sudo", "-n", "-u", "{user}",
//! "--"]`) when more than one user shares the site.
//!
//! A kernelspec runs on Slurm with `"metadata": {"stackhub": {"launcher": "slurm",
//! "slurm_profile": "small", "pending_start": true}}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The Slurm launcher's settings; see the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// `SLURM_CONF` for the Slurm clients; `None` = their default.
    pub slurm_conf: Option<PathBuf>,
    /// Directory of `sbatch`, `squeue`, `scancel`; `None` = `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// Address of the call-back listener.
    pub callback_listen: String,
    /// URL jobs call back to; `None` = `http://` + the listener's address.
    pub callback_url: Option<String>,
    /// Kernel-side launcher command line (the kernelspec argv follows after `--`).
    pub launcher_command: Vec<String>,
    /// Kernel records and the master key (mode 0600 files).
    pub state_dir: PathBuf,
    /// This gateway's name in job comments (`stackhub:<instance>:<kernel id>`).
    pub instance: String,
    /// Name of every kernel job (what `squeue --name` polls).
    pub job_name: String,
    /// Seconds between `squeue` polls.
    pub poll_interval: f64,
    /// Seconds a job may wait in the queue and start before it is cancelled.
    pub launch_timeout: u64,
    /// Seconds an in-place restart may take.
    pub restart_timeout: u64,
    /// Command prefix for `sbatch` / `scancel` (`{user}` = the mapped account); empty = run them
    /// as the gateway's own user.
    pub submit_prefix: Vec<String>,
    /// Identity -> site account for `{user}`; unmapped users keep their name.
    pub user_map: BTreeMap<String, String>,
    /// Directory of the jobs' one-time token files (`{user}` = the site account), visible from
    /// the compute nodes; `None` = `<state_dir>/secrets`.
    pub secrets_dir: Option<String>,
    /// Address the kernel reports (`STACKHUB_KERNEL_IP`); `None` = the node's resolved address.
    pub kernel_ip: Option<String>,
    /// `--output` of kernel jobs (`%j` = job id); `None` = `<state_dir>/jobs/%j.out`.
    pub job_output: Option<String>,
    /// Profile used by kernelspecs naming none.
    pub default_profile: Option<String>,
    /// Named sets of job options.
    pub profiles: BTreeMap<String, SlurmProfile>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            slurm_conf: None,
            bin_dir: None,
            callback_listen: "127.0.0.1:8877".to_owned(),
            callback_url: None,
            launcher_command: vec!["stackhub-kernel-launcher".to_owned()],
            state_dir: std::env::temp_dir().join("stackhub-gateway-slurm"),
            instance: "default".to_owned(),
            job_name: "stackhub-kernel".to_owned(),
            poll_interval: 1.0,
            launch_timeout: 600,
            restart_timeout: 60,
            submit_prefix: Vec::new(),
            user_map: BTreeMap::new(),
            secrets_dir: None,
            kernel_ip: None,
            job_output: None,
            default_profile: None,
            profiles: BTreeMap::new(),
        }
    }
}

/// Job options of one profile (site partition, account, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmProfile {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--reservation`.
    pub reservation: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time` (wall time, e.g. `04:00:00`).
    pub time: Option<String>,
    /// Seconds a job may queue and start; overrides [`SlurmConfig::launch_timeout`].
    pub launch_timeout: Option<u64>,
    /// More `sbatch` arguments.
    pub extra_args: Vec<String>,
}

impl SlurmProfile {
    /// `sbatch` arguments of this profile.
    pub(super) fn sbatch_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("reservation", &self.reservation),
            ("qos", &self.qos),
            ("time", &self.time),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                out.push(format!("--{flag}={v}"));
            }
        }
        out.extend(self.extra_args.iter().cloned());
        out
    }
}

impl SlurmConfig {
    /// Checks values that would only fail at the first launch.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.launcher_command.is_empty() {
            return Err("slurm.launcher_command must not be empty".into());
        }
        if !(self.poll_interval.is_finite() && self.poll_interval >= 0.05) {
            return Err("slurm.poll_interval must be >= 0.05".into());
        }
        if self.launch_timeout == 0 || self.restart_timeout == 0 {
            return Err("slurm.launch_timeout and slurm.restart_timeout must be >= 1".into());
        }
        if self.job_name.is_empty() || self.instance.contains(':') {
            return Err(
                "slurm.job_name must not be empty and slurm.instance must not contain ':'".into(),
            );
        }
        if let Some(p) = &self.default_profile
            && !self.profiles.contains_key(p)
        {
            return Err(format!(
                "slurm.default_profile {p:?} is not in slurm.profiles"
            ));
        }
        Ok(())
    }
}
