//! Behaviour of the Kubernetes spawner against the in-memory fake API server: start with
//! readable progress, image-pull failure, start timeout, stop keeping the claim, a restarted hub
//! re-attaching, orphan removal, stale pods, per-user namespaces. The test plays the kubelet.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_fake::FakeKube;
use serde_json::{Value, json};
use spawner::k8s::{KubeSpawner, KubeSpawnerConfig, KubeState, NamespaceMode};
use spawner::{ProgressEvent, ProgressSink, Quota, ServerId, SpawnRequest, Spawner, State, Status};
use tokio::sync::mpsc::UnboundedReceiver;

const NS: &str = "hub";

fn config() -> KubeSpawnerConfig {
    KubeSpawnerConfig {
        namespace: NamespaceMode::Hub {
            namespace: NS.to_owned(),
        },
        image: "docker.io/library/python:3.12".to_owned(),
        ..Default::default()
    }
}

fn server(user: &str, name: &str) -> ServerId {
    ServerId {
        user: user.to_owned(),
        name: name.to_owned(),
    }
}

fn request(user: &str, name: &str) -> SpawnRequest {
    let prefix = if name.is_empty() {
        format!("/user/{user}/")
    } else {
        format!("/user/{user}/{name}/")
    };
    SpawnRequest {
        server: server(user, name),
        prefix,
        env: BTreeMap::from([
            (
                "JUPYTERHUB_API_TOKEN".to_owned(),
                "0123456789abcdef".to_owned(),
            ),
            ("JUPYTERHUB_USER".to_owned(), user.to_owned()),
        ]),
        spec: spawner::LaunchSpec::within_quota(&Quota {
            cpu: Some(2.0),
            memory_bytes: Some(4 << 30),
            gpus: None,
        }),
    }
}

fn drain(rx: &mut UnboundedReceiver<ProgressEvent>) -> Vec<ProgressEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn state_of(state: &State) -> KubeState {
    serde_json::from_value(state.0.clone()).unwrap()
}

#[tokio::test]
async fn start_reports_readable_progress_and_answers_on_the_pod_ip() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let (sink, mut rx) = ProgressSink::channel();
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("ada", ""), sink).await }
    });
    let pod = fake.wait_for("pods", NS, "jupyter--ada").await;
    assert_eq!(pod["status"]["phase"], "Pending");
    fake.add_pod_event(
        NS,
        "jupyter--ada",
        "Normal",
        "Scheduled",
        "Successfully assigned hub/jupyter--ada to node-7",
    );
    fake.add_pod_event(
        NS,
        "jupyter--ada",
        "Normal",
        "Pulling",
        "Pulling image \"docker.io/library/python:3.12\"",
    );
    fake.add_pod_event(NS, "jupyter--ada", "Normal", "Pulled",
        "Successfully pulled image \"docker.io/library/python:3.12\" in 41.2s (41.2s including waiting). Image size: 401234567 bytes.");
    fake.add_pod_event(
        NS,
        "jupyter--ada",
        "Normal",
        "Created",
        "Created container notebook",
    );
    fake.add_pod_event(
        NS,
        "jupyter--ada",
        "Normal",
        "Started",
        "Started container notebook",
    );
    // Let the event watch deliver before the pod turns Running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ip = fake.run_pod(NS, "jupyter--ada");

    let spawned = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(spawned.url, format!("http://{ip}:8888"));
    let st = state_of(&spawned.state);
    assert_eq!(st.namespace, NS);
    assert_eq!(st.pod, "jupyter--ada");
    assert_eq!(st.claim.as_deref(), Some("claim--ada"));
    assert_eq!(st.uid, pod["metadata"]["uid"].as_str().unwrap());

    let messages: Vec<String> = drain(&mut rx).into_iter().map(|e| e.message).collect();
    for wanted in [
        "Created your storage volume",
        "A node was found for your server",
        "Downloading image python:3.12",
        "Image python:3.12 downloaded",
        "Starting JupyterLab",
    ] {
        assert!(
            messages.iter().any(|m| m == wanted),
            "{wanted:?} not in {messages:#?}"
        );
    }
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("Successfully assigned") || m.contains("node-7")),
        "raw Kubernetes events leak into progress: {messages:#?}"
    );

    // The pod as created: env incl. the bind URL, quota as limits, the claim mounted, labels.
    let pod = fake.get("pods", NS, "jupyter--ada").unwrap();
    let c = &pod["spec"]["containers"][0];
    let token = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "JUPYTERHUB_API_TOKEN")
        .unwrap();
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "jupyter--ada");
    assert!(
        !pod.to_string().contains("0123456789abcdef"),
        "token in the pod spec"
    );
    let secret = fake.get("secrets", NS, "jupyter--ada").unwrap();
    assert_eq!(
        secret["stringData"]["JUPYTERHUB_API_TOKEN"],
        "0123456789abcdef"
    );
    let env: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str().unwrap(), e["value"].as_str()?)))
        .collect();
    assert_eq!(
        env["JUPYTERHUB_SERVICE_URL"],
        "http://0.0.0.0:8888/user/ada/"
    );
    assert_eq!(env["JUPYTERHUB_USER"], "ada");
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "2000m", "memory": "4294967296"})
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "claim--ada"
    );
    assert_eq!(pod["metadata"]["labels"]["stackhub.io/hub"], "stackhub");
    assert_eq!(pod["metadata"]["annotations"]["stackhub.io/user"], "ada");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let claim = fake
        .get("persistentvolumeclaims", NS, "claim--ada")
        .unwrap();
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
}

