//! Byte accounting for what the gateway holds on behalf of clients, and the bounded queue between
//! a session and its attached WebSocket.
//!
//! Every kernel message waiting for a client is charged, by its size, to a [`Meter`]: the
//! gateway-wide gauge (`stackhub_gateway_buffered_bytes` on `/metrics`) and, while it sits in an
//! offline buffer, its kernel's offline meter. A [`Charge`] is given back when the message leaves
//! (sent, dropped or moved), so no path can leak the count.
//!
//! A [`ClientQueue`] holds what one WebSocket has not written yet. It never grows past its limit
//! (one message more when it is empty, so a single big output still gets through): the push that
//! would pass the limit ends the queue with [`QueueEnd::Overflow`] and hands its messages back,
//! so the session can buffer them while the slow client is told why it was disconnected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::protocol::RawMessage;

/// A byte count shared by everything charged to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter(Arc<AtomicUsize>);

impl Meter {
    /// Bytes currently charged.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Charges `bytes` until the returned [`Charge`] is dropped.
    pub(crate) fn charge(&self, bytes: usize) -> Charge {
        self.0.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            meter: self.clone(),
            bytes,
        }
    }
}

/// Bytes charged to a [`Meter`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    meter: Meter,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.0.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The gateway-wide gauges of client buffering (read by `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct BufferGauges {
    /// Bytes of kernel messages held for clients: WebSocket queues and offline buffers.
    pub(crate) buffered: Meter,
    /// WebSockets closed because their client read too slowly.
    pub(crate) slow_clients_closed: Counter,
    /// Detached sessions dropped after `detached_session_timeout`.
    pub(crate) sessions_reaped: Counter,
}

/// A message waiting for a client, charged to the gateway-wide gauge.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) msg: Arc<RawMessage>,
    pub(crate) bytes: usize,
    _charge: Charge,
}

impl Held {
    /// Charges `msg` to `gauge`.
    pub(crate) fn new(msg: Arc<RawMessage>, gauge: &Meter) -> Self {
        let bytes = msg.wire_len();
        Held {
            msg,
            bytes,
            _charge: gauge.charge(bytes),
        }
    }
}

/// Why a [`ClientQueue`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueEnd {
    /// The client detached, another WebSocket replaced it, or the session closed.
    Closed,
    /// The client did not read: `queued` bytes were waiting when the push that passed `limit` came.
    Overflow { queued: usize, limit: usize },
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Held>,
    bytes: usize,
    end: Option<QueueEnd>,
}

/// The queue between a session and one attached WebSocket; see the module docs.
#[derive(Debug)]
pub(crate) struct ClientQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    ended: CancellationToken,
    limit: usize,
}

impl ClientQueue {
    /// An empty queue holding at most `limit` bytes (or one message).
    pub(crate) fn new(limit: usize) -> Self {
        ClientQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            ended: CancellationToken::new(),
            limit,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, QueueState> {
        self.state.lock()
    }

    /// Appends `held`. Past the limit the queue ends with [`QueueEnd::Overflow`] and everything
    /// it held, `held` last, is handed back; an ended queue hands `held` back at once.
    pub(crate) fn push(&self, held: Held) -> Result<(), (QueueEnd, Vec<Held>)> {
        let mut state = self.lock();
        if let Some(end) = state.end {
            return Err((end, vec![held]));
        }
        if !state.items.is_empty() && state.bytes.saturating_add(held.bytes) > self.limit {
            let end = QueueEnd::Overflow {
                queued: state.bytes,
                limit: self.limit,
            };
            state.end = Some(end);
            state.bytes = 0;
            let mut items: Vec<Held> = state.items.drain(..).collect();
            items.push(held);
            drop(state);
            self.ended.cancel();
            self.ready.notify_one();
            return Err((end, items));
        }
        state.bytes += held.bytes;
        state.items.push_back(held);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Ends the queue (if it has not ended) and returns what it still held.
    pub(crate) fn end(&self, why: QueueEnd) -> Vec<Held> {
        let mut state = self.lock();
        state.end.get_or_insert(why);
        state.bytes = 0;
        let items = state.items.drain(..).collect();
        drop(state);
        self.ended.cancel();
        self.ready.notify_one();
        items
    }

    /// Resolves once the queue has ended (a writer stuck on a client that does not read races
    /// its write against this).
    pub(crate) fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.ended.cancelled()
    }

    /// The next message without waiting; `None` when empty or ended.
    pub(crate) fn try_recv(&self) -> Option<Arc<RawMessage>> {
        let mut state = self.lock();
        if state.end.is_some() {
            return None;
        }
        let held = state.items.pop_front()?;
        state.bytes -= held.bytes;
        Some(held.msg.clone())
    }

    /// The next message, or why the queue ended (then nothing more comes).
    pub(crate) async fn recv(&self) -> Result<Arc<RawMessage>, QueueEnd> {
        loop {
            {
                let mut state = self.lock();
                if let Some(end) = state.end {
                    return Err(end);
                }
                if let Some(held) = state.items.pop_front() {
                    state.bytes -= held.bytes;
                    return Ok(held.msg.clone());
                }
            }
            self.ready.notified().await;
        }
    }

    /// Bytes queued.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Channel;

    fn held(gauge: &Meter, text: &str) -> Held {
        let msg = RawMessage::new_gateway(
            Channel::Iopub,
            "stream",
            "s",
            None,
            serde_json::json!({ "text": text }),
        );
        Held::new(Arc::new(msg), gauge)
    }

    #[tokio::test]
    async fn overflow_hands_back_everything_and_the_gauge_follows_the_messages() {
        let gauge = Meter::default();
        let one = held(&gauge, &"x".repeat(1000)).bytes;
        let q = ClientQueue::new(one * 3);
        for _ in 0..3 {
            q.push(held(&gauge, &"x".repeat(1000))).unwrap();
        }
        assert_eq!(q.bytes(), one * 3);
        assert_eq!(gauge.get(), one * 3);
        let (end, back) = q.push(held(&gauge, &"x".repeat(1000))).unwrap_err();
        assert_eq!(
            end,
            QueueEnd::Overflow {
                queued: one * 3,
                limit: one * 3
            }
        );
        assert_eq!(back.len(), 4);
        assert_eq!(gauge.get(), one * 4);
        drop(back);
        assert_eq!(gauge.get(), 0);
        assert_eq!(q.recv().await.unwrap_err(), end);
        assert!(q.push(held(&gauge, "late")).is_err());
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn one_big_message_passes_an_empty_queue_and_recv_frees_its_bytes() {
        let gauge = Meter::default();
        let q = ClientQueue::new(10);
        q.push(held(&gauge, &"y".repeat(5000))).unwrap();
        assert!(gauge.get() > 5000);
        let msg = q.recv().await.unwrap();
        assert!(msg.wire_len() > 5000);
        assert_eq!(q.bytes(), 0);
        assert_eq!(gauge.get(), 0);
        assert!(q.try_recv().is_none());
    }
}
