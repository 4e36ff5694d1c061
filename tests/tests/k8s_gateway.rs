//! The real `stackhub-gateway` binary with `default_launcher = "kubernetes"` against the fake
//! API server: a kernel start creates the kernel's Secret and pod (labels, quota resources, the
//! HMAC key by `secretKeyRef`); the test runs the pod's real command (the kernel image's
//! `stackhub-kernel-launcher` with ipykernel) with the pod's environment and reports the pod
//! running at 127.0.0.1; the gateway connects and the kernel executes code over the WebSocket.
//! Orphan cleanup removes a pod labelled as this gateway's with no kernel (and neither the live
//! kernel's pod nor another gateway's); deleting the kernel deletes its pod and Secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod k8s_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use k8s_common::{
    Cleanup, Proc, binary, container_env, free_port, kubeconfig, log_tail, pod_like,
    pod_running_on_loopback, test_dir, venv, wait_for, wait_for_pod, workspace,
};
use k8s_fake::FakeKube;
use kernel_gateway::launcher::k8s::{
    CONNECTION_FILE, KERNEL_LAUNCHER, LABEL_GATEWAY, LABEL_KERNEL,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NS: &str = "kernels";

async fn start_gateway(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(binary("stackhub-gateway"));
    cmd.arg("--config")
        .arg(dir.join("gateway.toml"))
        .arg("--port")
        .arg(port.to_string())
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let log = dir.join("gateway.log");
    let mut proc = Proc::spawn(cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            proc.running(),
            "stackhub-gateway exited; its log:\n{}",
            log_tail(&log)
        );
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/api")).await
            && r.status() == 200
        {
            return proc;
        }
        assert!(
            Instant::now() < deadline,
            "stackhub-gateway did not answer within 30 s; its log:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kubelet's part for a kernel pod: the image's launcher (from `images/kernel-launcher`) with
/// the pod's environment; the pod's private `/tmp` is the test directory.
fn run_kernel_pod(fake: &FakeKube, pod: &Value, dir: &Path) -> Proc {
    let private = |s: &str| {
        s.replace(
            CONNECTION_FILE,
            dir.join("connection.json").to_str().unwrap(),
        )
    };
    let command: Vec<String> = pod["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| private(v.as_str().unwrap()))
        .collect();
    assert_eq!(command[0], KERNEL_LAUNCHER);
    let launcher = workspace()
        .join("images/kernel-launcher")
        .join(KERNEL_LAUNCHER);
    let bin = venv().join("bin");
    let mut cmd = Command::new("sh");
    cmd.arg(launcher)
        .args(&command[1..])
        .env_clear()
        .envs(
            container_env(fake, pod)
                .into_iter()
                .map(|(k, v)| (k, private(&v))),
        )
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        )
        .env("HOME", dir)
        .current_dir(dir);
    Proc::spawn(cmd, &dir.join("kernel.log"))
}

async fn execute(port: u16, kernel: &str, code: &str) -> String {
    let url = format!("ws://127.0.0.1:{port}/api/kernels/{kernel}/channels");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let msg_id = format!("k8s-e2e-{}", std::process::id());
    let request = json!({
        "header": {"msg_id": msg_id, "username": "e2e", "session": "k8s-e2e",
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": false, "store_history": false,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_kernels_as_pods_and_removes_orphans() {
    let dir = test_dir("k8s-gateway");
    let _cleanup = Cleanup(dir.clone());
    let fake = FakeKube::start().await;
    kubeconfig(&dir, &fake);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let launcher = json!({
        "namespace": NS,
        "gateway_id": "e2e-gw",
        "images": {"python3": "stackhub/kernel-python:0.1.0"},
        "ports": ports,
        "launch_timeout_secs": 60,
    });
    std::fs::write(dir.join("kubernetes-launcher.json"), launcher.to_string()).unwrap();
    let spec_dir = dir.join("kernels/python3");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(
        spec_dir.join("kernel.json"),
        json!({
            "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python", "interrupt_mode": "message",
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "ip = \"127.0.0.1\"\nkernelspec_dirs = [\"{}\"]\ndefault_launcher = \"kubernetes\"\n\
             kubernetes_config = \"{}\"\norphan_cleanup_interval = 1\n\
             default_quota_role = \"stack-jupyter-low\"\n",
            dir.join("kernels").display(),
            dir.join("kubernetes-launcher.json").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut gateway = start_gateway(&dir, port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // Start: the kernel's pod appears; the kubelet runs it.
    let start = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/kernels"))
                .json(&json!({"name": "python3"}))
                .send()
                .await
                .unwrap()
        })
    };
    let pod = wait_for_pod(&fake, NS, &[(LABEL_GATEWAY, "e2e-gw")]).await;
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "stackhub/kernel-python:0.1.0");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "2000m", "memory": (2u64 << 30).to_string()})
    );
    let key = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STACKHUB_KERNEL_KEY")
        .expect("the HMAC key in the pod's environment");
    assert!(key.get("value").is_none(), "{key}");
    let mut kernel = run_kernel_pod(&fake, &pod, &dir);
    pod_running_on_loopback(&fake, &pod);
    let r = tokio::time::timeout(Duration::from_secs(90), start)
        .await
        .expect("kernel start answered")
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        status,
        201,
        "{body}; gateway log:\n{}\nkernel log:\n{}",
        log_tail(&dir.join("gateway.log")),
        log_tail(&dir.join("kernel.log"))
    );
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pod["metadata"]["annotations"]["stackhub.io/kernel-id"],
        id.as_str()
    );
    assert_eq!(execute(port, &id, "1+1").await, "2");

    // Orphan cleanup: a pod of this gateway with no kernel goes; the live kernel's pod and
    // another gateway's pod stay.
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    fake.insert(
        "pods",
        NS,
        pod_like(
            &pod,
            "kernel-orphan",
            &[(LABEL_KERNEL, "orphan")],
            &[("stackhub.io/kernel-id", "orphan")],
        ),
    );
    fake.insert(
        "pods",
        NS,
        pod_like(
            &pod,
            "kernel-other-gateway",
            &[(LABEL_GATEWAY, "other-gw"), (LABEL_KERNEL, "other")],
            &[("stackhub.io/kernel-id", "other")],
        ),
    );
    wait_for("the orphan kernel pod removed", 15, || async {
        fake.get("pods", NS, "kernel-orphan")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        fake.get("pods", NS, &pod_name).is_some(),
        "the live kernel's pod"
    );
    assert!(fake.get("pods", NS, "kernel-other-gateway").is_some());
    assert_eq!(execute(port, &id, "2+3").await, "5");

    // Delete: the pod and its Secret go.
    let r = client
        .delete(format!("{base}/api/kernels/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for("the kernel pod deleted", 30, || async {
        fake.get("pods", NS, &pod_name).is_none().then_some(())
    })
    .await;
    assert!(fake.get("secrets", NS, &pod_name).is_none());
    kernel.stop(Duration::from_secs(5));
    gateway.stop(Duration::from_secs(15));
}
