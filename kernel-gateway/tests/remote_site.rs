//! `remote_site`: the real `stackhub-gateway` binary with real ipykernel kernels. On, a kernel
//! start without the S3 exchange configuration gets 400 naming what is missing (never a value);
//! with credentials from the embedded S3 store's exchange, `boto3.client('s3')` with no arguments
//! writes and reads under the user's prefix and is denied another user's. Off, the gateway stays
//! an Enterprise Gateway drop-in: no exchange needed, and the variables do not reach kernels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use s3_exchange::{EmbeddedConfig, EmbeddedS3, Exchange};
use serde_json::{Value, json};

use common::{http, kernelspecs, ws_connect};

const TOKEN: &str = "hub-to-site-token";

struct GatewayProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn gateway(remote_site: bool) -> GatewayProcess {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let specs = kernelspecs();
    let config = specs.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "port = {port}\nkernelspec_dirs = [{:?}]\ndefault_kernel_name = \"python3\"\n",
            specs.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stackhub-gateway"))
        .arg("--config")
        .arg(&config)
        .env("EG_AUTH_TOKEN", TOKEN)
        .env(
            "STACKHUB_GATEWAY_REMOTE_SITE",
            if remote_site { "true" } else { "false" },
        )
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gw = GatewayProcess { child, addr };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stackhub-gateway did not listen on {addr}");
}

async fn start(gw: &GatewayProcess, env: Value) -> (StatusCode, Value) {
    let (status, _, body) = http(
        gw.addr,
        Method::POST,
        "/api/kernels",
        Some(TOKEN),
        Some(&json!({"name": "python3", "env": env}).to_string()),
    )
    .await;
    (status, body)
}

async fn run(gw: &GatewayProcess, kernel: &str, code: &str) -> String {
    let mut ws = ws_connect(gw.addr, TOKEN, kernel, "s3-test", true).await;
    let out = ws.execute(code).await;
    assert!(out.error.is_none(), "{out:?}");
    out.stdout
}

const KERNEL_CODE: &str = r#"
import os, boto3, botocore
s3 = boto3.client("s3")
b, p = os.environ["STACKHUB_S3_BUCKET"], os.environ["STACKHUB_S3_PREFIX"]
s3.put_object(Bucket=b, Key=p + "from-kernel.txt", Body=b"written at the site")
got = s3.get_object(Bucket=b, Key=p + "from-kernel.txt")["Body"].read().decode()
try:
    s3.get_object(Bucket=b, Key="users/bob/secret.txt")
    other = "allowed"
except botocore.exceptions.ClientError as e:
    other = e.response["Error"]["Code"]
print(got, "|", other, "|", p)
"#;

#[tokio::test]
async fn remote_site_requires_the_exchange_and_kernels_use_it() {
    let dir = std::env::temp_dir().join(format!("gw-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(EmbeddedConfig {
        data_dir: dir.clone(),
        ..EmbeddedConfig::default()
    })
    .await
    .unwrap();
    let exchange = s3.exchange(3600);
    // Bob's object, which alice must not read.
    let bob = exchange.provision("bob").await.unwrap();
    std::fs::create_dir_all(dir.join("objects/stackhub/users/bob")).unwrap();
    std::fs::write(dir.join("objects/stackhub/users/bob/secret.txt"), "bob's").unwrap();
    let gw = gateway(true).await;

    // No env at all, then env without the exchange, then an incomplete one.
    let (status, body) = start(&gw, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let msg = body["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("remote site") && msg.contains("AWS_ACCESS_KEY_ID"),
        "{msg}"
    );
    let (status, _) = start(&gw, json!({"KERNEL_USERNAME": "alice"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut partial = serde_json::Map::new();
    for (k, v) in bob.kernel_env() {
        if k != "STACKHUB_S3_PREFIX" && k != "AWS_ENDPOINT_URL" {
            partial.insert(k, Value::String(v));
        }
    }
    let (status, body) = start(&gw, Value::Object(partial)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("STACKHUB_S3_PREFIX") && text.contains("AWS_ENDPOINT_URL"),
        "{text}"
    );
    assert!(
        !text.contains(bob.credentials.secret_access_key.expose()),
        "secret echoed: {text}"
    );
    assert!(!text.contains("AWS_SECRET_ACCESS_KEY,"), "{text}");

    // With alice's grant: boto3 with no arguments works in her prefix only.
    let alice = exchange.provision("alice").await.unwrap();
    let env: serde_json::Map<String, Value> = alice
        .kernel_env()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let (status, body) = start(&gw, Value::Object(env)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let kernel = body["id"].as_str().unwrap().to_owned();
    let out = run(&gw, &kernel, KERNEL_CODE).await;
    assert_eq!(
        out.trim(),
        "written at the site | AccessDenied | users/alice/",
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("objects/stackhub/users/alice/from-kernel.txt")).unwrap(),
        "written at the site"
    );
    let (status, _, _) = http(
        gw.addr,
        Method::DELETE,
        &format!("/api/kernels/{kernel}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(gw);
    s3.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_remote_site_the_gateway_is_a_plain_drop_in() {
    let gw = gateway(false).await;
    let (status, body) = start(&gw, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Exchange variables are not client-settable on a plain gateway (only KERNEL_*).
    let (status, body) = start(
        &gw,
        json!({"AWS_ACCESS_KEY_ID": "AKIAFROMCLIENT", "KERNEL_MARK": "seen"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let kernel = body["id"].as_str().unwrap().to_owned();
    let out = run(
        &gw,
        &kernel,
        "import os; print(os.environ.get('AWS_ACCESS_KEY_ID'), os.environ.get('KERNEL_MARK'))",
    )
    .await;
    assert_eq!(out.trim(), "None seen");
}
