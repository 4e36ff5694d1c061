//! Dask clusters beside the kernels: a Dask Gateway-compatible service on the gateway's port.
//!
//! Stock `dask_gateway` clients work unchanged (the protocol is in
//! `shared/spec/dask-gateway-compat.md`). Layout:
//! - [`config`]: the `[dask]` config section;
//! - `api`: the REST routes (`/api/version`, `/api/health`, `/api/v1/options`,
//!   `/api/v1/clusters/...`), errors as `{"error": ...}` (`error`);
//! - `session`: the 401-first handshake and the session cookie (credentials as for kernels);
//!   `hub_auth`: `Authorization: jupyterhub <token>` checked with the hub;
//! - `quota`: the `stack-dask-*` quota roles: options offered and accepted, workers and clusters;
//! - `model`: the cluster model and the registry (a user's clusters are theirs alone: another
//!   user's cluster is 404 on every route);
//! - [`launch`]: the [`DaskLauncher`] seam and its launchers: local processes (`dask scheduler`
//!   with the dask-gateway preload, `dask worker`), Slurm jobs, Kubernetes pods;
//! - `tls`: each cluster's own certificate and key;
//! - `sni` and `proxy`: connections on the same port whose first bytes are a TLS ClientHello
//!   for `daskgateway-<cluster>` are piped (TLS not terminated) to that cluster's scheduler;
//!   other TLS is closed, everything else is HTTP;
//! - `dashboard`: each cluster's dashboard at `/clusters/<name>/...` (HTTP and WebSocket),
//!   forwarded to its scheduler for the cluster's owner only.
//!
//! Life of a cluster: `POST /api/v1/clusters/` makes it PENDING and launches its scheduler; the
//! scheduler's first heartbeat makes it RUNNING; each heartbeat carries the wanted worker count
//! (from `scale` or adaptive scaling, both forwarded to the scheduler) and the service starts or
//! stops workers to match. A scheduler that exits, misses its heartbeats or never reports is
//! FAILED; `DELETE` (by the owner, or by the scheduler's preload when idle for `idle_timeout`)
//! stops it. Gateway shutdown stops every cluster.

mod api;
pub mod config;
mod dashboard;
mod error;
mod hub_auth;
pub mod launch;
mod model;
mod proxy;
pub mod quota;
mod session;
pub mod sni;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::RngCore as _;
use serde_json::{Map, Value};

pub use self::api::router;
pub use self::config::DaskConfig;
pub use self::launch::{ClusterSpec, DaskLauncher, DaskProcess, LocalDaskLauncher};
pub use self::proxy::{SplitListener, split_listener};

use self::error::DaskError;
use self::hub_auth::HubAuth;
use self::model::{Cluster, Registry, Status, Worker};
use self::quota::DaskQuota;
use self::session::Sessions;
use crate::config::Secret;
use crate::manager::KernelManager;

