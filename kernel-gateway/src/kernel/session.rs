//! One client session of a kernel (a WebSocket `session_id`): its own shell/control/stdin DEALERs
//! whose ZeroMQ identity is the session id (so `input_request` reaches the right browser), and an
//! outbox that forwards to the attached WebSocket or buffers while none is attached.
//!
//! ```text
//!  WebSocket ──to_kernel (mpsc)──▶ driver ──DEALER(identity=session_id)──▶ kernel shell/control/stdin
//!  WebSocket ◀──ClientQueue──── outbox ◀── readers (replies) ◀──────────── kernel
//!                                  ▲──────── iopub fan-out (kernel task)
//! ```
//! The driver follows the kernel's endpoints: when they change (restart) it builds new sockets;
//! while there are none (restarting, dead) or the send fails (no peer) it holds the message.
//!
//! Every queue is bounded in bytes ([`SessionLimits`]): `to_kernel` makes the client wait (TCP
//! backpressure), the client queue disconnects a client that does not read, and the offline
//! buffer drops its oldest messages. The kernel drops a session left detached for
//! `detached_session_timeout` ([`super::Kernel::session_detached`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zeromq::{DealerSocket, SocketRecv, SocketSend};

use super::Endpoints;
use super::queue::{BufferGauges, Charge, ClientQueue, Held, Meter, QueueEnd};
use super::zmq::{dealer, frames, recv_message};
use crate::protocol::{Channel, RawMessage, Signer};

/// Messages a client sends, waiting for the driver (besides the byte limit).
const TO_KERNEL_QUEUE: usize = 1024;

/// The byte limits of a session (from the config; see [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub(crate) struct SessionLimits {
    /// Bytes queued for one WebSocket, in each direction (`max_connection_queue_bytes`).
    pub(crate) queue_bytes: usize,
    /// Messages kept per session while no client is attached (`offline_buffer_messages`).
    pub(crate) offline_messages: usize,
    /// Bytes kept by all offline buffers of one kernel together (`offline_buffer_bytes`).
    pub(crate) offline_bytes: usize,
}

/// A client message on its way to the kernel, holding its share of the byte limit.
struct Inbound {
    msg: RawMessage,
    _permit: OwnedSemaphorePermit,
    _charge: Charge,
}

struct Outbox {
    client: Option<(u64, Arc<ClientQueue>)>,
    /// Messages for an absent client, each also charged to the kernel's offline meter.
    buffer: VecDeque<(Held, Charge)>,
    next_conn: u64,
    dropped: u64,
}

/// A client session; see the module docs.
pub(crate) struct Session {
    pub(crate) id: String,
    to_kernel: mpsc::Sender<Inbound>,
    /// Bytes of client messages the driver has not sent yet (at most `limits.queue_bytes`).
    to_kernel_bytes: Arc<Semaphore>,
    outbox: Mutex<Outbox>,
    cancel: CancellationToken,
    limits: SessionLimits,
    /// The kernel's offline meter, shared by its sessions.
    offline: Meter,
    gauges: Arc<BufferGauges>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Creates the session and starts its driver.
    pub(crate) fn spawn(
        id: String,
        kernel_id: &str,
        endpoints: watch::Receiver<Option<Arc<Endpoints>>>,
        parent: &CancellationToken,
        limits: SessionLimits,
        offline: Meter,
        gauges: Arc<BufferGauges>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(TO_KERNEL_QUEUE);
        let permits = limits.queue_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let session = Arc::new(Session {
            id,
            to_kernel: tx,
            to_kernel_bytes: Arc::new(Semaphore::new(permits)),
            outbox: Mutex::new(Outbox {
                client: None,
                buffer: VecDeque::new(),
                next_conn: 0,
                dropped: 0,
            }),
            cancel: parent.child_token(),
            limits,
            offline,
            gauges,
        });
        let span = tracing::info_span!("session", kernel_id = %kernel_id, session_id = %session.id);
        tokio::spawn(drive(session.clone(), rx, endpoints).instrument(span));
        session
    }