#[tokio::test]
async fn image_pull_failure_names_the_image_and_the_setting_and_keeps_the_claim() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("bo", ""), ProgressSink::discard()).await }
    });
    fake.wait_for("pods", NS, "jupyter--bo").await;
    fake.set_pod_status(NS, "jupyter--bo", json!({"containerStatuses": [{
        "name": "notebook", "image": "docker.io/library/python:3.12", "imageID": "", "ready": false,
        "restartCount": 0,
        "state": {"waiting": {"reason": "ErrImagePull",
            "message": "rpc error: code = NotFound desc = failed to pull and unpack image: not found"}}}]}));
    let err = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("docker.io/library/python:3.12"), "{msg}");
    assert!(msg.contains("`image` setting"), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
    assert!(
        fake.get("pods", NS, "jupyter--bo").is_none(),
        "the failed pod is removed"
    );
    assert!(fake.get("secrets", NS, "jupyter--bo").is_none());
    assert!(
        fake.get("persistentvolumeclaims", NS, "claim--bo")
            .is_some(),
        "the claim stays"
    );
}

#[tokio::test]
async fn a_slow_image_pull_is_reported_and_the_timeout_says_what_to_change() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(
        fake.client(),
        KubeSpawnerConfig {
            start_timeout_secs: 3,
            ..config()
        },
    );
    let (sink, mut rx) = ProgressSink::channel();
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("cy", ""), sink).await }
    });
    fake.wait_for("pods", NS, "jupyter--cy").await;
    fake.add_pod_event(
        NS,
        "jupyter--cy",
        "Normal",
        "Pulling",
        "Pulling image \"registry.example.org/eo/big:2\"",
    );
    let err = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("registry.example.org/eo/big:2") && msg.contains("still downloading"),
        "{msg}"
    );
    assert!(msg.contains("start_timeout_secs"), "{msg}");
    let messages: Vec<String> = drain(&mut rx).into_iter().map(|e| e.message).collect();
    assert!(
        messages.iter().any(
            |m| m.starts_with("Downloading image registry.example.org/eo/big:2 (")
                && m.ends_with(" s so far)")
        ),
        "no download progress in {messages:#?}"
    );
    let percents: Vec<u8> = drain(&mut rx).iter().filter_map(|e| e.progress).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        fake.get("pods", NS, "jupyter--cy").is_none(),
        "the timed-out pod is removed"
    );
}

