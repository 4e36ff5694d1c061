//! Slurm launcher: each kernel is a batch job running the kernel-side launcher
//! (`images/slurm/stackhub-kernel-launcher`), which starts ipykernel on free ports of its node and
//! calls back with them ([`callback`] documents the protocol).
//!
//! - Submit: `sbatch --export=NONE` with a generated script that exports the kernel's environment
//!   and `exec`s the launcher; job options from the kernelspec's profile ([`SlurmConfig`]) and
//!   the caller's quota (`--cpus-per-task`, `--mem`, `--gres=gpu:N` from `KERNEL_CPUS`,
//!   `KERNEL_MEMORY`, `KERNEL_GPUS` when a quota applies); `--comment=stackhub:<instance>:<id>`.
//! - Wait: until the call-back, reporting Slurm's state, reason and queue position as progress;
//!   a job that ends first is an error with its state; past the profile's `launch_timeout` the
//!   job is cancelled and the start fails with the last reason.
//! - Secrets: the kernel's message key and the call-back secret are derived per kernel from a
//!   master key in `state_dir/gateway.key` (HMAC-SHA256 over a label and the kernel id), so the
//!   kernel records in `state_dir/kernels/` hold no secret and a restarted gateway can talk to
//!   its kernels again.
//! - Signals: interrupt = `scancel --batch --signal=INT` (the launcher forwards it to the
//!   kernel); in-place restart = `--signal=USR1` (new kernel process and ports in the same job,
//!   a new call-back with a higher `seq`); stop = `scancel`.
//! - Recovery ([`Launcher::recover`]): running jobs with a record are handed back to the gateway;
//!   jobs tagged with this instance but without a usable record are cancelled.

mod callback;
mod cli;
mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use jupyter_protocol::ConnectionInfo;
use jupyter_protocol::connection_info::Transport;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::callback::{CallBack, MAX_SKEW_SECS, SIGNATURE_HEADER, sign};
use self::cli::{JobBoard, JobInfo, Slurm};
pub use self::config::{SlurmConfig, SlurmProfile};
use super::{
    ExitInfo, KernelProcess, KernelSignal, LaunchError, LaunchRequest, Launched, Launcher,
    Progress, Recovered,
};

/// Environment variables never written to kernel records (they may hold credentials).
const SECRET_MARKERS: [&str; 5] = ["SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "KEY"];

/// A kernel's persisted record (no secrets; see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    kernel_id: String,
    user: String,
    kernel_name: String,
    instance: String,
    job_id: String,
    seq: u64,
    callback: Option<CallBack>,
    env: BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
}

struct Inner {
    config: SlurmConfig,
    slurm: Slurm,
    board: Arc<JobBoard>,
    registry: Arc<callback::Registry>,
    master: Vec<u8>,
    callback_url: String,
    cancel: CancellationToken,
}

/// Runs kernels as Slurm jobs; see the module docs.
pub struct SlurmLauncher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlurmLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmLauncher")
            .field("instance", &self.inner.config.instance)
            .field("callback_url", &self.inner.callback_url)
            .finish_non_exhaustive()
    }
}

impl Drop for SlurmLauncher {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Writes `data` to `path` (mode 0600) through a temporary file and a rename.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("creating", &tmp, e))?;
    f.write_all(data).map_err(|e| io_err("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("renaming to", path, e))
}

/// The master key in `state_dir/gateway.key`, created (32 random bytes, 0600) if missing.
fn master_key(state_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = state_dir.join("gateway.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() >= 32)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a hex key of >= 32 bytes", path.display()),
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            write_private(&path, hex::encode(key).as_bytes())?;
            Ok(key.to_vec())
        }
        Err(e) => Err(io_err("reading", &path, e)),
    }
}

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