    /// Queues a client message for the kernel; waits while the queue is full (by count or by
    /// bytes), so a client that writes faster than the kernel reads is slowed down by TCP.
    pub(crate) async fn send(&self, msg: RawMessage) -> bool {
        let bytes = msg.wire_len();
        let want = bytes
            .clamp(1, self.to_kernel_bytes_limit())
            .try_into()
            .unwrap_or(u32::MAX);
        let Ok(permit) = self.to_kernel_bytes.clone().acquire_many_owned(want).await else {
            return false;
        };
        let inbound = Inbound {
            msg,
            _permit: permit,
            _charge: self.gauges.buffered.charge(bytes),
        };
        self.to_kernel.send(inbound).await.is_ok()
    }

    fn to_kernel_bytes_limit(&self) -> usize {
        self.limits
            .queue_bytes
            .clamp(1, Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize)
    }

    /// Forwards to the attached client, or buffers. A client whose queue would pass
    /// `queue_bytes` is detached (its WebSocket is closed with the reason) and what it had not
    /// read is buffered instead.
    pub(crate) async fn deliver(&self, msg: Arc<RawMessage>) {
        let held = Held::new(msg, &self.gauges.buffered);
        let mut out = self.outbox.lock().await;
        let offline = match &out.client {
            Some((conn, queue)) => match queue.push(held) {
                Ok(()) => return,
                Err((end, back)) => {
                    if let QueueEnd::Overflow { queued, limit } = end {
                        self.gauges.slow_clients_closed.inc();
                        tracing::warn!(
                            conn,
                            queued,
                            limit,
                            "client reads too slowly: disconnecting it and buffering its output"
                        );
                    }
                    out.client = None;
                    back
                }
            },
            None => vec![held],
        };
        for held in offline {
            self.buffer_offline(&mut out, held);
        }
    }

    /// Appends to the offline buffer, then drops this session's oldest messages while the
    /// session holds more than `offline_messages` or the kernel's buffers more than
    /// `offline_bytes`.
    fn buffer_offline(&self, out: &mut Outbox, held: Held) {
        let charge = self.offline.charge(held.bytes);
        out.buffer.push_back((held, charge));
        while out.buffer.len() > self.limits.offline_messages
            || (self.offline.get() > self.limits.offline_bytes && !out.buffer.is_empty())
        {
            out.buffer.pop_front();
            out.dropped += 1;
            if out.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = out.dropped,
                    "offline buffer full, dropping oldest messages"
                );
            }
        }
    }

    /// Attaches a client: replays what was buffered (and what a replaced client had not read,
    /// the newest `queue_bytes` of it), then forwards live. A client already attached to this
    /// session is replaced (its queue ends, so its WebSocket closes).
    pub(crate) async fn attach(&self) -> (u64, Arc<ClientQueue>) {
        let queue = Arc::new(ClientQueue::new(self.limits.queue_bytes));
        let mut out = self.outbox.lock().await;
        let mut replay: VecDeque<Held> = match out.client.take() {
            Some((_, old)) => old.end(QueueEnd::Closed).into(),
            None => VecDeque::new(),
        };
        replay.extend(out.buffer.drain(..).map(|(held, _)| held));
        let mut bytes: usize = replay.iter().map(|h| h.bytes).sum();
        while bytes > self.limits.queue_bytes && replay.len() > 1 {
            if let Some(old) = replay.pop_front() {
                bytes -= old.bytes;
                out.dropped += 1;
            }
        }
        if !replay.is_empty() {
            tracing::info!(
                replayed = replay.len(),
                bytes,
                "replaying buffered messages to reconnected client"
            );
        }
        for held in replay {
            // Within the limit by construction; an ended queue cannot happen (it is new).
            let _ = queue.push(held);
        }
        out.next_conn += 1;
        let conn = out.next_conn;
        out.client = Some((conn, queue.clone()));
        (conn, queue)
    }

    /// Detaches client `conn` (if it is still the attached one); what it had not read and
    /// messages from now on are buffered. Returns whether `conn` was the attached client.
    pub(crate) async fn detach(&self, conn: u64) -> bool {
        let mut out = self.outbox.lock().await;
        if out.client.as_ref().is_none_or(|(c, _)| *c != conn) {
            return false;
        }
        if let Some((_, queue)) = out.client.take() {
            for held in queue.end(QueueEnd::Closed) {
                self.buffer_offline(&mut out, held);
            }
        }
        true
    }

    /// Whether a client is attached.
    pub(crate) async fn is_attached(&self) -> bool {
        self.outbox.lock().await.client.is_some()
    }

    /// Whether no client attached since client `conn` detached.
    pub(crate) async fn abandoned_since(&self, conn: u64) -> bool {
        let out = self.outbox.lock().await;
        out.client.is_none() && out.next_conn == conn
    }

    /// Stops the driver, closes the attached client and drops the buffered messages.
    pub(crate) async fn close(&self) {
        self.cancel.cancel();
        self.to_kernel_bytes.close();
        let mut out = self.outbox.lock().await;
        if let Some((_, queue)) = out.client.take() {
            queue.end(QueueEnd::Closed);
        }
        out.buffer.clear();
    }
}

