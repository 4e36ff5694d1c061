//! [`LocalDaskLauncher`]: clusters as local processes of the gateway's user.
//!
//! Secrets never reach argv or logs: the cluster's token and TLS key are files (0600) in the
//! cluster's own directory (0700), named to the processes through the environment
//! (`DASK_GATEWAY_API_TOKEN` holds the token file's path, which the preload reads).
//!
//! Warm schedulers (`[dask] warm_schedulers`): most of a scheduler's start is Python importing
//! distributed, bokeh's dashboard and dask-gateway's preload. That many interpreters are kept
//! started and imported ahead of demand (`warm_scheduler.py`, in `/`, outside every cluster's
//! directory); a new cluster takes one, which reads on its stdin the directory, environment,
//! log and arguments it would have been started with, and becomes that cluster's scheduler.
//! A new one is started in its place. One whose stdin closes (the gateway went away) exits;
//! one that died is skipped for a cold start.
//!
//! A gateway that dies without stopping its clusters (SIGKILL, a crash) leaves their processes
//! running (each is in its own process group). Every process this launcher starts, warm ones
//! included, carries the gateway's API URL in its environment (`DASK_GATEWAY_API_URL`): the
//! next run of the gateway on the same address finds them in `/proc` ([`orphans`]) and stops
//! those of clusters it does not have (`remove_orphans`, at start and every minute).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;

use super::{ClusterSpec, DaskLaunchError, DaskLauncher, DaskProcess, IsLiveCluster};

/// The program a warm scheduler runs (`python -c`).
const WARM_SCHEDULER: &str = include_str!("warm_scheduler.py");
/// What of the gateway's environment Dask processes keep.
const KEPT_ENV: [&str; 5] = ["PATH", "LANG", "LC_ALL", "HOME", "TZ"];

/// Clusters as local processes of the gateway's user, each in its own process group.
#[derive(Debug)]
pub struct LocalDaskLauncher {
    python: PathBuf,
    root: PathBuf,
    /// The gateway's API as this run's processes have it (`DASK_GATEWAY_API_URL`).
    api_url: String,
    /// How many warm schedulers to keep.
    warm_target: usize,
    warm: parking_lot::Mutex<Vec<tokio::process::Child>>,
}