impl SlurmLauncher {
    /// Binds the call-back listener, loads (or creates) the master key and starts the job
    /// poller.
    ///
    /// # Errors
    /// The config is invalid, the state directory or the listener cannot be set up.
    pub async fn start(config: SlurmConfig) -> std::io::Result<Self> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let kernels_dir = config.state_dir.join("kernels");
        for dir in [
            &config.state_dir,
            &kernels_dir,
            &config.state_dir.join("jobs"),
        ] {
            std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        }
        let master = master_key(&config.state_dir)?;
        // A gateway restarting in place may find its old listener still closing: retry briefly.
        let mut attempt = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(&config.callback_listen).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "binding slurm.callback_listen {}: {e}",
                            config.callback_listen
                        ),
                    ));
                }
            }
        };
        let bound = listener.local_addr()?;
        let callback_url = match &config.callback_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None if bound.ip().is_unspecified() => {
                let host = rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned();
                format!("http://{host}:{}", bound.port())
            }
            None => format!("http://{bound}"),
        };
        let slurm = Slurm {
            bin_dir: config.bin_dir.clone(),
            slurm_conf: config.slurm_conf.clone(),
        };
        let board = JobBoard::new(slurm.clone(), config.job_name.clone());
        let registry = Arc::new(callback::Registry::default());
        let cancel = CancellationToken::new();
        tokio::spawn(callback::serve(listener, registry.clone(), cancel.clone()));
        tokio::spawn(board.clone().run(
            Duration::from_secs_f64(config.poll_interval),
            cancel.clone(),
        ));
        tracing::info!(callback_url = %callback_url, instance = %config.instance, "Slurm launcher ready");
        Ok(SlurmLauncher {
            inner: Arc::new(Inner {
                config,
                slurm,
                board,
                registry,
                master,
                callback_url,
                cancel,
            }),
        })
    }

    /// The URL kernel jobs call back to.
    pub fn callback_url(&self) -> &str {
        &self.inner.callback_url
    }

    /// The call-back secret of `kernel_id` (for tests of the protocol; never logged).
    pub fn callback_secret(&self, kernel_id: &str) -> Vec<u8> {
        self.inner.derive("callback", kernel_id)
    }
}

impl Inner {
    fn derive(&self, label: &str, kernel_id: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.master)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label.as_bytes());
        mac.update(b":");
        mac.update(kernel_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn kernel_key(&self, kernel_id: &str) -> String {
        hex::encode(self.derive("kernel-key", kernel_id))
    }

    fn comment(&self, kernel_id: &str) -> String {
        format!("stackhub:{}:{kernel_id}", self.config.instance)
    }

    fn record_path(&self, kernel_id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("kernels")
            .join(format!("{kernel_id}.json"))
    }

    fn save(&self, record: &Record) {
        let result = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|data| write_private(&self.record_path(&record.kernel_id), &data));
        if let Err(e) = result {
            tracing::warn!(kernel_id = %record.kernel_id, error = %e, "cannot save the kernel record; a gateway restart will not re-attach it");
        }
    }

    fn forget(&self, kernel_id: &str) {
        let _ = std::fs::remove_file(self.record_path(kernel_id));
    }

    fn prefix(&self, user: &str) -> Result<Vec<String>, LaunchError> {
        submit_prefix(&self.config, user)
    }

    fn profile(&self, request: &LaunchRequest) -> Result<(String, SlurmProfile), LaunchError> {
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

    fn job_script(&self, request: &LaunchRequest, secret: &[u8]) -> String {
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

    fn sbatch_args(&self, request: &LaunchRequest, profile: &SlurmProfile) -> Vec<String> {
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

    fn last_output_line(&self, job_id: &str) -> Option<String> {
        let pattern = self.config.job_output.clone().unwrap_or_else(|| {
            self.config
                .state_dir
                .join("jobs/%j.out")
                .to_string_lossy()
                .into_owned()
        });
        let text = std::fs::read_to_string(pattern.replace("%j", job_id)).ok()?;
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(300).collect())
    }

    fn ended_detail(&self, job_id: &str, job: Option<&JobInfo>) -> String {
        let how = match job {
            Some(j) => j.describe().to_uppercase_first(),
            None => "no longer known to Slurm".to_owned(),
        };
        match self.last_output_line(job_id) {
            Some(line) => format!("Slurm job {job_id} ended: {how}; last output line: {line}"),
            None => format!("Slurm job {job_id} ended: {how}"),
        }
    }

    fn connection(&self, kernel_id: &str, cb: &CallBack) -> ConnectionInfo {
        ConnectionInfo {
            ip: cb.ip.clone(),
            transport: Transport::TCP,
            shell_port: cb.shell_port,
            iopub_port: cb.iopub_port,
            stdin_port: cb.stdin_port,
            control_port: cb.control_port,
            hb_port: cb.hb_port,
            key: self.kernel_key(kernel_id),
            signature_scheme: "hmac-sha256".to_owned(),
            kernel_name: None,
        }
    }

    /// Waits for a call-back with `seq > after`, watching the job; `progress` hears about state
    /// changes while it waits.
    async fn await_callback(
        &self,
        job_id: &str,
        mut callbacks: watch::Receiver<Option<CallBack>>,
        after: u64,
        timeout: Duration,
        progress: Option<&Progress>,
        since_tick: u64,
    ) -> Result<CallBack, LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut ticks = self.board.subscribe();
        let mut last_said = String::new();
        loop {
            if let Some(cb) = callbacks.borrow_and_update().clone()
                && cb.seq > after
            {
                return Ok(cb);
            }
            let tick = *ticks.borrow_and_update();
            let job = self.board.get(job_id);
            match &job {
                Some(j) if j.is_ended() => {
                    return Err(LaunchError::Ended {
                        detail: format!(
                            "{} before the kernel called back",
                            self.ended_detail(job_id, Some(j))
                        ),
                    });
                }
                None if tick > since_tick + 1 => {
                    return Err(LaunchError::Ended {
                        detail: self.ended_detail(job_id, None),
                    });
                }
                Some(j) => {
                    let said = if j.is_pending() {
                        format!("Slurm job {job_id} {}", j.describe())
                    } else {
                        format!(
                            "Slurm job {job_id} {} on {}; waiting for the kernel to call back",
                            j.state.to_lowercase(),
                            j.nodes
                        )
                    };
                    if said != last_said {
                        tracing::info!(job_id, status = %said, "kernel job");
                        if let Some(p) = progress {
                            p(said.clone());
                        }
                        last_said = said;
                    }
                }
                None => {}
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let state = job.map_or_else(|| "state unknown".to_owned(), |j| j.describe());
                    return Err(LaunchError::Timeout { detail: format!(
                        "Slurm job {job_id} did not start a kernel within {}s ({state}); the job was \
                         cancelled. To wait longer, raise launch_timeout of the Slurm profile",
                        timeout.as_secs()) });
                }
                r = callbacks.changed() => if r.is_err() {
                    return Err(LaunchError::Ended { detail: format!("Slurm job {job_id}: the kernel was forgotten") });
                },
                _ = ticks.changed() => {}
                _ = self.cancel.cancelled() => {
                    return Err(LaunchError::Ended { detail: "the Slurm launcher is shutting down".into() });
                }
            }
        }
    }
}

