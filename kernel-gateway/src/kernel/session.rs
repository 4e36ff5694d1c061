//! One client session of a kernel (a WebSocket `session_id`): its own shell/control/stdin DEALERs
//! whose ZeroMQ identity is the session id (so `input_request` reaches the right browser), and an
//! outbox that forwards to the attached WebSocket or buffers while none is attached.
//!
//! ```text
//!  WebSocket ──to_kernel (mpsc)──▶ driver ──DEALER(identity=session_id)──▶ kernel shell/control/stdin
//!  WebSocket ◀──client (mpsc)── outbox ◀── readers (replies) ◀──────────── kernel
//!                                  ▲──────── iopub fan-out (kernel task)
//! ```
//! The driver follows the kernel's endpoints: when they change (restart) it builds new sockets;
//! while there are none (restarting, dead) or the send fails (no peer) it holds the message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zeromq::{DealerSocket, SocketRecv, SocketSend};

use super::Endpoints;
use super::zmq::{dealer, frames, recv_message};
use crate::protocol::{Channel, RawMessage, Signer};

/// Messages a client sends, waiting for the driver.
const TO_KERNEL_QUEUE: usize = 1024;

struct Outbox {
    client: Option<(u64, mpsc::UnboundedSender<Arc<RawMessage>>)>,
    buffer: VecDeque<Arc<RawMessage>>,
    next_conn: u64,
    dropped: u64,
}

/// A client session; see the module docs.
pub(crate) struct Session {
    pub(crate) id: String,
    to_kernel: mpsc::Sender<RawMessage>,
    outbox: Mutex<Outbox>,
    cancel: CancellationToken,
    capacity: usize,
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
        capacity: usize,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(TO_KERNEL_QUEUE);
        let session = Arc::new(Session {
            id,
            to_kernel: tx,
            outbox: Mutex::new(Outbox {
                client: None,
                buffer: VecDeque::new(),
                next_conn: 0,
                dropped: 0,
            }),
            cancel: parent.child_token(),
            capacity,
        });
        let span = tracing::info_span!("session", kernel_id = %kernel_id, session_id = %session.id);
        tokio::spawn(drive(session.clone(), rx, endpoints).instrument(span));
        session
    }

    /// Queues a client message for the kernel; waits if the queue is full.
    pub(crate) async fn send(&self, msg: RawMessage) -> bool {
        self.to_kernel.send(msg).await.is_ok()
    }

    /// Forwards to the attached client, or buffers (oldest dropped past `capacity`).
    pub(crate) async fn deliver(&self, msg: Arc<RawMessage>) {
        let mut out = self.outbox.lock().await;
        if let Some((_, client)) = &out.client {
            match client.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(msg)) => {
                    out.client = None;
                    out.buffer.push_back(msg);
                }
            }
        } else {
            out.buffer.push_back(msg);
        }
        if out.buffer.len() > self.capacity {
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

    /// Attaches a client: replays what was buffered, then forwards live. A client already attached
    /// to this session is replaced (its channel closes, so its WebSocket closes).
    pub(crate) async fn attach(&self) -> (u64, mpsc::UnboundedReceiver<Arc<RawMessage>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut out = self.outbox.lock().await;
        let replay = out.buffer.len();
        for msg in out.buffer.drain(..) {
            let _ = tx.send(msg);
        }
        if replay > 0 {
            tracing::info!(
                replayed = replay,
                "replaying buffered messages to reconnected client"
            );
        }
        out.next_conn += 1;
        let conn = out.next_conn;
        out.client = Some((conn, tx));
        (conn, rx)
    }

    /// Detaches client `conn` (if it is still the attached one); messages buffer from now on.
    pub(crate) async fn detach(&self, conn: u64) {
        let mut out = self.outbox.lock().await;
        if out.client.as_ref().is_some_and(|(c, _)| *c == conn) {
            out.client = None;
        }
    }

    /// Whether a client is attached.
    pub(crate) async fn is_attached(&self) -> bool {
        self.outbox.lock().await.client.is_some()
    }

    /// Stops the driver and closes the attached client.
    pub(crate) async fn close(&self) {
        self.cancel.cancel();
        self.outbox.lock().await.client = None;
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
    mut rx: mpsc::Receiver<RawMessage>,
    mut endpoints: watch::Receiver<Option<Arc<Endpoints>>>,
) {
    let cancel = session.cancel.clone();
    let mut pending: Option<RawMessage> = None;
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
                if let Err(e) = send_one(&mut senders, &ep.signer, &msg).await {
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
