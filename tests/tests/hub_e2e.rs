//! End to end: the real `stackhub` binary with its embedded proxy, a stock
//! `jupyterhub-singleuser` from the project's venv, a cookie-keeping browser-like client, and a
//! kernel WebSocket through the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod hub_common;

use hub_common::{
    ADMIN_TOKEN, Cleanup, Hub, admin, free_port, live_in_group, live_under, logged_in_browser,
    progress_of,
};
use stackhub_e2e::secrets::{SecretScan, descendants};

/// Alice's progress stream.
async fn progress(client: &reqwest::Client, base: &str) -> Vec<Value> {
    progress_of(client, base, "alice").await
}

async fn server_model(client: &reqwest::Client, base: &str) -> Value {
    admin(
        client,
        reqwest::Method::GET,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// The Lab page's `jupyter-config-data`.
fn page_config(html: &str) -> Value {
    let start = html
        .find("id=\"jupyter-config-data\"")
        .expect("page config in the Lab page");
    let open = start + html[start..].find('>').unwrap() + 1;
    let close = open + html[open..].find("</script>").unwrap();
    serde_json::from_str(&html[open..close]).unwrap()
}

async fn execute_one_plus_one(port: u16, kernel: &str, token: &str) -> String {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://127.0.0.1:{port}/user/alice/api/kernels/{kernel}/channels");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("token {token}").parse().unwrap());
    let (mut ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            panic!("kernel websocket through the proxy: {}", resp.status())
        }
        Err(e) => panic!("kernel websocket through the proxy: {e}"),
    };
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg_id = format!("e2e-{}-{seq}", std::process::id());
    let request = json!({
        "header": {"msg_id": msg_id, "username": "alice", "session": format!("e2e-session-{seq}"),
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "1+1", "silent": false, "store_history": false,
                    "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
    });
    ws.send(Message::text(request.to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no execute_result within 60 s")
            .expect("websocket closed")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["msg_type"] == "execute_result" && v["parent_header"]["msg_id"] == msg_id {
            let _ = ws.close(None).await;
            return v["content"]["data"]["text/plain"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

/// `HH:MM:SS.fff` of the first log line containing `needle`, as seconds of the day.
fn log_time(text: &str, needle: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(needle))?;
    let t = line
        .split([' ', 'T', 'Z'])
        .find(|w| w.len() >= 12 && w.as_bytes()[2] == b':' && w.as_bytes()[5] == b':')?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_through_stackhub() {
    let dir = std::env::temp_dir().join(format!(
        "stackhub-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = Cleanup(dir.clone());
    let port = free_port();
    let hub_port = std::iter::repeat_with(free_port)
        .find(|p| *p != port)
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut hub = Hub::start(&dir, port, hub_port).await;
    let api = reqwest::Client::new();

    // Users: alice (owner) and bob (a stranger with his own token).
    for name in ["alice", "bob"] {
        let r = admin(
            &api,
            reqwest::Method::POST,
            format!("{base}/hub/api/users/{name}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "create {name}");
    }
    let bob: Value = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/bob/tokens"),
    )
    .json(&json!({"note": "e2e"}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let bob_token = bob["token"].as_str().expect("bob's token").to_owned();

    // Alice logs in with a cookie-keeping client.
    let browser = logged_in_browser(&base, "alice").await;

    // A stopped server: the browser flow ends in the 424 page linking to the spawn page.
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    assert_eq!(r.url().path(), "/hub/user/alice/lab");
    let page = r.text().await.unwrap().replace("&#x2f;", "/");
    assert!(page.contains("href=\"/hub/spawn/alice?next="), "{page}");

    // Start through the REST API and follow the progress stream to `ready`.
    let r = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start: {}",
        r.status()
    );
    let model = server_model(&api, &base).await;
    if r.status() == 202 {
        assert_eq!(model["pending"], "spawn", "{model}");
    }
    let events = progress(&api, &base).await;
    assert_eq!(
        events[0],
        json!({"progress": 0, "message": "Server requested"})
    );
    let last = events.last().unwrap();
    assert_eq!(last["ready"], true, "{events:?}");
    assert_eq!(last["url"], "/user/alice/");
    let model = server_model(&api, &base).await;
    assert_eq!(model["ready"], true, "{model}");
    let pid = model["state"]["pid"]
        .as_i64()
        .expect("pid in the spawner state");

    // Readiness latency: the server's own "running at" line vs the hub noticing.
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    let hub_log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    if let (Some(listening), Some(noticed)) = (
        log_time(&server_log, "is running at"),
        log_time(&hub_log, "readiness: server answered"),
    ) {
        let connected =
            log_time(&hub_log, "readiness: port accepts connections").unwrap_or(noticed);
        eprintln!(
            "server 'running at' {listening:.3}s; hub: first connection {connected:.3}s, \
             answer {noticed:.3}s: {:.0} ms after 'running at'",
            (noticed - listening) * 1000.0
        );
    }

    // The Lab through the proxy, logging in through the hub's OAuth provider.
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/user/alice/lab");
    let html = r.text().await.unwrap();
    let config = page_config(&html);
    assert_eq!(config["hubUser"], "alice");
    let token = config["token"]
        .as_str()
        .expect("OAuth token in page config")
        .to_owned();

    // A kernel through /user/alice/api/kernels, and 1+1 over its WebSocket.
    let r = api
        .post(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let kernel: Value = r.json().await.unwrap();
    let kernel_id = kernel["id"].as_str().unwrap().to_owned();
    assert_eq!(execute_one_plus_one(port, &kernel_id, &token).await, "2");

    // The run's secrets, and the argument lists of the hub, its proxy, the server and the
    // kernel while they run.
    let mut scan = SecretScan::new();
    scan.add("the admin token", ADMIN_TOKEN)
        .add("bob's API token", &bob_token)
        .add("alice's OAuth access token", &token);
    let mut pids = descendants(&[i64::from(hub.child.as_ref().unwrap().id())]);
    for pid in live_under(&dir) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let from_environ: usize = pids.iter().map(|pid| scan.add_environ(*pid)).sum();
    assert!(
        from_environ >= 1,
        "the server's hub token in its environment"
    );
    assert_eq!(scan.add_kernel_keys(&pids), 1, "the kernel's message key");
    let read = scan.cmdlines(&pids);
    assert!(read >= 3, "argument lists read: {read} of {pids:?}");

    // Bob may not use Alice's server.
    let r = api
        .get(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {bob_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    scan.text("the 403 body", &r.text().await.unwrap());

    // Restart the hub while the server runs: it keeps running and is reachable again.
    hub.terminate();
    assert!(
        !live_in_group(pid).is_empty(),
        "the server survives a hub exit"
    );
    let mut hub = Hub::start(&dir, port, hub_port).await;
    let model = server_model(&api, &base).await;
    assert_eq!(model["ready"], true, "{model}");
    let r = api
        .get(format!("{base}/user/alice/api/kernels/{kernel_id}"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "server reachable after the hub restart");
    assert_eq!(execute_one_plus_one(port, &kernel_id, &token).await, "2");

    // Stop: the process group is gone, the route too, and the browser gets the 424 again.
    let r = admin(
        &api,
        reqwest::Method::DELETE,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 202 | 204),
        "stop: {}",
        r.status()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server_model(&api, &base).await["stopped"] != true {
        assert!(Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        live_in_group(pid).is_empty(),
        "orphaned processes: {:?}",
        live_in_group(pid)
    );
    // Kernels run in their own sessions: nothing at all may be left below the data dir.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_under(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "orphaned processes: {:?}",
            live_under(&dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    let r = browser
        .get(format!("{base}/user/alice/api/kernels"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 424);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/hub/spawn/alice"),
        "{body}"
    );
    scan.text("the 424 body", &body.to_string());

    hub.terminate();
    let logs = scan.logs_under(&dir);
    assert!(logs >= 2, "logs searched: {logs}");
    scan.assert_clean();
    drop(cleanup);
}
