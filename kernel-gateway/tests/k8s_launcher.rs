//! The Kubernetes launcher in three layers: request level (scripted `tower-test` mock), behaviour
//! against the in-memory fake API server (the test plays the kubelet), and schema level
//! (`kubernetes-validate --strict` on every generated manifest).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_fake::{FakeKube, kubernetes_validate};
use kernel_gateway::ResourceLimits;
use kernel_gateway::kernelspec::{InterruptMode, KernelSpec};
use kernel_gateway::launcher::k8s::{KubeLauncher, KubeLauncherConfig, build};
use kernel_gateway::launcher::{KernelSignal, LaunchRequest, Launcher};
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "kernels";

fn config() -> KubeLauncherConfig {
    KubeLauncherConfig {
        namespace: NS.to_owned(),
        gateway_id: "central-gateway".to_owned(),
        images: BTreeMap::from([
            (
                "python3".to_owned(),
                "stackhub/kernel-python:0.1.0".to_owned(),
            ),
            ("ir".to_owned(), "stackhub/kernel-r:0.1.0".to_owned()),
        ]),
        launch_timeout_secs: 5,
        ..Default::default()
    }
}

fn request(id: &str, spec: &str) -> LaunchRequest {
    LaunchRequest {
        kernel_id: id.to_owned(),
        spec: Arc::new(KernelSpec {
            name: spec.to_owned(),
            dir: PathBuf::from("/usr/share/jupyter/kernels").join(spec),
            argv: vec![
                "python".to_owned(),
                "-m".to_owned(),
                "ipykernel_launcher".to_owned(),
                "-f".to_owned(),
                "{connection_file}".to_owned(),
            ],
            language: "python".to_owned(),
            env: BTreeMap::new(),
            interrupt_mode: InterruptMode::Message,
            raw: json!({}),
        }),
        env: BTreeMap::from([
            ("KERNEL_USERNAME".to_owned(), "ada@esa.int".to_owned()),
            ("KERNEL_CPUS".to_owned(), "2".to_owned()),
        ]),
        working_dir: None,
        key: "secret-hmac-key".to_owned(),
        limits: ResourceLimits {
            cpus: Some(2.0),
            memory_bytes: Some(4 << 30),
            gpus: Some(0),
            ..Default::default()
        },
    }
}

// ---- schema level ----

#[test]
fn kernel_manifests_pass_strict_schema_validation() {
    let mut docs = Vec::new();
    let gpu = KubeLauncherConfig {
        node_selector: BTreeMap::from([("accelerator".to_owned(), "a100".to_owned())]),
        default_image: Some("stackhub/kernel-python:0.1.0".to_owned()),
        image_pull_policy: Some("Always".to_owned()),
        ..config()
    };
    let mut big = request("4f1a7c3e-0000-4000-8000-000000000001", "gpu-python");
    big.limits.gpus = Some(4);
    big.working_dir = Some(PathBuf::from("/home/jovyan/work"));
    for (c, r) in [
        (
            config(),
            request("4f1a7c3e-0000-4000-8000-000000000000", "python3"),
        ),
        (config(), request("x", "ir")),
        (gpu, big),
    ] {
        let (secret, pod) = build(&c, &r).unwrap();
        assert_eq!(
            pod.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("Never")
        );
        assert!(
            pod.spec.as_ref().unwrap().volumes.is_none(),
            "no volumes by default"
        );
        docs.push(serde_json::to_value(secret).unwrap());
        docs.push(serde_json::to_value(pod).unwrap());
    }
    if let Err(report) = kubernetes_validate(&docs) {
        panic!("kernel manifests are invalid:\n{report}");
    }
    // The key is only in the Secret, never in the pod spec.
    for d in &docs {
        if d["kind"] == "Pod" {
            assert!(!d.to_string().contains("secret-hmac-key"), "{d}");
        }
    }
    // An unknown kernelspec without a default image is refused by name.
    let err = build(&config(), &request("y", "julia"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"julia\"") && err.contains("`images`"),
        "{err}"
    );
}

// ---- request level ----

type Mock = tower_test::mock::Handle<Request<Body>, Response<Body>>;

async fn next(
    h: &mut Mock,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (req, send) = h.next_request().await.expect("a request");
    let method = req.method().clone();
    let uri = req.uri().path_and_query().unwrap().to_string();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, body, send)
}

