//! [`SlurmDaskLauncher`]: a cluster's scheduler as one Slurm job and each worker as a job of its
//! own (so `scale` and `adapt` stop exactly the workers the scheduler retired; a job array
//! could only grow by new arrays and shrink by task ids anyway).
//!
//! - Jobs go through the kernel Slurm launcher's clients and settings (`[slurm]`:
//!   `slurm_conf`, `submit_prefix` and `user_map`, `job_output`, profiles; `dask.slurm_profile`
//!   picks the profile), named `stackhub-dask`, with `--comment=stackhub-dask:<instance>:
//!   <cluster>:<scheduler|worker name>`, `--export=NONE`, and `--cpus-per-task`/`--mem` from
//!   `dask.scheduler_*` or the cluster's worker options.
//! - Secrets: the job script and `sbatch`'s arguments hold none. As for kernels, the job
//!   trades a one-time token (a 0600 file written as the job's user) once at the gateway's
//!   call-back listener for the TLS certificate and key (and, for the scheduler, the cluster
//!   token), writes them to a private temporary directory on its node for `dask`, and removes
//!   it when `dask` exits.
//! - `dask.python` must exist on the compute nodes. The scheduler and workers listen on
//!   `dask.listen_host` (default: all interfaces, advertising the node's address): the gateway
//!   must reach that address (scheduler proxy, scale calls) and the scheduler must reach
//!   `dask.api_url` (heartbeats).
//! - [`DaskProcess::exited`] reads the job's state from one `squeue` poller; `stop` is
//!   `scancel` and waits for the job to end.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{ClusterSpec, DaskLaunchError, DaskLauncher, DaskProcess, IsLiveCluster, Role};
use crate::dask::DaskConfig;
use crate::launcher::slurm::{JobBoard, SlurmShared, shell_quote};

/// Name of every Dask job (what the poller asks `squeue` for).
const JOB_NAME: &str = "stackhub-dask";
/// How long `stop` waits for a cancelled job to end.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// Runs in the job with `dask.python`: trades the one-time token for the cluster's secrets,
/// writes them to a private directory, runs `python -m dask ARGS` there (forwarding SIGTERM and
/// SIGINT), and removes the directory when it exits.
const BOOTSTRAP: &str = r#"
import json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.error, urllib.request
env = dict(os.environ)
path = env.pop("STACKHUB_SECRETS_FILE")
url = "%s/kernels/%s/secrets" % (env.pop("STACKHUB_CALLBACK_URL"), env.pop("STACKHUB_DASK_ID"))
with open(path) as f:
    token = f.read().strip()
try:
    os.unlink(path)
except OSError:
    pass
secrets = None
for attempt in range(10):
    try:
        req = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=10) as resp:
            secrets = json.loads(resp.read())
        break
    except urllib.error.HTTPError as e:
        if e.code < 500:
            sys.exit("stackhub: the secrets hand-over was refused (%d)" % e.code)
    except OSError:
        pass
    time.sleep(1)
if secrets is None:
    sys.exit("stackhub: the gateway is unreachable for the secrets hand-over")
d = tempfile.mkdtemp(prefix="stackhub-dask-")
code = 1
try:
    for name, text in secrets["files"].items():
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    role = sys.argv[1].upper()
    crt, pem = os.path.join(d, "dask.crt"), os.path.join(d, "dask.pem")
    env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = crt
    env["DASK_DISTRIBUTED__COMM__TLS__%s__CERT" % role] = crt
    env["DASK_DISTRIBUTED__COMM__TLS__%s__KEY" % role] = pem
    env["DASK_TEMPORARY_DIRECTORY"] = d
    if "api-token" in secrets["files"]:
        env["DASK_GATEWAY_API_TOKEN"] = os.path.join(d, "api-token")
    child = subprocess.Popen([sys.executable, "-m", "dask"] + sys.argv[1:], env=env, cwd=d, stdin=subprocess.DEVNULL)
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda n, _f: child.send_signal(n))
    code = child.wait()
finally:
    shutil.rmtree(d, ignore_errors=True)
sys.exit(code if code >= 0 else 128 - code)
"#;

/// Clusters as Slurm jobs; see the module docs.
#[derive(Debug)]
pub struct SlurmDaskLauncher {
    shared: SlurmShared,
    board: OnceLock<Arc<JobBoard>>,
    python: PathBuf,
    listen_host: Option<String>,
    profile: Option<String>,
    scheduler_cores: u32,
    scheduler_memory_bytes: u64,
}