trait UpperFirst {
    fn to_uppercase_first(&self) -> String;
}

impl UpperFirst for String {
    fn to_uppercase_first(&self) -> String {
        // Slurm states read better upper-case (`CANCELLED`, `FAILED`), as squeue prints them.
        match self.split_once(':') {
            Some((state, rest)) => format!("{}:{rest}", state.to_uppercase()),
            None => match self.split_once(' ') {
                Some((state, rest)) => format!("{} {rest}", state.to_uppercase()),
                None => self.to_uppercase(),
            },
        }
    }
}

impl Launcher for SlurmLauncher {
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        self.launch_with_progress(request, Arc::new(|_| {}))
    }

    fn launch_with_progress(
        &self,
        request: LaunchRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let kernel_id = request.kernel_id.clone();
            let user = request
                .env
                .get("KERNEL_USERNAME")
                .cloned()
                .unwrap_or_default();
            let (profile_name, profile) = inner.profile(&request)?;
            let prefix = inner.prefix(&user)?;
            let secret = inner.derive("callback", &kernel_id);
            let script = inner.job_script(&request, &secret);
            let args = inner.sbatch_args(&request, &profile);
            let callbacks = inner.registry.register(&kernel_id, secret, 0).await;
            let submitted = Instant::now();
            let job_id = match inner.slurm.sbatch(&prefix, &args, &script).await {
                Ok(id) => id,
                Err(e) => {
                    inner.registry.remove(&kernel_id).await;
                    return Err(e);
                }
            };
            // Taken after sbatch returned: a poll completing twice after this saw the job.
            let since_tick = *inner.board.subscribe().borrow();
            // Cancels the job if this future is dropped (the kernel was shut down while queued).
            let mut guard = PendingJob {
                inner: Some(inner.clone()),
                job_id: job_id.clone(),
                kernel_id: kernel_id.clone(),
                prefix: prefix.clone(),
            };
            tracing::info!(kernel_id = %kernel_id, job_id = %job_id, profile = %profile_name, "kernel job submitted");
            progress(format!("Slurm job {job_id} submitted"));
            inner.board.track(&job_id).await;
            let mut record = Record {
                kernel_id: kernel_id.clone(),
                user: user.clone(),
                kernel_name: request.spec.name.clone(),
                instance: inner.config.instance.clone(),
                job_id: job_id.clone(),
                seq: 0,
                callback: None,
                env: request
                    .env
                    .iter()
                    .filter(|(k, _)| {
                        let up = k.to_uppercase();
                        !SECRET_MARKERS.iter().any(|m| up.contains(m))
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                working_dir: request.working_dir.clone(),
            };
            inner.save(&record);
            let timeout = Duration::from_secs(
                profile
                    .launch_timeout
                    .unwrap_or(inner.config.launch_timeout),
            );
            let cb = match inner
                .await_callback(&job_id, callbacks, 0, timeout, Some(&progress), since_tick)
                .await
            {
                Ok(cb) => cb,
                Err(e) => {
                    guard.inner = None;
                    inner.abandon(&prefix, &job_id, &kernel_id).await;
                    return Err(e);
                }
            };
            guard.inner = None;
            tracing::info!(kernel_id = %kernel_id, job_id = %job_id, submit_to_callback_ms = submitted.elapsed().as_millis() as u64, "kernel job running");
            record.seq = cb.seq;
            record.callback = Some(cb.clone());
            inner.save(&record);
            let connection = inner.connection(&kernel_id, &cb);
            Ok(Launched {
                connection,
                process: Box::new(SlurmJob::new(inner.clone(), record, prefix)),
            })
        })
    }

    fn recover(&self) -> BoxFuture<'_, Vec<Recovered>> {
        Box::pin(async move { self.inner.clone().recover().await })
    }
}