/// Finished clusters stay listed (as STOPPED / FAILED) this long.
const KEEP_FINISHED_MS: i64 = 3600 * 1000;
/// Time allowed for a call to a scheduler's API (scale, adapt).
const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The Dask service of one gateway.
#[derive(Debug)]
pub struct DaskService {
    config: DaskConfig,
    manager: Arc<KernelManager>,
    registry: Registry,
    launcher: Arc<dyn DaskLauncher>,
    sessions: Sessions,
    hub_auth: Option<HubAuth>,
    api_url: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl DaskService {
    /// A service authenticating through `manager`'s config, launching through `launcher`,
    /// telling schedulers to heartbeat to `api_url` (`http://host:port/api`).
    pub fn new(
        manager: Arc<KernelManager>,
        launcher: Arc<dyn DaskLauncher>,
        api_url: String,
    ) -> Arc<Self> {
        let config = manager.config.dask.clone();
        Arc::new(DaskService {
            hub_auth: config.hub_api_url.as_deref().map(|url| {
                HubAuth::new(
                    url,
                    config.hub_auth_cache_secs,
                    config.hub_required_scope.clone(),
                )
            }),
            config,
            manager,
            registry: Registry::default(),
            launcher,
            sessions: Sessions::default(),
            api_url,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The service `main` and `serve` run: clusters through `dask.launcher` (default: the
    /// gateway's `default_launcher`; `slurm` and `kubernetes` come from the kernel launcher
    /// registered under that name), local ones with the configured Python and files in
    /// `runtime_dir`; the API at `api_url` or the listen address.
    pub fn local(manager: Arc<KernelManager>, listen: std::net::SocketAddr) -> Arc<Self> {
        let config = &manager.config.dask;
        let root = config.runtime_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "stackhub-dask-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ))
        });
        let name = config
            .launcher
            .clone()
            .unwrap_or_else(|| manager.config.default_launcher.clone());
        let api_url = config.api_url.clone().unwrap_or_else(|| {
            let ip = if listen.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            format!(
                "http://{}/api",
                std::net::SocketAddr::new(ip, listen.port())
            )
        });
        let local = || -> Arc<dyn DaskLauncher> {
            Arc::new(
                LocalDaskLauncher::new(config.python(), root, api_url.clone())
                    .with_warm_schedulers(config.warm_schedulers),
            )
        };
        let launcher = launch::select(&name, local, manager.launcher.as_ref(), config);
        DaskService::new(manager, launcher, api_url)
    }

    /// Creates a cluster for `user` within `quota` and launches its scheduler; returns its
    /// name.
    async fn create(
        self: &Arc<Self>,
        user: &str,
        quota: &DaskQuota,
        options: &Map<String, Value>,
    ) -> Result<String, DaskError> {
        let worker = quota.check_options(options)?;
        let (options, cores, memory_gib) = (worker.to_map(), worker.cores, worker.memory_gib);
        let name = uuid::Uuid::new_v4().simple().to_string();
        let tls = tls::new_cluster_tls(&name).map_err(DaskError::Internal)?;
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let spec = ClusterSpec {
            name: name.clone(),
            user: user.to_owned(),
            group: quota.role.clone(),
            api_url: self.api_url.clone(),
            token: Secret::new(hex::encode(token)),
            tls,
            worker_cores: cores,
            // Whole MiB: what `--memory-limit` gets.
            worker_memory_bytes: ((memory_gib * 1024.0).round() as u64) << 20,
            heartbeat_period: self.config.heartbeat_period,
            idle_timeout: self.config.idle_timeout,
            dashboard_prefix: format!("{}/clusters/{name}", self.config.dashboard_prefix),
        };
        let cluster = Arc::new(Cluster::new(spec, options, quota.clone()));
        self.registry.insert(cluster.clone())?;
        tracing::info!(cluster = name, user, role = ?quota.role, "dask cluster starting");
        let me = self.clone();
        tokio::spawn(async move {
            match me.launcher.start_scheduler(&cluster.spec).await {
                Ok(process) => {
                    let process: Arc<dyn DaskProcess> = Arc::from(process);
                    let late = {
                        let mut s = cluster.state.lock();
                        s.last_seen = std::time::Instant::now();
                        s.scheduler = Some(process.clone());
                        // A fast scheduler may have made it RUNNING already.
                        s.status == Status::Stopping || s.status.is_done()
                    };
                    if late {
                        // Stopped while launching.
                        process.stop().await;
                    }
                }
                Err(e) => {
                    me.fail(&cluster, format!("cannot launch the scheduler: {e}"))
                        .await
                }
            }
        });
        Ok(name)
    }

    /// Stops `cluster`'s processes and marks it `final_status` (no-op if already stopping).
    async fn stop(&self, cluster: &Arc<Cluster>, final_status: Status) {
        let (scheduler, workers) = {
            let mut s = cluster.state.lock();
            if s.status == Status::Stopping || s.status.is_done() {
                return;
            }
            s.status = Status::Stopping;
            (s.scheduler.take(), std::mem::take(&mut s.workers))
        };
        cluster.changed.send_replace(Status::Stopping);
        let _serial = cluster.reconcile.lock().await;
        let stops = workers
            .into_values()
            .map(|w| w.process)
            .chain(scheduler)
            .collect::<Vec<_>>();
        futures_util::future::join_all(stops.iter().map(|p| p.stop())).await;
        // Workers started by a reconciliation that raced with this stop.
        let late = std::mem::take(&mut cluster.state.lock().workers);
        futures_util::future::join_all(late.values().map(|w| w.process.stop())).await;
        self.launcher.cleanup(&cluster.spec).await;
        cluster.set_status(final_status);
        tracing::info!(cluster = cluster.name(), status = ?final_status, "dask cluster stopped");
    }

    /// Marks `cluster` failed (logging why) and stops what is left of it.
    async fn fail(&self, cluster: &Arc<Cluster>, reason: String) {
        tracing::warn!(
            cluster = cluster.name(),
            user = cluster.spec.user,
            reason,
            "dask cluster failed"
        );
        cluster.state.lock().reason = Some(reason);
        self.stop(cluster, Status::Failed).await;
    }

    /// A heartbeat from `cluster`'s scheduler: running from the first one; workers follow
    /// `count`.
    ///
    /// # Errors
    /// [`DaskError::Forbidden`] for a heartbeat that names other addresses than the first one
    /// did: the user can read the cluster's token on their own scheduler, and with moved
    /// addresses the scheduler proxy and the gateway's calls would go wherever they say.
    async fn heartbeat(
        &self,
        cluster: &Arc<Cluster>,
        beat: api::Heartbeat,
    ) -> Result<(), DaskError> {
        let became_running = {
            let mut s = cluster.state.lock();
            if s.status != Status::Pending && s.status != Status::Running {
                return Ok(());
            }
            // The first heartbeat comes from the scheduler the launcher started, before anyone
            // can run code on it (clients reach it only once it runs): its addresses are the
            // cluster's for good.
            if s.status == Status::Running
                && (s.scheduler_address.as_deref() != Some(beat.scheduler_address.as_str())
                    || s.api_address.as_deref() != Some(beat.api_address.as_str())
                    || s.dashboard_address.as_deref() != Some(beat.dashboard_address.as_str()))
            {
                tracing::warn!(
                    cluster = cluster.name(),
                    user = cluster.spec.user,
                    "refused a heartbeat that moves the cluster's scheduler"
                );
                return Err(DaskError::Forbidden(format!(
                    "a heartbeat may not change the addresses of cluster {} (fixed by its first heartbeat)",
                    cluster.name()
                )));
            }
            s.last_seen = std::time::Instant::now();
            s.scheduler_address = Some(beat.scheduler_address.clone());
            s.api_address = Some(beat.api_address.clone());
            s.dashboard_address = Some(beat.dashboard_address.clone());
            let pending = s.status == Status::Pending;
            s.status = Status::Running;
            pending
        };
        if became_running {
            cluster.changed.send_replace(Status::Running);
            tracing::info!(
                cluster = cluster.name(),
                user = cluster.spec.user,
                "dask cluster running"
            );
        }
        // The owner's quota, whatever the scheduler (which the user controls) asks for.
        let count = beat.count.min(cluster.quota.max_workers) as usize;
        let _serial = cluster.reconcile.lock().await;
        let (to_stop, to_start) = {
            let mut s = cluster.state.lock();
            if s.status != Status::Running {
                return Ok(());
            }
            let mut to_stop: Vec<Arc<dyn DaskProcess>> = Vec::new();
            for name in &beat.closed_workers {
                if let Some(w) = s.workers.remove(name) {
                    to_stop.push(w.process);
                }
            }
            for name in &beat.closing_workers {
                if let Some(w) = s.workers.get_mut(name) {
                    w.closing = true;
                }
            }
            for name in &beat.active_workers {
                if let Some(w) = s.workers.get_mut(name) {
                    w.active = true;
                }
            }
            let exited: Vec<String> = s
                .workers
                .iter()
                .filter(|(_, w)| w.process.exited().is_some())
                .map(|(n, _)| n.clone())
                .collect();
            for name in exited {
                if let Some(w) = s.workers.remove(&name) {
                    to_stop.push(w.process);
                }
            }
            let live = s.workers.values().filter(|w| !w.closing).count();
            if live > count {
                // The scheduler retires connected workers itself; drop excess unconnected ones.
                let pending: Vec<String> = s
                    .workers
                    .iter()
                    .filter(|(_, w)| !w.closing && !w.active)
                    .map(|(n, _)| n.clone())
                    .take(live - count)
                    .collect();
                for name in pending {
                    if let Some(w) = s.workers.remove(&name) {
                        to_stop.push(w.process);
                    }
                }
            }
            (to_stop, count.saturating_sub(live))
        };
        for p in to_stop {
            tokio::spawn(async move { p.stop().await });
        }
        for _ in 0..to_start {
            let worker = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            match self
                .launcher
                .start_worker(&cluster.spec, &worker, &beat.scheduler_address)
                .await
            {
                Ok(p) => {
                    cluster.state.lock().workers.insert(
                        worker,
                        Worker {
                            process: Arc::from(p),
                            active: false,
                            closing: false,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(cluster = cluster.name(), error = %e, "cannot start a dask worker");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Posts `msg` to `cluster`'s scheduler API (`/api/comm`).
    async fn scheduler_call(&self, cluster: &Cluster, msg: Value) -> Result<(), DaskError> {
        let api = cluster.state.lock().api_address.clone().ok_or_else(|| {
            DaskError::Conflict(format!("Cluster {} is not running", cluster.name()))
        })?;
        let unreachable = |e: String| {
            DaskError::Internal(format!(
                "cannot reach the scheduler of cluster {}: {e}",
                cluster.name()
            ))
        };
        let req = axum::http::Request::post(format!("{api}/api/comm"))
            .header("Content-Type", "application/json")
            .header(
                "Authorization",
                format!("token {}", cluster.spec.token.expose()),
            )
            .body(Full::new(Bytes::from(msg.to_string())))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(SCHEDULER_CALL_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if !status.is_success() {
            return Err(unreachable(format!("it answered {status}")));
        }
        Ok(())
    }

    /// One pass of the watchdog: clusters whose scheduler exited, never reported or stopped
    /// heartbeating fail; long-finished clusters are forgotten.
    async fn watch_once(&self) {
        let silent_for = Duration::from_secs(self.config.heartbeat_timeout);
        let start_timeout = Duration::from_secs(self.config.start_timeout);
        for cluster in self.registry.all() {
            let verdict = {
                let s = cluster.state.lock();
                let since = s.last_seen.elapsed();
                match s.status {
                    Status::Pending | Status::Running => {
                        if let Some(how) = s.scheduler.as_ref().and_then(|p| p.exited()) {
                            Some(format!("the scheduler exited ({how})"))
                        } else if s.status == Status::Pending && since > start_timeout {
                            Some(format!(
                                "the scheduler did not report within {} s (dask.start_timeout)",
                                start_timeout.as_secs()
                            ))
                        } else if s.status == Status::Running && since > silent_for {
                            Some(format!(
                                "no heartbeat for {} s (dask.heartbeat_timeout)",
                                since.as_secs()
                            ))
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            };
            if let Some(reason) = verdict {
                self.fail(&cluster, reason).await;
            }
        }
        self.registry.prune(KEEP_FINISHED_MS);
    }

    /// Runs the watchdog until aborted; it also removes, at start and every minute, what the
    /// launcher left of clusters the service does not have (an earlier run's jobs or pods).
    pub fn spawn_watchdog(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in 0u64.. {
                tick.tick().await;
                if n % 60 == 0 {
                    me.remove_orphans().await;
                }
                me.watch_once().await;
            }
        })
    }

    /// Stops the launcher's jobs or pods of clusters this service does not have.
    async fn remove_orphans(&self) {
        let is_live = |name: &str| {
            self.registry
                .get(name)
                .is_some_and(|c| !c.status().is_done())
        };
        let removed = self.launcher.remove_orphans(&is_live).await;
        if !removed.is_empty() {
            tracing::warn!(clusters = ?removed, "removed the processes, jobs or pods of unknown dask clusters");
        }
    }

    /// Stops every cluster (gateway shutdown).
    pub async fn shutdown_all(&self) {
        let all = self.registry.all();
        futures_util::future::join_all(all.iter().map(|c| self.stop(c, Status::Stopped))).await;
    }
}