fn reply(send: tower_test::mock::SendResponse<Response<Body>>, code: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

#[tokio::test]
async fn launch_creates_secret_then_pod_and_waits_for_its_ip() {
    let (svc, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let launcher = KubeLauncher::new(kube::Client::new(svc, "default"), config());
    let task = tokio::spawn(async move { launcher.launch(request("k-1", "python3")).await });

    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::POST, "/api/v1/namespaces/kernels/secrets?")
    );
    assert_eq!(body["metadata"]["name"], "kernel-k-1");
    assert_eq!(body["stringData"]["key"], "secret-hmac-key");
    reply(send, StatusCode::CREATED, &body);

    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::POST, "/api/v1/namespaces/kernels/pods?")
    );
    let c = &body["spec"]["containers"][0];
    assert_eq!(c["image"], "stackhub/kernel-python:0.1.0");
    assert_eq!(c["command"][0], "stackhub-kernel-launcher");
    assert_eq!(c["command"][6], "/tmp/stackhub-kernel/connection.json");
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "2000m", "memory": "4294967296"})
    );
    assert_eq!(body["spec"]["restartPolicy"], "Never");
    assert_eq!(
        body["metadata"]["labels"]["stackhub.io/user"],
        "ada_esa.int"
    );
    let key_env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STACKHUB_KERNEL_KEY")
        .unwrap();
    assert_eq!(key_env["valueFrom"]["secretKeyRef"]["name"], "kernel-k-1");
    let mut pod = body.clone();
    pod["metadata"]["uid"] = json!("uid-1");
    pod["metadata"]["resourceVersion"] = json!("3");
    reply(send, StatusCode::CREATED, &pod);

    // await_condition: a list by name, then the pod comes back running.
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(m, Method::GET);
    assert!(
        uri.starts_with("/api/v1/namespaces/kernels/pods?")
            && uri.contains("fieldSelector=metadata.name%3Dkernel-k-1"),
        "{uri}"
    );
    pod["status"] = json!({"phase": "Running", "podIP": "10.9.8.7"});
    reply(
        send,
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "4"}, "items": [pod]}),
    );
    let launched = task.await.unwrap().unwrap();
    assert_eq!(launched.connection.ip, "10.9.8.7");
    assert_eq!(launched.connection.shell_port, 52700);
    assert_eq!(launched.connection.key, "secret-hmac-key");
    assert_eq!(
        launched.process.state(),
        json!({"namespace": NS, "pod": "kernel-k-1", "uid": "uid-1"})
    );

    // Kill deletes the pod (uid precondition, no grace) and then the Secret.
    launched.process.signal(KernelSignal::Kill).unwrap();
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::DELETE,
            "/api/v1/namespaces/kernels/pods/kernel-k-1?"
        )
    );
    assert_eq!(body["preconditions"]["uid"], "uid-1");
    assert_eq!(body["gracePeriodSeconds"], 0);
    reply(send, StatusCode::OK, &pod);
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::DELETE,
            "/api/v1/namespaces/kernels/secrets/kernel-k-1?"
        )
    );
    reply(
        send,
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
    );
    // Interrupts cannot be signals for pods.
    let err = launched
        .process
        .signal(KernelSignal::Interrupt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("interrupt_mode"), "{err}");
}

// ---- behaviour level ----

