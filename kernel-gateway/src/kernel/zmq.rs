//! ZeroMQ plumbing for one kernel, written around the measured hazards of the `zeromq` crate:
//! - `connect()` backs off for up to 30 s: every connect runs under our own short timeout and is
//!   retried until a deadline, checking that the kernel process is still alive in between;
//! - DEALER/REQ sockets never reconnect after the peer restarts: callers build new sockets for every
//!   kernel generation (restart) and after a heartbeat miss;
//! - a send with no connected peer fails at once: callers keep the message and retry;
//! - a DEALER with no peer returns an error from `recv` immediately: readers stop on errors instead
//!   of spinning.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::time::{Instant, timeout};
use zeromq::util::PeerIdentity;
use zeromq::{
    DealerSocket, ReqSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage,
};

use crate::protocol::{Channel, RawMessage, Signer};

/// Per-attempt connect timeout; short so a kernel that binds late is picked up quickly.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(300);

/// Why a ZeroMQ operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZmqFailure {
    #[error("connect to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error("{0}")]
    Zmq(#[from] zeromq::ZmqError),
    #[error("no reply to {msg_type} within {secs:.1}s")]
    NoReply { msg_type: String, secs: f64 },
}

fn options(identity: Option<&[u8]>) -> SocketOptions {
    let mut opts = SocketOptions::default();
    opts.connect_timeout(CONNECT_ATTEMPT);
    if let Some(id) = identity.and_then(|id| PeerIdentity::try_from(id).ok()) {
        opts.peer_identity(id);
    }
    opts
}

/// Connects `socket` to `endpoint`, retrying short attempts until `deadline`.
pub(crate) async fn connect_until<S: Socket>(
    socket: &mut S,
    endpoint: &str,
    deadline: Instant,
) -> Result<(), ZmqFailure> {
    let began = Instant::now();
    loop {
        match timeout(CONNECT_ATTEMPT * 2, socket.connect(endpoint)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => tracing::trace!(endpoint, error = %e, "connect attempt failed"),
            Err(_) => tracing::trace!(endpoint, "connect attempt timed out"),
        }
        if Instant::now() >= deadline {
            return Err(ZmqFailure::ConnectTimeout {
                endpoint: endpoint.to_owned(),
            });
        }
        // Poll briskly while a kernel normally comes up (its start-to-ready is what users wait
        // for), then back off so many slow starts don't spin.
        let pause = if began.elapsed() < Duration::from_secs(3) {
            5
        } else {
            50
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// A DEALER with `identity`, connected to `endpoint`.
pub(crate) async fn dealer(
    endpoint: &str,
    identity: &[u8],
    deadline: Instant,
) -> Result<DealerSocket, ZmqFailure> {
    let mut s = DealerSocket::with_options(options(Some(identity)));
    connect_until(&mut s, endpoint, deadline).await?;
    Ok(s)
}

/// A SUB subscribed to everything, connected to `endpoint`.
pub(crate) async fn subscriber(endpoint: &str, deadline: Instant) -> Result<SubSocket, ZmqFailure> {
    let mut s = SubSocket::with_options(options(None));
    s.subscribe("").await?;
    connect_until(&mut s, endpoint, deadline).await?;
    Ok(s)
}

/// A REQ for the heartbeat.
pub(crate) async fn heartbeat_socket(
    endpoint: &str,
    deadline: Instant,
) -> Result<ReqSocket, ZmqFailure> {
    let mut s = ReqSocket::with_options(options(None));
    connect_until(&mut s, endpoint, deadline).await?;
    Ok(s)
}

/// Builds the multipart message for `msg`.
pub(crate) fn frames(signer: &Signer, msg: &RawMessage) -> Result<ZmqMessage, ZmqFailure> {
    ZmqMessage::try_from(signer.to_frames(msg))
        .map_err(|_| ZmqFailure::Zmq(zeromq::ZmqError::Other("empty message")))
}

/// Receives and verifies one message; bad ones are logged and skipped.
pub(crate) async fn recv_message<S: SocketRecv + Send>(
    socket: &mut S,
    signer: &Signer,
    channel: Channel,
) -> Result<RawMessage, ZmqFailure> {
    loop {
        let raw = socket.recv().await?;
        match signer.from_frames(channel, raw.into_vec()) {
            Ok(msg) => return Ok(msg),
            Err(e) => {
                tracing::warn!(channel = channel.as_str(), error = %e, "dropping message from kernel")
            }
        }
    }
}

/// Sends `request` on `socket` and waits for the reply whose parent is it; other messages on the
/// socket (late replies to earlier requests) are skipped.
pub(crate) async fn request<S: SocketRecv + SocketSend + Send>(
    socket: &mut S,
    signer: &Signer,
    request: &RawMessage,
    wait: Duration,
) -> Result<RawMessage, ZmqFailure> {
    let info = request.header_info().unwrap_or_default();
    let no_reply = || ZmqFailure::NoReply {
        msg_type: info.msg_type.clone(),
        secs: wait.as_secs_f64(),
    };
    socket.send(frames(signer, request)?).await?;
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, recv_message(socket, signer, request.channel)).await {
            Err(_) => return Err(no_reply()),
            Ok(Err(e)) => {
                // No peer any more: wait a little rather than spin, then give up at the deadline.
                tracing::debug!(error = %e, "recv while waiting for reply");
                if Instant::now() >= deadline {
                    return Err(no_reply());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Ok(reply)) if reply.parent_msg_id().as_deref() == Some(info.msg_id.as_str()) => {
                return Ok(reply);
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// One heartbeat: send `ping`, wait up to `wait` for the echo.
pub(crate) async fn beat(socket: &mut ReqSocket, wait: Duration) -> bool {
    if socket
        .send(ZmqMessage::from(Bytes::from_static(b"ping")))
        .await
        .is_err()
    {
        return false;
    }
    matches!(timeout(wait, socket.recv()).await, Ok(Ok(_)))
}

/// Sends `kernel_info_request` every 0.5 s until a reply and an iopub message have both arrived.
pub(crate) async fn nudge(
    shell: &mut DealerSocket,
    sub: &mut SubSocket,
    signer: &Signer,
    session: &str,
    deadline: Instant,
) -> Result<(), ZmqFailure> {
    let (mut got_reply, mut got_iopub) = (false, false);
    while Instant::now() < deadline {
        let req = RawMessage::new_gateway(
            Channel::Shell,
            "kernel_info_request",
            session,
            None,
            json!({}),
        );
        if let Err(e) = shell.send(frames(signer, &req)?).await {
            tracing::trace!(error = %e, "kernel_info send failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let window = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                m = recv_message(shell, signer, Channel::Shell), if !got_reply => match m {
                    Ok(m) => got_reply |= m.header_info().is_ok_and(|h| h.msg_type == "kernel_info_reply"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                m = recv_message(sub, signer, Channel::Iopub), if !got_iopub => got_iopub |= m.is_ok(),
            }
            if got_reply && got_iopub {
                return Ok(());
            }
        }
    }
    Err(ZmqFailure::NoReply {
        msg_type: "kernel_info_request".into(),
        secs: 0.0,
    })
}
