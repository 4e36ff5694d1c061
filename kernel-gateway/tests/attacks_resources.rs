//! One user must not exhaust a gateway's memory through its kernel WebSockets: each test is the
//! attack, run against a gateway with real ipykernel kernels (see `common`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ALICE, BOB, Gateway, config, metric};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const MIB: usize = 1 << 20;

/// Reads until the server's close frame (data frames are skipped); None if the connection ends
/// without one or nothing comes within `wait`.
async fn close_frame(ws: &mut common::Ws, wait: Duration) -> Option<CloseFrame> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

async fn gauge(gw: &Gateway, name: &str) -> f64 {
    metric(gw.addr, name)
        .await
        .unwrap_or_else(|| panic!("no {name} on /metrics"))
}

async fn execution_state(gw: &Gateway, token: &str, id: &str) -> String {
    let (s, _, body) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["execution_state"].as_str().unwrap().to_owned()
}

/// A 72 MiB message sent as nine 8 MiB fragments (each frame is small; the message is not) is
/// refused with 1009 and the limit's name, instead of being assembled in the gateway's memory;
/// another user's kernel and the attacker's own kernel keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_message_over_the_limit_is_closed_with_1009_and_other_kernels_keep_working() {
    let gw = Gateway::start(config()).await;
    let alice = gw.start_kernel(ALICE, "python3").await;
    let bob = gw.start_kernel(BOB, "python3").await;
    let mut attacker = gw.ws(ALICE, &alice, "flood", true).await;
    let chunk = bytes::Bytes::from(vec![b'x'; 8 * MIB]);
    for i in 0..9 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.clone(), opcode, i == 8);
        // The gateway may close before the last fragment is written.
        if attacker.ws.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    let close = close_frame(&mut attacker, Duration::from_secs(30))
        .await
        .expect("the gateway took a 72 MiB message without closing the socket");
    assert_eq!(close.code, CloseCode::Size, "{close:?}");
    assert!(
        close.reason.contains("max_message_bytes"),
        "the close reason names the limit: {close:?}"
    );
    let mut other = gw.ws(BOB, &bob, "bob", false).await;
    assert_eq!(other.execute("1+1").await.result.as_deref(), Some("2"));
    let mut again = gw.ws(ALICE, &alice, "again", false).await;
    assert_eq!(again.execute("6*7").await.result.as_deref(), Some("42"));
    gw.stop().await;
}

/// A client that asks its kernel for 20 MB of output and never reads: the gateway keeps at most
/// its limits buffered (measured on `/metrics`), disconnects the client with 1008 and the
/// limit's name, and a reconnect of the session gets the end of the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_closed_with_1008_and_buffering_stays_bounded() {
    let mut cfg = config();
    cfg.max_connection_queue_bytes = MIB;
    cfg.offline_buffer_bytes = MIB;
    let gw = Gateway::start(cfg).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "sloth", false).await;
    let pending = ws
        .submit(
            "import sys\nfor i in range(2500):\n    sys.stdout.write('x' * 8000 + '\\n')\n    \
             sys.stdout.flush()\nprint('done')",
        )
        .await;
    let (mut most, mut closed) = (0f64, 0f64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while closed < 1.0 {
        most = most.max(gauge(&gw, "stackhub_gateway_buffered_bytes").await);
        closed = gauge(&gw, "stackhub_gateway_slow_clients_closed_total").await;
        assert!(
            Instant::now() < deadline,
            "a client that never reads was not disconnected; the gateway buffers {most} bytes for it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now read: what the socket still held, then the close frame.
    let reader = tokio::spawn(async move { close_frame(&mut ws, Duration::from_secs(60)).await });
    let mut state = String::new();
    while state != "idle" {
        most = most.max(gauge(&gw, "stackhub_gateway_buffered_bytes").await);
        assert!(Instant::now() < deadline, "the kernel did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = execution_state(&gw, ALICE, &id).await;
    }
    // The queue (1 MiB) plus the kernel's offline buffers (1 MiB), plus a message in flight.
    let bound = (2 * MIB + 64 * 1024) as f64;
    assert!(most <= bound, "buffered {most} bytes, above {bound}");
    let close = reader
        .await
        .unwrap()
        .expect("no close frame for the slow client");
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(
        close.reason.contains("max_connection_queue_bytes"),
        "the close reason names the limit: {close:?}"
    );
    let mut back = gw.ws(ALICE, &id, "sloth", false).await;
    let out = back.collect(&pending, Duration::from_secs(30)).await;
    assert!(
        out.stdout.ends_with("done\n"),
        "the reconnect gets the end of the output"
    );
    assert_eq!(out.reply_status.as_deref(), Some("ok"));
    assert_eq!(back.execute("1+1").await.result.as_deref(), Some("2"));
    gw.stop().await;
}

/// Output produced after its client went away is kept only for `detached_session_timeout`: then
/// the session and its buffer are dropped, and a late reconnect gets none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_session_buffer_is_dropped_after_the_timeout() {
    let mut cfg = config();
    cfg.detached_session_timeout = 3;
    let gw = Gateway::start(cfg).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "gone", false).await;
    assert_eq!(ws.execute("1+1").await.result.as_deref(), Some("2"));
    ws.submit("import time\ntime.sleep(1)\nprint('LATE-' + 'OUTPUT')")
        .await;
    ws.ws.close(None).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&gw, "stackhub_gateway_buffered_bytes").await == 0.0 {
        assert!(Instant::now() < deadline, "nothing was buffered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while gauge(&gw, "stackhub_gateway_sessions_reaped_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the detached session was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gauge(&gw, "stackhub_gateway_buffered_bytes").await, 0.0);
    let mut late = gw.ws(ALICE, &id, "gone", false).await;
    while let Some(msg) = late.next_json(Duration::from_secs(2)).await {
        assert!(
            !msg.to_string().contains("LATE-OUTPUT"),
            "output of a reaped session was replayed: {msg}"
        );
    }
    assert_eq!(late.execute("2+2").await.result.as_deref(), Some("4"));
    gw.stop().await;
}