/// A submitted job whose launch has not finished; cancelled if the launch is dropped.
struct PendingJob {
    inner: Option<Arc<Inner>>,
    job_id: String,
    kernel_id: String,
    prefix: Vec<String>,
}

impl Drop for PendingJob {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let (job_id, kernel_id, prefix) = (
            std::mem::take(&mut self.job_id),
            std::mem::take(&mut self.kernel_id),
            std::mem::take(&mut self.prefix),
        );
        tracing::info!(job_id = %job_id, kernel_id = %kernel_id, "launch abandoned; cancelling its job");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { inner.abandon(&prefix, &job_id, &kernel_id).await });
        }
    }
}

impl Inner {
    /// Cancels a job whose kernel will not be used and forgets it.
    async fn abandon(&self, prefix: &[String], job_id: &str, kernel_id: &str) {
        if let Err(e) = self.slurm.scancel(prefix, job_id, None).await {
            tracing::debug!(job_id, error = %e, "scancel of an abandoned kernel job");
        }
        self.board.untrack(job_id).await;
        self.registry.remove(kernel_id).await;
        self.forget(kernel_id);
    }

    fn read_records(&self) -> Vec<Record> {
        let dir = self.config.state_dir.join("kernels");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let path = e.path();
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| serde_json::from_slice::<Record>(&d).map_err(|e| e.to_string()))
                {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable kernel record");
                        None
                    }
                }
            })
            .collect()
    }

    async fn recover(self: Arc<Self>) -> Vec<Recovered> {
        let jobs = match self.slurm.jobs_named(&self.config.job_name).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot list Slurm jobs; no kernel re-attached, records kept");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut kept = std::collections::BTreeSet::new();
        for record in self.read_records() {
            if record.instance != self.config.instance {
                continue;
            }
            let job = jobs.get(&record.job_id);
            let running = job.is_some_and(|j| j.state == "RUNNING")
                && job.is_some_and(|j| j.comment == self.comment(&record.kernel_id));
            match (&record.callback, running) {
                (Some(cb), true) => {
                    let secret = self.derive("callback", &record.kernel_id);
                    self.registry
                        .register(&record.kernel_id, secret, record.seq)
                        .await;
                    self.board.track(&record.job_id).await;
                    kept.insert(record.job_id.clone());
                    let prefix = self.prefix(&record.user).unwrap_or_default();
                    tracing::info!(kernel_id = %record.kernel_id, job_id = %record.job_id, user = %record.user, "re-attaching to kernel job");
                    out.push(Recovered {
                        kernel_id: record.kernel_id.clone(),
                        user: record.user.clone(),
                        kernel_name: record.kernel_name.clone(),
                        env: record.env.clone(),
                        working_dir: record.working_dir.clone(),
                        connection: self.connection(&record.kernel_id, cb),
                        process: Box::new(SlurmJob::new(self.clone(), record, prefix)),
                    });
                }
                _ => self.forget(&record.kernel_id),
            }
        }
        let tag = format!("stackhub:{}:", self.config.instance);
        for (job_id, job) in &jobs {
            if job.comment.starts_with(&tag) && !job.is_ended() && !kept.contains(job_id) {
                tracing::warn!(job_id = %job_id, comment = %job.comment, "cancelling orphaned kernel job");
                if let Err(e) = self.slurm.scancel(&[], job_id, None).await {
                    tracing::error!(job_id = %job_id, error = %e, "cannot cancel orphaned kernel job");
                }
            }
        }
        if let Err(e) = self.board.poll_once().await {
            tracing::warn!(error = %e, "cannot poll Slurm after recovery");
        }
        out
    }
}

