//! The local-process spawner: `jupyterhub-singleuser` as a child process of the hub.
//!
//! Each server runs in its own process group (so a Ctrl-C to the hub's terminal does not reach
//! it and a stop reaches all its kernels), in `<work_root>/<user>` (also its `HOME`), with stdout
//! and stderr appended to `<log_dir>/<user>[-<server>].log`. Its state is
//! `{"pid", "port", "start_time"}`: `start_time` is the process start time from `/proc`, so a
//! restarted hub never mistakes a recycled PID for its server.
//!
//! # Hazards
//! The port is chosen by binding port 0 and releasing it; another process may take it before
//! the server binds it. The server then fails to start and the hub reports the spawn as failed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Spawner;
use crate::local_children::Children;
use crate::local_records;
use crate::types::{
    ProgressEvent, ProgressSink, ServerId, SpawnError, SpawnRequest, Spawned, State, Status,
};

/// Settings of the local-process spawner.
#[derive(Debug, Clone)]
pub struct LocalProcessConfig {
    /// The command, e.g. `[".venv/bin/jupyterhub-singleuser"]`.
    pub cmd: Vec<String>,
    /// Extra arguments after the command.
    pub args: Vec<String>,
    /// The address servers listen on.
    pub ip: IpAddr,
    /// Users' working directories live below this (`<work_root>/<user>`).
    pub work_root: PathBuf,
    /// Server logs are written here.
    pub log_dir: PathBuf,
    /// Variables inherited from the hub's own environment.
    pub env_keep: Vec<String>,
    /// Variables set last, overriding everything (admin configuration).
    pub environment: BTreeMap<String, String>,
    /// How long a server gets to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl LocalProcessConfig {
    /// Defaults: `jupyterhub-singleuser` from `venv`, servers on 127.0.0.1, files under `data_dir`.
    pub fn new(venv: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        let venv = venv.into();
        let data_dir = data_dir.into();
        Self {
            cmd: vec![venv.join("bin/jupyterhub-singleuser").display().to_string()],
            args: Vec::new(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            work_root: data_dir.join("users"),
            log_dir: data_dir.join("logs"),
            env_keep: [
                "PATH",
                "PYTHONPATH",
                "LANG",
                "LC_ALL",
                "LD_LIBRARY_PATH",
                "VIRTUAL_ENV",
                "CONDA_ROOT",
                "CONDA_DEFAULT_ENV",
                "JUPYTERHUB_SINGLEUSER_APP",
            ]
            .map(String::from)
            .to_vec(),
            environment: BTreeMap::new(),
            stop_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalState {
    pid: i32,
    port: u16,
    start_time: u64,
}

/// Spawns single-user servers as local processes.
#[derive(Debug)]
pub struct LocalProcessSpawner {
    config: LocalProcessConfig,
    /// The server processes this hub process started, and how the reaped ones ended.
    children: Children,
}

impl LocalProcessSpawner {
    /// A spawner with `config`.
    pub fn new(config: LocalProcessConfig) -> Self {
        Self {
            config,
            children: Children::default(),
        }
    }

    fn state_of(server: &ServerId, state: &State) -> Result<LocalState, SpawnError> {
        serde_json::from_value(state.0.clone()).map_err(|e| SpawnError::BadState {
            server: server.clone(),
            reason: e.to_string(),
        })
    }

    /// Whether the process in `st` is alive and is the one we started.
    async fn alive(&self, st: &LocalState) -> Result<(), Option<i32>> {
        if let Some(code) = self.children.exit(st.pid).await {
            return Err(code);
        }
        match process_start_time(st.pid) {
            Some((start, zombie)) if start == st.start_time && !zombie => Ok(()),
            _ => Err(None),
        }
    }

    /// Whether a stopped server is gone: its process and every other process of its group
    /// (kernels, children that outlive the server's exit while their signal is pending or
    /// ignored). Called only after a signal was sent to the group while its leader lived: no
    /// other group can have that id while one of ours remains.
    async fn gone(&self, st: &LocalState) -> bool {
        if self.alive(st).await.is_ok() {
            return false;
        }
        // No process at all in the group (the common case once it exited): no need to read
        // every process's stat, which costs much with many servers running.
        if killpg(Pid::from_raw(st.pid), None) == Err(nix::errno::Errno::ESRCH) {
            return true;
        }
        !group_has_live_members(st.pid)
    }
}

#[async_trait::async_trait]
impl Spawner for LocalProcessSpawner {
    fn kind(&self) -> &'static str {
        "localprocess"
    }

    async fn start(
        &self,
        req: SpawnRequest,
        progress: ProgressSink,
    ) -> Result<Spawned, SpawnError> {
        let server = req.server.clone();
        let launch_err = |reason: String, source: Option<std::io::Error>| SpawnError::Launch {
            server: server.clone(),
            reason,
            source,
        };
        let command = req.spec.cmd.as_ref().unwrap_or(&self.config.cmd);
        let args = req.spec.args.as_ref().unwrap_or(&self.config.args);
        let (program, rest) = command
            .split_first()
            .ok_or_else(|| launch_err("no command configured".into(), None))?;
        // Held from choosing the port until the record naming it is written, so that no other
        // start (of this hub or of another replica on this host) is given the same port before
        // the server binds it.
        let ports_lock = {
            let root = self.config.work_root.clone();
            tokio::task::spawn_blocking(move || local_records::lock(&root))
                .await
                .map_err(|e| launch_err(format!("cannot lock the server records: {e}"), None))?
                .map_err(|e| launch_err("cannot lock the server records".into(), Some(e)))?
        };
        let port = free_port(self.config.ip, |p| {
            local_records::port_taken(&self.config.work_root, p)
        })
        .map_err(|e| launch_err("no free port".into(), Some(e)))?;
        let work_dir = if req.spec.no_home {
            // Emptied at every start: nothing the server writes here survives it.
            let dir = self
                .config
                .work_root
                .join(".no-home")
                .join(format!("{}-{}", req.server.user, req.server.name));
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(launch_err(
                        format!("cannot empty {}", dir.display()),
                        Some(e),
                    ));
                }
            }
            dir
        } else {
            self.config.work_root.join(&req.server.user)
        };
        let log_name = if req.server.name.is_empty() {
            format!("{}.log", req.server.user)
        } else {
            format!("{}-{}.log", req.server.user, req.server.name)
        };
        for dir in [&work_dir, &self.config.log_dir] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| launch_err(format!("cannot create {}", dir.display()), Some(e)))?;
        }
        let log_path = self.config.log_dir.join(log_name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| launch_err(format!("cannot open {}", log_path.display()), Some(e)))?;
        let log_err = log
            .try_clone()
            .map_err(|e| launch_err("cannot share the log file".into(), Some(e)))?;