#[tokio::test]
async fn stop_deletes_the_pod_keeps_the_claim_and_poll_follows() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("di", "gpu"), ProgressSink::discard()).await }
    });
    fake.wait_for("pods", NS, "jupyter--di--gpu").await;
    fake.run_pod(NS, "jupyter--di--gpu");
    let spawned = start.await.unwrap().unwrap();
    let id = server("di", "gpu");
    assert_eq!(
        spawner.poll(&id, &spawned.state).await.unwrap(),
        Status::Running
    );

    spawner.stop(&id, &spawned.state, true).await.unwrap();
    assert!(fake.get("pods", NS, "jupyter--di--gpu").is_none());
    assert!(
        fake.get("secrets", NS, "jupyter--di--gpu").is_none(),
        "the token Secret goes"
    );
    assert!(
        fake.get("persistentvolumeclaims", NS, "claim--di")
            .is_some()
    );
    assert_eq!(
        spawner.poll(&id, &spawned.state).await.unwrap(),
        Status::Exited(None)
    );
    // Idempotent: the pod is already gone.
    spawner.stop(&id, &spawned.state, false).await.unwrap();

    // A start after the stop reuses the claim (409 on create is fine).
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("di", "gpu"), ProgressSink::discard()).await }
    });
    fake.wait_for("pods", NS, "jupyter--di--gpu").await;
    fake.run_pod(NS, "jupyter--di--gpu");
    let again = start.await.unwrap().unwrap();
    assert_ne!(state_of(&again.state).uid, state_of(&spawned.state).uid);
    // The old state no longer describes the new pod: poll says gone, stop leaves it alone.
    assert_eq!(
        spawner.poll(&id, &spawned.state).await.unwrap(),
        Status::Exited(None)
    );
    spawner.stop(&id, &spawned.state, true).await.unwrap();
    assert!(
        fake.get("pods", NS, "jupyter--di--gpu").is_some(),
        "a newer pod is not ours to stop"
    );
    assert_eq!(fake.list("persistentvolumeclaims").len(), 1);
}