struct Senders {
    shell: zeromq::DealerSendHalf,
    control: zeromq::DealerSendHalf,
    stdin: zeromq::DealerSendHalf,
}

async fn connect_all(
    ep: &Endpoints,
    session: &Arc<Session>,
    readers: &CancellationToken,
) -> Result<Senders, super::zmq::ZmqFailure> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = session.id.as_bytes();
    let mut halves = Vec::with_capacity(3);
    for (channel, url) in [
        (Channel::Shell, &ep.shell),
        (Channel::Control, &ep.control),
        (Channel::Stdin, &ep.stdin),
    ] {
        let socket: DealerSocket = dealer(url, id, deadline).await?;
        let (tx, rx) = socket.split();
        tokio::spawn(
            read_loop(
                rx,
                ep.signer.clone(),
                channel,
                session.clone(),
                readers.clone(),
            )
            .in_current_span(),
        );
        halves.push(tx);
    }
    let (Some(stdin), Some(control), Some(shell)) = (halves.pop(), halves.pop(), halves.pop())
    else {
        unreachable!("three halves were pushed")
    };
    Ok(Senders {
        shell,
        control,
        stdin,
    })
}

async fn read_loop<R: SocketRecv + Send>(
    mut rx: R,
    signer: Signer,
    channel: Channel,
    session: Arc<Session>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            msg = recv_message(&mut rx, &signer, channel) => match msg {
                Ok(msg) => session.deliver(Arc::new(msg)).await,
                Err(e) => {
                    tracing::debug!(channel = channel.as_str(), error = %e, "recv failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}

async fn send_one(
    senders: &mut Senders,
    signer: &Signer,
    msg: &RawMessage,
) -> Result<(), super::zmq::ZmqFailure> {
    let frames = frames(signer, msg)?;
    match msg.channel {
        Channel::Control => senders.control.send(frames).await?,
        Channel::Stdin => senders.stdin.send(frames).await?,
        _ => senders.shell.send(frames).await?,
    }
    Ok(())
}

async fn drive(
    session: Arc<Session>,
    mut rx: mpsc::Receiver<Inbound>,
    mut endpoints: watch::Receiver<Option<Arc<Endpoints>>>,
) {
    let cancel = session.cancel.clone();
    let mut pending: Option<Inbound> = None;
    'generation: loop {
        let current = endpoints.borrow_and_update().clone();
        let Some(ep) = current else {
            tokio::select! {
                changed = endpoints.changed() => if changed.is_err() { return } else { continue 'generation },
                _ = cancel.cancelled() => return,
            }
        };
        let readers = cancel.child_token();
        let connected = tokio::select! {
            r = connect_all(&ep, &session, &readers) => r,
            changed = endpoints.changed() => { readers.cancel(); if changed.is_err() { return } continue 'generation }
            _ = cancel.cancelled() => return,
        };
        let mut senders = match connected {
            Ok(s) => s,
            Err(e) => {
                readers.cancel();
                tracing::warn!(error = %e, "session could not reach the kernel, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue 'generation;
            }
        };
        tracing::debug!(generation = ep.generation, "session connected to kernel");
        loop {
            if let Some(msg) = pending.take() {
                if let Err(e) = send_one(&mut senders, &ep.signer, &msg.msg).await {
                    tracing::debug!(error = %e, "send to kernel failed, holding message");
                    pending = Some(msg);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        changed = endpoints.changed() => {
                            readers.cancel();
                            if changed.is_err() { return }
                            continue 'generation;
                        }
                        _ = cancel.cancelled() => return,
                    }
                }
                continue;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => pending = Some(msg),
                    None => { readers.cancel(); return }
                },
                changed = endpoints.changed() => {
                    readers.cancel();
                    if changed.is_err() { return }
                    continue 'generation;
                }
                _ = cancel.cancelled() => return,
            }
        }
    }
}
