//! Local-process launcher: writes a connection file with five free TCP ports on 127.0.0.1 and runs
//! the kernelspec's argv in its own process group (so SIGINT reaches the whole kernel).
//!
//! Ports: each kernel gets five ports from `kernel_port_range` (default 20000..32000, below Linux's
//! ephemeral range 32768..60999), reserved in this process until the kernel is gone and checked
//! free by binding them. Ephemeral ports (`bind(0)`) are a bad source under load: the gateway's
//! own outgoing connections, and every other port-0 user, take ports from that range, and one
//! can grab a kernel's port between our check and the kernel's bind (measured: 7 of 50 concurrent
//! starts failed with `Address already in use`). A range of `[0, 0]` goes back to ephemeral ports.
//!
//! Hazard: a port is still released between our check and the kernel's bind; a process outside
//! the gateway binding ports in the range can take it. The kernel then fails to start and the
//! start reports it.
//!
//! Quota enforcement for local kernels ([`ResourceLimits`]), applied to the child right after
//! spawn with `prlimit(2)` / `sched_setaffinity(2)` (threads the kernel starts later inherit both):
//! - memory: `RLIMIT_DATA` (default) or `RLIMIT_AS` (`local_memory_limit`); allocations beyond it
//!   fail (`MemoryError` in Python) instead of the machine swapping;
//! - CPUs: the kernel is pinned to `ceil(cpus)` CPUs when that is fewer than the gateway may use,
//!   and `OMP_NUM_THREADS` / `OPENBLAS_NUM_THREADS` / `MKL_NUM_THREADS` default to that count;
//! - GPUs: with a quota of 0 GPUs `CUDA_VISIBLE_DEVICES` is set empty; a positive count is
//!   advisory (no device assignment locally).
//!
//! These are per-process limits, not cgroups: a kernel that forks can exceed them in total.
//!
//! Hazard: every local kernel runs as the gateway's own Unix account, whoever started it, so
//! one user's kernel can read and change another's files, connection files and processes.
//! Fine for one user (a laptop); for more, run kernels as pods or Slurm jobs under per-user
//! accounts. The gateway logs [`shared_account_warnings`] at start and lists them on `GET /api`.

/// The modes of `config` that run every user's kernels under one Unix account, each with why
/// that is unsafe for more than one user (logged at start, listed as `unsafe_modes` on `/api`).
pub fn shared_account_warnings(config: &crate::Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.default_launcher == "local" {
        out.push(
            "local launcher (default_launcher = \"local\"): every user's kernel runs as the \
             gateway's own Unix account, so users can read and change each other's files, \
             kernel connection files and processes; unsafe for more than one user (use the \
             Kubernetes launcher or Slurm with a per-user submit_prefix)"
                .to_owned(),
        );
    }
    if let Some(slurm) = &config.slurm
        && slurm.submit_prefix.is_empty()
    {
        out.push(
            "Slurm launcher without slurm.submit_prefix: every user's kernel job runs as the \
             gateway's own Unix account, so one user's job can read another's job scripts, \
             one-time secret files, kernel connection files and processes; unsafe for more \
             than one user (set submit_prefix = [\"sudo\", \"-n\", \"-u\", \"{user}\", \"--\"])"
                .to_owned(),
        );
    }
    out
}

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use jupyter_protocol::ConnectionInfo;
use jupyter_protocol::connection_info::Transport;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{
    ExitInfo, KernelProcess, KernelSignal, LaunchError, LaunchRequest, Launched, Launcher,
    ResourceLimits,
};
use crate::config::MemoryLimitMode;

/// Thread-count variables set to the CPU quota unless the kernel env already has them.
const THREAD_ENV: [&str; 3] = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"];

/// CPUs a kernel with `cpus` may use, as a count of whole CPUs (at least 1).
fn whole_cpus(cpus: f64) -> usize {
    (cpus.ceil() as usize).max(1)
}