/// One job to submit.
struct Submission<'a> {
    spec: &'a ClusterSpec,
    role: Role,
    /// `scheduler` or the worker's name: the comment's last field and the hand-over id's.
    member: &'a str,
    args: Vec<String>,
    cpus: u32,
    memory_bytes: u64,
    what: String,
}

impl SlurmDaskLauncher {
    /// Jobs through `shared` (the kernel Slurm launcher's), sized and placed by `config`.
    pub(crate) fn new(shared: SlurmShared, config: &DaskConfig) -> Self {
        SlurmDaskLauncher {
            shared,
            board: OnceLock::new(),
            python: config.python(),
            listen_host: config.listen_host.clone(),
            profile: config.slurm_profile.clone(),
            scheduler_cores: config.scheduler_cores,
            scheduler_memory_bytes: ((config.scheduler_memory_gib * 1024.0).round() as u64) << 20,
        }
    }

    fn board(&self) -> &Arc<JobBoard> {
        self.board.get_or_init(|| self.shared.board(JOB_NAME))
    }

    fn tag(&self) -> String {
        format!("{JOB_NAME}:{}:", self.shared.config().instance)
    }

    /// `--host H` (when set) and the address of a listener on it with a free port.
    fn host_args(&self) -> (Vec<String>, String) {
        match &self.listen_host {
            Some(h) => (vec!["--host".to_owned(), h.clone()], format!("{h}:0")),
            None => (Vec::new(), ":0".to_owned()),
        }
    }

    /// The job script: the non-secret environment, then the bootstrap with the `dask` args.
    fn script(&self, sub: &Submission<'_>, id: &str, token_file: &std::path::Path) -> String {
        let spec = sub.spec;
        let mut script = format!(
            "#!/bin/sh\n# stackhub: Dask {} of cluster {}\n",
            sub.role.as_str(),
            spec.name
        );
        for (k, v) in [
            ("DASK_GATEWAY_API_URL", spec.api_url.as_str()),
            ("DASK_GATEWAY_CLUSTER_NAME", spec.name.as_str()),
            ("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "True"),
            ("STACKHUB_DASK_ID", id),
            ("STACKHUB_CALLBACK_URL", self.shared.callback_url()),
            ("STACKHUB_SECRETS_FILE", &token_file.to_string_lossy()),
        ] {
            script.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        let argv: Vec<String> = [
            self.python.to_string_lossy().into_owned(),
            "-c".to_owned(),
            BOOTSTRAP.to_owned(),
            sub.role.as_str().to_owned(),
        ]
        .into_iter()
        .chain(sub.args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect();
        script.push_str(&format!("exec {}\n", argv.join(" ")));
        script
    }

    async fn submit(&self, sub: Submission<'_>) -> Result<Box<dyn DaskProcess>, DaskLaunchError> {
        let spec = sub.spec;
        let fail = |detail: String| DaskLaunchError::Platform {
            what: sub.what.clone(),
            detail,
        };
        let prefix = self
            .shared
            .prefix(&spec.user)
            .map_err(|e| fail(e.to_string()))?;
        let profile = self
            .shared
            .profile_args(self.profile.as_deref())
            .map_err(|e| fail(format!("{e} (dask.slurm_profile or slurm.default_profile)")))?;
        let files: serde_json::Map<String, serde_json::Value> = spec
            .secret_files(sub.role)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"version": 1, "files": files}))
            .map_err(|e| fail(e.to_string()))?;
        let id = format!("dask-{}-{}", spec.name, sub.member);
        let token_file = self
            .shared
            .hand_over(&id, &spec.user, &prefix, body)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let script = self.script(&sub, &id, &token_file);
        let mut args = vec![
            format!("--job-name={JOB_NAME}"),
            format!("--comment={}{}:{}", self.tag(), spec.name, sub.member),
            format!("--output={}", self.shared.output_pattern()),
            "--export=NONE".to_owned(),
        ];
        args.extend(profile);
        args.push(format!("--cpus-per-task={}", sub.cpus.max(1)));
        args.push(format!(
            "--mem={}M",
            sub.memory_bytes.div_ceil(1 << 20).max(1)
        ));
        let job_id = match self.shared.sbatch(&prefix, &args, &script).await {
            Ok(j) => j,
            Err(e) => {
                self.shared.withdraw(&id, &token_file).await;
                return Err(fail(e.to_string()));
            }
        };
        let board = self.board().clone();
        board.track(&job_id).await;
        let since_tick = *board.subscribe().borrow();
        tracing::info!(
            cluster = spec.name,
            user = spec.user,
            job_id,
            role = sub.role.as_str(),
            member = sub.member,
            "dask job submitted"
        );
        Ok(Box::new(DaskJob {
            shared: self.shared.clone(),
            board,
            job_id,
            prefix,
            id,
            token_file,
            since_tick,
        }))
    }
}