        let mut cmd = Command::new(program);
        cmd.args(rest).args(args);
        if running_as_root() && !args.iter().any(|a| a == "--allow-root") {
            // Servers run as the hub's own user (no setuid); Jupyter Server refuses root
            // without this flag.
            cmd.arg("--allow-root");
        }
        cmd.current_dir(&work_dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        for key in &self.config.env_keep {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.env("HOME", &work_dir);
        cmd.envs(&req.env);
        let host = match self.config.ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        cmd.env(
            "JUPYTERHUB_SERVICE_URL",
            format!("http://{host}:{port}{}", req.prefix),
        );
        cmd.envs(&self.config.environment);

        progress.send(ProgressEvent::new(20, "Starting your server process"));
        let child = cmd
            .spawn()
            .map_err(|e| launch_err(format!("cannot run {program}"), Some(e)))?;
        let pid = i32::try_from(child.id())
            .map_err(|_| launch_err(format!("pid {} out of range", child.id()), None))?;
        let start_time = process_start_time(pid).map(|(t, _)| t).unwrap_or(0);
        // Reaped when it exits, and how it ended kept for poll().
        self.children.add(pid, child).await;
        tracing::info!(server = %req.server, pid, port, log = %log_path.display(), "server process started");
        let url = format!("http://{host}:{port}");
        let record = local_records::Record {
            user: req.server.user.clone(),
            server: req.server.name.clone(),
            pid,
            port,
            start_time,
            url: url.clone(),
        };
        if let Err(e) = local_records::write(&self.config.work_root, &record) {
            tracing::warn!(server = %req.server, error = %e, "cannot write the server's record");
        }
        drop(ports_lock);
        let state = serde_json::to_value(LocalState {
            pid,
            port,
            start_time,
        })
        .unwrap_or(Value::Null);
        Ok(Spawned {
            url,
            state: State(state),
        })
    }

    async fn find(&self, server: &ServerId) -> Result<Option<Spawned>, SpawnError> {
        let Some(r) = local_records::read(&self.config.work_root, server) else {
            return Ok(None);
        };
        let st = LocalState {
            pid: r.pid,
            port: r.port,
            start_time: r.start_time,
        };
        if self.alive(&st).await.is_err() {
            return Ok(None);
        }
        Ok(Some(Spawned {
            url: r.url,
            state: State(serde_json::to_value(st).unwrap_or(Value::Null)),
        }))
    }

    async fn remove_orphans(&self, known: &[ServerId]) -> Result<Vec<ServerId>, SpawnError> {
        let mut removed = Vec::new();
        for r in local_records::all(&self.config.work_root) {
            let id = ServerId {
                user: r.user.clone(),
                name: r.server.clone(),
            };
            if known.contains(&id) {
                // A record of an earlier version has no port marker yet.
                if let Err(e) = local_records::mark_port(&self.config.work_root, &r) {
                    tracing::warn!(server = %id, error = %e, "cannot mark a server's port taken");
                }
                continue;
            }
            let st = LocalState {
                pid: r.pid,
                port: r.port,
                start_time: r.start_time,
            };
            if self.alive(&st).await.is_ok() {
                tracing::info!(server = %id, pid = r.pid, "stopping an orphaned server process");
                let state = State(serde_json::to_value(&st).unwrap_or(Value::Null));
                self.stop(&id, &state, false).await?;
                removed.push(id.clone());
            }
            local_records::remove_if(&self.config.work_root, &id, r.pid);
        }
        Ok(removed)
    }

    async fn poll(&self, server: &ServerId, state: &State) -> Result<Status, SpawnError> {
        let st = Self::state_of(server, state)?;
        Ok(match self.alive(&st).await {
            Ok(()) => Status::Running,
            Err(code) => Status::Exited(code),
        })
    }

    async fn stop(&self, server: &ServerId, state: &State, now: bool) -> Result<(), SpawnError> {
        if state.0.is_null() || state.0.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(());
        }
        let st = Self::state_of(server, state)?;
        let stopped = self.stop_process(server, &st, now).await;
        if stopped.is_ok() {
            local_records::remove_if(&self.config.work_root, server, st.pid);
            self.children.forget(st.pid).await;
        }
        stopped
    }
}