/// Environment additions for `limits` (only where `env` does not set them).
fn limit_env(
    limits: &ResourceLimits,
    env: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(cpus) = limits.cpus {
        for k in THREAD_ENV {
            if !env.contains_key(k) {
                out.push((k.to_owned(), whole_cpus(cpus).to_string()));
            }
        }
    }
    if limits.gpus == Some(0) && !env.contains_key("CUDA_VISIBLE_DEVICES") {
        out.push(("CUDA_VISIBLE_DEVICES".to_owned(), String::new()));
    }
    out
}

/// Applies memory and CPU limits to the running process `pid`. Failures are logged: the quota
/// is then advisory for this kernel.
fn enforce_limits(pid: u32, kernel_id: &str, limits: &ResourceLimits) {
    let Some(rpid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Some(bytes) = limits.memory_bytes {
        let resource = match limits.memory_mode {
            MemoryLimitMode::Data => Some(rustix::process::Resource::Data),
            MemoryLimitMode::As => Some(rustix::process::Resource::As),
            MemoryLimitMode::Off => None,
        };
        if let Some(resource) = resource {
            let limit = rustix::process::Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            };
            if let Err(e) = rustix::process::prlimit(Some(rpid), resource, limit) {
                tracing::warn!(kernel_id, error = %e, "cannot set the kernel's memory limit; it is advisory");
            }
        }
    }
    if let Some(cpus) = limits.cpus
        && let Ok(allowed) = rustix::thread::sched_getaffinity(None)
    {
        let available: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        let want = whole_cpus(cpus);
        if want < available.len() {
            // Spread kernels over the CPUs instead of stacking them all on the first ones.
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let start = NEXT.fetch_add(want, Ordering::Relaxed);
            let mut set = rustix::thread::CpuSet::new();
            for i in 0..want {
                set.set(available[(start + i) % available.len()]);
            }
            if let Err(e) = rustix::thread::sched_setaffinity(Some(rpid), &set) {
                tracing::warn!(kernel_id, error = %e, "cannot pin the kernel's CPUs; the CPU quota is advisory");
            }
        }
    }
}

/// Default `kernel_port_range`: below the Linux ephemeral range.
pub const DEFAULT_PORT_RANGE: [u16; 2] = [20000, 32000];

/// Ports of a range handed to kernels of this process, one flag per port.
#[derive(Debug)]
struct PortPool {
    first: u16,
    used: Vec<AtomicBool>,
    next: AtomicUsize,
}

/// Pools by range, shared by every launcher of this process (two launchers with their own pools
/// would hand out the same ports).
static POOLS: std::sync::OnceLock<arc_swap::ArcSwap<Vec<Arc<PortPool>>>> =
    std::sync::OnceLock::new();

impl PortPool {
    fn new([lo, hi]: [u16; 2]) -> Option<Self> {
        // A random starting point, so gateways on one host rarely race for the same ports.
        let offset =
            (uuid::Uuid::new_v4().as_u128() % u128::from(hi.saturating_sub(lo).max(1))) as usize;
        (lo > 0 && hi > lo).then(|| PortPool {
            first: lo,
            used: (lo..hi).map(|_| AtomicBool::new(false)).collect(),
            next: AtomicUsize::new(offset),
        })
    }

    /// The process-wide pool for `range`.
    fn shared(range: [u16; 2]) -> Option<Arc<Self>> {
        let pools = POOLS.get_or_init(Default::default);
        let find = |v: &Vec<Arc<PortPool>>| {
            v.iter()
                .find(|p| p.first == range[0] && usize::from(range[1] - range[0]) == p.used.len())
                .cloned()
        };
        if let Some(p) = find(&pools.load()) {
            return Some(p);
        }
        let fresh = Arc::new(Self::new(range)?);
        let mut chosen = fresh.clone();
        pools.rcu(|v| {
            if let Some(p) = find(v) {
                chosen = p;
                return v.as_ref().clone();
            }
            chosen = fresh.clone();
            let mut v = v.as_ref().clone();
            v.push(fresh.clone());
            v
        });
        Some(chosen)
    }

