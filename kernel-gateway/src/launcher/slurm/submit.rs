//! What `sbatch` gets: the job script (the kernel's environment and the launcher command), the
//! options from the profile and the caller's quota, and the run-as prefix.

use super::{Inner, SlurmConfig, SlurmProfile};
use crate::launcher::{LaunchError, LaunchRequest};

/// `submit_prefix` with `{user}` replaced by the user's site account (`user_map`, else the name).
fn submit_prefix(config: &SlurmConfig, user: &str) -> Result<Vec<String>, LaunchError> {
    if config.submit_prefix.is_empty() {
        return Ok(Vec::new());
    }
    let account = config.user_map.get(user).map_or(user, String::as_str);
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
fn shell_quote(s: &str) -> String {
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

    pub(super) fn job_script(&self, request: &LaunchRequest, secret: &[u8]) -> String {
        let mut env = request.env.clone();
        env.insert("STACKHUB_KERNEL_ID".into(), request.kernel_id.clone());
        env.insert("STACKHUB_CALLBACK_URL".into(), self.callback_url.clone());
        env.insert("STACKHUB_CALLBACK_SECRET".into(), hex::encode(secret));
        env.insert(
            "STACKHUB_KERNEL_KEY".into(),
            self.kernel_key(&request.kernel_id),
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
        if let Some(dir) = &request.working_dir {
            args.push(format!("--chdir={}", dir.display()));
        }
        args.extend(profile.sbatch_args());
        // Resources only where a quota applied (the manager then forced these variables).
        if request.limits.cpus.is_some() {
            if let Some(cpus) = request
                .env
                .get("KERNEL_CPUS")
                .and_then(|v| crate::quota::parse_cpus(v))
            {
                args.push(format!("--cpus-per-task={}", cpus.ceil().max(1.0) as u64));
            }
            if let Some(bytes) = request
                .env
                .get("KERNEL_MEMORY")
                .and_then(|v| crate::quota::parse_memory(v))
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
