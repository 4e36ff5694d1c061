//! One test over a real socket: the hub served on 127.0.0.1:0, spoken to with raw HTTP/1.1.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use hub::{AppState, Config, Db, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: token {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_real_deal() {
    let dir = std::env::temp_dir().join(format!("stackhub-test-{}", std::process::id()));
    let mut config = Config::default();
    config.data_dir = dir.clone();
    config.admin_token = Some(Secret::new(common::ADMIN_TOKEN));
    let db = Db::connect(&config.database_url()).await.unwrap();
    hub::bootstrap_admin_token(&db, &config.admin_service_name, config.admin_token.as_ref())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hub::serve(listener, AppState::new(config, db), async {
        let _ = rx.await;
    }));
    let r = get(addr, "/hub/api", None).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_lowercase().contains("x-jupyterhub-version: "), "{r}");
    let r = get(addr, "/hub/api/user", Some("bad")).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = get(addr, "/hub/api/user", Some(common::ADMIN_TOKEN)).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"kind\":\"service\""),
        "{r}"
    );
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        dir.join("stackhub.sqlite").exists(),
        "the default SQLite file lives in data_dir"
    );
    let _ = std::fs::remove_dir_all(dir);
}