/// How often a stopping server is checked once it has had a few milliseconds.
const STOP_POLL: Duration = Duration::from_millis(20);

impl LocalProcessSpawner {
    async fn stop_process(
        &self,
        server: &ServerId,
        st: &LocalState,
        now: bool,
    ) -> Result<(), SpawnError> {
        let st = st.clone();
        if self.alive(&st).await.is_err() {
            return Ok(());
        }
        let group = Pid::from_raw(st.pid);
        let deadline = tokio::time::Instant::now()
            + if now {
                Duration::ZERO
            } else {
                self.config.stop_grace
            };
        if !now {
            let _ = killpg(group, Signal::SIGTERM);
        }
        let mut pause = Duration::from_millis(1);
        while tokio::time::Instant::now() < deadline {
            if self.gone(&st).await {
                return Ok(());
            }
            // Most servers exit within milliseconds of SIGTERM: 1, 2, 4, ... 16 ms, then 20 ms.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(STOP_POLL);
        }
        tracing::warn!(%server, pid = st.pid, "server did not exit after SIGTERM; killing it");
        if let Err(e) = killpg(group, Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            return Err(SpawnError::Stop {
                server: server.clone(),
                reason: e.to_string(),
            });
        }
        for _ in 0..250 {
            if self.gone(&st).await {
                return Ok(());
            }
            tokio::time::sleep(STOP_POLL).await;
        }
        Err(SpawnError::Stop {
            server: server.clone(),
            reason: "process still alive after SIGKILL".into(),
        })
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port free now on `ip` that no launched server's record names (a server launched a moment
/// ago may not have bound its port yet).
fn free_port(ip: IpAddr, taken: impl Fn(u16) -> bool) -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
        if !taken(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "every free port offered is named by a launched server",
    ))
}

/// Whether a live (non-zombie) process is in process group `pgid`, from `/proc`.
fn group_has_live_members(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        // After ')': state (field 3) is index 0, the process group (field 5) index 2.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
        !zombie && fields.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(pgid)
    })
}

/// The start time (clock ticks since boot) of `pid` and whether it is a zombie, from `/proc`.
pub(crate) fn process_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    // After ')': field 3 (state) is index 0, so field 22 (starttime) is index 19.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_a_record_names_is_never_chosen() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let err = free_port(ip, |_| true).unwrap_err();
        assert!(
            err.to_string().contains("named by a launched server"),
            "{err}"
        );
        let taken: std::collections::HashSet<u16> = [free_port(ip, |_| false).unwrap()].into();
        for _ in 0..20 {
            let p = free_port(ip, |p| taken.contains(&p)).unwrap();
            assert!(!taken.contains(&p));
        }
    }
}
