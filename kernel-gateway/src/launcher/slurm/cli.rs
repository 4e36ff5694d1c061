//! The Slurm command-line clients (`sbatch`, `squeue`, `scancel`) and the job-state poller.
//!
//! One poller per launcher runs `squeue --name=<job name> --states=all` every `poll_interval`
//! while it tracks jobs, and, when one of them is pending, one more `squeue --states=PENDING` to
//! work out its position among the pending jobs of its partition (highest priority first). Kernel
//! handles read the latest snapshot; nothing calls Slurm per kernel per tick.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::{Mutex, watch};

use crate::launcher::LaunchError;

/// Longest a Slurm client command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the Slurm clients: where they are, which `slurm.conf`, as whom.
#[derive(Debug, Clone)]
pub(super) struct Slurm {
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) slurm_conf: Option<PathBuf>,
}

/// One job as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobInfo {
    pub(crate) state: String,
    pub(crate) reason: String,
    pub(crate) partition: String,
    pub(crate) nodes: String,
    pub(crate) comment: String,
    /// 1-based position among the pending jobs of its partition.
    pub(crate) position: Option<usize>,
}

impl JobInfo {
    /// Still waiting for resources.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD"
        )
    }

    /// Over (or on its way out).
    pub(crate) fn is_ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "COMPLETING"
                | "COMPLETED"
                | "CANCELLED"
                | "FAILED"
                | "TIMEOUT"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "OUT_OF_MEMORY"
                | "SPECIAL_EXIT"
                | "REVOKED"
        )
    }

    /// `pending: Resources (position 2 in partition debug)` and the like.
    pub(crate) fn describe(&self) -> String {
        let mut s = self.state.to_lowercase();
        if !self.reason.is_empty() && self.reason != "None" {
            s.push_str(": ");
            s.push_str(&self.reason);
        }
        if let Some(p) = self.position {
            s.push_str(&format!(
                " (position {p} in the queue of partition {})",
                self.partition
            ));
        }
        s
    }
}

impl Slurm {
    fn command(&self, program: &str) -> Command {
        let path = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = Command::new(path);
        if let Some(conf) = &self.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `program args`, feeding `stdin`, and returns stdout; a non-zero exit is an error
    /// carrying stderr.
    async fn run(
        &self,
        what: &'static str,
        prefix: &[String],
        program: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<String, LaunchError> {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = self.command(first);
                c.args(rest).arg(program);
                c
            }
            None => self.command(program),
        };
        cmd.args(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let fail = |detail: String| LaunchError::Scheduler { what, detail };
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data)
                .await
                .map_err(|e| fail(format!("writing to {program}: {e}")))?;
            drop(pipe);
        }
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                fail(format!(
                    "{program} did not answer within {COMMAND_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| fail(format!("{program}: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!(
                "{program} failed ({}): {}",
                out.status,
                stderr.trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Submits `script` with `args`; returns the job id.
    pub(super) async fn sbatch(
        &self,
        prefix: &[String],
        args: &[String],
        script: &str,
    ) -> Result<String, LaunchError> {
        let mut all = vec!["--parsable".to_owned()];
        all.extend_from_slice(args);
        let out = self
            .run("sbatch", prefix, "sbatch", &all, Some(script.as_bytes()))
            .await?;
        // `--parsable` prints `jobid[;cluster]`.
        let id = out.trim().split(';').next().unwrap_or_default().to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(LaunchError::Scheduler {
                what: "sbatch",
                detail: format!("unexpected output {:?}", out.trim()),
            });
        }
        Ok(id)
    }

    /// Writes `data` to `path` as the user of `prefix` (`sudo -u USER`), mode 0600 in a
    /// 0700 directory: `PREFIX sh -c 'umask 077 && mkdir -p DIR && cat > PATH'`, the data on
    /// stdin (never in an argument).
    pub(super) async fn write_private_as(
        &self,
        prefix: &[String],
        path: &std::path::Path,
        data: &[u8],
    ) -> Result<(), LaunchError> {
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        let args = [
            "-c".to_owned(),
            r#"umask 077 && mkdir -p -- "$1" && cat > "$2""#.to_owned(),
            "stackhub-secrets".to_owned(),
            dir.to_string_lossy().into_owned(),
            path.to_string_lossy().into_owned(),
        ];
        self.run("secrets file", prefix, "/bin/sh", &args, Some(data))
            .await
            .map(|_| ())
    }

    /// `scancel [--batch --signal=SIG] job`.
    pub(super) async fn scancel(
        &self,
        prefix: &[String],
        job_id: &str,
        batch_signal: Option<&str>,
    ) -> Result<(), LaunchError> {
        let mut args = Vec::new();
        if let Some(sig) = batch_signal {
            args.push("--batch".to_owned());
            args.push(format!("--signal={sig}"));
        }
        args.push(job_id.to_owned());
        self.run("scancel", prefix, "scancel", &args, None)
            .await
            .map(|_| ())
    }

    /// Every job named `name`, in any state Slurm still remembers.
    pub(super) async fn jobs_named(
        &self,
        name: &str,
    ) -> Result<HashMap<String, JobInfo>, LaunchError> {
        let args = [
            "--noheader".to_owned(),
            "--states=all".to_owned(),
            format!("--name={name}"),
            "--format=%i|%T|%r|%P|%N|%k".to_owned(),
        ];
        let out = self.run("squeue", &[], "squeue", &args, None).await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut f = line.splitn(6, '|');
                let id = f.next()?.trim().to_owned();
                Some((
                    id,
                    JobInfo {
                        state: f.next()?.trim().to_owned(),
                        reason: f.next()?.trim().to_owned(),
                        partition: f.next()?.trim().to_owned(),
                        nodes: f.next()?.trim().to_owned(),
                        comment: f.next()?.trim().to_owned(),
                        position: None,
                    },
                ))
            })
            .collect())
    }

    /// Pending jobs per partition, highest priority first.
    async fn pending_queue(&self) -> Result<BTreeMap<String, Vec<String>>, LaunchError> {
        let args = [
            "--noheader".to_owned(),
            "--states=PENDING".to_owned(),
            "--format=%i|%P|%Q".to_owned(),
        ];
        let out = self.run("squeue", &[], "squeue", &args, None).await?;
        let mut rows: Vec<(String, u64, u64, String)> = out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                let id = f.next()?.trim().to_owned();
                let partition = f.next()?.trim().to_owned();
                let prio = f.next()?.trim().parse().ok()?;
                let num = id.parse().unwrap_or(u64::MAX);
                Some((partition, prio, num, id))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (partition, _, _, id) in rows {
            out.entry(partition).or_default().push(id);
        }
        Ok(out)
    }
}

