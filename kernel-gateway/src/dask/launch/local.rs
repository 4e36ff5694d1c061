//! [`LocalDaskLauncher`]: clusters as local processes of the gateway's user.
//!
//! Secrets never reach argv or logs: the cluster's token and TLS key are files (0600) in the
//! cluster's own directory (0700), named to the processes through the environment
//! (`DASK_GATEWAY_API_TOKEN` holds the token file's path, which the preload reads).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{ClusterSpec, DaskLaunchError, DaskLauncher, DaskProcess};

/// Clusters as local processes of the gateway's user, each in its own process group.
#[derive(Debug)]
pub struct LocalDaskLauncher {
    python: PathBuf,
    root: PathBuf,
}

impl LocalDaskLauncher {
    /// Runs `python -m dask scheduler|worker`, keeping each cluster's files under `root`.
    pub fn new(python: PathBuf, root: PathBuf) -> Self {
        LocalDaskLauncher { python, root }
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

    fn command(
        &self,
        spec: &ClusterSpec,
        dir: &Path,
        role: &str,
        log: &str,
    ) -> Result<tokio::process::Command, DaskLaunchError> {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.env_clear();
        for key in ["PATH", "LANG", "LC_ALL", "HOME", "TZ"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        let crt = dir.join("dask.crt");
        let pem = dir.join("dask.pem");
        let role_upper = role.to_ascii_uppercase();
        cmd.env("USER", &spec.user)
            .env("DASK_GATEWAY_API_URL", &spec.api_url)
            .env("DASK_GATEWAY_API_TOKEN", dir.join("api-token"))
            .env("DASK_GATEWAY_CLUSTER_NAME", &spec.name)
            .env("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "True")
            .env("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", &crt)
            .env(
                format!("DASK_DISTRIBUTED__COMM__TLS__{role_upper}__CERT"),
                &crt,
            )
            .env(
                format!("DASK_DISTRIBUTED__COMM__TLS__{role_upper}__KEY"),
                &pem,
            )
            .env("DASK_TEMPORARY_DIRECTORY", dir)
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
            let mut cmd = self.command(spec, &dir, "scheduler", "scheduler.log")?;
            cmd.args([
                "-m",
                "dask",
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", "0", "--dashboard-address", "127.0.0.1:0"])
            .args(["--dashboard-prefix", &spec.dashboard_prefix])
            .args(["--preload", "dask_gateway.scheduler_preload"])
            .args(["--dg-api-address", "127.0.0.1:0"])
            .arg("--dg-heartbeat-period")
            .arg(spec.heartbeat_period.to_string())
            .arg("--dg-idle-timeout")
            .arg(spec.idle_timeout.to_string());
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
