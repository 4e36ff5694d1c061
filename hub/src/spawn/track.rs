//! Progress of one spawn: the events so far (the SSE stream replays them), the task, and the
//! cancel flag a stop request sets.

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use super::ProgressStream;

/// Progress of one spawn: every event so far; the last one has `ready` or `failed` when done.
#[derive(Debug)]
pub(super) struct Track {
    events: watch::Sender<Vec<Value>>,
    pub(super) task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set by a stop request while the spawn runs: the spawn ends as soon as the spawner's
    /// launch returns (so its state is known and the process can be stopped).
    cancelled: std::sync::atomic::AtomicBool,
    cancel_notify: tokio::sync::Notify,
}

pub(super) fn is_final(v: &Value) -> bool {
    v.get("ready").is_some() || v.get("failed").is_some()
}

impl Track {
    pub(super) fn new() -> Self {
        let (events, _) =
            watch::channel(vec![json!({"progress": 0, "message": "Server requested"})]);
        Self {
            events,
            task: Mutex::new(None),
            cancelled: std::sync::atomic::AtomicBool::new(false),
            cancel_notify: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn push(&self, event: Value) {
        self.events.send_modify(|evs| {
            if !evs.last().is_some_and(is_final) {
                evs.push(event);
            }
        });
    }

    pub(super) fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
    }

    /// Resolves once the spawn is cancelled.
    pub(super) async fn cancelled(&self) {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn finished(&self) -> bool {
        self.events.borrow().last().is_some_and(is_final)
    }

    /// The final message of a failed spawn.
    pub(super) fn failure(&self) -> Option<String> {
        let events = self.events.borrow();
        let last = events.last().filter(|v| v.get("failed").is_some())?;
        Some(
            last.get("message")
                .and_then(Value::as_str)
                .unwrap_or("Spawn failed")
                .to_owned(),
        )
    }

    pub(super) fn failed(&self) -> bool {
        self.events
            .borrow()
            .last()
            .is_some_and(|v| v.get("failed").is_some())
    }

    /// Wait until done; `true` if it ended ready.
    pub(super) async fn done(&self) -> bool {
        let mut rx = self.events.subscribe();
        loop {
            if let Some(last) = rx.borrow_and_update().last()
                && is_final(last)
            {
                return last.get("ready").is_some();
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    pub(super) fn stream(&self) -> ProgressStream {
        let rx = self.events.subscribe();
        stream::unfold((rx, 0usize, false), |(mut rx, next, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let item = {
                    let evs = rx.borrow_and_update();
                    evs.get(next).cloned()
                };
                if let Some(ev) = item {
                    let end = is_final(&ev);
                    return Some((ev, (rx, next + 1, end)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }
}
