//! A kernel's batch job as the gateway holds it ([`SlurmJob`]), a job whose launch is still
//! waiting ([`PendingJob`]), and re-attaching to jobs after a gateway restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use jupyter_protocol::ConnectionInfo;

use super::{Inner, Record};
use crate::launcher::{ExitInfo, KernelProcess, KernelSignal, LaunchError, Recovered};

/// A submitted job whose launch has not finished; cancelled if the launch is dropped.
pub(super) struct PendingJob {
    pub(super) inner: Option<Arc<Inner>>,
    pub(super) job_id: String,
    pub(super) kernel_id: String,
    pub(super) prefix: Vec<String>,
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
    pub(super) async fn abandon(&self, prefix: &[String], job_id: &str, kernel_id: &str) {
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

    pub(super) async fn recover(self: Arc<Self>) -> Vec<Recovered> {
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
pub(super) struct SlurmJob {
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
    pub(super) fn new(inner: Arc<Inner>, record: Record, prefix: Vec<String>) -> Self {
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
