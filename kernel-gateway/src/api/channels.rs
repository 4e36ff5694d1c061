//! `GET /api/kernels/{id}/channels?session_id=...`: the kernel WebSocket.
//!
//! Offering `v1.kernel.websocket.jupyter.org` selects the binary v1 framing
//! ([`crate::protocol::encode_v1`]); otherwise the legacy JSON protocol is spoken
//! ([`crate::protocol::encode_legacy`]). Each `session_id` has its own ZeroMQ identity; a second
//! socket with the same session replaces the first; while no socket is attached the session
//! buffers and replays on reconnect. Malformed frames are logged and dropped; the socket and the
//! kernel carry on.
//!
//! Limits (see [`crate::config::Config`]): a message or frame larger than `max_message_bytes`
//! closes the socket with 1009 (message too big); a client that lets more than
//! `max_connection_queue_bytes` of kernel output pile up is closed with 1008 and its output
//! buffers for a reconnect. Both close frames carry the reason and the setting's name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::kernel::{ClientQueue, Kernel, QueueEnd};
use crate::manager::KernelManager;
use crate::protocol::{
    FrameError, LegacyFrame, RawMessage, V1_SUBPROTOCOL, decode_legacy_binary, decode_legacy_text,
    decode_v1, encode_legacy, encode_v1,
};

/// Keep-alive ping period (EG's default `EG_WS_PING_INTERVAL_SECS`).
const PING_EVERY: Duration = Duration::from_secs(30);

/// Most kernel messages written to a WebSocket per flush.
const MAX_BATCH: usize = 64;
/// Most bytes queued for one flush: big outputs go out as they come, without piling up in the
/// socket's write buffer.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// How long a close frame may take to reach a client (one that does not read gets dropped).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub(super) fn router() -> Router<Arc<KernelManager>> {
    Router::new().route("/api/kernels/{id}/channels", get(channels))
}

async fn channels(
    State(m): State<Arc<KernelManager>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, GatewayError> {
    let kernel = m.get(&caller.user, &id).await?;
    let session_id = match query.get("session_id").filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => {
            let s = uuid::Uuid::new_v4().to_string();
            tracing::warn!(kernel_id = %id, session_id = %s, "no session_id on WebSocket, generated one");
            s
        }
    };
    let span = tracing::info_span!("channels", kernel_id = %id, session_id = %session_id, user = %caller.user);
    let max_message = m.config.max_message_bytes;
    let ws = ws
        .protocols([V1_SUBPROTOCOL])
        .max_message_size(max_message)
        .max_frame_size(max_message);
    Ok(ws.on_upgrade(move |socket| run(socket, kernel, session_id, max_message).instrument(span)))
}

fn decode(v1: bool, msg: &Message) -> Option<Result<RawMessage, FrameError>> {
    match msg {
        Message::Text(t) if v1 => {
            tracing::warn!(len = t.len(), "dropping text frame on a v1 socket");
            None
        }
        Message::Text(t) => Some(decode_legacy_text(t.as_str())),
        Message::Binary(b) if v1 => Some(decode_v1(b)),
        Message::Binary(b) => Some(decode_legacy_binary(b)),
        _ => None,
    }
}

fn encode(v1: bool, msg: &RawMessage) -> Option<Message> {
    if v1 {
        return Some(Message::Binary(encode_v1(msg)));
    }
    match encode_legacy(msg) {
        Ok(LegacyFrame::Text(t)) => Some(Message::Text(t.into())),
        Ok(LegacyFrame::Binary(b)) => Some(Message::Binary(b)),
        Err(e) => {
            tracing::warn!(error = %e, "dropping kernel message that cannot be encoded");
            None
        }
    }
}

/// The close frame for a read error: 1009 with the limit when the client's message was too big.
fn read_error_close(e: &axum::Error, max_message: usize) -> Option<Message> {
    let too_big = std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|inner| matches!(inner, tungstenite::Error::Capacity(_)));
    if !too_big {
        tracing::debug!(error = %e, "WebSocket read failed");
        return None;
    }
    tracing::warn!(
        limit = max_message,
        "client sent a message over max_message_bytes; closing with 1009"
    );
    Some(Message::Close(Some(CloseFrame {
        code: close_code::SIZE,
        reason: format!("message too big: limit {max_message} bytes (max_message_bytes)").into(),
    })))
}

/// The close frame for a client queue that ended.
fn queue_end_close(end: QueueEnd) -> Message {
    match end {
        QueueEnd::Closed => Message::Close(None),
        QueueEnd::Overflow { queued, limit } => Message::Close(Some(CloseFrame {
            code: close_code::POLICY,
            reason: format!(
                "client too slow: {queued} bytes of output unread, limit {limit} \
                 (max_connection_queue_bytes)"
            )
            .into(),
        })),
    }
}

/// Writes `first` and what else is already queued in one flush; false when the socket failed.
async fn write_batch(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    v1: bool,
    first: Arc<RawMessage>,
    outbound: &ClientQueue,
) -> bool {
    // A reply is several messages in a burst (status, result, reply, idle): queue all that are
    // already here, then write them in one flush.
    let (mut frames, mut bytes) = (0usize, 0usize);
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        if let Some(frame) = encode(v1, &msg) {
            bytes += match &frame {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                _ => 0,
            };
            if sink.feed(frame).await.is_err() {
                return false;
            }
            frames += 1;
        }
        if frames >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
            break;
        }
        next = outbound.try_recv();
    }
    sink.flush().await.is_ok()
}

async fn run(socket: WebSocket, kernel: Arc<Kernel>, session_id: String, max_message: usize) {
    let v1 = socket.protocol().is_some();
    let (session, conn, outbound) = kernel.attach_client(&session_id).await;
    kernel.connection_opened();
    tracing::info!(
        protocol = if v1 { V1_SUBPROTOCOL } else { "legacy" },
        "client connected"
    );
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let close = loop {
        tokio::select! {
            frame = stream.next() => match frame {
                None | Some(Ok(Message::Close(_))) => break None,
                Some(Err(e)) => break read_error_close(&e, max_message),
                Some(Ok(frame)) => {
                    let delivered = match decode(v1, &frame) {
                        Some(Ok(msg)) => session.send(msg).await,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "dropping malformed frame from client");
                            true
                        }
                        None => true,
                    };
                    if !delivered {
                        break None;
                    }
                }
            },
            msg = outbound.recv() => match msg {
                Ok(msg) => {
                    // A client that does not read blocks the write; the queue ending (it
                    // overflowed, or another socket replaced this one) must still end it.
                    tokio::select! {
                        ok = write_batch(&mut sink, v1, msg, &outbound) => if !ok { break None },
                        _ = outbound.ended() => {}
                    }
                }
                // Replaced by a newer socket of this session, the kernel is gone, or the client
                // did not read.
                Err(end) => break Some(queue_end_close(end)),
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    kernel.session_detached(&session, conn).await;
    kernel.connection_closed();
    if let Some(close) = close
        && tokio::time::timeout(CLOSE_WAIT, sink.send(close))
            .await
            .is_err()
    {
        tracing::info!("client did not take the close frame in time; dropping the connection");
    }
    let attached = session.is_attached().await;
    tracing::info!(
        closed_kernel = kernel.is_closed(),
        attached,
        "client disconnected"
    );
}
