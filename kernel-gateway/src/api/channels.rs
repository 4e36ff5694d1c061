//! `GET /api/kernels/{id}/channels?session_id=...`: the kernel WebSocket.
//!
//! Offering `v1.kernel.websocket.jupyter.org` selects the binary v1 framing
//! ([`crate::protocol::encode_v1`]); otherwise the legacy JSON protocol is spoken
//! ([`crate::protocol::encode_legacy`]). Each `session_id` has its own ZeroMQ identity; a second
//! socket with the same session replaces the first; while no socket is attached the session
//! buffers and replays on reconnect. Malformed frames are logged and dropped; the socket and the
//! kernel carry on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::kernel::Kernel;
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
    let ws = ws
        .protocols([V1_SUBPROTOCOL])
        .max_message_size(m.config.max_message_bytes);
    Ok(ws.on_upgrade(move |socket| run(socket, kernel, session_id).instrument(span)))
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

async fn run(socket: WebSocket, kernel: Arc<Kernel>, session_id: String) {
    let v1 = socket.protocol().is_some();
    let session = kernel.session(&session_id).await;
    let (conn, mut outbound) = session.attach().await;
    kernel.connection_opened();
    tracing::info!(
        protocol = if v1 { V1_SUBPROTOCOL } else { "legacy" },
        "client connected"
    );
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
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
                        break;
                    }
                }
            },
            msg = outbound.recv() => match msg {
                Some(msg) => {
                    // A reply is several messages in a burst (status, result, reply, idle):
                    // queue all that are already here, then write them in one flush.
                    let (mut frames, mut bytes) = (0usize, 0usize);
                    let mut failed = false;
                    let mut next = Some(msg);
                    while let Some(msg) = next.take() {
                        if let Some(frame) = encode(v1, &msg) {
                            bytes += match &frame {
                                Message::Text(t) => t.len(),
                                Message::Binary(b) => b.len(),
                                _ => 0,
                            };
                            failed = sink.feed(frame).await.is_err();
                            frames += 1;
                        }
                        if failed || frames >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                            break;
                        }
                        next = outbound.try_recv().ok();
                    }
                    if failed || sink.flush().await.is_err() {
                        break;
                    }
                }
                None => {
                    // Replaced by a newer socket of this session, or the kernel is gone.
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    session.detach(conn).await;
    kernel.connection_closed();
    let attached = session.is_attached().await;
    tracing::info!(
        closed_kernel = kernel.is_closed(),
        attached,
        "client disconnected"
    );
}
