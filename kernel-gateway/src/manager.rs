//! The kernel registry: starts kernels for a user (authorization, limits, environment), finds them
//! scoped to their owner, shuts them down and culls idle ones.
//!
//! Per-user limits are race-free: a start first takes a slot with a compare-and-swap on the user's
//! counter (running + starting kernels), and gives it back when the start fails or the kernel goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::auth::Caller;
use crate::config::{Config, MemoryLimitMode};
use crate::error::GatewayError;
use crate::jwt::TrustedIssuers;
use crate::kernel::{BufferGauges, Kernel, KernelSettings, SessionLimits};
use crate::kernelspec::KernelSpecDirs;
use crate::launcher::{LaunchRequest, Launcher, ResourceLimits};
use crate::metrics::Metrics;

/// Server environment passed to every kernel in addition to `Config::inherited_envs`.
const BASE_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"];
/// Largest value accepted for one `env` entry.
const MAX_ENV_VALUE: usize = 4096;

/// Body of `POST /api/kernels`.
#[derive(Debug, Default, Deserialize)]
pub struct StartRequest {
    /// Kernelspec name (default when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// `KERNEL_*` variables and friends (values must be strings).
    #[serde(default)]
    pub env: Option<serde_json::Value>,
    /// Ignored (jupyter_server sends `KERNEL_WORKING_DIR` instead).
    #[serde(default)]
    pub path: Option<String>,
    /// Client-chosen kernel id (canonical UUID v4).
    #[serde(default)]
    pub kernel_id: Option<String>,
}

/// A held per-user slot; released on drop.
#[derive(Debug)]
pub(crate) struct UserSlot(Option<Arc<AtomicUsize>>);

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Some(counter) = &self.0 {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Entry {
    kernel: Arc<Kernel>,
    _slot: UserSlot,
}

/// Shared state of the gateway.
pub struct KernelManager {
    pub(crate) config: Config,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) specs: KernelSpecDirs,
    pub(crate) jwt: TrustedIssuers,
    kernels: RwLock<HashMap<String, Entry>>,
    slots: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    server_env: BTreeMap<String, String>,
    /// Counters.
    pub metrics: Metrics,
    /// What the kernels hold for their clients (shared with every kernel).
    pub(crate) buffers: Arc<BufferGauges>,
}

impl std::fmt::Debug for KernelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KernelManager {
    /// A manager for `config`, launching through `launcher`, reading the environment via `lookup`.
    pub fn new(
        config: Config,
        launcher: Arc<dyn Launcher>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let specs = KernelSpecDirs::standard(&config.kernelspec_dirs, &lookup);
        let server_env = BASE_ENV
            .iter()
            .map(|k| k.to_string())
            .chain(config.inherited_envs.iter().cloned())
            .filter_map(|k| lookup(&k).map(|v| (k, v)))
            .collect();
        let jwt = TrustedIssuers::new(
            config.jwt.as_ref(),
            &config.jwt_extra_issuers,
            config.site_id.as_deref(),
        );
        let buffers: Arc<BufferGauges> = Arc::default();
        KernelManager {
            metrics: Metrics::new(&buffers),
            buffers,
            config,
            launcher,
            specs,
            jwt,
            kernels: RwLock::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            server_env,
        }
    }

