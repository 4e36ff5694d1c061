//! The real `stackhub` binary with `[spawner] kind = "kubernetes"` against the fake API server:
//! a start through the REST API creates the user's claim, Secret and pod (labels, quota
//! resources, the API token by `secretKeyRef`); the test runs the pod's real
//! `jupyterhub-singleuser` with the pod's environment and reports the pod running at 127.0.0.1;
//! the hub finds it ready and proxies to it. A hub restart re-attaches to the running pod and
//! removes an orphan pod (ours by its labels, unknown to the database) but not another hub's.
//! Stop deletes the pod and its Secret and keeps the claim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod k8s_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_common::{
    Cleanup, Proc, binary, free_port, kubeconfig, log_tail, pod_like, pod_running_on_loopback,
    test_dir, wait_for, wait_for_pod,
};
use k8s_fake::FakeKube;
use serde_json::{Value, json};
use spawner::ServerId;
use spawner::k8s::{ANNOTATION_USER, KubeSpawnerConfig, LABEL_HUB, LABEL_USER};

const ADMIN_TOKEN: &str = "k8s-e2e-admin-token-0123456789abcdef";
const PASSWORD: &str = "k8s-e2e-password";
const NS: &str = "hub-e2e";

/// `stackhub` with the test's config; killed on drop.
struct Hub {
    proc: Proc,
    base: String,
}

