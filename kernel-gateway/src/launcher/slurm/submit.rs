//! What `sbatch` gets: the job script (the kernel's environment without its secrets, and the
//! launcher command), the options from the profile and the caller's quota, and the run-as
//! prefix; and what the job fetches once it runs (the secrets, see [`super::callback`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Inner, SECRET_MARKERS, SlurmConfig, SlurmProfile};
use crate::launcher::{LaunchError, LaunchRequest};

/// Whether the variable `name` may hold a credential (kept out of job scripts and records).
pub(super) fn is_secret_name(name: &str) -> bool {
    let up = name.to_uppercase();
    SECRET_MARKERS.iter().any(|m| up.contains(m))
}

/// The site account of `user` (`user_map`, else the name).
fn account<'a>(config: &'a SlurmConfig, user: &'a str) -> &'a str {
    config.user_map.get(user).map_or(user, String::as_str)
}

/// `submit_prefix` with `{user}` replaced by the user's site account (`user_map`, else the name).
fn submit_prefix(config: &SlurmConfig, user: &str) -> Result<Vec<String>, LaunchError> {
    if config.submit_prefix.is_empty() {
        return Ok(Vec::new());
    }
    let account = account(config, user);
    if account.is_empty()
        || account.starts_with('-')
        || !account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
    {
        return Err(LaunchError::Scheduler {
            what: "user mapping",
            detail: format!("user {user:?} maps to no usable site account"),
        });
    }
    Ok(config
        .submit_prefix
        .iter()
        .map(|a| a.replace("{user}", account))
        .collect())
}

