//! The gateway against real ipykernel kernels from the project venv.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{ALICE, BAD_GUY, BOB, Gateway, config, request};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use kernel_gateway::protocol::{Channel, RawMessage, decode_v1, encode_v1};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn assert_error_body(body: &Value) {
    assert!(
        body["reason"].is_string() && body["message"].is_string(),
        "error body {body}"
    );
}

/// Polls `GET /api/kernels/{id}` until `execution_state` is `want`; fails after 20 s.
async fn wait_for_state(gw: &Gateway, id: &str, token: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _, model) = gw
            .call(
                Method::GET,
                &format!("/api/kernels/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{model}");
        if model["execution_state"] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution_state is still {} after 20 s, want {want}",
            model["execution_state"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_contract_start_get_list_interrupt_delete() {
    let gw = Gateway::start(config()).await;
    let (s, _, api) = gw.call(Method::GET, "/api", Some(ALICE), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(api["version"].is_string() && api["gateway_version"].is_string());
    let (s, _, body) = gw.call(Method::GET, "/api", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_body(&body);
    let (s, _, specs) = gw
        .call(Method::GET, "/api/kernelspecs", Some(ALICE), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(specs["default"], "python3");
    let py = &specs["kernelspecs"]["python3"];
    assert_eq!(py["spec"]["language"], "python");
    assert_eq!(
        py["resources"]["logo-64x64"],
        "/kernelspecs/python3/logo-64x64.png"
    );
    let (s, _, one) = gw
        .call(Method::GET, "/api/kernelspecs/python3", Some(ALICE), None)
        .await;
    assert_eq!((s, &one["name"]), (StatusCode::OK, &json!("python3")));
    let (s, _, _) = gw
        .call(
            Method::GET,
            "/kernelspecs/python3/logo-64x64.png",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = gw
        .call(Method::GET, "/kernelspecs/python3/..", Some(ALICE), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, headers, model) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(ALICE),
            Some(r#"{"name":"python3"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(headers["location"], format!("/api/kernels/{id}").as_str());
    assert_eq!(model["name"], "python3");
    assert_eq!(model["connections"], 0);
    let la = model["last_activity"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(la, "%Y-%m-%dT%H:%M:%S%.6fZ").is_ok()
            && la.len() == 27,
        "{la}"
    );
    // Started means ready, not `starting`. The kernel may still be answering the gateway's own
    // handshake `kernel_info_request`s (several are queued while it boots, each a busy/idle pair
    // on iopub), so `busy` is a true state here; it settles on idle.
    let state = model["execution_state"].as_str().unwrap_or_default();
    assert!(state == "idle" || state == "busy", "{model}");
    wait_for_state(&gw, &id, ALICE, "idle").await;

    let (s, _, got) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!((s, &got["id"]), (StatusCode::OK, &json!(id)));
    let (s, _, list) = gw
        .call(Method::GET, "/api/kernels", Some(ALICE), None)
        .await;
    assert_eq!((s, list.as_array().unwrap().len()), (StatusCode::OK, 1));
    // Scoped to the caller: bob sees nothing and cannot touch alice's kernel.
    let (_, _, list) = gw.call(Method::GET, "/api/kernels", Some(BOB), None).await;
    assert_eq!(list, json!([]));
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{id}"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nor open its channels: the WebSocket upgrade is refused with the same 404.
    let url = format!("ws://{}/api/kernels/{id}/channels?session_id=s", gw.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("token {BOB}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::NOT_FOUND)
        }
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    assert_eq!(gw.manager.list("alice").await[0]["connections"], 0);

    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/interrupt"),
            Some(ALICE),
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, body) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], format!("Kernel does not exist: {id}"));
    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/restart"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_interrupt_restart_over_legacy_websocket() {
    let gw = Gateway::start(config()).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "session-a", false).await;
    let out = ws.execute("1+1").await;
    assert_eq!(out.result.as_deref(), Some("2"), "{out:?}");
    let out = ws.execute("x = 41\nprint('Hello World')").await;
    assert_eq!(out.stdout, "Hello World\n");

    // Interrupt a sleep: KeyboardInterrupt, and the namespace survives.
    let sleeping = ws.submit("import time\ntime.sleep(60)").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/interrupt"),
            Some(ALICE),
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let out = ws.collect(&sleeping, Duration::from_secs(20)).await;
    assert_eq!(out.error.as_deref(), Some("KeyboardInterrupt"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ws.execute("x + 1").await.result.as_deref(), Some("42"));

    // Restart: a fresh interpreter, and the open socket keeps working (re-pointed).
    let (s, _, model) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/restart"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{model}");
    assert_eq!(model["id"], json!(id));
    let out = ws.execute("y = x + 1").await;
    assert_eq!(out.error.as_deref(), Some("NameError"), "{out:?}");
    let mut fresh = gw.ws(ALICE, &id, "session-b", false).await;
    assert_eq!(fresh.execute("2*21").await.result.as_deref(), Some("42"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_interrupt_mode_interrupts_sleep() {
    let gw = Gateway::start(config()).await;
    let id = gw.start_kernel(ALICE, "python3-msg").await;
    let mut ws = gw.ws(ALICE, &id, "s", false).await;
    let sleeping = ws.submit("import time\ntime.sleep(60)").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/interrupt"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let out = ws.collect(&sleeping, Duration::from_secs(20)).await;
    assert_eq!(out.error.as_deref(), Some("KeyboardInterrupt"), "{out:?}");
    gw.stop().await;
}

const ECHO_COMM: &str = "\
def _echo_target(comm, open_msg):
    @comm.on_msg
    def _recv(msg):
        comm.send({'echo': True}, buffers=msg['buffers'])
get_ipython().kernel.comm_manager.register_target('echo', _echo_target)
";

fn v1_message(session: &str, msg_type: &str, content: Value, buffers: Vec<Bytes>) -> RawMessage {
    let m = request(session, msg_type, content);
    RawMessage {
        channel: Channel::Shell,
        header: Bytes::from(m["header"].to_string()),
        parent_header: Bytes::from_static(b"{}"),
        metadata: Bytes::from_static(b"{}"),
        content: Bytes::from(m["content"].to_string()),
        buffers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_binary_buffers_round_trip_and_two_clients() {
    let gw = Gateway::start(config()).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    // A legacy client on another session sees the same kernel at the same time.
    let mut legacy = gw.ws(ALICE, &id, "legacy", false).await;
    assert!(legacy.execute(ECHO_COMM).await.error.is_none());
    let mut ws = gw.ws(ALICE, &id, "v1", true).await;
    let comm_id = uuid::Uuid::new_v4().to_string();
    let open = v1_message(
        "v1",
        "comm_open",
        json!({"comm_id": comm_id, "target_name": "echo", "data": {}}),
        vec![],
    );
    ws.ws.send(Message::binary(encode_v1(&open))).await.unwrap();
    let payload: Vec<Bytes> = vec![
        Bytes::from_static(b"\x00\x01\x02\xff"),
        Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>()),
    ];
    let msg = v1_message(
        "v1",
        "comm_msg",
        json!({"comm_id": comm_id, "data": {}}),
        payload.clone(),
    );
    ws.ws.send(Message::binary(encode_v1(&msg))).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.ws.next())
            .await
            .expect("echo")
            .unwrap()
            .unwrap();
        let Message::Binary(b) = frame else {
            panic!("v1 sends binary frames only, got {frame:?}")
        };
        // decode_v1 refuses iopub (a client may not send it): patch the channel to parse.
        let text = String::from_utf8_lossy(&b);
        if !text.contains("\"comm_msg\"") || !text.contains("echo") {
            continue;
        }
        let patched = b.to_vec();
        let start = u64::from_le_bytes(patched[8..16].try_into().unwrap()) as usize;
        assert_eq!(&patched[start..start + 5], b"iopub");
        let mut fixed = patched.clone();
        fixed.splice(start..start + 5, b"shell".iter().copied());
        let echoed = decode_v1(&fixed).unwrap();
        assert_eq!(echoed.buffers, payload, "buffers intact");
        break;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_holds_under_ten_racing_starts() {
    let mut cfg = config();
    cfg.max_kernels_per_user = 2;
    let gw = std::sync::Arc::new(Gateway::start(cfg).await);
    let starts = (0..10).map(|_| {
        let gw = gw.clone();
        tokio::spawn(async move {
            gw.call(Method::POST, "/api/kernels", Some(ALICE), Some("{}"))
                .await
        })
    });
    let mut created = 0;
    let mut refused = 0;
    for s in starts {
        let (status, _, body) = s.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {
                assert_error_body(&body);
                refused += 1;
            }
            other => panic!("unexpected {other} {body}"),
        }
    }
    assert_eq!((created, refused), (2, 8));
    // Bob has his own budget; KERNEL_USERNAME cannot borrow it.
    let body = json!({"env": {"KERNEL_USERNAME": "bob"}}).to_string();
    let (s, _, _) = gw
        .call(Method::POST, "/api/kernels", Some(ALICE), Some(&body))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let bob = gw.start_kernel(BOB, "python3").await;
    let mut ws = gw.ws(BOB, &bob, "s", false).await;
    assert_eq!(
        ws.execute("import os; os.environ['KERNEL_USERNAME']")
            .await
            .result
            .as_deref(),
        Some("'bob'")
    );
    std::sync::Arc::try_unwrap(gw)
        .ok()
        .expect("sole owner")
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_kernel_survives_malformed_frames() {
    let gw = Gateway::start(config()).await;
    let post = |body: &'static str| gw.call(Method::POST, "/api/kernels", Some(ALICE), Some(body));
    let (s, _, body) = post(r#"{"name":"no-such-kernel"}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&body);
    assert!(body["message"].as_str().unwrap().contains("no-such-kernel"));
    let (s, _, body) = post(r#"{"name": "#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_body(&body);
    let (s, _, _) = post(r#"{"env": {"KERNEL_X": 1}}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = post(r#"{"env": {"KERNEL_X": "$(rm -rf /)"}}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = post(r#"{"kernel_id": "not-a-uuid"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, body) = post(r#"{"name":"broken"}"#).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("died during start"),
        "{body}"
    );
    // EG's authorization_test spec: bob may, bad_guy may not.
    let (s, _, body) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(BAD_GUY),
            Some(r#"{"name":"authorization_test"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "s", false).await;
    ws.ws.send(Message::text("this is not json")).await.unwrap();
    ws.ws
        .send(Message::text(r#"{"header": [], "channel": "shell"}"#))
        .await
        .unwrap();
    ws.send_json(&json!({"header": {"msg_id": "x"}, "channel": "iopub"}))
        .await;
    ws.ws.send(Message::binary(vec![0xffu8; 37])).await.unwrap();
    assert_eq!(ws.execute("1+1").await.result.as_deref(), Some("2"));
    let (_, _, model) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(model["connections"], 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_reported_dead_and_kernel_can_restart() {
    let gw = Gateway::start(config()).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "s", false).await;
    ws.submit("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = ws
            .next_json(left)
            .await
            .expect("status dead pushed to the client");
        if msg["msg_type"] == "status" && msg["content"]["execution_state"] == "dead" {
            break;
        }
    }
    let (_, _, model) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(model["execution_state"], "dead");
    assert!(model["reason"].is_string());
    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/restart"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ws.execute("1+1").await.result.as_deref(), Some("2"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_buffered_while_disconnected_and_replayed() {
    let gw = Gateway::start(config()).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let mut ws = gw.ws(ALICE, &id, "sticky", false).await;
    let pending = ws
        .submit("import time\ntime.sleep(1.5)\nprint('late')")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut back = gw.ws(ALICE, &id, "sticky", false).await;
    let out = back.collect(&pending, Duration::from_secs(10)).await;
    assert_eq!(out.stdout, "late\n");
    assert_eq!(out.reply_status.as_deref(), Some("ok"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kernel_is_culled() {
    let mut cfg = config();
    cfg.cull_idle_timeout = 1;
    cfg.cull_interval = 1;
    let gw = Gateway::start(cfg).await;
    let id = gw.start_kernel(ALICE, "python3").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _, _) = gw
            .call(
                Method::GET,
                &format!("/api/kernels/{id}"),
                Some(ALICE),
                None,
            )
            .await;
        if s == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kernel was not culled"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    gw.stop().await;
}