impl DaskLauncher for SlurmDaskLauncher {
    fn start_scheduler<'a>(
        &'a self,
        spec: &'a ClusterSpec,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let (mut args, listen) = self.host_args();
            args.extend(spec.scheduler_args("0", &listen, &listen));
            self.submit(Submission {
                spec,
                role: Role::Scheduler,
                member: "scheduler",
                args,
                cpus: self.scheduler_cores,
                memory_bytes: self.scheduler_memory_bytes,
                what: format!("the scheduler of cluster {}", spec.name),
            })
            .await
        })
    }

    fn start_worker<'a>(
        &'a self,
        spec: &'a ClusterSpec,
        worker: &'a str,
        scheduler_address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn DaskProcess>, DaskLaunchError>> {
        Box::pin(async move {
            let (host, listen) = self.host_args();
            let mut args = vec![scheduler_address.to_owned()];
            args.extend(host);
            args.extend(["--dashboard-address".to_owned(), listen]);
            args.extend(["--name".to_owned(), worker.to_owned()]);
            args.extend(["--nthreads".to_owned(), spec.worker_cores.to_string()]);
            args.extend([
                "--memory-limit".to_owned(),
                spec.worker_memory_bytes.to_string(),
            ]);
            self.submit(Submission {
                spec,
                role: Role::Worker,
                member: worker,
                args,
                cpus: spec.worker_cores,
                memory_bytes: spec.worker_memory_bytes,
                what: format!("worker {worker} of cluster {}", spec.name),
            })
            .await
        })
    }

    fn cleanup<'a>(&'a self, _spec: &'a ClusterSpec) -> BoxFuture<'a, ()> {
        // Each job's hand-over and token file go with its `stop`.
        Box::pin(async {})
    }

    fn remove_orphans<'a>(&'a self, is_live: &'a IsLiveCluster<'a>) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let jobs = match self.shared.jobs_named(JOB_NAME).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list Dask jobs to clean up");
                    return Vec::new();
                }
            };
            let tag = self.tag();
            let mut removed = Vec::new();
            for (job_id, job) in &jobs {
                let Some(cluster) = job
                    .comment
                    .strip_prefix(&tag)
                    .and_then(|rest| rest.split(':').next())
                else {
                    continue;
                };
                if job.is_ended() || is_live(cluster) {
                    continue;
                }
                tracing::warn!(job_id, cluster, "cancelling an orphaned Dask job");
                match self.shared.scancel(&[], job_id).await {
                    Ok(()) => {
                        if !removed.iter().any(|c| c == cluster) {
                            removed.push(cluster.to_owned());
                        }
                    }
                    Err(e) => {
                        tracing::error!(job_id, error = %e, "cannot cancel an orphaned Dask job")
                    }
                }
            }
            removed
        })
    }
}

/// A scheduler's or worker's job.
#[derive(Debug)]
struct DaskJob {
    shared: SlurmShared,
    board: Arc<JobBoard>,
    job_id: String,
    prefix: Vec<String>,
    /// The secrets hand-over's id.
    id: String,
    token_file: PathBuf,
    /// Poll count when submitted: a job missing from later polls is gone.
    since_tick: u64,
}

impl DaskProcess for DaskJob {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut ticks = self.board.subscribe();
            if self.exited().is_none()
                && let Err(e) = self.shared.scancel(&self.prefix, &self.job_id).await
            {
                tracing::warn!(job_id = self.job_id, error = %e, "scancel of a Dask job failed");
            }
            let deadline = tokio::time::Instant::now() + STOP_WAIT;
            while self.exited().is_none() {
                match tokio::time::timeout_at(deadline, ticks.changed()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        tracing::warn!(
                            job_id = self.job_id,
                            "a cancelled Dask job did not end within {STOP_WAIT:?}"
                        );
                        break;
                    }
                }
            }
            self.board.untrack(&self.job_id).await;
            self.shared.withdraw(&self.id, &self.token_file).await;
        })
    }

    fn exited(&self) -> Option<String> {
        let tick = *self.board.subscribe().borrow();
        match self.board.get(&self.job_id) {
            Some(j) if j.is_ended() => Some(format!("Slurm job {} {}", self.job_id, j.describe())),
            Some(_) => None,
            None if self.board.polled() && tick > self.since_tick + 1 => Some(format!(
                "Slurm job {} is no longer known to Slurm",
                self.job_id
            )),
            None => None,
        }
    }
}