impl LocalDaskLauncher {
    /// Runs `python -m dask scheduler|worker`, keeping each cluster's files under `root`;
    /// the processes report to `api_url`.
    pub fn new(python: PathBuf, root: PathBuf, api_url: String) -> Self {
        LocalDaskLauncher {
            python,
            root,
            api_url,
            warm_target: 0,
            warm: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Keeps `n` schedulers started ahead of demand (see the module docs); started now when
    /// called inside the runtime, else at the first cluster.
    #[must_use]
    pub fn with_warm_schedulers(mut self, n: usize) -> Self {
        self.warm_target = n;
        if tokio::runtime::Handle::try_current().is_ok() {
            self.refill();
        }
        self
    }

    /// Starts warm schedulers up to the target.
    fn refill(&self) {
        let mut warm = self.warm.lock();
        while warm.len() < self.warm_target {
            match self.start_warm() {
                Ok(child) => warm.push(child),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a warm scheduler; clusters start cold");
                    return;
                }
            }
        }
    }

    fn start_warm(&self) -> std::io::Result<tokio::process::Child> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.root.join("warm-schedulers.log"))?;
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.env_clear();
        for key in KEPT_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("DASK_GATEWAY_API_URL", &self.api_url)
            .arg("-c")
            .arg(WARM_SCHEDULER)
            .current_dir("/")
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
    }

    /// A warm scheduler still alive, if one is left.
    fn take_warm(&self) -> Option<tokio::process::Child> {
        let mut warm = self.warm.lock();
        while let Some(mut child) = warm.pop() {
            match child.try_wait() {
                Ok(None) => return Some(child),
                Ok(Some(status)) => tracing::warn!(
                    %status,
                    log = %self.root.join("warm-schedulers.log").display(),
                    "a warm scheduler had exited; skipping it"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot check a warm scheduler; skipping it"),
            }
        }
        None
    }

    /// Hands `child` (a warm scheduler) the cluster it becomes; `None` if it did not take it.
    async fn become_scheduler(
        &self,
        mut child: tokio::process::Child,
        spec: &ClusterSpec,
        dir: &Path,
        args: &[String],
    ) -> Option<Box<dyn DaskProcess>> {
        let env: BTreeMap<String, String> = self
            .env(spec, dir, "scheduler")
            .into_iter()
            .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
            .collect();
        let order = serde_json::json!({
            "cwd": dir,
            "env": env,
            "log": dir.join("scheduler.log"),
            "args": args,
        });
        let mut stdin = child.stdin.take()?;
        let mut line = order.to_string();
        line.push('\n');
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            tracing::warn!(cluster = spec.name, error = %e, "a warm scheduler did not take its cluster; starting one cold");
            return None;
        }
        drop(stdin);
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        tracing::debug!(
            cluster = spec.name,
            pgid,
            "a warm scheduler became the cluster's"
        );
        Some(Box::new(LocalProcess {
            child: parking_lot::Mutex::new(Some(child)),
            pgid,
            what: format!("scheduler of cluster {}", spec.name),
        }))
    }

    fn dir(&self, cluster: &str) -> PathBuf {
        self.root.join(cluster)
    }

    /// The cluster's directory with its certificate, key and token files (created once).
    fn prepare(&self, spec: &ClusterSpec) -> Result<PathBuf, DaskLaunchError> {
        let files = |path: &Path| {
            let path = path.to_owned();
            move |source| DaskLaunchError::Files { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(files(&self.root))?;
        let dir = self.dir(&spec.name);
        if dir.is_dir() {
            return Ok(dir);
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(files(&dir))?;
        for (name, content) in [
            ("dask.crt", spec.tls.cert.as_str()),
            ("dask.pem", spec.tls.key.expose()),
            ("api-token", spec.token.expose()),
        ] {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(content.as_bytes()))
                .map_err(files(&path))?;
        }
        Ok(dir)
    }

    /// The whole environment of a cluster's `role` process whose files are in `dir`.
    fn env(&self, spec: &ClusterSpec, dir: &Path, role: &str) -> Vec<(String, OsString)> {
        let crt = dir.join("dask.crt");
        let pem = dir.join("dask.pem");
        let role_upper = role.to_ascii_uppercase();
        let mut env: Vec<(String, OsString)> = KEPT_ENV
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| ((*k).to_owned(), v)))
            .collect();
        env.extend([
            ("USER".to_owned(), spec.user.clone().into()),
            (
                "DASK_GATEWAY_API_URL".to_owned(),
                spec.api_url.clone().into(),
            ),
            (
                "DASK_GATEWAY_API_TOKEN".to_owned(),
                dir.join("api-token").into(),
            ),
            (
                "DASK_GATEWAY_CLUSTER_NAME".to_owned(),
                spec.name.clone().into(),
            ),
            (
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION".to_owned(),
                "True".into(),
            ),
            (
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE".to_owned(),
                crt.clone().into(),
            ),
            (
                format!("DASK_DISTRIBUTED__COMM__TLS__{role_upper}__CERT"),
                crt.into(),
            ),
            (
                format!("DASK_DISTRIBUTED__COMM__TLS__{role_upper}__KEY"),
                pem.into(),
            ),
            (
                "DASK_TEMPORARY_DIRECTORY".to_owned(),
                dir.as_os_str().to_owned(),
            ),
        ]);
        env
    }

    fn command(
        &self,
        spec: &ClusterSpec,
        dir: &Path,
        role: &str,
        log: &str,
    ) -> Result<tokio::process::Command, DaskLaunchError> {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.env_clear()
            .envs(self.env(spec, dir, role))
            .current_dir(dir)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null());
        let log_path = dir.join(log);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|source| DaskLaunchError::Files {
                path: log_path.clone(),
                source,
            })?;
        let err = out.try_clone().map_err(|source| DaskLaunchError::Files {
            path: log_path,
            source,
        })?;
        cmd.stdout(out).stderr(err);
        Ok(cmd)
    }

    fn spawn(
        &self,
        mut cmd: tokio::process::Command,
        what: String,
    ) -> Result<Box<dyn DaskProcess>, DaskLaunchError> {
        let child = cmd.spawn().map_err(|source| DaskLaunchError::Spawn {
            what: what.clone(),
            python: self.python.clone(),
            source,
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        tracing::debug!(what, pgid, "dask process started");
        Ok(Box::new(LocalProcess {
            child: parking_lot::Mutex::new(Some(child)),
            pgid,
            what,
        }))
    }
}

impl DaskLauncher for LocalDaskLauncher {
    fn start_scheduler<'a>(
        &'a self,
        spec: &'a ClusterSpec,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let dir = self.prepare(spec)?;
            let mut args: Vec<String> = ["--host", "127.0.0.1"].map(str::to_owned).into();
            args.extend(spec.scheduler_args("0", "127.0.0.1:0", "127.0.0.1:0"));
            let warm = self.take_warm();
            self.refill();
            if let Some(child) = warm
                && let Some(process) = self.become_scheduler(child, spec, &dir, &args).await
            {
                return Ok(process);
            }
            let mut cmd = self.command(spec, &dir, "scheduler", "scheduler.log")?;
            cmd.args(["-m", "dask", "scheduler"]).args(&args);
            self.spawn(cmd, format!("scheduler of cluster {}", spec.name))
        })
    }

    fn start_worker<'a>(
        &'a self,
        spec: &'a ClusterSpec,
        worker: &'a str,
        scheduler_address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let dir = self.prepare(spec)?;
            let mut cmd = self.command(spec, &dir, "worker", &format!("worker-{worker}.log"))?;
            cmd.args(["-m", "dask", "worker", scheduler_address])
                .args(["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"])
                .args(["--name", worker, "--nthreads"])
                .arg(spec.worker_cores.to_string())
                .arg("--memory-limit")
                .arg(spec.worker_memory_bytes.to_string());
            self.spawn(cmd, format!("worker {worker} of cluster {}", spec.name))
        })
    }

    fn remove_orphans<'a>(&'a self, is_live: &'a IsLiveCluster<'a>) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let me = std::process::id();
            let found = orphans(&self.api_url, me);
            let mut removed = Vec::new();
            for (pgid, cluster) in found {
                if cluster.as_deref().is_some_and(is_live) {
                    continue;
                }
                let what = cluster
                    .clone()
                    .unwrap_or_else(|| "(warm scheduler)".to_owned());
                tracing::warn!(
                    pgid,
                    cluster = what,
                    "stopping a Dask process an earlier run of the gateway left"
                );
                let group = Pid::from_raw(pgid);
                let _ = killpg(group, Signal::SIGTERM);
                for _ in 0..50 {
                    if killpg(group, None).is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = killpg(group, Signal::SIGKILL);
                if let Some(name) = cluster
                    && !removed.contains(&name)
                {
                    removed.push(name);
                }
            }
            removed
        })
    }

    fn cleanup<'a>(&'a self, spec: &'a ClusterSpec) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let dir = self.dir(&spec.name);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a cluster's files");
            }
        })
    }
}

