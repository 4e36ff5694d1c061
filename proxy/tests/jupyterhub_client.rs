//! JupyterHub's own proxy client (`jupyterhub.proxy.ConfigurableHTTPProxy`, `should_start=False`)
//! drives the real `stackhub-proxy` binary.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Upstream;
use tokio::process::Command;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("STACKHUB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../.venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python environment at {}: run scripts/test, which creates it",
        venv.display()
    );
    python
}

#[tokio::test]
async fn jupyterhub_proxy_class_manages_routes() {
    let python = venv_python();
    let up = Upstream::start().await;
    let (port, api_port) = common::free_port_pair();
    let token = "jupyterhub-compat-token";
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
        .arg("--log-level=debug")
        .env("CONFIGPROXY_AUTH_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}/_chp_healthz");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(resp) = common::client().get(health.parse().unwrap()).await
            && resp.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "stackhub-proxy did not start");

    let script = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/jupyterhub_proxy_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(python)
            .arg(script)
            .arg(format!("http://127.0.0.1:{api_port}"))
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(token)
            .arg(up.url())
            .output(),
    )
    .await
    .expect("JupyterHub client script timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The API secret never appears in the proxy's own logs.
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("route added"), "{logs}");
    assert!(!logs.contains(token), "token leaked into logs");
}
