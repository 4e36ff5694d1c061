//! One kernel: its process (through a [`Launcher`]), its ZeroMQ generation (sockets for the current
//! process; rebuilt on restart), its client sessions, and its lifecycle.
//!
//! Lifecycle: `start` launches, connects iopub + a private shell/control pair, and nudges with
//! `kernel_info_request` until a reply **and** an iopub message arrive (so the subscription is live)
//! before the kernel is `idle`. A watcher per generation polls the process and the heartbeat; on
//! death the kernel turns `dead`, every session gets a synthesized `status: dead`, and client
//! messages are held until a restart. `restart` stops the process, launches a new one (new ports),
//! repeats the handshake and re-points every session.

mod queue;
mod session;
mod zmq;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zeromq::{DealerSocket, SubSocket};

pub(crate) use self::queue::{BufferGauges, ClientQueue, QueueEnd};
pub(crate) use self::session::{Session, SessionLimits};
use self::zmq::{
    ZmqFailure, beat, dealer, heartbeat_socket, nudge, recv_message, request, subscriber,
};
use crate::error::GatewayError;
use crate::kernelspec::{InterruptMode, KernelSpec};
use crate::launcher::{KernelProcess, KernelSignal, LaunchRequest, Launcher};
use crate::protocol::{Channel, RawMessage, Signer};

/// Where the current generation of a kernel listens, and how to sign for it.
#[derive(Debug)]
pub(crate) struct Endpoints {
    shell: String,
    control: String,
    stdin: String,
    signer: Signer,
    generation: u64,
}

/// Timing and sizing knobs for a kernel (from the config).
#[derive(Debug, Clone)]
pub(crate) struct KernelSettings {
    pub(crate) launch_timeout: Duration,
    pub(crate) heartbeat_period: Duration,
    pub(crate) heartbeat_misses: u32,
    /// Byte and count limits of every session's queues.
    pub(crate) session_limits: SessionLimits,
    /// How long a session without a client keeps its buffer before it is dropped.
    pub(crate) detached_session_timeout: Duration,
    /// The gateway-wide buffering gauges.
    pub(crate) gauges: Arc<BufferGauges>,
}

#[derive(Debug, Clone)]
struct Status {
    state: String,
    reason: Option<String>,
}

struct Runtime {
    process: Box<dyn KernelProcess>,
    signer: Signer,
    control: DealerSocket,
    generation_cancel: CancellationToken,
}

