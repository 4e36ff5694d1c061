//! Dask clusters as Slurm jobs on a real single-node Slurm (`scripts/slurm-local`, as
//! `slurm.rs`): the stock `dask_gateway` client creates a cluster through the gateway
//! (`dask.launcher = "slurm"`), its scheduler and each worker run as jobs with the DEDL
//! environment's `dask`, it computes, scales down, shuts down; no job is left and no secret
//! reaches a job script, `scontrol show job`, an argument list, an environment or a log. A
//! job left by an earlier run of the gateway is cancelled when it starts.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;
mod slurm_cluster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dask_support::{call, dedl_python, gateway_logs, next_event, stock_client, wait_status};
use hyper::Method;
use serde_json::json;
use slurm_cluster::{ALICE, Cluster, INSTANCE, free_ports, gateway_config, start_gateway};
use stackhub_e2e::secrets::SecretScan;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CLIENT_SCRIPT: &str = r#"
def workers(client, n):
    deadline = time.time() + 30
    while len(client.scheduler_info()["workers"]) != n and time.time() < deadline:
        time.sleep(0.3)
    return len(client.scheduler_info()["workers"])

gw = gateway()
cluster = gw.new_cluster(worker_cores=1, worker_memory=0.5)
say(event="created", name=cluster.name)
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=60)
total = client.submit(sum, client.map(lambda x: x * x, range(100))).result()
say(event="computed", total=total, workers=len(client.scheduler_info()["workers"]))
sys.stdin.readline()
cluster.scale(1)
say(event="scaled", workers=workers(client, 1))
sys.stdin.readline()
client.close()
cluster.shutdown()
say(event="stopped")
gw.close()
"#;

/// The cluster's active jobs: (job id, state, scheduler or worker name).
fn dask_jobs(cluster: &Cluster, name: &str) -> Vec<(String, String, String)> {
    let tag = format!("stackhub-dask:{INSTANCE}:{name}:");
    cluster
        .active_jobs()
        .into_iter()
        .filter_map(|(id, state, comment)| {
            let member = comment.strip_prefix(&tag)?.to_owned();
            Some((id, state, member))
        })
        .collect()
}

/// Processes of the cluster `name` (their environment names it).
fn cluster_pids(name: &str) -> Vec<(i64, String)> {
    let needle = format!("DASK_GATEWAY_CLUSTER_NAME={name}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env).replace('\0', "\n");
            env.lines().any(|l| l == needle).then_some((pid, env))
        })
        .collect()
}

