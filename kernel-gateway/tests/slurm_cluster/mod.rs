//! A real single-node Slurm per test (Debian slurmctld + slurmd, started by the project's
//! `scripts/slurm-local`), and a gateway whose Slurm launcher submits to it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kernel_gateway::config::UserToken;
use kernel_gateway::launcher::slurm::{SIGNATURE_HEADER, SlurmConfig, SlurmLauncher, SlurmProfile};
use kernel_gateway::quota::QuotaRole;
use kernel_gateway::{ByKernelSpec, Config, LocalLauncher};
use serde_json::json;

use crate::common::{Gateway, venv_python};

pub const ALICE: &str = "alice-token";
/// Job name of kernel jobs (what the launcher polls) and this test's instance tag.
pub const JOB_NAME: &str = "stackhub-kernel";
pub const INSTANCE: &str = "test";

fn repo() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

pub use stackhub_e2e::support::free_ports;

/// One Slurm cluster under a temp dir; stopped on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub node: String,
}

impl Cluster {
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("stackhub-slurm-{}", uuid::Uuid::new_v4().simple()));
        let ports = free_ports(2);
        let node = format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let out = Command::new(repo().join("scripts/slurm-local"))
            .arg("start")
            .arg(&dir)
            .env("SLURM_NODE", &node)
            .env("SLURMCTLD_PORT", ports[0].to_string())
            .env("SLURMD_PORT", ports[1].to_string())
            .env("SLURM_CPUS", "2")
            .output()
            .expect("running scripts/slurm-local");
        assert!(
            out.status.success(),
            "scripts/slurm-local start failed (Slurm is installed by scripts/test): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            conf: dir.join("slurm.conf"),
            dir,
            node,
        }
    }

    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Active jobs (pending, running, completing) as (id, state, comment).
    pub fn active_jobs(&self) -> Vec<(String, String, String)> {
        self.run("squeue", &["--noheader", "--format=%i|%T|%k"])
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(3, '|').collect();
                (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
            })
            .collect()
    }

    /// The job of `kernel_id` among the active ones.
    pub fn job_of(&self, kernel_id: &str) -> Option<(String, String)> {
        let tag = format!("stackhub:{INSTANCE}:{kernel_id}");
        self.active_jobs()
            .into_iter()
            .find(|(_, _, c)| *c == tag)
            .map(|(id, state, _)| (id, state))
    }

    /// Waits until `kernel_id` has no active job.
    pub async fn wait_no_job(&self, kernel_id: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while let Some(job) = self.job_of(kernel_id) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job:?} of kernel {kernel_id} still in squeue"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs a failed test left behind: their slurmstepd and kernel outlive slurmd otherwise.
        let user = Command::new("id").arg("-un").output().ok();
        let user = user.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(user) = user {
            let _ = Command::new("scancel")
                .arg(format!("--user={user}"))
                .env("SLURM_CONF", &self.conf)
                .status();
        }
        for _ in 0..50 {
            let out = Command::new("squeue")
                .args(["--noheader", "--format=%i"])
                .env("SLURM_CONF", &self.conf)
                .output();
            if out.map_or(true, |o| o.stdout.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new(repo().join("scripts/slurm-local"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_spec(root: &Path, name: &str, stackhub: serde_json::Value) {
    let python = venv_python();
    let argv = if name.contains("broken") {
        json!([
            python,
            "-c",
            "import sys; print('kernel gave up', file=sys.stderr); sys.exit(3)"
        ])
    } else {
        json!([
            python,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}"
        ])
    };
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "argv": argv,
        "display_name": name, "language": "python",
        "metadata": {"stackhub": stackhub},
    });
    std::fs::write(dir.join("kernel.json"), spec.to_string()).unwrap();
}

/// A gateway config for `cluster`: kernelspecs `slurm` (synchronous start), `slurm-queued`
/// (pending start), `slurm-short` (profile with a 3 s launch timeout) and `slurm-broken` (a
/// kernel that exits with status 3); alice holds a quota
/// role of 2 CPUs and 200 MiB, i.e. the whole node's CPUs per kernel.
pub fn gateway_config(cluster: &Cluster, state_dir: &Path, callback_port: u16) -> Config {
    let specs = state_dir.join("specs");
    write_spec(&specs, "slurm", json!({"launcher": "slurm"}));
    write_spec(
        &specs,
        "slurm-queued",
        json!({"launcher": "slurm", "pending_start": true}),
    );
    write_spec(&specs, "slurm-broken", json!({"launcher": "slurm"}));
    write_spec(
        &specs,
        "slurm-short",
        json!({"launcher": "slurm", "slurm_profile": "short"}),
    );
    let launcher = repo().join("images/slurm/stackhub-kernel-launcher");
    Config {
        port: 0,
        kernelspec_dirs: vec![specs],
        default_kernel_name: "slurm".into(),
        users: vec![UserToken {
            name: "alice".into(),
            token: Some(ALICE.into()),
            token_sha256: None,
            roles: vec!["hpc".into()],
        }],
        quota_roles: vec![QuotaRole {
            role: "hpc".into(),
            cpus: 2.0,
            memory: "200Mi".into(),
            gpus: 0,
            max_servers: None,
            max_kernels: None,
        }],
        slurm: Some(SlurmConfig {
            slurm_conf: Some(cluster.conf.clone()),
            callback_listen: format!("127.0.0.1:{callback_port}"),
            launcher_command: vec![
                venv_python().to_string_lossy().into_owned(),
                launcher.to_string_lossy().into_owned(),
            ],
            state_dir: state_dir.join("slurm"),
            instance: INSTANCE.into(),
            job_name: JOB_NAME.into(),
            poll_interval: 0.25,
            kernel_ip: Some("127.0.0.1".into()),
            profiles: [(
                "short".to_owned(),
                SlurmProfile {
                    launch_timeout: Some(3),
                    time: Some("00:10:00".into()),
                    ..SlurmProfile::default()
                },
            )]
            .into(),
            ..SlurmConfig::default()
        }),
        ..Config::default()
    }
}

/// A gateway (local launcher by default, Slurm for `launcher: slurm` specs) and its Slurm
/// launcher's call-back URL and secrets.
pub async fn start_gateway(config: Config) -> (Gateway, Arc<SlurmLauncher>) {
    let slurm = Arc::new(
        SlurmLauncher::start(config.slurm.clone().unwrap())
            .await
            .unwrap(),
    );
    let local = Arc::new(LocalLauncher::new(
        std::env::temp_dir().join(format!("stackhub-gw-run-{}", uuid::Uuid::new_v4().simple())),
        "127.0.0.1",
    ));
    let launcher = Arc::new(ByKernelSpec::new(local).with("slurm", slurm.clone()));
    (Gateway::start_with(config, launcher).await, slurm)
}

/// POST with the signature header; returns the status code.
pub async fn raw_post(addr: std::net::SocketAddr, path: &str, sig: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{SIGNATURE_HEADER}: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp.split(' ').nth(1).unwrap().parse().unwrap()
}