/// A kernel's batch job.
struct SlurmJob {
    inner: Arc<Inner>,
    job_id: String,
    kernel_id: String,
    prefix: Vec<String>,
    record: tokio::sync::Mutex<Record>,
    seq: AtomicU64,
    /// Poll count when the handle was made: a job missing from later polls is gone.
    since_tick: u64,
}

impl std::fmt::Debug for SlurmJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmJob")
            .field("job_id", &self.job_id)
            .field("kernel_id", &self.kernel_id)
            .finish_non_exhaustive()
    }
}

impl SlurmJob {
    fn new(inner: Arc<Inner>, record: Record, prefix: Vec<String>) -> Self {
        let since_tick = *inner.board.subscribe().borrow();
        SlurmJob {
            job_id: record.job_id.clone(),
            kernel_id: record.kernel_id.clone(),
            seq: AtomicU64::new(record.seq),
            record: tokio::sync::Mutex::new(record),
            prefix,
            inner,
            since_tick,
        }
    }

    /// Runs `scancel` in the background (signals are fire-and-forget in the seam).
    fn scancel(&self, batch_signal: Option<&'static str>) {
        let inner = self.inner.clone();
        let job_id = self.job_id.clone();
        let prefix = self.prefix.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.slurm.scancel(&prefix, &job_id, batch_signal).await {
                tracing::warn!(job_id = %job_id, signal = ?batch_signal, error = %e, "scancel failed");
            }
        });
    }
}

impl KernelProcess for SlurmJob {
    fn signal(&self, signal: KernelSignal) -> Result<(), LaunchError> {
        match signal {
            KernelSignal::Interrupt => self.scancel(Some("INT")),
            KernelSignal::Terminate | KernelSignal::Kill => self.scancel(None),
        }
        Ok(())
    }

    fn poll(&self) -> BoxFuture<'_, Option<ExitInfo>> {
        Box::pin(async move {
            let board = &self.inner.board;
            let tick = *board.subscribe().borrow();
            let job = board.get(&self.job_id);
            let ended = match &job {
                Some(j) => j.is_ended(),
                None => board.polled() && tick > self.since_tick + 1,
            };
            if !ended {
                return None;
            }
            board.untrack(&self.job_id).await;
            self.inner.registry.remove(&self.kernel_id).await;
            self.inner.forget(&self.kernel_id);
            let detail = self.inner.ended_detail(&self.job_id, job.as_ref());
            let (status, last) = match detail.split_once("; last output line: ") {
                Some((s, l)) => (s.to_owned(), Some(l.to_owned())),
                None => (detail, None),
            };
            Some(ExitInfo {
                status,
                last_stderr: last,
            })
        })
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "job_id": self.job_id, "seq": self.seq.load(Ordering::SeqCst) })
    }

    fn restart_in_place(&self) -> Option<BoxFuture<'_, Result<ConnectionInfo, LaunchError>>> {
        Some(Box::pin(async move {
            let inner = &self.inner;
            let callbacks = inner
                .registry
                .subscribe(&self.kernel_id)
                .await
                .ok_or_else(|| LaunchError::Ended {
                    detail: format!("Slurm job {} is gone", self.job_id),
                })?;
            let after = self.seq.load(Ordering::SeqCst);
            let since_tick = *inner.board.subscribe().borrow();
            inner
                .slurm
                .scancel(&self.prefix, &self.job_id, Some("USR1"))
                .await?;
            let cb = inner
                .await_callback(
                    &self.job_id,
                    callbacks,
                    after,
                    Duration::from_secs(inner.config.restart_timeout),
                    None,
                    since_tick,
                )
                .await?;
            self.seq.store(cb.seq, Ordering::SeqCst);
            let mut record = self.record.lock().await;
            record.seq = cb.seq;
            record.callback = Some(cb.clone());
            inner.save(&record);
            Ok(inner.connection(&self.kernel_id, &cb))
        }))
    }

    fn outlives_gateway(&self) -> bool {
        true
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

    #[test]
    fn profile_args() {
        let p = SlurmProfile {
            partition: Some("debug".into()),
            account: Some("p1".into()),
            reservation: Some(String::new()),
            qos: None,
            time: Some("01:00:00".into()),
            launch_timeout: None,
            extra_args: vec!["--constraint=cpu".into()],
        };
        assert_eq!(
            p.sbatch_args(),
            [
                "--partition=debug",
                "--account=p1",
                "--time=01:00:00",
                "--constraint=cpu"
            ]
        );
    }
}
