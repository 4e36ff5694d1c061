//! The cluster model and the registry of clusters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::error::DaskError;
use super::launch::{ClusterSpec, DaskProcess};
use super::quota::DaskQuota;

/// A cluster's state, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    /// Scheduler launched, no heartbeat yet.
    Pending,
    /// The scheduler heartbeats.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped on request (or idle).
    Stopped,
    /// Failed to start, or died.
    Failed,
}

impl Status {
    /// Parses a `?status=` item (case-insensitive).
    pub(crate) fn parse(s: &str) -> Option<Status> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PENDING" => Status::Pending,
            "RUNNING" => Status::Running,
            "STOPPING" => Status::Stopping,
            "STOPPED" => Status::Stopped,
            "FAILED" => Status::Failed,
            _ => return None,
        })
    }

    /// Pending or running (counts against the per-user limit).
    pub(crate) fn is_active(self) -> bool {
        matches!(self, Status::Pending | Status::Running)
    }

    /// Stopped or failed.
    pub(crate) fn is_done(self) -> bool {
        matches!(self, Status::Stopped | Status::Failed)
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One worker the gateway started.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The process.
    pub(crate) process: Arc<dyn DaskProcess>,
    /// The scheduler reported it connected.
    pub(crate) active: bool,
    /// The scheduler is retiring it (it exits by itself).
    pub(crate) closing: bool,
}

/// What changes over a cluster's life.
#[derive(Debug)]
pub(crate) struct State {
    /// Where the cluster is.
    pub(crate) status: Status,
    /// When it stopped (ms).
    pub(crate) stop_time: Option<i64>,
    /// `tls://host:port` once running.
    pub(crate) scheduler_address: Option<String>,
    /// The preload's API (`http://host:port`) for scale / adapt.
    pub(crate) api_address: Option<String>,
    /// The scheduler's dashboard (`http://host:port`; empty when it serves none).
    pub(crate) dashboard_address: Option<String>,
    /// The scheduler process.
    pub(crate) scheduler: Option<Arc<dyn DaskProcess>>,
    /// Workers by name.
    pub(crate) workers: BTreeMap<String, Worker>,
    /// The last heartbeat (or the launch).
    pub(crate) last_seen: Instant,
    /// Why it failed, for the log.
    pub(crate) reason: Option<String>,
}

/// One cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Launch parameters (name, owner, token, TLS, worker size).
    pub(crate) spec: ClusterSpec,
    /// The options it was created with.
    pub(crate) options: Map<String, Value>,
    /// The owner's quota when it was created: caps its workers for its whole life.
    pub(crate) quota: DaskQuota,
    /// When it was created (ms).
    pub(crate) start_time: i64,
    /// SHA-256 of the token (compared in constant time).
    pub(crate) token_digest: [u8; 32],
    /// Mutable state.
    pub(crate) state: parking_lot::Mutex<State>,
    /// Bumped on every status change (`?wait`).
    pub(crate) changed: tokio::sync::watch::Sender<Status>,
    /// Serialises worker reconciliation.
    pub(crate) reconcile: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// A new pending cluster.
    pub(crate) fn new(spec: ClusterSpec, options: Map<String, Value>, quota: DaskQuota) -> Cluster {
        let token_digest = Sha256::digest(spec.token.expose().as_bytes()).into();
        Cluster {
            spec,
            options,
            quota,
            start_time: now_ms(),
            token_digest,
            state: parking_lot::Mutex::new(State {
                status: Status::Pending,
                stop_time: None,
                scheduler_address: None,
                api_address: None,
                dashboard_address: None,
                scheduler: None,
                workers: BTreeMap::new(),
                last_seen: Instant::now(),
                reason: None,
            }),
            changed: tokio::sync::watch::channel(Status::Pending).0,
            reconcile: tokio::sync::Mutex::new(()),
        }
    }

    /// The cluster's name.
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    /// The current status.
    pub(crate) fn status(&self) -> Status {
        self.state.lock().status
    }

    /// Moves to `status` (stamping the stop time when done) and wakes waiters.
    pub(crate) fn set_status(&self, status: Status) {
        {
            let mut s = self.state.lock();
            if s.status == status {
                return;
            }
            s.status = status;
            if status.is_done() && s.stop_time.is_none() {
                s.stop_time = Some(now_ms());
            }
        }
        self.changed.send_replace(status);
    }

    /// Whether `token` is this cluster's token.
    pub(crate) fn token_matches(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        presented
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The protocol's cluster model; `full` adds the TLS credentials (while running).
    pub(crate) fn model(&self, full: bool) -> Value {
        let s = self.state.lock();
        let running = s.status == Status::Running;
        let (cert, key) = if full && running {
            (
                Value::from(self.spec.tls.cert.clone()),
                Value::from(self.spec.tls.key.expose().to_owned()),
            )
        } else {
            (Value::Null, Value::Null)
        };
        json!({
            "name": self.spec.name,
            "dashboard_route": if running && s.dashboard_address.as_deref().is_some_and(|a| !a.is_empty()) { Value::from(format!("{}/status", self.spec.dashboard_prefix)) } else { Value::Null },
            "status": s.status,
            "start_time": self.start_time,
            "stop_time": s.stop_time,
            "options": self.options,
            "tls_cert": cert,
            "tls_key": key,
        })
    }
}

/// All clusters of this gateway, by name.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    clusters: parking_lot::Mutex<HashMap<String, Arc<Cluster>>>,
}

impl Registry {
    /// Adds `cluster` unless its owner already has the clusters its quota allows.
    ///
    /// # Errors
    /// [`DaskError::Conflict`] naming the limit and the quota role.
    pub(crate) fn insert(&self, cluster: Arc<Cluster>) -> Result<(), DaskError> {
        let mut all = self.clusters.lock();
        let user = &cluster.spec.user;
        let active = all
            .values()
            .filter(|c| &c.spec.user == user && c.status().is_active())
            .count();
        if active >= cluster.quota.max_clusters {
            return Err(cluster.quota.too_many_clusters(user, active));
        }
        all.insert(cluster.spec.name.clone(), cluster);
        Ok(())
    }

    /// `user`'s cluster `name`; another user's cluster is not found.
    ///
    /// # Errors
    /// [`DaskError::NotFound`].
    pub(crate) fn get_for(&self, user: &str, name: &str) -> Result<Arc<Cluster>, DaskError> {
        self.clusters
            .lock()
            .get(name)
            .filter(|c| c.spec.user == user)
            .cloned()
            .ok_or_else(|| DaskError::NotFound(name.to_owned()))
    }

    /// Cluster `name`, whoever owns it (heartbeats, the scheduler proxy).
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.lock().get(name).cloned()
    }

    /// `user`'s clusters.
    pub(crate) fn of_user(&self, user: &str) -> Vec<Arc<Cluster>> {
        self.clusters
            .lock()
            .values()
            .filter(|c| c.spec.user == user)
            .cloned()
            .collect()
    }

    /// Every cluster.
    pub(crate) fn all(&self) -> Vec<Arc<Cluster>> {
        self.clusters.lock().values().cloned().collect()
    }

    /// Forgets clusters that finished more than `keep_ms` ago.
    pub(crate) fn prune(&self, keep_ms: i64) {
        let cutoff = now_ms() - keep_ms;
        self.clusters.lock().retain(|_, c| {
            let s = c.state.lock();
            !(s.status.is_done() && s.stop_time.is_some_and(|t| t < cutoff))
        });
    }
}