    async fn take_slot(&self, user: &str, max: i64) -> Result<UserSlot, GatewayError> {
        if max < 0 {
            return Ok(UserSlot(None));
        }
        let counter = self
            .slots
            .lock()
            .await
            .entry(user.to_owned())
            .or_default()
            .clone();
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                ((n as i64) < max).then_some(n + 1)
            })
            .map_err(|_| GatewayError::UserLimit {
                user: user.to_owned(),
                max,
            })?;
        Ok(UserSlot(Some(counter)))
    }

    /// Whose kernel a start makes: the caller's, except on an open gateway (no authentication
    /// configured), where, as in Enterprise Gateway, the client's `KERNEL_USERNAME` names the
    /// user (kernelspec `authorized_users`/`unauthorized_users` and per-user limits apply to it).
    /// With authentication a different `KERNEL_USERNAME` is ignored (and overwritten).
    ///
    /// # Errors
    /// [`GatewayError::BadRequest`] for an open gateway's `KERNEL_USERNAME` that is not a
    /// plausible user name.
    fn kernel_user<'a>(
        &self,
        caller: &'a Caller,
        client_env: &'a BTreeMap<String, String>,
    ) -> Result<&'a str, GatewayError> {
        if !self.config.is_open() {
            return Ok(&caller.user);
        }
        match client_env.get("KERNEL_USERNAME").map(String::as_str) {
            None | Some("") => Ok(&caller.user),
            Some(name) if valid_user_name(name) => Ok(name),
            Some(name) => Err(GatewayError::BadRequest(format!(
                "KERNEL_USERNAME {name:?} is not a user name (at most {MAX_USER_NAME} \
                 characters, no whitespace, control characters or slashes)"
            ))),
        }
    }

    fn kernel_env(
        &self,
        request_env: Option<serde_json::Value>,
    ) -> Result<BTreeMap<String, String>, GatewayError> {
        let mut env = BTreeMap::new();
        let Some(value) = request_env else {
            if self.config.remote_site {
                return Err(GatewayError::BadRequest(crate::exchange::refusal(
                    crate::exchange::REQUIRED_EXCHANGE_ENV,
                )));
            }
            return Ok(env);
        };
        let serde_json::Value::Object(map) = value else {
            return Err(GatewayError::BadRequest("env must be a JSON object".into()));
        };
        let remote = self.config.remote_site;
        for (k, v) in map {
            if !(k.starts_with("KERNEL_") || remote && crate::exchange::is_exchange_var(&k)) {
                continue;
            }
            let serde_json::Value::String(v) = v else {
                return Err(GatewayError::BadRequest(format!(
                    "env value of {k} must be a string"
                )));
            };
            if v.len() > MAX_ENV_VALUE {
                return Err(GatewayError::BadRequest(format!(
                    "env value of {k} is longer than {MAX_ENV_VALUE}"
                )));
            }
            if v.contains(['$', '`', '\r', '\n', '\0']) {
                return Err(GatewayError::BadRequest(format!(
                    "env value of {k} contains prohibited characters"
                )));
            }
            env.insert(k, v);
        }
        if remote {
            let missing = crate::exchange::missing(&env);
            if !missing.is_empty() {
                return Err(GatewayError::BadRequest(crate::exchange::refusal(&missing)));
            }
        }
        Ok(env)
    }

    /// Starts a kernel for `caller`, within its quota (the quota role's `max_kernels`, else
    /// `max_kernels_per_user`; its CPU / memory / GPU limits forced into the environment and handed
    /// to the launcher).
    ///
    /// # Errors
    /// 400 bad env or id, 404 unknown kernelspec, 403 not authorized or over the limit, 500 when the
    /// kernel fails to launch, dies during start or does not answer in time.
    #[tracing::instrument(skip_all, fields(user = %caller.user, kernel_id = tracing::field::Empty))]
    pub async fn start(
        self: &Arc<Self>,
        caller: &Caller,
        req: StartRequest,
    ) -> Result<serde_json::Value, GatewayError> {
        let client_env = self.kernel_env(req.env)?;
        let user = self.kernel_user(caller, &client_env)?.to_owned();
        let user = user.as_str();
        tracing::Span::current().record("user", tracing::field::display(user));
        let name = req
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.config.default_kernel_name.clone());
        let spec = self
            .specs
            .find(&name)
            .ok_or_else(|| GatewayError::KernelSpecNotFound { name: name.clone() })?;
        if !spec.allows(
            user,
            &self.config.unauthorized_users,
            &self.config.authorized_users,
        ) {
            return Err(GatewayError::NotAuthorized {
                user: user.to_owned(),
                kernel_name: name,
            });
        }
        let kernel_id = match req
            .kernel_id
            .as_deref()
            .or(client_env.get("KERNEL_ID").map(String::as_str))
        {
            Some(id) => match uuid::Uuid::parse_str(id) {
                Ok(u) if u.get_version_num() == 4 && u.hyphenated().to_string() == id => {
                    id.to_owned()
                }
                _ => {
                    return Err(GatewayError::BadRequest(format!(
                        "kernel id {id:?} is not a canonical UUID v4"
                    )));
                }
            },
            None => uuid::Uuid::new_v4().to_string(),
        };
        if self.kernels.read().await.contains_key(&kernel_id) {
            return Err(GatewayError::BadRequest(format!(
                "kernel {kernel_id} already exists"
            )));
        }
        tracing::Span::current().record("kernel_id", tracing::field::display(&kernel_id));
        let max_kernels = caller
            .quota
            .as_ref()
            .and_then(|q| q.max_kernels)
            .unwrap_or(self.config.max_kernels_per_user);
        let slot = self.take_slot(user, max_kernels).await?;
        let launch_timeout = client_env
            .get("KERNEL_LAUNCH_TIMEOUT")
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(self.config.kernel_launch_timeout, |t| {
                (t.ceil() as u64).min(self.config.kernel_launch_timeout)
            });
        let working_dir = crate::workdir::kernel_working_dir(
            &self.config,
            user,
            client_env.get("KERNEL_WORKING_DIR").map(String::as_str),
        )?;
        let mut env = self.server_env.clone();
        env.extend(self.config.kernel_env.clone());
        env.extend(spec.env.clone());
        env.extend(client_env);
        // Quota comes from the caller's roles, never from the client.
        let limits = match &caller.quota {
            Some(q) => {
                q.apply_env(&mut env);
                ResourceLimits {
                    cpus: Some(q.cpus),
                    memory_bytes: (self.config.local_memory_limit != MemoryLimitMode::Off)
                        .then_some(q.memory_bytes),
                    memory_mode: self.config.local_memory_limit,
                    gpus: Some(q.gpus),
                }
            }
            None => ResourceLimits::default(),
        };
        // Identity comes from the token; only an open gateway takes the client's word.
        env.insert("KERNEL_USERNAME".into(), user.to_owned());
        // A kernel in the site's working area has it as its home too (not the gateway's).
        if let (Some(dir), Some(root)) = (&working_dir, &self.config.kernel_working_root)
            && dir.starts_with(root)
        {
            env.insert("HOME".into(), dir.display().to_string());
        }
        env.insert("KERNEL_ID".into(), kernel_id.clone());
        env.insert("KERNEL_GATEWAY".into(), "1".into());
        env.insert("KERNEL_LANGUAGE".into(), spec.language.clone());
        let request = LaunchRequest {
            kernel_id: kernel_id.clone(),
            spec: Arc::new(spec),
            env,
            working_dir,
            key: uuid::Uuid::new_v4().to_string(),
            limits,
        };
        let settings = self.settings(launch_timeout);
        let pending_start = request.spec.pending_start();
        let kernel = Kernel::new(request, user.to_owned(), self.launcher.clone(), settings);
        {
            // Listed (as `starting`) while it starts; the id check and the insert are one step.
            let mut kernels = self.kernels.write().await;
            if kernels.contains_key(&kernel_id) {
                return Err(GatewayError::BadRequest(format!(
                    "kernel {kernel_id} already exists"
                )));
            }
            kernels.insert(
                kernel_id.clone(),
                Entry {
                    kernel: kernel.clone(),
                    _slot: slot,
                },
            );
        }
        if pending_start {
            let state = Arc::downgrade(self);
            let k = kernel.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = k.launch_first().await;
                if let Some(m) = state.upgrade() {
                    m.count_start(&result, started);
                }
                if let Err(e) = result {
                    k.fail(&e.to_string()).await;
                }
            });
            return Ok(kernel.model());
        }
        let started = std::time::Instant::now();
        let result = kernel.launch_first().await;
        self.count_start(&result, started);
        if let Err(e) = result {
            self.kernels.write().await.remove(&kernel_id);
            kernel.shutdown("start failed").await;
            return Err(e);
        }
        Ok(kernel.model())
    }

    fn count_start(&self, result: &Result<(), GatewayError>, started: std::time::Instant) {
        if result.is_err() {
            self.metrics.start_failures.inc();
            return;
        }
        self.metrics.starts.inc();
        self.metrics
            .start_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Re-attaches the kernels the launcher finds still running from an earlier run of the
    /// gateway (Slurm jobs); those that do not answer are stopped. Returns how many came back.
    pub async fn recover(self: &Arc<Self>) -> usize {
        let mut attached = 0;
        for r in self.launcher.recover().await {
            let kernel_id = r.kernel_id.clone();
            let Some(spec) = self.specs.find(&r.kernel_name) else {
                tracing::warn!(kernel_id = %kernel_id, kernel_name = %r.kernel_name, "kernelspec of a running kernel is gone; stopping it");
                let _ = r.process.signal(crate::launcher::KernelSignal::Kill);
                continue;
            };
            let request = LaunchRequest {
                kernel_id: kernel_id.clone(),
                spec: Arc::new(spec),
                env: r.env,
                working_dir: r.working_dir,
                key: r.connection.key.clone(),
                limits: ResourceLimits::default(),
            };
            let kernel = Kernel::new(
                request,
                r.user.clone(),
                self.launcher.clone(),
                self.settings(self.config.kernel_launch_timeout),
            );
            match kernel.attach(r.connection, r.process).await {
                Ok(()) => {
                    let slot = self.force_slot(&r.user).await;
                    self.kernels.write().await.insert(
                        kernel_id.clone(),
                        Entry {
                            kernel,
                            _slot: slot,
                        },
                    );
                    tracing::info!(kernel_id = %kernel_id, user = %r.user, "kernel re-attached");
                    attached += 1;
                }
                Err(e) => {
                    tracing::warn!(kernel_id = %kernel_id, error = %e, "cannot re-attach kernel; it was stopped");
                }
            }
        }
        attached
    }

    /// A slot counted against `user` regardless of the limit (re-attached kernels exist already).
    async fn force_slot(&self, user: &str) -> UserSlot {
        let counter = self
            .slots
            .lock()
            .await
            .entry(user.to_owned())
            .or_default()
            .clone();
        counter.fetch_add(1, Ordering::SeqCst);
        UserSlot(Some(counter))
    }

    fn settings(&self, launch_timeout: u64) -> KernelSettings {
        KernelSettings {
            launch_timeout: Duration::from_secs(launch_timeout),
            heartbeat_period: self.config.heartbeat_period(),
            heartbeat_misses: self.config.heartbeat_misses,
            session_limits: SessionLimits {
                queue_bytes: self.config.max_connection_queue_bytes,
                offline_messages: self.config.offline_buffer_messages,
                offline_bytes: self.config.offline_buffer_bytes,
            },
            detached_session_timeout: Duration::from_secs(self.config.detached_session_timeout),
            gauges: self.buffers.clone(),
        }
    }

    /// The caller's kernel `id` (another user's kernel is reported as missing).
    ///
    /// # Errors
    /// [`GatewayError::KernelNotFound`].
    pub(crate) async fn get(&self, user: &str, id: &str) -> Result<Arc<Kernel>, GatewayError> {
        self.kernels
            .read()
            .await
            .get(id)
            .map(|e| e.kernel.clone())
            .filter(|k| self.config.is_open() || k.user == user)
            .ok_or_else(|| GatewayError::KernelNotFound {
                kernel_id: id.to_owned(),
            })
    }

    /// Models of the caller's kernels.
    pub async fn list(&self, user: &str) -> Vec<serde_json::Value> {
        let kernels = self.kernels.read().await;
        let mut out: Vec<_> = kernels
            .values()
            .filter(|e| self.config.is_open() || e.kernel.user == user)
            .map(|e| e.kernel.model())
            .collect();
        out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        out
    }

    /// Counts of kernels by execution state.
    pub async fn counts_by_state(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.kernels.read().await.values() {
            *out.entry(e.kernel.execution_state()).or_insert(0) += 1;
        }
        out
    }

    /// Shuts down and forgets the caller's kernel `id`.
    ///
    /// # Errors
    /// [`GatewayError::KernelNotFound`].
    pub async fn shutdown(&self, user: &str, id: &str) -> Result<(), GatewayError> {
        let kernel = self.get(user, id).await?;
        let entry = self.kernels.write().await.remove(id);
        if entry.is_some() {
            kernel.shutdown("shut down by request").await;
        }
        Ok(())
    }

    /// Shuts every kernel down (gateway exit); kernels that outlive the gateway (batch jobs)
    /// are only detached, for the next run to re-attach.
    pub async fn shutdown_all(&self) {
        let entries: Vec<_> = self.kernels.write().await.drain().map(|(_, e)| e).collect();
        for e in entries {
            if e.kernel.outlives_gateway() {
                tracing::info!(kernel_id = %e.kernel.id, "leaving kernel running for the next gateway run");
                e.kernel.detach().await;
            } else {
                e.kernel.shutdown("gateway shutting down").await;
            }
        }
    }

    /// One orphan pass: the launcher removes what it started for kernels this gateway no longer
    /// has (kernel pods left by a crash or an earlier run).
    pub async fn remove_orphans_once(&self) -> Vec<String> {
        // Asked per resource after the launcher listed them; while the map is being written
        // (a start or stop under way) every kernel counts as live, so nothing racing goes.
        let is_live = |id: &str| self.kernels.try_read().map_or(true, |k| k.contains_key(id));
        match self.launcher.remove_orphans(&is_live).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::info!(count = removed.len(), "removed orphaned kernel resources");
                }
                removed
            }
            Err(e) => {
                tracing::warn!(error = %e, "orphan cleanup failed");
                Vec::new()
            }
        }
    }

    /// One culling pass (`cull_idle_timeout`, `cull_connected`, `cull_busy`); dead kernels go too.
    pub async fn cull_once(&self) {
        let timeout = self.config.cull_idle_timeout;
        if timeout == 0 {
            return;
        }
        let now = chrono::Utc::now();
        let candidates: Vec<Arc<Kernel>> = self
            .kernels
            .read()
            .await
            .values()
            .map(|e| e.kernel.clone())
            .filter(|k| {
                let state = k.execution_state();
                let idle_for = (now - k.last_activity()).num_milliseconds().max(0) as u64;
                state == "dead"
                    || (idle_for >= timeout * 1000
                        && (self.config.cull_connected || k.connections() == 0)
                        && (self.config.cull_busy || state != "busy")
                        && state != "starting"
                        && state != "restarting")
            })
            .collect();
        for k in candidates {
            if self.kernels.write().await.remove(&k.id).is_some() {
                tracing::info!(kernel_id = %k.id, user = %k.user, "culling idle kernel");
                self.metrics.culled.inc();
                k.shutdown(&format!("culled after {timeout}s idle")).await;
            }
        }
    }
}

/// Longest `KERNEL_USERNAME` an open gateway takes.
const MAX_USER_NAME: usize = 255;

/// Whether `name` can name a user: 1 to [`MAX_USER_NAME`] characters, none of them whitespace,
/// control characters or slashes (the name ends up in labels, paths and job names).
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_USER_NAME
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '\\')
}

#[cfg(test)]
mod user_name_tests {
    use proptest::prelude::*;

    use super::{MAX_USER_NAME, valid_user_name};

    proptest! {
        /// An open gateway's `KERNEL_USERNAME`: any string is judged without panic, and an
        /// accepted one fits in labels, paths and job names.
        #[test]
        fn accepted_kernel_usernames_are_plain(name in "\\PC{0,300}", plain in "[a-z0-9._@-]{1,64}") {
            if valid_user_name(&name) {
                prop_assert!(!name.is_empty() && name.chars().count() <= MAX_USER_NAME);
                prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '\\'));
            }
            prop_assert!(valid_user_name(&plain));
        }
    }
}