    /// Reserves five ports free on `ip`.
    fn take(&self, ip: &str) -> Option<[u16; 5]> {
        let n = self.used.len();
        let mut got = Vec::with_capacity(5);
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if self.used[i]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let port = self.first + i as u16;
            if std::net::TcpListener::bind((ip, port)).is_ok() {
                got.push(port);
                if got.len() == 5 {
                    return got.try_into().ok();
                }
            } else {
                self.used[i].store(false, Ordering::Release);
            }
        }
        self.release(&got);
        None
    }

    fn release(&self, ports: &[u16]) {
        for p in ports {
            if let Some(flag) = p
                .checked_sub(self.first)
                .and_then(|i| self.used.get(usize::from(i)))
            {
                flag.store(false, Ordering::Release);
            }
        }
    }
}

/// Runs kernels as child processes of the gateway.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    runtime_dir: PathBuf,
    ip: String,
    pool: Option<Arc<PortPool>>,
}

impl LocalLauncher {
    /// A launcher writing connection files under `runtime_dir`, kernels listening on `ip`.
    pub fn new(runtime_dir: PathBuf, ip: impl Into<String>) -> Self {
        LocalLauncher {
            runtime_dir,
            ip: ip.into(),
            pool: PortPool::shared(DEFAULT_PORT_RANGE),
        }
    }

    /// Takes kernel ports from `lo..hi` (`[0, 0]` = ephemeral ports from the OS).
    pub fn with_port_range(mut self, range: [u16; 2]) -> Self {
        self.pool = PortPool::shared(range);
        self
    }

    /// Connection files under `$TMPDIR/stackhub-gateway-<pid>`, kernels on 127.0.0.1.
    pub fn with_defaults() -> Self {
        Self::new(
            std::env::temp_dir().join(format!("stackhub-gateway-{}", std::process::id())),
            "127.0.0.1",
        )
    }

    fn free_ports(&self) -> Result<[u16; 5], LaunchError> {
        if let Some(pool) = &self.pool {
            return pool.take(&self.ip).ok_or_else(|| LaunchError::Prepare {
                what: "ports",
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "no five free ports left in kernel_port_range",
                ),
            });
        }
        // Keep all five listeners open until all are chosen so the five ports differ.
        let prepare = |source| LaunchError::Prepare {
            what: "ports",
            source,
        };
        let listeners = (0..5)
            .map(|_| std::net::TcpListener::bind((self.ip.as_str(), 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(prepare)?;
        let mut ports = [0u16; 5];
        for (p, l) in ports.iter_mut().zip(&listeners) {
            *p = l.local_addr().map_err(prepare)?.port();
        }
        Ok(ports)
    }

    async fn write_connection_file(
        &self,
        kernel_id: &str,
        info: &ConnectionInfo,
    ) -> Result<PathBuf, LaunchError> {
        let prepare = |source| LaunchError::Prepare {
            what: "connection file",
            source,
        };
        tokio::fs::create_dir_all(&self.runtime_dir)
            .await
            .map_err(prepare)?;
        let path = self.runtime_dir.join(format!(
            "kernel-{kernel_id}-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        let json =
            serde_json::to_vec_pretty(info).map_err(|e| prepare(std::io::Error::other(e)))?;
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let mut file = options.open(&path).await.map_err(prepare)?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &json)
            .await
            .map_err(prepare)?;
        Ok(path)
    }
}

impl Launcher for LocalLauncher {
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let ports = self.free_ports()?;
            // Given back when the process handle goes (or right away if the launch fails).
            let reservation = PortReservation {
                pool: self.pool.clone(),
                ports,
            };
            let [shell, iopub, stdin, control, hb] = ports;
            let connection = ConnectionInfo {
                ip: self.ip.clone(),
                transport: Transport::TCP,
                shell_port: shell,
                iopub_port: iopub,
                stdin_port: stdin,
                control_port: control,
                hb_port: hb,
                key: request.key.clone(),
                signature_scheme: "hmac-sha256".to_owned(),
                kernel_name: Some(request.spec.name.clone()),
            };
            let file = self
                .write_connection_file(&request.kernel_id, &connection)
                .await?;
            let file_str = file.to_string_lossy().into_owned();
            let argv: Vec<String> = request
                .spec
                .resolved_argv()
                .iter()
                .map(|a| a.replace("{connection_file}", &file_str))
                .collect();
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env_clear()
                .envs(&request.env)
                .envs(limit_env(&request.limits, &request.env))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if let Some(dir) = &request.working_dir {
                crate::workdir::ensure(dir).map_err(|source| LaunchError::Prepare {
                    what: "the kernel's working directory",
                    source,
                })?;
                cmd.current_dir(dir);
            }
            let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
                program: argv[0].clone(),
                source,
            })?;
            let pid = child.id().unwrap_or(0);
            enforce_limits(pid, &request.kernel_id, &request.limits);
            let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
            if let Some(stderr) = child.stderr.take() {
                let tail = stderr_tail.clone();
                let kernel_id = request.kernel_id.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(kernel_id = %kernel_id, "kernel stderr: {line}");
                        let mut tail = tail.lock().await;
                        if tail.len() == 20 {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                });
            }
            tracing::info!(kernel_id = %request.kernel_id, pid, kernel_name = %request.spec.name, "kernel process started");
            let process = LocalProcess {
                pid,
                child: Mutex::new(child),
                stderr_tail,
                connection_file: file,
                _ports: reservation,
            };
            Ok(Launched {
                connection,
                process: Box::new(process),
            })
        })
    }
}