/// Single-quotes `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Inner {
    pub(super) fn prefix(&self, user: &str) -> Result<Vec<String>, LaunchError> {
        submit_prefix(&self.config, user)
    }

    pub(super) fn profile(
        &self,
        request: &LaunchRequest,
    ) -> Result<(String, SlurmProfile), LaunchError> {
        let name = request
            .spec
            .stackhub_option("slurm_profile")
            .map(str::to_owned)
            .or_else(|| self.config.default_profile.clone());
        match name {
            None => Ok(("(none)".to_owned(), SlurmProfile::default())),
            Some(n) => match self.config.profiles.get(&n) {
                Some(p) => Ok((n, p.clone())),
                None => Err(LaunchError::Scheduler {
                    what: "slurm profile",
                    detail: format!(
                        "kernelspec {} names Slurm profile {n:?}, which is not configured",
                        request.spec.name
                    ),
                }),
            },
        }
    }

    /// Where the one-time token of `kernel_id` goes: `secrets_dir` (`{user}` = the site
    /// account), else `<state_dir>/secrets`.
    pub(super) fn secrets_file(&self, user: &str, kernel_id: &str) -> PathBuf {
        let dir = match &self.config.secrets_dir {
            Some(d) => PathBuf::from(d.replace("{user}", account(&self.config, user))),
            None => self.config.state_dir.join("secrets"),
        };
        dir.join(format!("{kernel_id}.token"))
    }

    /// Writes `token` to `path`, readable by the job's user only (mode 0600 in a 0700
    /// directory): directly when jobs run as the gateway's account, through the submit prefix
    /// (as the mapped user) otherwise.
    pub(super) async fn write_secrets_file(
        &self,
        prefix: &[String],
        path: &Path,
        token: &str,
    ) -> Result<(), LaunchError> {
        let fail = |detail: String| LaunchError::Scheduler {
            what: "secrets file",
            detail,
        };
        if !prefix.is_empty() {
            return self
                .slurm
                .write_private_as(prefix, path, token.as_bytes())
                .await;
        }
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        super::write_private(path, token.as_bytes()).map_err(|e| fail(e.to_string()))
    }

    /// What the job fetches with its token: the kernel key, the call-back secret and the
    /// secret variables of the kernel's environment (JSON).
    pub(super) fn secrets_body(&self, request: &LaunchRequest, secret: &[u8]) -> Vec<u8> {
        let env: BTreeMap<&String, &String> = request
            .env
            .iter()
            .filter(|(k, _)| valid_env_name(k) && is_secret_name(k))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "version": 1,
            "kernel_key": self.kernel_key(&request.kernel_id),
            "callback_secret": hex::encode(secret),
            "env": env,
        }))
        .unwrap_or_default()
    }

    /// The job script: the kernel's environment without any secret (those come from
    /// [`Self::secrets_body`]), where the token is, and the launcher command.
    pub(super) fn job_script(&self, request: &LaunchRequest, secrets_file: &Path) -> String {
        let mut env: BTreeMap<String, String> = request
            .env
            .iter()
            .filter(|(k, _)| !is_secret_name(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.insert("STACKHUB_KERNEL_ID".into(), request.kernel_id.clone());
        env.insert("STACKHUB_CALLBACK_URL".into(), self.callback_url.clone());
        env.insert(
            "STACKHUB_SECRETS_FILE".into(),
            secrets_file.to_string_lossy().into_owned(),
        );
        if let Some(ip) = &self.config.kernel_ip {
            env.insert("STACKHUB_KERNEL_IP".into(), ip.clone());
        }
        // STACKHUB_JOB_STARTED_NS: when the job began running (for the start-overhead benchmark).
        let mut script = String::from(
            "#!/bin/sh\n# stackhub kernel job\nexport STACKHUB_JOB_STARTED_NS=\"$(date +%s%N)\"\n",
        );
        for (k, v) in env.iter().filter(|(k, _)| valid_env_name(k)) {
            script.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        let argv: Vec<String> = self
            .config
            .launcher_command
            .iter()
            .cloned()
            .chain(std::iter::once("--".to_owned()))
            .chain(request.spec.resolved_argv())
            .map(|a| shell_quote(&a))
            .collect();
        // The job makes its user's working area itself (as that user, owner-only): the
        // gateway may not be able to write it, and it must exist on the node.
        if let Some(dir) = &request.working_dir {
            let dir = shell_quote(&dir.to_string_lossy());
            script.push_str(&format!("mkdir -p -m 700 {dir} && cd {dir} || exit 1\n"));
        }
        script.push_str(&format!("exec {}\n", argv.join(" ")));
        script
    }

    pub(super) fn sbatch_args(
        &self,
        request: &LaunchRequest,
        profile: &SlurmProfile,
    ) -> Vec<String> {
        let output = self.config.job_output.clone().unwrap_or_else(|| {
            self.config
                .state_dir
                .join("jobs/%j.out")
                .to_string_lossy()
                .into_owned()
        });
        let mut args = vec![
            format!("--job-name={}", self.config.job_name),
            format!("--comment={}", self.comment(&request.kernel_id)),
            format!("--output={output}"),
            "--export=NONE".to_owned(),
        ];
        args.extend(profile.sbatch_args());
        // Resources only where a quota applied (the manager then forced these variables).
        if request.limits.cpus.is_some() {
            if let Some(cpus) = request
                .env
                .get("KERNEL_CPUS")
                .and_then(|v| stackhub_common::parse_cpus(v).ok())
                .filter(|c| *c > 0.0)
            {
                args.push(format!("--cpus-per-task={}", cpus.ceil().max(1.0) as u64));
            }
            if let Some(bytes) = request
                .env
                .get("KERNEL_MEMORY")
                .and_then(|v| stackhub_common::parse_memory(v).ok())
                .filter(|b| *b > 0)
            {
                args.push(format!("--mem={}M", bytes.div_ceil(1 << 20)));
            }
            if let Some(gpus) = request
                .env
                .get("KERNEL_GPUS")
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|g| *g > 0)
            {
                args.push(format!("--gres=gpu:{gpus}"));
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("{connection_file}"), "'{connection_file}'");
        assert!(valid_env_name("KERNEL_ID") && !valid_env_name("1X") && !valid_env_name("A-B"));
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "JUPYTERHUB_API_TOKEN",
            "my_password",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["KERNEL_ID", "KERNEL_USERNAME", "PATH", "STACKHUB_S3_BUCKET"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn submit_prefix_maps_users_and_refuses_odd_names() {
        let mut c = SlurmConfig::default();
        assert!(submit_prefix(&c, "alice").unwrap().is_empty());
        c.submit_prefix = ["sudo", "-n", "-u", "{user}", "--"]
            .map(String::from)
            .to_vec();
        c.user_map
            .insert("alice@example.org".into(), "alice01".into());
        assert_eq!(
            submit_prefix(&c, "alice@example.org").unwrap(),
            ["sudo", "-n", "-u", "alice01", "--"]
        );
        assert_eq!(submit_prefix(&c, "bob").unwrap()[3], "bob");
        assert!(submit_prefix(&c, "-oops").is_err());
        assert!(submit_prefix(&c, "a b").is_err());
        assert!(submit_prefix(&c, "").is_err());
    }
}
