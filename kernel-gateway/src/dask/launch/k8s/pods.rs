//! The pods of a [`KubeDaskLauncher`](super::KubeDaskLauncher)'s clusters as
//! [`DaskProcess`]es: one pod list per launcher ([`PodBoard`], every [`POLL`] while pods run)
//! says which have ended, and `stop` deletes a pod and waits until it is gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tokio::sync::watch;

use super::super::DaskProcess;
use crate::launcher::k8s::{self as launcher_k8s, by_uid, cannot_start, is_status};

/// Seconds between pod lists while pods run.
const POLL: Duration = Duration::from_secs(2);
/// How long `stop` waits for a deleted pod to go.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The latest pod list: name → (uid, how it ended if it did).
#[derive(Debug)]
pub(super) struct PodBoard {
    pub(super) pods: ArcSwap<HashMap<String, (String, Option<String>)>>,
    pub(super) tracked: parking_lot::Mutex<HashSet<String>>,
    pub(super) ticks: watch::Sender<u64>,
}

impl PodBoard {
    /// Lists `api`'s pods matching `selector` every [`POLL`] while pods are tracked, until the
    /// board is dropped.
    pub(super) fn start(api: Api<Pod>, selector: String) -> Arc<Self> {
        let board = Arc::new(PodBoard {
            pods: ArcSwap::from_pointee(HashMap::new()),
            tracked: parking_lot::Mutex::new(HashSet::new()),
            ticks: watch::channel(0).0,
        });
        let weak: Weak<PodBoard> = Arc::downgrade(&board);
        tokio::spawn(async move {
            let lp = ListParams::default().labels(&selector);
            let mut failing = false;
            loop {
                tokio::time::sleep(POLL).await;
                let Some(board) = weak.upgrade() else { return };
                if board.tracked.lock().is_empty() {
                    continue;
                }
                match api.list(&lp).await {
                    Ok(list) => {
                        failing = false;
                        let map = list
                            .items
                            .iter()
                            .map(|p| (p.name_any(), (p.uid().unwrap_or_default(), ended(p))))
                            .collect();
                        board.pods.store(Arc::new(map));
                        board.ticks.send_modify(|t| *t += 1);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot list Dask pods; they keep their last known state");
                    }
                    Err(_) => {}
                }
            }
        });
        board
    }
}

/// How a pod ended (or cannot start), if it did.
fn ended(pod: &Pod) -> Option<String> {
    if let Some(why) = cannot_start(pod) {
        return Some(format!("pod {}: {why}; check dask.image", pod.name_any()));
    }
    let (phase, term) = launcher_k8s::ended(pod)?;
    Some(match term {
        Some(t) => format!(
            "pod {} exited with code {} ({})",
            pod.name_any(),
            t.exit_code,
            t.reason.as_deref().unwrap_or("no reason")
        ),
        None => format!("pod {} {phase}", pod.name_any()),
    })
}

/// A scheduler's or worker's pod.
pub(super) struct DaskPod {
    pub(super) api: Api<Pod>,
    pub(super) board: Arc<PodBoard>,
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) since_tick: u64,
}

impl std::fmt::Debug for DaskPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaskPod")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl DaskProcess for DaskPod {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self
                .api
                .delete(&self.name, &by_uid(&self.uid).grace_period(5))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => tracing::warn!(pod = self.name, error = %e, "cannot delete a Dask pod"),
            }
            let deadline = tokio::time::Instant::now() + STOP_WAIT;
            loop {
                match self.api.get_opt(&self.name).await {
                    Ok(Some(p)) if p.uid().as_deref() == Some(self.uid.as_str()) => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(pod = self.name, error = %e, "cannot read a Dask pod");
                        break;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    tracing::warn!(
                        pod = self.name,
                        "a deleted Dask pod is still there after {STOP_WAIT:?}"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            self.board.tracked.lock().remove(&self.name);
        })
    }

    fn exited(&self) -> Option<String> {
        let tick = *self.board.ticks.borrow();
        match self.board.pods.load().get(&self.name) {
            Some((uid, how)) if *uid == self.uid => how.clone(),
            _ if tick > self.since_tick + 1 => Some(format!("pod {} was deleted", self.name)),
            _ => None,
        }
    }
}
