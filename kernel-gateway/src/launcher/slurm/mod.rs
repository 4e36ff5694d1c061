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
//!   its kernels again. None of them, nor any credential of the kernel's environment (names
//!   with SECRET, TOKEN, PASSWORD, CREDENTIAL or KEY), is in the job script, `sbatch`'s
//!   arguments or the job's environment: the job fetches them once with a one-time token from
//!   a 0600 file ([`callback`] documents the hand-over).
//! - Signals: interrupt = `scancel --batch --signal=INT` (the launcher forwards it to the
//!   kernel); in-place restart = `--signal=USR1` (new kernel process and ports in the same job,
//!   a new call-back with a higher `seq`); stop = `scancel`.
//! - Recovery ([`Launcher::recover`]): running jobs with a record are handed back to the gateway;
//!   jobs tagged with this instance but without a usable record are cancelled.

mod callback;
mod cli;
mod config;
mod job;
mod submit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
use self::cli::Slurm;
pub(crate) use self::cli::{JobBoard, JobInfo};
pub use self::config::{SlurmConfig, SlurmProfile};
use self::job::{PendingJob, SlurmJob};
pub(crate) use self::submit::shell_quote;
use super::{DaskLauncherOf, LaunchError, LaunchRequest, Launched, Launcher, Progress, Recovered};

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

/// What Dask clusters on the same Slurm share with the kernel launcher
/// (`crate::dask::launch`): its settings, Slurm clients and user mapping, and the secrets
/// hand-over through its call-back listener (the one-time token protocol of [`callback`]).
#[derive(Clone)]
pub(crate) struct SlurmShared {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlurmShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmShared")
            .field("instance", &self.inner.config.instance)
            .finish_non_exhaustive()
    }
}

impl SlurmShared {
    /// The `[slurm]` settings.
    pub(crate) fn config(&self) -> &SlurmConfig {
        &self.inner.config
    }

    /// The run-as prefix of `user`'s jobs.
    pub(crate) fn prefix(&self, user: &str) -> Result<Vec<String>, LaunchError> {
        self.inner.prefix(user)
    }

    /// `sbatch` arguments of profile `name` (else the default profile; none: no arguments).
    pub(crate) fn profile_args(&self, name: Option<&str>) -> Result<Vec<String>, String> {
        let config = &self.inner.config;
        match name.or(config.default_profile.as_deref()) {
            None => Ok(Vec::new()),
            Some(n) => config
                .profiles
                .get(n)
                .map(SlurmProfile::sbatch_args)
                .ok_or_else(|| format!("Slurm profile {n:?} is not configured")),
        }
    }

    /// `--output` of jobs (`%j` = job id).
    pub(crate) fn output_pattern(&self) -> String {
        self.inner.config.job_output.clone().unwrap_or_else(|| {
            self.inner
                .config
                .state_dir
                .join("jobs/%j.out")
                .to_string_lossy()
                .into_owned()
        })
    }

    /// `sbatch`; the job id.
    pub(crate) async fn sbatch(
        &self,
        prefix: &[String],
        args: &[String],
        script: &str,
    ) -> Result<String, LaunchError> {
        self.inner.slurm.sbatch(prefix, args, script).await
    }

    /// `scancel job`.
    pub(crate) async fn scancel(&self, prefix: &[String], job_id: &str) -> Result<(), LaunchError> {
        self.inner.slurm.scancel(prefix, job_id, None).await
    }

    /// Every job named `name`.
    pub(crate) async fn jobs_named(
        &self,
        name: &str,
    ) -> Result<std::collections::HashMap<String, JobInfo>, LaunchError> {
        self.inner.slurm.jobs_named(name).await
    }

    /// A job board polling the jobs named `job_name` while it tracks any, for as long as the
    /// kernel launcher runs.
    pub(crate) fn board(&self, job_name: &str) -> Arc<JobBoard> {
        let board = JobBoard::new(self.inner.slurm.clone(), job_name.to_owned());
        tokio::spawn(board.clone().run(
            Duration::from_secs_f64(self.inner.config.poll_interval),
            self.inner.cancel.clone(),
        ));
        board
    }

    /// The URL jobs trade their one-time token at (`{url}/kernels/{id}/secrets`).
    pub(crate) fn callback_url(&self) -> &str {
        &self.inner.callback_url
    }

    /// Holds `body` for the one job presenting the one-time token written (0600, as `user`
    /// through `prefix`) to the returned file; `id` names the hand-over in the URL.
    pub(crate) async fn hand_over(
        &self,
        id: &str,
        user: &str,
        prefix: &[String],
        body: Vec<u8>,
    ) -> Result<PathBuf, LaunchError> {
        let inner = &self.inner;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let file = inner.secrets_file(user, id);
        inner.write_secrets_file(prefix, &file, &token).await?;
        // No call-back comes for these: the registration only carries the secrets.
        let _ = inner
            .registry
            .register(id, rand::random::<[u8; 32]>().to_vec(), 0)
            .await;
        inner.registry.offer(id, &token, body).await;
        Ok(file)
    }

    /// Forgets the hand-over `id` and removes its token file (if the job did not).
    pub(crate) async fn withdraw(&self, id: &str, file: &Path) {
        self.inner.registry.remove(id).await;
        let _ = std::fs::remove_file(file);
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
            Some(j) => upper_state(&j.describe()),
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

/// Removes a file when dropped (best effort: a file written as another user through the
/// submit prefix stays until the job's launcher removes it).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `pending: Resources` -> `PENDING: Resources`: Slurm states read as squeue prints them.
fn upper_state(description: &str) -> String {
    let end = description.find([':', ' ']).unwrap_or(description.len());
    format!(
        "{}{}",
        description[..end].to_uppercase(),
        &description[end..]
    )
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
            let secrets = inner.secrets_body(&request, &secret);
            let token = hex::encode(rand::random::<[u8; 32]>());
            let secrets_file = inner.secrets_file(&user, &kernel_id);
            inner
                .write_secrets_file(&prefix, &secrets_file, &token)
                .await?;
            // The file is spent (or useless) once the launch is over, whatever its outcome.
            let _remove_file = RemoveOnDrop(secrets_file.clone());
            let script = inner.job_script(&request, &secrets_file);
            let args = inner.sbatch_args(&request, &profile);
            let callbacks = inner.registry.register(&kernel_id, secret, 0).await;
            inner.registry.offer(&kernel_id, &token, secrets).await;
            drop(token);
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
                    .filter(|(k, _)| !submit::is_secret_name(k))
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

    fn dask_launcher(&self, _name: &str, config: &crate::dask::DaskConfig) -> DaskLauncherOf {
        let shared = SlurmShared {
            inner: self.inner.clone(),
        };
        Some(Arc::new(crate::dask::launch::SlurmDaskLauncher::new(
            shared, config,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_upper_case() {
        assert_eq!(upper_state("cancelled"), "CANCELLED");
        assert_eq!(
            upper_state("failed: NonZeroExitCode"),
            "FAILED: NonZeroExitCode"
        );
        assert_eq!(upper_state("pending (position 1)"), "PENDING (position 1)");
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