/// Ports reserved in the pool for one kernel process; released on drop.
struct PortReservation {
    pool: Option<Arc<PortPool>>,
    ports: [u16; 5],
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.release(&self.ports);
        }
    }
}

struct LocalProcess {
    _ports: PortReservation,
    pid: u32,
    child: Mutex<Child>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    connection_file: PathBuf,
}

impl std::fmt::Debug for LocalProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        // The child itself is killed by kill_on_drop; kill the rest of its group and the file.
        if self.pid != 0 {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.connection_file);
    }
}

impl KernelProcess for LocalProcess {
    fn signal(&self, signal: KernelSignal) -> Result<(), LaunchError> {
        let sig = match signal {
            KernelSignal::Interrupt => Signal::SIGINT,
            KernelSignal::Terminate => Signal::SIGTERM,
            KernelSignal::Kill => Signal::SIGKILL,
        };
        let pid = i32::try_from(self.pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(LaunchError::Signal {
                signal,
                detail: "no pid".into(),
            })?;
        killpg(Pid::from_raw(pid), sig).map_err(|e| LaunchError::Signal {
            signal,
            detail: e.to_string(),
        })
    }

    fn poll(&self) -> BoxFuture<'_, Option<ExitInfo>> {
        Box::pin(async move {
            let status = match self.child.lock().await.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => return None,
                Err(e) => {
                    return Some(ExitInfo {
                        status: format!("wait failed: {e}"),
                        last_stderr: None,
                    });
                }
            };
            let status = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => status.to_string(),
            };
            let last_stderr = self.stderr_tail.lock().await.back().cloned();
            Some(ExitInfo {
                status,
                last_stderr,
            })
        })
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "pid": self.pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_distinct_ports_and_takes_them_back() {
        let pool = PortPool::new([41000, 41012]).unwrap();
        let a = pool.take("127.0.0.1").unwrap();
        let b = pool.take("127.0.0.1").unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|p| (41000..41012).contains(p)));
        assert!(pool.take("127.0.0.1").is_none(), "only 2 ports left");
        pool.release(&a);
        assert!(pool.take("127.0.0.1").is_some());
        assert!(PortPool::new([0, 0]).is_none());
        let shared = PortPool::shared([42000, 42100]).unwrap();
        assert!(Arc::ptr_eq(
            &shared,
            &PortPool::shared([42000, 42100]).unwrap()
        ));
    }
}