/// A local process (and its process group: a worker's nanny starts the worker as a child).
#[derive(Debug)]
struct LocalProcess {
    child: parking_lot::Mutex<Option<tokio::process::Child>>,
    pgid: i32,
    what: String,
}

impl DaskProcess for LocalProcess {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let child = self.child.lock().take();
            if self.pgid > 0 {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
            }
            if let Some(mut child) = child
                && tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
            {
                tracing::warn!(
                    what = self.what,
                    "did not stop within 5 s of SIGTERM; killing it"
                );
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            // Whatever is left of the group (a nanny's worker) goes too.
            if self.pgid > 0 {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            }
        })
    }

    fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock();
        match guard.as_mut().map(tokio::process::Child::try_wait) {
            None => Some("stopped".to_owned()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(e.to_string()),
        }
    }
}

/// Process groups of Dask processes that report to `api_url` and are not this gateway's own
/// (`me`'s children): `(pgid, cluster)`, the cluster from the process's environment or, for a
/// warm scheduler that became one, the directory it runs in (`None`: a warm one that never did).
/// Only processes whose environment can be read (the gateway's own user's) are seen.
fn orphans(api_url: &str, me: u32) -> Vec<(i32, Option<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let marker = format!("DASK_GATEWAY_API_URL={api_url}");
    let mut out: Vec<(i32, Option<String>)> = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&marker.as_bytes()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let (ppid, pgid) = (fields.nth(1), fields.next());
        let (Some(ppid), Some(pgid)) = (
            ppid.and_then(|p| p.parse::<u32>().ok()),
            pgid.and_then(|p| p.parse::<i32>().ok()),
        ) else {
            continue;
        };
        if ppid == me || pgid <= 1 {
            continue;
        }
        let named = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"DASK_GATEWAY_CLUSTER_NAME="))
            .map(|n| String::from_utf8_lossy(n).into_owned());
        let cluster = named.or_else(|| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            (cwd != Path::new("/"))
                .then(|| cwd.file_name().map(|n| n.to_string_lossy().into_owned()))
                .flatten()
        });
        if !out.iter().any(|(g, _)| *g == pgid) {
            out.push((pgid, cluster));
        }
    }
    out
}