/// A kernel; see the module docs.
pub(crate) struct Kernel {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) spec: Arc<KernelSpec>,
    launcher: Arc<dyn Launcher>,
    settings: KernelSettings,
    request: LaunchRequest,
    status: ArcSwap<Status>,
    last_activity_us: AtomicI64,
    connections: AtomicUsize,
    generation: AtomicU64,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Bytes held by this kernel's offline buffers (bounded by `offline_buffer_bytes`).
    offline: queue::Meter,
    endpoints: watch::Sender<Option<Arc<Endpoints>>>,
    runtime: Mutex<Option<Runtime>>,
    cancel: CancellationToken,
    /// Cancelled by shutdown: a launch still waiting (a queued batch job) gives up at once.
    abort_launch: CancellationToken,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Message types that do not count as user activity (jupyter_server's list).
const UNTRACKED: [&str; 9] = [
    "status",
    "stream",
    "display_data",
    "kernel_info_reply",
    "comm_info_reply",
    "debug_event",
    "interrupt_reply",
    "shutdown_reply",
    "input_request",
];

impl Kernel {
    /// A kernel record in state `starting`; [`Kernel::launch_first`] brings it up.
    pub(crate) fn new(
        request: LaunchRequest,
        user: String,
        launcher: Arc<dyn Launcher>,
        settings: KernelSettings,
    ) -> Arc<Self> {
        let (endpoints, _) = watch::channel(None);
        Arc::new(Kernel {
            id: request.kernel_id.clone(),
            user,
            spec: request.spec.clone(),
            launcher,
            settings,
            request,
            status: ArcSwap::from_pointee(Status {
                state: "starting".into(),
                reason: None,
            }),
            last_activity_us: AtomicI64::new(Utc::now().timestamp_micros()),
            connections: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            offline: queue::Meter::default(),
            endpoints,
            runtime: Mutex::new(None),
            cancel: CancellationToken::new(),
            abort_launch: CancellationToken::new(),
        })
    }

    /// Launches the first process of a [`Kernel::new`] kernel and waits until it is ready.
    pub(crate) async fn launch_first(self: &Arc<Self>) -> Result<(), GatewayError> {
        let mut runtime = self.runtime.lock().await;
        *runtime = Some(self.launch_generation().await?);
        Ok(())
    }

    /// Re-attaches to a kernel that is already running (found by [`Launcher::recover`]).
    pub(crate) async fn attach(
        self: &Arc<Self>,
        connection: jupyter_protocol::ConnectionInfo,
        process: Box<dyn KernelProcess>,
    ) -> Result<(), GatewayError> {
        let mut runtime = self.runtime.lock().await;
        *runtime = Some(self.connect_generation(connection, process).await?);
        Ok(())
    }

    /// A start that failed after the kernel was listed: `dead` with the reason, told to clients.
    pub(crate) async fn fail(&self, reason: &str) {
        self.endpoints.send_replace(None);
        self.set_status("dead", Some(reason.to_owned()));
        self.broadcast_status("dead", Some(reason)).await;
    }

    /// Whether the current process keeps running when the gateway exits (see
    /// [`KernelProcess::outlives_gateway`]). A kernel still launching (its runtime is locked)
    /// does not: shutting it down aborts the launch.
    pub(crate) fn outlives_gateway(&self) -> bool {
        self.runtime
            .try_lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.process.outlives_gateway()))
            .unwrap_or(false)
    }

    /// Stops serving the kernel without stopping it (gateway exit; the next run re-attaches).
    pub(crate) async fn detach(&self) {
        self.cancel.cancel();
        let sessions: Vec<_> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.close().await;
        }
    }

    /// Progress callback for launchers: a status message to every client while starting.
    fn progress(self: &Arc<Self>) -> crate::launcher::Progress {
        let weak = Arc::downgrade(self);
        Arc::new(move |message: String| {
            let Some(kernel) = weak.upgrade() else {
                return;
            };
            let state = kernel.execution_state();
            if state != "starting" && state != "restarting" {
                return;
            }
            kernel.set_status(&state, Some(message.clone()));
            tokio::spawn(async move { kernel.broadcast_status(&state, Some(&message)).await });
        })
    }

    fn set_status(&self, state: &str, reason: Option<String>) {
        self.status.store(Arc::new(Status {
            state: state.to_owned(),
            reason,
        }));
    }

    /// Current `execution_state`.
    pub(crate) fn execution_state(&self) -> String {
        self.status.load().state.clone()
    }

    /// Time of the last user activity.
    pub(crate) fn last_activity(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.last_activity_us.load(Ordering::Relaxed))
            .unwrap_or_else(Utc::now)
    }

    fn touch(&self) {
        self.last_activity_us
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    /// Number of open WebSockets.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The KernelModel of the REST API.
    pub(crate) fn model(&self) -> serde_json::Value {
        let status = self.status.load();
        let mut m = json!({
            "id": self.id,
            "name": self.spec.name,
            "last_activity": crate::time::iso(self.last_activity()),
            "execution_state": status.state,
            "connections": self.connections(),
        });
        if let Some(reason) = &status.reason {
            m["reason"] = json!(reason);
        }
        m
    }

    fn launch_error(&self, what: ZmqFailure) -> GatewayError {
        match what {
            ZmqFailure::NoReply { .. } | ZmqFailure::ConnectTimeout { .. } => {
                GatewayError::LaunchTimeout {
                    kernel_id: self.id.clone(),
                    kernel_name: self.spec.name.clone(),
                    secs: self.settings.launch_timeout.as_secs(),
                }
            }
            other => GatewayError::Operation {
                kernel_id: self.id.clone(),
                what: "launch",
                detail: other.to_string(),
            },
        }
    }

    /// Launches a process and completes the handshake; the caller holds the runtime lock.
    async fn launch_generation(self: &Arc<Self>) -> Result<Runtime, GatewayError> {
        let launch = self
            .launcher
            .launch_with_progress(self.request.clone(), self.progress());
        let launched = tokio::select! {
            r = launch => r.map_err(|source| GatewayError::Launch {
                kernel_id: self.id.clone(),
                kernel_name: self.spec.name.clone(),
                source,
            })?,
            _ = self.abort_launch.cancelled() => return Err(self.aborted()),
        };
        self.connect_generation(launched.connection, launched.process)
            .await
    }

    /// Connects to a launched process and completes the handshake; on failure the process is
    /// killed (a batch job would otherwise outlive the failed start).
    async fn connect_generation(
        self: &Arc<Self>,
        conn: jupyter_protocol::ConnectionInfo,
        process: Box<dyn KernelProcess>,
    ) -> Result<Runtime, GatewayError> {
        let result = tokio::select! {
            r = self.handshake(conn, &*process) => r,
            _ = self.abort_launch.cancelled() => Err(self.aborted()),
        };
        match result {
            Ok((generation_cancel, signer, control)) => Ok(Runtime {
                process,
                signer,
                control,
                generation_cancel,
            }),
            Err(e) => {
                let _ = process.signal(KernelSignal::Kill);
                Err(e)
            }
        }
    }

    fn aborted(&self) -> GatewayError {
        GatewayError::Operation {
            kernel_id: self.id.clone(),
            what: "launch",
            detail: "the kernel was shut down while starting".into(),
        }
    }

    async fn handshake(
        self: &Arc<Self>,
        conn: jupyter_protocol::ConnectionInfo,
        process: &dyn KernelProcess,
    ) -> Result<(CancellationToken, Signer, DealerSocket), GatewayError> {
        let started = Instant::now();
        let signer = Signer::new(conn.key.as_bytes(), &conn.signature_scheme).map_err(|e| {
            GatewayError::Operation {
                kernel_id: self.id.clone(),
                what: "launch",
                detail: e.to_string(),
            }
        })?;
        let deadline = Instant::now() + self.settings.launch_timeout;
        let identity = format!("gateway-{}", uuid::Uuid::new_v4().simple());
        let handshake = async {
            let mut sub = subscriber(&conn.iopub_url(), deadline).await?;
            let mut shell = dealer(&conn.shell_url(), identity.as_bytes(), deadline).await?;
            let control = dealer(&conn.control_url(), identity.as_bytes(), deadline).await?;
            nudge(&mut shell, &mut sub, &signer, &identity, deadline).await?;
            Ok::<_, ZmqFailure>((sub, control))
        };
        let exited = async {
            loop {
                if let Some(exit) = process.poll().await {
                    return exit;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let (sub, control) = tokio::select! {
            r = handshake => r.map_err(|e| self.launch_error(e))?,
            exit = exited => {
                let detail = match exit.last_stderr {
                    Some(line) => format!("{}; last stderr line: {line}", exit.status),
                    None => exit.status,
                };
                return Err(GatewayError::DiedDuringStart {
                    kernel_id: self.id.clone(), kernel_name: self.spec.name.clone(), detail,
                });
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let generation_cancel = self.cancel.child_token();
        let span = tracing::info_span!("kernel", kernel_id = %self.id, generation);
        tokio::spawn(
            self.clone()
                .iopub_loop(sub, signer.clone(), generation_cancel.clone())
                .instrument(span.clone()),
        );
        tokio::spawn(
            self.clone()
                .watch_loop(conn.hb_url(), generation, generation_cancel.clone())
                .instrument(span.clone()),
        );
        self.set_status("idle", None);
        self.touch();
        self.endpoints.send_replace(Some(Arc::new(Endpoints {
            shell: conn.shell_url(),
            control: conn.control_url(),
            stdin: conn.stdin_url(),
            signer: signer.clone(),
            generation,
        })));
        span.in_scope(|| tracing::info!(ms = started.elapsed().as_millis() as u64, "kernel ready"));
        Ok((generation_cancel, signer, control))
    }

    /// Receives iopub, tracks state and activity, fans out to every session.
    async fn iopub_loop(
        self: Arc<Self>,
        mut sub: SubSocket,
        signer: Signer,
        cancel: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                m = recv_message(&mut sub, &signer, Channel::Iopub) => m,
            };
            let msg = match msg {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    tracing::debug!(error = %e, "iopub recv failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if let Ok(info) = msg.header_info() {
                if info.msg_type == "status" {
                    if let Some(state) = msg
                        .content_json()
                        .ok()
                        .and_then(|c| c["execution_state"].as_str().map(str::to_owned))
                        && state != "starting"
                    {
                        self.set_status(&state, None);
                    }
                } else if !UNTRACKED.contains(&info.msg_type.as_str()) {
                    self.touch();
                }
            }
            self.broadcast(msg).await;
        }
    }

    /// How the current process ended, if it did (skipped while a lifecycle operation runs).
    async fn poll_process(&self) -> Option<crate::launcher::ExitInfo> {
        let guard = self.runtime.try_lock().ok()?;
        guard.as_ref()?.process.poll().await
    }

    async fn broadcast(&self, msg: Arc<RawMessage>) {
        let sessions: Vec<_> = self.sessions.lock().await.values().cloned().collect();
        for s in sessions {
            s.deliver(msg.clone()).await;
        }
    }

    /// Polls the process and the heartbeat; declares the kernel dead when either is gone.
    async fn watch_loop(
        self: Arc<Self>,
        hb_url: String,
        generation: u64,
        cancel: CancellationToken,
    ) {
        let period = self.settings.heartbeat_period;
        let mut hb = None;
        let mut misses = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(500).min(period));
        let mut next_beat = Instant::now() + period;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(exit) = self.poll_process().await {
                let reason = format!("kernel process ended ({})", exit.status);
                self.mark_dead(generation, reason, &cancel).await;
                return;
            }
            if Instant::now() < next_beat {
                continue;
            }
            next_beat = Instant::now() + period;
            if hb.is_none() {
                // The REQ socket is recreated after every miss (REQ/REP lock-step is broken then).
                hb = heartbeat_socket(&hb_url, Instant::now() + period)
                    .await
                    .ok();
            }
            let ok = match hb.as_mut() {
                Some(socket) => beat(socket, period).await,
                None => false,
            };
            if ok {
                misses = 0;
                continue;
            }
            hb = None;
            misses += 1;
            tracing::warn!(misses, "kernel missed a heartbeat");
            if misses >= self.settings.heartbeat_misses {
                self.mark_dead(
                    generation,
                    format!("no heartbeat for {misses} periods"),
                    &cancel,
                )
                .await;
                return;
            }
        }
    }

    async fn mark_dead(&self, generation: u64, reason: String, cancel: &CancellationToken) {
        if self.generation.load(Ordering::SeqCst) != generation || cancel.is_cancelled() {
            return;
        }
        tracing::warn!(reason = %reason, "kernel is dead");
        cancel.cancel();
        self.endpoints.send_replace(None);
        self.set_status("dead", Some(reason.clone()));
        self.broadcast_status("dead", Some(&reason)).await;
    }

    /// Sends a gateway-made `status` message to every session.
    pub(crate) async fn broadcast_status(&self, state: &str, reason: Option<&str>) {
        let mut content = json!({ "execution_state": state });
        if let Some(r) = reason {
            content["reason"] = json!(r);
        }
        self.broadcast(Arc::new(RawMessage::new_gateway(
            Channel::Iopub,
            "status",
            &self.id,
            None,
            content,
        )))
        .await;
    }

    /// Interrupts per the kernelspec's `interrupt_mode`.
    pub(crate) async fn interrupt(&self) -> Result<(), GatewayError> {
        let op = |detail: String| GatewayError::Operation {
            kernel_id: self.id.clone(),
            what: "interrupt",
            detail,
        };
        let mut guard = self.runtime.lock().await;
        let runtime = guard
            .as_mut()
            .ok_or_else(|| op("kernel is not running".into()))?;
        match self.spec.interrupt_mode {
            InterruptMode::Signal => runtime
                .process
                .signal(KernelSignal::Interrupt)
                .map_err(|e| op(e.to_string())),
            InterruptMode::Message => {
                let msg = RawMessage::new_gateway(
                    Channel::Control,
                    "interrupt_request",
                    &self.id,
                    None,
                    json!({}),
                );
                request(
                    &mut runtime.control,
                    &runtime.signer,
                    &msg,
                    Duration::from_secs(5),
                )
                .await
                .map(|_| ())
                .map_err(|e| op(e.to_string()))
            }
        }
    }

    /// Stops the current process: `shutdown_request`, then SIGTERM, then SIGKILL.
    async fn stop_runtime(&self, mut runtime: Runtime, restart: bool) {
        runtime.generation_cancel.cancel();
        let msg = RawMessage::new_gateway(
            Channel::Control,
            "shutdown_request",
            &self.id,
            None,
            json!({ "restart": restart }),
        );
        let _ = request(
            &mut runtime.control,
            &runtime.signer,
            &msg,
            Duration::from_millis(1500),
        )
        .await;
        for (signal, wait_ms) in [
            (None, 1500),
            (Some(KernelSignal::Terminate), 1000),
            (Some(KernelSignal::Kill), 1000),
        ] {
            if let Some(signal) = signal {
                let _ = runtime.process.signal(signal);
            }
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            while Instant::now() < deadline {
                if runtime.process.poll().await.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tracing::warn!(kernel_id = %self.id, "kernel process did not exit after SIGKILL");
    }

    /// Restarts with a fresh process (new ports) and returns once it answered `kernel_info`.
    pub(crate) async fn restart(self: &Arc<Self>) -> Result<(), GatewayError> {
        let mut guard = self.runtime.lock().await;
        self.endpoints.send_replace(None);
        self.set_status("restarting", None);
        self.broadcast_status("restarting", None).await;
        let mut relaunched = None;
        if let Some(old) = guard.take() {
            old.generation_cancel.cancel();
            let in_place = match old.process.restart_in_place() {
                Some(restart) => Some(restart.await),
                None => None,
            };
            match in_place {
                Some(Ok(conn)) => {
                    relaunched = Some(self.connect_generation(conn, old.process).await);
                }
                Some(Err(e)) => {
                    tracing::warn!(kernel_id = %self.id, error = %e, "in-place restart failed; launching anew");
                    self.stop_runtime(old, true).await;
                }
                None => self.stop_runtime(old, true).await,
            }
        }
        let relaunched = match relaunched {
            Some(r) => r,
            None => self.launch_generation().await,
        };
        match relaunched {
            Ok(runtime) => {
                *guard = Some(runtime);
                Ok(())
            }
            Err(e) => {
                self.set_status("dead", Some(e.to_string()));
                self.broadcast_status("dead", Some(&e.to_string())).await;
                Err(e)
            }
        }
    }

    /// Shuts the kernel down for good and closes every session.
    pub(crate) async fn shutdown(&self, reason: &str) {
        self.abort_launch.cancel();
        let mut guard = self.runtime.lock().await;
        self.endpoints.send_replace(None);
        self.set_status("dead", Some(reason.to_owned()));
        self.broadcast_status("dead", Some(reason)).await;
        if let Some(old) = guard.take() {
            self.stop_runtime(old, false).await;
        }
        self.cancel.cancel();
        let sessions: Vec<_> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.close().await;
        }
    }

    /// Attaches a client to the session `session_id` (created and connected on first use); see
    /// [`Session::attach`]. Done under the sessions lock, so the reaper cannot drop the session
    /// between lookup and attach.
    pub(crate) async fn attach_client(
        &self,
        session_id: &str,
    ) -> (Arc<Session>, u64, Arc<ClientQueue>) {
        let mut sessions = self.sessions.lock().await;
        let session = sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| {
                Session::spawn(
                    session_id.to_owned(),
                    &self.id,
                    self.endpoints.subscribe(),
                    &self.cancel,
                    self.settings.session_limits.clone(),
                    self.offline.clone(),
                    self.settings.gauges.clone(),
                )
            })
            .clone();
        let (conn, queue) = session.attach().await;
        drop(sessions);
        (session, conn, queue)
    }

    /// Client `conn` of `session` went away: unless a client attaches to the session again within
    /// `detached_session_timeout`, the session is dropped with its buffered output (and its
    /// ZeroMQ sockets), so abandoned sessions do not hold memory for ever.
    pub(crate) async fn session_detached(self: &Arc<Self>, session: &Arc<Session>, conn: u64) {
        if !session.detach(conn).await {
            return;
        }
        let weak = Arc::downgrade(self);
        let session = Arc::downgrade(session);
        let timeout = self.settings.detached_session_timeout;
        let cancel = self.cancel.clone();
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {}
                    _ = cancel.cancelled() => return,
                }
                let (Some(kernel), Some(session)) = (weak.upgrade(), session.upgrade()) else {
                    return;
                };
                kernel.reap(&session, conn, timeout).await;
            }
            .in_current_span(),
        );
    }

    async fn reap(&self, session: &Arc<Session>, conn: u64, timeout: Duration) {
        let mut sessions = self.sessions.lock().await;
        if !session.abandoned_since(conn).await {
            return;
        }
        if sessions
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.id);
        }
        drop(sessions);
        session.close().await;
        self.settings.gauges.sessions_reaped.inc();
        tracing::info!(
            session_id = %session.id,
            secs = timeout.as_secs(),
            "dropped a session left without a client (detached_session_timeout)"
        );
    }

    /// Records an opened / closed WebSocket.
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// See [`Kernel::connection_opened`].
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the kernel was shut down.
    pub(crate) fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