/// The latest view of our jobs, shared by the poller and every job handle.
#[derive(Debug)]
pub(crate) struct JobBoard {
    slurm: Slurm,
    job_name: String,
    tracked: Mutex<BTreeSet<String>>,
    snapshot: ArcSwap<HashMap<String, JobInfo>>,
    /// Bumped after every poll, so waiters can wake up.
    ticks: watch::Sender<u64>,
}

impl JobBoard {
    pub(super) fn new(slurm: Slurm, job_name: String) -> Arc<Self> {
        Arc::new(JobBoard {
            slurm,
            job_name,
            tracked: Mutex::new(BTreeSet::new()),
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            ticks: watch::channel(0).0,
        })
    }

    pub(crate) async fn track(&self, job_id: &str) {
        self.tracked.lock().await.insert(job_id.to_owned());
    }

    pub(crate) async fn untrack(&self, job_id: &str) {
        self.tracked.lock().await.remove(job_id);
    }

    /// The job as last seen; `None` if Slurm no longer lists it (or not yet polled).
    pub(crate) fn get(&self, job_id: &str) -> Option<JobInfo> {
        self.snapshot.load().get(job_id).cloned()
    }

    /// Whether the latest poll saw a job list at all (so a missing job is really gone).
    pub(crate) fn polled(&self) -> bool {
        *self.ticks.borrow() > 0
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// One poll: our jobs, and queue positions of the pending ones.
    pub(super) async fn poll_once(&self) -> Result<(), LaunchError> {
        let mut jobs = self.slurm.jobs_named(&self.job_name).await?;
        let tracked = self.tracked.lock().await.clone();
        if jobs
            .iter()
            .any(|(id, j)| tracked.contains(id) && j.is_pending())
        {
            let queue = self.slurm.pending_queue().await?;
            for (id, job) in jobs.iter_mut().filter(|(_, j)| j.is_pending()) {
                job.position = queue
                    .get(&job.partition)
                    .and_then(|q| q.iter().position(|x| x == id))
                    .map(|i| i + 1);
            }
        }
        self.snapshot.store(Arc::new(jobs));
        self.ticks.send_modify(|t| *t += 1);
        Ok(())
    }

    /// Polls every `every` while jobs are tracked, until `cancel`.
    pub(super) async fn run(
        self: Arc<Self>,
        every: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.tracked.lock().await.is_empty() {
                continue;
            }
            match self.poll_once().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot poll Slurm job states; kernels keep their last known state");
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_state_reason_and_position() {
        let j = JobInfo {
            state: "PENDING".into(),
            reason: "Resources".into(),
            partition: "debug".into(),
            nodes: String::new(),
            comment: String::new(),
            position: Some(2),
        };
        assert!(j.is_pending() && !j.is_ended());
        assert_eq!(
            j.describe(),
            "pending: Resources (position 2 in the queue of partition debug)"
        );
        let ended = JobInfo {
            state: "CANCELLED".into(),
            reason: "None".into(),
            position: None,
            ..j
        };
        assert!(ended.is_ended());
        assert_eq!(ended.describe(), "cancelled");
    }
}