impl Hub {
    async fn start(dir: &Path, port: u16, hub_port: u16) -> Self {
        let mut cmd = Command::new(binary("stackhub"));
        cmd.arg("--config")
            .arg(dir.join("stackhub.toml"))
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("STACKHUB_PORT", port.to_string())
            .env("STACKHUB_HUB_PORT", hub_port.to_string())
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("STACKHUB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STACKHUB_DEV_PASSWORD", PASSWORD)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        let log = dir.join("hub.log");
        let mut proc = Proc::spawn(cmd, &log);
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_for_hub(&base).await;
        Self { proc, base }
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("token {ADMIN_TOKEN}"))
    }

    async fn user(&self, name: &str) -> Value {
        let r = self
            .admin(reqwest::Method::GET, &format!("/hub/api/users/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn wait_ready(&self, name: &str) {
        let log = self.proc.log.clone();
        wait_for(
            &format!("{name}'s server ready; hub log:\n{}", log_tail(&log)),
            90,
            || async {
                let u = self.user(name).await;
                (u["servers"][""]["ready"] == true).then_some(())
            },
        )
        .await;
    }

    /// `GET /user/<name>/api` through the hub's proxy (jupyter_server answers it unauthenticated).
    async fn server_api(&self, name: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .get(format!("{}/user/{name}/api", self.base))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The kubelet's part for a server pod: run its command from the venv with its environment.
fn run_server_pod(fake: &FakeKube, pod: &Value, dir: &Path) -> Proc {
    assert_eq!(
        pod["spec"]["containers"][0]["command"],
        json!(["jupyterhub-singleuser"])
    );
    k8s_common::run_server_pod(
        fake,
        pod,
        &dir.join("home"),
        &dir.join("singleuser.log"),
        |_, v| v,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_runs_servers_as_pods_and_reattaches_after_a_restart() {
    let dir = test_dir("k8s-hub");
    let _cleanup = Cleanup(dir.clone());
    let fake = FakeKube::start().await;
    kubeconfig(&dir, &fake);
    let server_port = free_port();
    let port = free_port();
    let hub_port = free_port();
    let spawner_config = json!({
        "hub_id": "e2e-hub",
        "namespace": {"mode": "hub", "namespace": NS},
        "image": "stackhub/singleuser:0.1.0",
        "port": server_port,
        "start_timeout_secs": 60,
        "storage": {"size": "5Gi"},
    });
    std::fs::write(
        dir.join("kubernetes-spawner.json"),
        serde_json::to_string_pretty(&spawner_config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("stackhub.toml"),
        format!(
            "[spawner]\nkind = \"kubernetes\"\nkubernetes_config = \"{}\"\n\n\
             [[quotas]]\nrole = \"user\"\ncpus = 1.5\nmemory = \"1Gi\"\n",
            dir.join("kubernetes-spawner.json").display()
        ),
    )
    .unwrap();
    let config: KubeSpawnerConfig = serde_json::from_value(spawner_config).unwrap();
    let alice = ServerId {
        user: "alice".to_owned(),
        name: String::new(),
    };

    let mut hub = Hub::start(&dir, port, hub_port).await;
    let r = hub
        .admin(reqwest::Method::POST, "/hub/api/users/alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A login stores alice's quota (from the `user` role).
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = browser
        .post(format!("{}/hub/login?next=%2Fhub%2Fhome", hub.base))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Start: the pod appears in the fake.
    let r = hub
        .admin(reqwest::Method::POST, "/hub/api/users/alice/server")
        .send()
        .await
        .unwrap();
    assert!(
        [201, 202].contains(&r.status().as_u16()),
        "start: {}",
        r.status()
    );
    let pod = wait_for_pod(&fake, NS, &[(LABEL_USER, "alice")]).await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(pod_name, spawner::k8s::pod_name(&alice));
    for (k, v) in spawner::k8s::server_labels(&config, &alice) {
        assert_eq!(pod["metadata"]["labels"][&k], v.as_str(), "label {k}");
    }
    assert!(pod["metadata"]["labels"][LABEL_HUB].is_string());
    assert_eq!(pod["metadata"]["annotations"][ANNOTATION_USER], "alice");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "stackhub/singleuser:0.1.0");
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "1500m", "memory": "1073741824"})
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    // The API token is not in the pod spec: a secretKeyRef to the server's Secret.
    let env = container["env"].as_array().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"] == "JUPYTERHUB_API_TOKEN")
        .expect("JUPYTERHUB_API_TOKEN in the pod's environment");
    assert!(token.get("value").is_none(), "{token}");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        pod_name.as_str()
    );
    assert!(!pod.to_string().contains(ADMIN_TOKEN));
    // The user's claim, mounted as user_data.
    let claim_name = spawner::k8s::claim_name(&config, &spawner::LaunchSpec::default(), &alice);
    let claim = fake
        .get("persistentvolumeclaims", NS, &claim_name)
        .expect("alice's claim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        claim_name.as_str()
    );

    // The kubelet: the real single-user server with the pod's environment, then `Running`.
    let mut server = run_server_pod(&fake, &pod, &dir);
    pod_running_on_loopback(&fake, &pod);
    hub.wait_ready("alice").await;
    assert_eq!(hub.server_api("alice").await, 200, "proxied to the pod");
    let uid = fake.get("pods", NS, &pod_name).unwrap()["metadata"]["uid"].clone();

    // An orphan (ours by its labels and owner annotations, as this hub makes them, for a user
    // the database does not know), a pod with this hub's labels whose owner annotations
    // disagree (no server's: not ours to delete) and another hub's pod appear while the hub
    // is down.
    hub.proc.stop(Duration::from_secs(15));
    let zed = ServerId {
        user: "zed".to_owned(),
        name: String::new(),
    };
    let zed_labels: Vec<(String, String)> = spawner::k8s::server_labels(&config, &zed)
        .into_iter()
        .collect();
    let zed_annotations: Vec<(String, String)> =
        spawner::k8s::owner_annotations(&zed).into_iter().collect();
    fake.insert(
        "pods",
        NS,
        pod_like(
            &pod,
            "jupyter-zed",
            &str_pairs(&zed_labels),
            &str_pairs(&zed_annotations),
        ),
    );
    fake.insert(
        "pods",
        NS,
        pod_like(
            &pod,
            "jupyter-unattributable",
            &[(LABEL_USER, "mal")],
            &[(ANNOTATION_USER, "mal")],
        ),
    );
    fake.insert(
        "pods",
        NS,
        pod_like(&pod, "jupyter-other-hub", &[(LABEL_HUB, "other-hub")], &[]),
    );
    let hub = Hub::start(&dir, port, hub_port).await;
    hub.wait_ready("alice").await;
    assert_eq!(hub.server_api("alice").await, 200, "route re-added");
    assert_eq!(
        fake.get("pods", NS, &pod_name).unwrap()["metadata"]["uid"],
        uid,
        "re-attached to the same pod"
    );
    wait_for("the orphan pod removed", 10, || async {
        fake.get("pods", NS, "jupyter-zed").is_none().then_some(())
    })
    .await;
    assert!(
        fake.get("pods", NS, "jupyter-other-hub").is_some(),
        "another hub's pod is left alone"
    );

    // Stop: the pod and its Secret go, the claim stays.
    let r = hub
        .admin(reqwest::Method::DELETE, "/hub/api/users/alice/server")
        .send()
        .await
        .unwrap();
    assert!(
        [202, 204].contains(&r.status().as_u16()),
        "stop: {}",
        r.status()
    );
    wait_for("alice's pod deleted", 30, || async {
        fake.get("pods", NS, &pod_name).is_none().then_some(())
    })
    .await;
    server.stop(Duration::from_secs(10));
    wait_for("alice's server stopped in the hub", 30, || async {
        hub.user("alice").await["servers"]
            .get("")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(fake.get("secrets", NS, &pod_name).is_none());
    // Checked long after the restart's orphan removal has run.
    assert!(
        fake.get("pods", NS, "jupyter-unattributable").is_some(),
        "a pod whose owner annotations disagree is no server's and is left alone"
    );
    assert!(
        fake.get("persistentvolumeclaims", NS, &claim_name)
            .is_some(),
        "the claim is kept across stops"
    );
    let deletes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE") && r.contains("persistentvolumeclaims"))
        .collect();
    assert!(deletes.is_empty(), "{deletes:?}");
}

fn str_pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The attack of a slow cluster on the hub: a pod that never becomes ready, with the hub's
/// own `spawner.start_timeout` (1 s) far shorter than the Kubernetes spawner's (4 s). The hub
/// must not give up first and lose the pod's state (an orphaned pod, and its Secret holding
/// the server's API token); when the start fails, nothing is left and the server is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_becomes_ready_is_not_orphaned_by_the_hubs_shorter_timeout() {
    let dir = test_dir("k8s-hub-timeout");
    let _cleanup = Cleanup(dir.clone());
    let fake = FakeKube::start().await;
    kubeconfig(&dir, &fake);
    let spawner_config = json!({
        "hub_id": "e2e-hub",
        "namespace": {"mode": "hub", "namespace": NS},
        "image": "stackhub/singleuser:0.1.0",
        "start_timeout_secs": 4,
    });
    std::fs::write(
        dir.join("kubernetes-spawner.json"),
        serde_json::to_string_pretty(&spawner_config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("stackhub.toml"),
        format!(
            "[spawner]\nkind = \"kubernetes\"\nstart_timeout = 1\nkubernetes_config = \"{}\"\n",
            dir.join("kubernetes-spawner.json").display()
        ),
    )
    .unwrap();
    let hub = Hub::start(&dir, free_port(), free_port()).await;
    let r = hub
        .admin(reqwest::Method::POST, "/hub/api/users/bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = hub
        .admin(reqwest::Method::POST, "/hub/api/users/bob/server")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "start");
    let pod = wait_for_pod(&fake, NS, &[(LABEL_USER, "bob")]).await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(fake.get("secrets", NS, &name).is_some());
    // Past the hub's own timeout, the start still runs: the pod may yet become ready.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        hub.user("bob").await["servers"][""]["pending"],
        "spawn",
        "the hub gave up before the spawner's timeout"
    );
    // The kubelet never runs it: at the spawner's timeout the start fails.
    let log = hub.proc.log.clone();
    wait_for(
        &format!("bob's failed start to end; hub log:\n{}", log_tail(&log)),
        40,
        || async {
            hub.user("bob").await["servers"]
                .get("")
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        fake.get("pods", NS, &name).is_none(),
        "the pod is orphaned: {}",
        log_tail(&log)
    );
    assert!(
        fake.get("secrets", NS, &name).is_none(),
        "the Secret with the server's token is orphaned"
    );
    let r = hub
        .admin(reqwest::Method::GET, "/hub/api/users/bob/server/progress")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("did not start within 4 s") && text.contains("start_timeout_secs"),
        "{text}"
    );
}