#[tokio::test]
async fn a_failed_pod_polls_as_exited_with_its_code() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("ed", ""), ProgressSink::discard()).await }
    });
    fake.wait_for("pods", NS, "jupyter--ed").await;
    fake.run_pod(NS, "jupyter--ed");
    let spawned = start.await.unwrap().unwrap();
    fake.set_pod_status(
        NS,
        "jupyter--ed",
        json!({"phase": "Failed", "containerStatuses": [{
        "name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    );
    assert_eq!(
        spawner
            .poll(&server("ed", ""), &spawned.state)
            .await
            .unwrap(),
        Status::Exited(Some(137))
    );
}

#[tokio::test]
async fn a_restarted_hub_reattaches_and_removes_orphans_only() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let mut states = Vec::new();
    for user in ["fay", "gus"] {
        let start = tokio::spawn({
            let s = spawner.clone();
            async move { s.start(request(user, ""), ProgressSink::discard()).await }
        });
        let pod = format!("jupyter--{user}");
        fake.wait_for("pods", NS, &pod).await;
        fake.run_pod(NS, &pod);
        states.push(start.await.unwrap().unwrap());
    }
    // Another hub's pod and an unrelated pod in the same namespace.
    let mut other = fake.get("pods", NS, "jupyter--gus").unwrap();
    other["metadata"] = json!({"name": "jupyter--gus-other-hub",
        "labels": {"app.kubernetes.io/managed-by": "stackhub", "stackhub.io/hub": "other",
                   "app.kubernetes.io/component": "singleuser-server"},
        "annotations": {"stackhub.io/user": "gus", "stackhub.io/server": ""}});
    fake.insert("pods", NS, other);
    fake.insert(
        "pods",
        NS,
        json!({"metadata": {"name": "postgres-0"},
        "spec": {"containers": [{"name": "db", "image": "postgres"}]}}),
    );
    drop(spawner);

    // The hub restarts: a new spawner, same settings.
    let spawner = KubeSpawner::new(fake.client(), config());
    let fay = server("fay", "");
    assert_eq!(
        spawner.poll(&fay, &states[0].state).await.unwrap(),
        Status::Running
    );
    let (found, _) = spawner.find(&fay).await.unwrap().unwrap();
    assert_eq!(found.url, states[0].url);
    assert_eq!(found.state, states[0].state);
    assert!(spawner.find(&server("nobody", "")).await.unwrap().is_none());

    // The database says only fay runs: gus's pod is an orphan.
    let removed = spawner
        .remove_orphans(std::slice::from_ref(&fay))
        .await
        .unwrap();
    assert_eq!(removed, vec![server("gus", "")]);
    assert!(fake.get("pods", NS, "jupyter--gus").is_none());
    assert!(fake.get("pods", NS, "jupyter--fay").is_some());
    assert!(
        fake.get("pods", NS, "jupyter--gus-other-hub").is_some(),
        "another hub's pod"
    );
    assert!(fake.get("pods", NS, "postgres-0").is_some(), "not ours");
    assert!(
        fake.get("persistentvolumeclaims", NS, "claim--gus")
            .is_some(),
        "claims stay"
    );
}

#[tokio::test]
async fn a_stale_pod_of_the_same_name_is_replaced() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    // Left by a crash: hal's own pod (this hub's labels, hal's owner annotations).
    let hal = server("hal", "");
    let stale = fake.insert(
        "pods",
        NS,
        json!({"metadata": {"name": "jupyter--hal",
            "labels": spawner::k8s::server_labels(&config(), &hal),
            "annotations": spawner::k8s::owner_annotations(&hal)},
        "spec": {"containers": [{"name": "notebook", "image": "old"}]}}),
    );
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("hal", ""), ProgressSink::discard()).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        if let Some(p) = fake.get("pods", NS, "jupyter--hal")
            && p["metadata"]["uid"] != stale["metadata"]["uid"]
        {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale pod was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        fresh["spec"]["containers"][0]["image"],
        "docker.io/library/python:3.12"
    );
    fake.run_pod(NS, "jupyter--hal");
    let spawned = start.await.unwrap().unwrap();
    assert_eq!(
        state_of(&spawned.state).uid,
        fresh["metadata"]["uid"].as_str().unwrap()
    );
}

#[tokio::test]
async fn per_user_namespaces_are_created_once() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(
        fake.client(),
        KubeSpawnerConfig {
            namespace: NamespaceMode::PerUser {
                prefix: "eo-".to_owned(),
            },
            ..config()
        },
    );
    for name in ["", "second"] {
        let start = tokio::spawn({
            let s = spawner.clone();
            async move {
                s.start(request("Ida.K", name), ProgressSink::discard())
                    .await
            }
        });
        let pod = if name.is_empty() {
            "jupyter---49da-2e-4b".to_owned()
        } else {
            format!("jupyter---49da-2e-4b--{name}")
        };
        fake.wait_for("pods", "eo---49da-2e-4b", &pod).await;
        fake.run_pod("eo---49da-2e-4b", &pod);
        start.await.unwrap().unwrap();
    }
    let ns = fake.get("namespaces", "", "eo---49da-2e-4b").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "stackhub"
    );
    assert_eq!(fake.list("namespaces").len(), 1);
    // Orphan removal looks across namespaces in this mode.
    let removed = spawner
        .remove_orphans(&[server("Ida.K", "")])
        .await
        .unwrap();
    assert_eq!(removed, vec![server("Ida.K", "second")]);
}

#[tokio::test]
async fn unusable_state_is_an_error_without_any_api_call() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(fake.client(), config());
    let bad = State(Value::String("nope".to_owned()));
    assert!(spawner.poll(&server("jo", ""), &bad).await.is_err());
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}