fn env_var(env: &str, key: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        for _ in 0..10 {
            let _ = std::fs::remove_dir_all(&self.0);
            if !self.0.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_client_runs_a_cluster_as_slurm_jobs_and_leaves_no_job() {
    gateway_logs();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "stackhub-dask-slurm-{}",
        uuid::Uuid::new_v4().simple()
    )));
    let cluster = Cluster::start();
    // The node has 2 CPUs; a scheduler and two 1-core workers share them.
    cluster.run(
        "scontrol",
        &["update", "PartitionName=debug", "OverSubscribe=FORCE:4"],
    );
    // Left by an earlier run of this gateway (instance `test`), and another gateway's.
    let submit = |comment: &str| {
        cluster
            .run(
                "sbatch",
                &[
                    "--parsable",
                    "--job-name=stackhub-dask",
                    &format!("--comment={comment}"),
                    "--mem=10M",
                    "--output=/dev/null",
                    "--wrap=sleep 120",
                ],
            )
            .trim()
            .to_owned()
    };
    let orphan = submit(&format!("stackhub-dask:{INSTANCE}:0123abcd:scheduler"));
    let foreign = submit("stackhub-dask:lumi:4567abcd:scheduler");
    let mut config = gateway_config(&cluster, &dir.0, free_ports(1)[0]);
    config.dask.launcher = Some("slurm".into());
    config.dask.python = Some(dedl_python());
    config.dask.runtime_dir = Some(dir.0.join("dask"));
    config.dask.heartbeat_period = 2;
    config.dask.idle_timeout = 0;
    config.dask.max_worker_cores = 1;
    config.dask.max_worker_memory_gib = 1.0;
    config.dask.scheduler_memory_gib = 0.5;
    config.dask.listen_host = Some("127.0.0.1".into());
    let (gw, _slurm) = start_gateway(config).await;

    let t0 = Instant::now();
    let mut child = stock_client(
        &dedl_python(),
        CLIENT_SCRIPT,
        gw.addr,
        &format!("token {ALICE}"),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let name = next_event(&mut lines, "created").await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let computed = next_event(&mut lines, "computed").await;
    eprintln!("create to computed on 3 Slurm jobs: {:?}", t0.elapsed());
    assert_eq!(
        computed["total"],
        json!((0..100).map(|x| x * x).sum::<i64>()),
        "{computed}"
    );
    assert_eq!(computed["workers"], json!(2), "{computed}");

    // The gateway cancelled its earlier run's job at start, not another gateway's.
    let active: Vec<String> = cluster.active_jobs().into_iter().map(|j| j.0).collect();
    assert!(
        !active.contains(&orphan),
        "orphan {orphan} still runs: {active:?}"
    );
    assert!(active.contains(&foreign), "{active:?}");

    // The scheduler and each worker are a running job of their own.
    let jobs = dask_jobs(&cluster, &name);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert!(jobs.iter().all(|(_, s, _)| s == "RUNNING"), "{jobs:?}");
    assert_eq!(
        jobs.iter().filter(|(_, _, m)| m == "scheduler").count(),
        1,
        "{jobs:?}"
    );
    let worker_job = jobs
        .iter()
        .find(|(_, _, m)| m != "scheduler")
        .unwrap()
        .0
        .clone();
    let res = cluster.run(
        "squeue",
        &["--noheader", "-j", &worker_job, "--format=%C|%m"],
    );
    assert_eq!(res.trim(), "1|512M", "cpus|memory of a worker's job");

    // No secret in job scripts, `scontrol show job`, argument lists, environments or logs.
    let auth = format!("token {ALICE}");
    let model = wait_status(&gw, &auth, &name, 0, |_| true).await;
    let key = model["tls_key"].as_str().unwrap();
    let mut scan = SecretScan::new();
    scan.add("the cluster's TLS key", key.lines().nth(1).unwrap());
    let procs = cluster_pids(&name);
    assert!(procs.len() >= 3, "scheduler and workers: {procs:?}");
    let token_file = procs
        .iter()
        .find_map(|(_, env)| env_var(env, "DASK_GATEWAY_API_TOKEN"))
        .expect("the scheduler's token file");
    let token = std::fs::read_to_string(&token_file).unwrap();
    scan.add("the cluster token", &token);
    let secrets_dirs: Vec<String> = procs
        .iter()
        .filter_map(|(_, env)| env_var(env, "DASK_TEMPORARY_DIRECTORY"))
        .collect();
    assert!(!secrets_dirs.is_empty());
    for (pid, env) in &procs {
        scan.text(&format!("the environment of process {pid}"), env);
    }
    let pids: Vec<i64> = procs.iter().map(|(p, _)| *p).collect();
    assert!(scan.cmdlines(&pids) >= 3);
    for (job, _, _) in &jobs {
        let script = cluster.run("scontrol", &["write", "batch_script", job, "-"]);
        assert!(script.contains("exec "), "{script}");
        scan.text(&format!("the script of job {job}"), &script);
        let show = cluster.run("scontrol", &["show", "job", "-dd", job]);
        scan.text(&format!("scontrol show job {job}"), &show);
    }
    scan.logs_under(&dir.0);
    scan.logs_under(&cluster.dir);
    scan.assert_clean();

    // Scale down: the retired worker's job ends.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let scaled = next_event(&mut lines, "scaled").await;
    assert_eq!(scaled["workers"], json!(1), "{scaled}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while dask_jobs(&cluster, &name).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            dask_jobs(&cluster, &name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Shutdown: no job of the cluster is left, nor its secrets on the node.
    stdin.write_all(b"go\n").await.unwrap();
    next_event(&mut lines, "stopped").await;
    assert!(child.wait().await.unwrap().success());
    let model = wait_status(&gw, &auth, &name, 15, |s| s == "STOPPED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dask_jobs(&cluster, &name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "jobs left: {:?}",
            dask_jobs(&cluster, &name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for d in &secrets_dirs {
        assert!(!Path::new(d).exists(), "{d} (the job's secrets) is left");
    }
    let (_, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some(&auth),
        None,
        None,
    )
    .await;
    assert_eq!(v[&name]["status"], "STOPPED", "{v}");
    gw.stop().await;
    drop(cluster);
}