#[tokio::test]
async fn launch_poll_terminate_and_orphans_against_the_fake_api_server() {
    let fake = FakeKube::start().await;
    let launcher = KubeLauncher::new(fake.client(), config());
    let l = launcher.clone();
    let task = tokio::spawn(async move { l.launch(request("k-2", "python3")).await });
    fake.wait_for("pods", NS, "kernel-k-2").await;
    assert!(fake.get("secrets", NS, "kernel-k-2").is_some());
    let ip = fake.run_pod(NS, "kernel-k-2");
    let launched = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(launched.connection.ip, ip);
    assert_eq!(launched.process.poll().await, None, "running");

    // The kernel process dies: the pod fails, poll reports it.
    fake.set_pod_status(
        NS,
        "kernel-k-2",
        json!({"phase": "Failed", "containerStatuses": [{
        "name": "kernel", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    );
    let exit = launched.process.poll().await.unwrap();
    assert_eq!(exit.status, "exit status 137");
    assert_eq!(exit.last_stderr.as_deref(), Some("OOMKilled"));

    // Terminate deletes pod and Secret.
    launched.process.signal(KernelSignal::Terminate).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.get("secrets", NS, "kernel-k-2").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "Secret not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fake.get("pods", NS, "kernel-k-2").is_none());
    assert_eq!(launched.process.poll().await.unwrap().status, "pod deleted");

    // Orphans: two kernel pods of this gateway, one still known; another gateway's pod stays.
    for id in ["k-3", "k-4"] {
        let l = launcher.clone();
        let t = tokio::spawn(async move { l.launch(request(id, "python3")).await });
        let name = format!("kernel-{id}");
        fake.wait_for("pods", NS, &name).await;
        fake.run_pod(NS, &name);
        t.await.unwrap().unwrap();
    }
    let other = KubeLauncher::new(
        fake.client(),
        KubeLauncherConfig {
            gateway_id: "lumi".to_owned(),
            ..config()
        },
    );
    let t = tokio::spawn(async move { other.launch(request("k-5", "ir")).await });
    fake.wait_for("pods", NS, "kernel-k-5").await;
    fake.run_pod(NS, "kernel-k-5");
    t.await.unwrap().unwrap();
    let removed = launcher.remove_orphans(&|id| id == "k-3").await.unwrap();
    assert_eq!(removed, vec!["k-4".to_owned()]);
    assert!(fake.get("pods", NS, "kernel-k-4").is_none());
    assert!(fake.get("secrets", NS, "kernel-k-4").is_none());
    assert!(fake.get("pods", NS, "kernel-k-3").is_some());
    assert!(
        fake.get("pods", NS, "kernel-k-5").is_some(),
        "another gateway's kernel"
    );
}

#[tokio::test]
async fn an_image_pull_failure_fails_the_launch_and_cleans_up() {
    let fake = FakeKube::start().await;
    let launcher = KubeLauncher::new(fake.client(), config());
    let l = launcher.clone();
    let task = tokio::spawn(async move { l.launch(request("k-6", "ir")).await });
    fake.wait_for("pods", NS, "kernel-k-6").await;
    fake.set_pod_status(NS, "kernel-k-6", json!({"containerStatuses": [{
        "name": "kernel", "image": "stackhub/kernel-r:0.1.0", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}));
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ImagePullBackOff") && err.contains("`images`"),
        "{err}"
    );
    assert!(fake.get("pods", NS, "kernel-k-6").is_none());
    assert!(fake.get("secrets", NS, "kernel-k-6").is_none());

    // A pod that never runs hits the launch timeout, which names the setting.
    let launcher = KubeLauncher::new(
        fake.client(),
        KubeLauncherConfig {
            launch_timeout_secs: 1,
            ..config()
        },
    );
    let err = launcher
        .launch(request("k-7", "python3"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("launch_timeout_secs"), "{err}");
    assert!(fake.get("pods", NS, "kernel-k-7").is_none());

    // A restart reuses the kernel id: the old pod is replaced.
    let l = KubeLauncher::new(fake.client(), config());
    let t = tokio::spawn(async move { l.launch(request("k-8", "python3")).await });
    let first = fake.wait_for("pods", NS, "kernel-k-8").await;
    fake.run_pod(NS, "kernel-k-8");
    t.await.unwrap().unwrap();
    let l = KubeLauncher::new(fake.client(), config());
    let t = tokio::spawn(async move { l.launch(request("k-8", "python3")).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = fake.get("pods", NS, "kernel-k-8")
            && p["metadata"]["uid"] != first["metadata"]["uid"]
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.run_pod(NS, "kernel-k-8");
    t.await.unwrap().unwrap();
}

/// The attack of a kernel id chosen to equal another's (clients may name the kernel id): a
/// launch on another gateway sharing the namespace, or by another user, must not delete and
/// replace the victim's kernel pod and its key Secret; it fails and leaves them alone.
#[tokio::test]
async fn a_kernel_id_taken_by_another_users_or_gateways_kernel_does_not_replace_it() {
    let fake = FakeKube::start().await;
    let id = "4f1a7c3e-0000-4000-8000-00000000000a";
    let name = format!("kernel-{id}");
    let victim = KubeLauncher::new(fake.client(), config());
    let t = tokio::spawn(async move { victim.launch(request(id, "python3")).await });
    let pod = fake.wait_for("pods", NS, &name).await;
    fake.run_pod(NS, &name);
    t.await.unwrap().unwrap();
    let secret = fake.get("secrets", NS, &name).unwrap();
    let mut attack = request(id, "python3");
    attack
        .env
        .insert("KERNEL_USERNAME".to_owned(), "mallory".to_owned());
    attack.key = "mallorys-key".to_owned();
    let lumi = KubeLauncherConfig {
        gateway_id: "lumi".to_owned(),
        ..config()
    };
    for (launcher, req) in [
        // Same user, another gateway in the namespace.
        (
            KubeLauncher::new(fake.client(), lumi),
            request(id, "python3"),
        ),
        // Same gateway, another user.
        (KubeLauncher::new(fake.client(), config()), attack),
    ] {
        let err = tokio::time::timeout(Duration::from_secs(10), launcher.launch(req))
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to another kernel"), "{err}");
        let now = fake.get("pods", NS, &name).expect("the victim's pod stays");
        assert_eq!(now["metadata"]["uid"], pod["metadata"]["uid"]);
        let s = fake
            .get("secrets", NS, &name)
            .expect("the victim's Secret stays");
        assert_eq!(s["metadata"]["uid"], secret["metadata"]["uid"]);
        assert_eq!(s["stringData"]["key"], "secret-hmac-key");
    }
}
