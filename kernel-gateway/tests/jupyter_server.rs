//! A stock jupyter_server in gateway mode (`--gateway-url`) in front of our gateway: its REST and
//! WebSocket relay drive real kernels through us.

mod common;

use std::time::Duration;

use common::{Gateway, config, http, venv_python, ws_connect};
use hyper::{Method, StatusCode};
use serde_json::json;

const GATEWAY_TOKEN: &str = "shared-gateway-token";
const SERVER_TOKEN: &str = "server-token";

struct ServerProcess(tokio::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_jupyter_server_in_gateway_mode_runs_a_notebook_session() {
    let mut cfg = config();
    cfg.auth_token = Some(GATEWAY_TOKEN.into());
    cfg.shared_token_user = "hub-user".to_owned();
    let gw = Gateway::start(cfg).await;

    let bin = venv_python().with_file_name("jupyter-server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home =
        std::env::temp_dir().join(format!("stackhub-gw-js-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(home.join("root")).unwrap();
    let child = tokio::process::Command::new(&bin)
        .arg(format!("--port={port}"))
        .args([
            "--ip=127.0.0.1",
            "--no-browser",
            "--allow-root",
            "--ServerApp.port_retries=0",
        ])
        .arg(format!("--IdentityProvider.token={SERVER_TOKEN}"))
        .arg(format!(
            "--ServerApp.root_dir={}",
            home.join("root").display()
        ))
        .arg(format!("--gateway-url=http://{}", gw.addr))
        .arg(format!("--GatewayClient.auth_token={GATEWAY_TOKEN}"))
        .env("JUPYTER_CONFIG_DIR", home.join("config"))
        .env("JUPYTER_DATA_DIR", home.join("data"))
        .env("JUPYTER_RUNTIME_DIR", home.join("runtime"))
        .env("HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(home.join("server.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; run `scripts/test`", bin.display()));
    let _server = ServerProcess(child);
    let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = tokio::time::timeout(Duration::from_secs(2), async {
            let client = tokio::net::TcpStream::connect(server).await;
            client.is_ok()
        })
        .await
        .unwrap_or(false);
        if up
            && http(server, Method::GET, "/api", Some(SERVER_TOKEN), None)
                .await
                .0
                == StatusCode::OK
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jupyter_server did not come up:\n{}",
            std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Kernelspecs come from the gateway.
    let (s, _, specs) = http(
        server,
        Method::GET,
        "/api/kernelspecs",
        Some(SERVER_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(specs["kernelspecs"]["python3"].is_object(), "{specs}");

    let body = json!({"name": "python3"}).to_string();
    let (s, _, model) = http(
        server,
        Method::POST,
        "/api/kernels",
        Some(SERVER_TOKEN),
        Some(&body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    let (s, _, ours) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(GATEWAY_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the kernel lives in our gateway");
    assert_eq!(ours["id"], json!(id));

    let mut ws = ws_connect(server, SERVER_TOKEN, &id, "notebook-session", false).await;
    assert_eq!(ws.execute("1+1").await.result.as_deref(), Some("2"));
    let out = ws.execute("x = 5\nfor i in range(3): print(i)").await;
    assert_eq!(out.stdout, "0\n1\n2\n");

    let sleeping = ws.submit("import time\ntime.sleep(60)").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let path = format!("/api/kernels/{id}/interrupt");
    let (s, _, _) = http(server, Method::POST, &path, Some(SERVER_TOKEN), Some("{}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let out = ws.collect(&sleeping, Duration::from_secs(20)).await;
    assert_eq!(out.error.as_deref(), Some("KeyboardInterrupt"), "{out:?}");
    assert_eq!(ws.execute("x").await.result.as_deref(), Some("5"));

    let path = format!("/api/kernels/{id}/restart");
    let (s, _, _) = http(server, Method::POST, &path, Some(SERVER_TOKEN), Some("{}")).await;
    assert_eq!(s, StatusCode::OK);
    drop(ws);
    let mut ws = ws_connect(server, SERVER_TOKEN, &id, "notebook-session-2", false).await;
    assert_eq!(ws.execute("x").await.error.as_deref(), Some("NameError"));
    drop(ws);

    let path = format!("/api/kernels/{id}");
    let (s, _, _) = http(server, Method::DELETE, &path, Some(SERVER_TOKEN), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = gw.call(Method::GET, &path, Some(GATEWAY_TOKEN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(_server);
    gw.stop().await;
}
