//! The server processes this hub process started, reaped by one task for all of them.
//!
//! A task (and a `tokio::process::Child` registered with the reactor) per server cost ~0.8 KB
//! each, 0.8 MB at 1,000 servers. Here each child is a `std::process::Child` in a map, and one
//! task reaps the exited ones when a `SIGCHLD` arrives: at most once per [`REAP_EVERY`], each
//! time with a non-blocking `waitpid` per child. Whoever asks about a child ([`Children::exit`])
//! reaps it first, so a stop or a poll never waits for the task; a server's liveness never
//! depends on the reaping (a zombie is not alive: see `process_start_time`).

use std::collections::HashMap;
use std::process::Child;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, OnceCell};

/// The shortest time between two reaping rounds: bounds the cost of a burst of exits (a fleet
/// stop) to one round per interval, and a zombie's life to about this long.
const REAP_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Inner {
    /// Children not reaped yet, by pid.
    running: HashMap<i32, Child>,
    /// How the reaped ones ended: their exit code, `None` when killed by a signal.
    exits: HashMap<i32, Option<i32>>,
}

impl Inner {
    /// Reap `pid` if it exited: how it ended, once it has (see [`Children::exit`]).
    fn reap(&mut self, pid: i32) -> Option<Option<i32>> {
        if let Some(child) = self.running.get_mut(&pid) {
            let code = match child.try_wait() {
                Ok(None) => return None,
                Ok(Some(status)) => status.code(),
                // ECHILD: reaped by someone else; nothing more will be learnt.
                Err(_) => None,
            };
            self.running.remove(&pid);
            self.exits.insert(pid, code);
        }
        self.exits.get(&pid).copied()
    }

    fn reap_all(&mut self) {
        let pids: Vec<i32> = self.running.keys().copied().collect();
        for pid in pids {
            self.reap(pid);
        }
    }
}

/// The children of this spawner, and how the reaped ones ended.
#[derive(Debug, Default)]
pub(crate) struct Children {
    inner: Arc<Mutex<Inner>>,
    reaper: OnceCell<()>,
}

impl Children {
    /// Keep `child` (just started, process `pid`) until it is reaped.
    pub(crate) async fn add(&self, pid: i32, child: Child) {
        self.reaper
            .get_or_init(|| async {
                let weak = Arc::downgrade(&self.inner);
                match signal(SignalKind::child()) {
                    Ok(sigchld) => {
                        tokio::spawn(reap_on_sigchld(weak, sigchld));
                    }
                    // Children are then reaped when asked about (poll, stop).
                    Err(e) => tracing::warn!(error = %e, "cannot listen for SIGCHLD"),
                }
            })
            .await;
        let mut inner = self.inner.lock().await;
        // A reaped child's pid, given to this one: what is known is of the new process.
        inner.exits.remove(&pid);
        inner.running.insert(pid, child);
        // It may have exited before it was here to be found (its SIGCHLD already handled).
        inner.reap(pid);
    }

    /// How child `pid` ended (its exit code, `None` when killed by a signal), once it has;
    /// `None` while it runs or when it is not a child of this spawner.
    pub(crate) async fn exit(&self, pid: i32) -> Option<Option<i32>> {
        self.inner.lock().await.reap(pid)
    }

    /// Forget child `pid` once it has exited (its server is stopped): nothing more is asked
    /// about it, so how it ended need not be kept.
    pub(crate) async fn forget(&self, pid: i32) {
        let mut inner = self.inner.lock().await;
        if inner.reap(pid).is_some() {
            inner.exits.remove(&pid);
        }
    }
}

/// Reap exited children after each `SIGCHLD`, until the spawner is dropped.
async fn reap_on_sigchld(children: Weak<Mutex<Inner>>, mut sigchld: tokio::signal::unix::Signal) {
    while sigchld.recv().await.is_some() {
        let Some(inner) = children.upgrade() else {
            return;
        };
        inner.lock().await.reap_all();
        drop(inner);
        tokio::time::sleep(REAP_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Whether `pid` is a zombie (exited, not reaped).
    fn zombie(pid: i32) -> bool {
        crate::local::process_start_time(pid).is_some_and(|(_, zombie)| zombie)
    }

    #[tokio::test]
    async fn exited_children_are_reaped_without_being_asked_about() {
        let children = Children::default();
        let child = Command::new("sh")
            .args(["-c", "sleep 0.2; exit 7"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        children.add(pid, child).await;
        assert_eq!(children.exit(pid).await, None, "still running");
        // Nobody asks about it again: the SIGCHLD task must reap it (no zombie left behind).
        let mut reaped = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !zombie(pid) && children.inner.lock().await.exits.contains_key(&pid) {
                reaped = true;
                break;
            }
        }
        assert!(reaped, "child {pid} not reaped within 2 s");
        assert_eq!(children.exit(pid).await, Some(Some(7)));
    }

    #[tokio::test]
    async fn asking_about_a_child_reaps_it_and_reports_how_it_ended_even_with_a_reused_pid() {
        let children = Children::default();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // An earlier child that had this pid and exited.
        children.inner.lock().await.exits.insert(pid, Some(3));
        children.add(pid, child).await;
        assert_eq!(
            children.exit(pid).await,
            None,
            "still running (a reused pid)"
        );
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
        let mut ended = None;
        for _ in 0..100 {
            ended = children.exit(pid).await;
            if ended.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ended, Some(None), "killed by a signal: no exit code");
        assert!(!zombie(pid));
        children.forget(pid).await;
        assert!(children.inner.lock().await.exits.is_empty(), "forgotten");
        assert_eq!(children.exit(1).await, None, "not a child of ours");
    }
}
