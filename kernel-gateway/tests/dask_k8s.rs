//! Dask clusters as Kubernetes pods, against the in-memory API server (`k8s-fake`): the real
//! gateway (REST API, heartbeats, scale) with `dask.launcher = "kubernetes"`. No pod runs
//! there, so the test plays the scheduler: it reads the cluster token from the Secret the
//! gateway created (as the scheduler's mounted file holds it), heartbeats with it and answers
//! the gateway's scale call on a stand-in scheduler API. Each cluster's NetworkPolicy is read
//! with NetworkPolicy semantics (`admits`): another user's pods are refused, the gateway's pods
//! and the cluster's own admitted.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ALICE, BOB, Gateway};
use dask_support::{call, wait_status};
use hyper::{Method, StatusCode};
use k8s_fake::{FakeKube, kubernetes_validate};
use kernel_gateway::dask::launch::KubeDaskLauncher;
use kernel_gateway::dask::{ClusterSpec, DaskConfig, DaskLauncher};
use kernel_gateway::launcher::k8s::{KubeLauncher, KubeLauncherConfig};
use kernel_gateway::{ByKernelSpec, LocalLauncher};
use serde_json::{Value, json};

const NS: &str = "dask";
const GATEWAY_ID: &str = "site-gw";
/// Where the gateway's own pods run, and their labels (`dask.gateway_pod_labels`).
const GATEWAY_NS: &str = "site";
const GATEWAY_POD: [(&str, &str); 2] = [
    ("app.kubernetes.io/name", "bridge-site"),
    ("app.kubernetes.io/component", "gateway"),
];

fn kube_config() -> KubeLauncherConfig {
    KubeLauncherConfig {
        namespace: NS.to_owned(),
        gateway_id: GATEWAY_ID.to_owned(),
        default_image: Some("stackhub/dask:test".to_owned()),
        launch_timeout_secs: 5,
        ..Default::default()
    }
}

async fn gateway(fake: &FakeKube) -> Gateway {
    gateway_with(fake, |c| {
        c.dask.gateway_pod_labels = GATEWAY_POD
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        c.dask.gateway_namespace = Some(GATEWAY_NS.to_owned());
    })
    .await
}

async fn gateway_with(fake: &FakeKube, edit: impl FnOnce(&mut kernel_gateway::Config)) -> Gateway {
    let mut c = common::config();
    c.dask.launcher = Some("kubernetes".into());
    c.dask.heartbeat_period = 2;
    c.dask.idle_timeout = 0;
    c.dask.max_worker_cores = 4;
    c.dask.max_worker_memory_gib = 8.0;
    c.dask.scheduler_memory_gib = 1.0;
    edit(&mut c);
    let local = Arc::new(LocalLauncher::new(
        std::env::temp_dir().join(format!("stackhub-gw-run-{}", uuid::Uuid::new_v4().simple())),
        "127.0.0.1",
    ));
    let kube = Arc::new(KubeLauncher::new(fake.client(), kube_config()));
    Gateway::start_with(
        c,
        Arc::new(ByKernelSpec::new(local).with("kubernetes", kube)),
    )
    .await
}

/// A stand-in for the scheduler's gateway API (`/api/comm`): records what it is sent.
async fn scheduler_api() -> (String, Arc<parking_lot::Mutex<Vec<(String, Value)>>>) {
    let seen: Arc<parking_lot::Mutex<Vec<(String, Value)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/api/comm",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let s = s.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    s.lock().push((auth, body.0));
                    "{}"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

async fn create(gw: &Gateway, token: &str, options: Value) -> String {
    let (s, _, v) = call(
        gw,
        Method::POST,
        "/api/v1/clusters/",
        Some(&format!("token {token}")),
        None,
        Some(&json!({ "cluster_options": options }).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["name"].as_str().unwrap().to_owned()
}

async fn heartbeat(gw: &Gateway, cluster: &str, token: &str, beat: &Value) -> StatusCode {
    call(
        gw,
        Method::POST,
        &format!("/api/v1/clusters/{cluster}/heartbeat"),
        Some(&format!("token {token}")),
        None,
        Some(&beat.to_string()),
    )
    .await
    .0
}

/// The cluster's pods of `role` in the fake API server.
fn pods(fake: &FakeKube, cluster: &str, role: &str) -> Vec<Value> {
    fake.list("pods")
        .into_iter()
        .filter(|p| {
            let l = &p["metadata"]["labels"];
            l["stackhub.io/dask-cluster"] == cluster && l["stackhub.io/dask-role"] == role
        })
        .collect()
}

/// Whether `selector` (a LabelSelector of `matchLabels` only, as ours are) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "only matchLabels: {selector}"
    );
    selector["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

/// Whether `policy` (in namespace [`NS`]) lets a pod with `labels` in namespace `ns` open TCP
/// `port` on a pod with `target` labels: NetworkPolicy semantics for what ours use (pod and
/// namespace selectors ANDed in one peer, ports by number; no rule's ports = every port).
fn admits(policy: &Value, target: &Value, ns: &str, labels: &Value, port: u16) -> bool {
    let spec = &policy["spec"];
    if !selects(&spec["podSelector"], target) {
        return true; // not isolated by this policy
    }
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    spec["ingress"].as_array().unwrap().iter().any(|rule| {
        let peer_ok = rule["from"].as_array().unwrap().iter().any(|peer| {
            let ns_ok = match peer.get("namespaceSelector") {
                Some(sel) => selects(sel, &json!({"kubernetes.io/metadata.name": ns})),
                None => ns == NS,
            };
            let pod_ok = peer
                .get("podSelector")
                .is_none_or(|sel| selects(sel, labels));
            assert!(peer.get("ipBlock").is_none(), "{peer}");
            ns_ok && pod_ok
        });
        let port_ok = rule.get("ports").is_none_or(|ports| {
            ports
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == port && p["protocol"] == "TCP")
        });
        peer_ok && port_ok
    })
}

fn policy_of(fake: &FakeKube, cluster: &str) -> Option<Value> {
    fake.get("networkpolicies", NS, &format!("dask-{cluster}"))
}

async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token_of(fake: &FakeKube, cluster: &str) -> String {
    let secret = fake.get("secrets", NS, &format!("dask-{cluster}")).unwrap();
    secret["stringData"]["api-token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn worker_name(pod: &Value) -> String {
    let cmd = pod["spec"]["containers"][0]["command"].as_array().unwrap();
    let i = cmd.iter().position(|a| a == "--name").unwrap();
    cmd[i + 1].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_run_as_labelled_pods_follow_heartbeats_and_leave_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kernel_gateway=info")
        .try_init();
    let fake = FakeKube::start().await;
    let gw = gateway(&fake).await;
    let (api, seen) = scheduler_api().await;
    let alice = create(&gw, ALICE, json!({"worker_cores": 2, "worker_memory": 1.5})).await;

    // The scheduler pod: labels naming user and cluster, its size, the Secret by reference.
    let sched = fake
        .wait_for("pods", NS, &format!("dask-scheduler-{alice}"))
        .await;
    let labels = &sched["metadata"]["labels"];
    for (k, v) in [
        ("app.kubernetes.io/managed-by", "stackhub"),
        ("app.kubernetes.io/component", "dask"),
        ("stackhub.io/gateway", GATEWAY_ID),
        ("stackhub.io/dask-cluster", alice.as_str()),
        ("stackhub.io/dask-role", "scheduler"),
        ("stackhub.io/user", "alice"),
        ("eodc.dask/username", "alice"),
    ] {
        assert_eq!(labels[k], v, "label {k}: {labels}");
    }
    let c = &sched["spec"]["containers"][0];
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "1000m", "memory": "1073741824"})
    );
    assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
    assert_eq!(c["image"], "stackhub/dask:test");
    assert_eq!(
        c["command"].as_array().unwrap()[..4],
        json!(["python", "-m", "dask", "scheduler"])
            .as_array()
            .unwrap()[..]
    );
    let vol = &sched["spec"]["volumes"][0]["secret"];
    assert_eq!(vol["secretName"], format!("dask-{alice}"));
    assert_eq!(
        vol["items"].as_array().unwrap().len(),
        3,
        "certificate, key, token: {vol}"
    );
    let token = token_of(&fake, &alice);
    let secret = fake.get("secrets", NS, &format!("dask-{alice}")).unwrap();
    let key = secret["stringData"]["dask.pem"].as_str().unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let key_line = key.lines().nth(1).unwrap();
    let text = sched.to_string();
    assert!(
        !text.contains(&token) && !text.contains(key_line),
        "a secret in the scheduler's pod spec"
    );
    assert_eq!(
        secret["metadata"]["labels"]["stackhub.io/dask-cluster"],
        alice
    );

    // The cluster's NetworkPolicy exists before any of its pods, selects them, and admits
    // the cluster's own pods (any port) and the gateway's pods (scheduler ports only).
    let policy = policy_of(&fake, &alice).expect("the cluster's NetworkPolicy");
    let posts: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    let first = |what: &str| posts.iter().position(|r| r.contains(what)).unwrap();
    assert!(
        first("/networkpolicies") < first("/pods"),
        "the policy is created before the pods: {posts:?}"
    );
    assert!(posts[first("/networkpolicies")].starts_with(&format!(
        "POST /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    )));
    let own = json!({"app.kubernetes.io/managed-by": "stackhub",
        "app.kubernetes.io/component": "dask", "stackhub.io/gateway": GATEWAY_ID,
        "stackhub.io/dask-cluster": alice});
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], own);
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        own
    );
    assert!(policy["spec"]["ingress"][0].get("ports").is_none());
    let gw_pod: Value = GATEWAY_POD
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    assert_eq!(
        policy["spec"]["ingress"][1]["from"][0],
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": GATEWAY_NS}},
               "podSelector": {"matchLabels": gw_pod}})
    );
    assert_eq!(
        policy["metadata"]["labels"]["stackhub.io/user"], "alice",
        "labelled as the cluster's other objects"
    );
    // The scheduler's first heartbeat: RUNNING. `scale(2)` reaches the scheduler's API with
    // the cluster token; the next heartbeat asks for 2 workers: two worker pods.
    let sched_addr = "tls://10.1.0.5:8786";
    let beat = |count: u32, closed: Vec<String>| {
        json!({"scheduler_address": sched_addr, "api_address": api, "dashboard_address": "",
               "count": count, "active_workers": [], "closing_workers": [], "closed_workers": closed})
    };
    assert!(
        heartbeat(&gw, &alice, &token, &beat(0, vec![]))
            .await
            .is_success()
    );
    let auth = format!("token {ALICE}");
    let model = wait_status(&gw, &auth, &alice, 5, |s| s == "RUNNING").await;
    assert_eq!(model["status"], "RUNNING", "{model}");
    let (s, _, v) = call(
        &gw,
        Method::POST,
        &format!("/api/v1/clusters/{alice}/scale"),
        Some(&auth),
        None,
        Some(r#"{"count": 2}"#),
    )
    .await;
    assert!(s.is_success(), "{s} {v}");
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].0, format!("token {token}"));
        assert_eq!(seen[0].1, json!({"op": "scale", "count": 2}));
    }
    assert!(
        heartbeat(&gw, &alice, &token, &beat(2, vec![]))
            .await
            .is_success()
    );
    until("two worker pods", 10, || {
        pods(&fake, &alice, "worker").len() == 2
    })
    .await;
    let workers = pods(&fake, &alice, "worker");
    for w in &workers {
        let c = &w["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "2000m", "memory": (3u64 << 29).to_string()}),
            "worker_cores 2, worker_memory 1.5 GiB"
        );
        assert_eq!(c["command"][4], sched_addr);
        assert_eq!(w["metadata"]["labels"]["eodc.dask/username"], "alice");
        let items = w["spec"]["volumes"][0]["secret"]["items"].to_string();
        assert!(
            items.contains("dask.pem") && !items.contains("api-token"),
            "workers get certificate and key, not the cluster token: {items}"
        );
        assert!(!w.to_string().contains(&token) && !w.to_string().contains(key_line));
    }

    // Attack: another cluster's token (bob's, read from his Secret as his scheduler could)
    // neither heartbeats for alice's cluster nor changes its workers.
    let bob = create(&gw, BOB, json!({})).await;
    fake.wait_for("secrets", NS, &format!("dask-{bob}")).await;

    // Attack: bob runs code on his scheduler (and would on his workers); from there he
    // connects straight to alice's scheduler (comm, dashboard, its API) and her workers.
    // Her policy refuses him; her own pods and the gateway's get in.
    let bob_sched = fake
        .wait_for("pods", NS, &format!("dask-scheduler-{bob}"))
        .await;
    let bob_labels = &bob_sched["metadata"]["labels"];
    let target = |p: &Value| p["metadata"]["labels"].clone();
    let alice_sched = target(&sched);
    let worker = target(&workers[0]);
    for port in [8786, 8787, 8788] {
        assert!(
            !admits(&policy, &alice_sched, NS, bob_labels, port),
            "bob's pod reaches alice's scheduler on {port}"
        );
        assert!(admits(&policy, &alice_sched, NS, &worker, port));
        assert!(admits(&policy, &alice_sched, GATEWAY_NS, &gw_pod, port));
    }
    assert!(
        !admits(&policy, &worker, NS, bob_labels, 40123),
        "bob reaches her worker"
    );
    assert!(
        admits(&policy, &worker, NS, &alice_sched, 40123),
        "her scheduler reaches her worker"
    );
    assert!(
        admits(&policy, &worker, NS, &target(&workers[1]), 40123),
        "workers reach each other"
    );
    assert!(
        !admits(&policy, &alice_sched, GATEWAY_NS, &gw_pod, 22),
        "the gateway: Dask ports only"
    );
    // Gateway labels count only in the gateway's namespace; a kernel pod is no gateway.
    assert!(!admits(&policy, &alice_sched, NS, &gw_pod, 8787));
    let kernel = json!({"app.kubernetes.io/managed-by": "stackhub",
        "app.kubernetes.io/component": "kernel", "stackhub.io/gateway": GATEWAY_ID});
    assert!(!admits(&policy, &alice_sched, NS, &kernel, 8787));
    // Bob's own policy admits his pods, not alice's.
    let bob_policy = policy_of(&fake, &bob).expect("bob's NetworkPolicy");
    assert!(admits(&bob_policy, bob_labels, NS, bob_labels, 8786));
    assert!(!admits(&bob_policy, bob_labels, NS, &worker, 8786));
    // What the launcher creates passes the official schemas.
    let docs = [
        policy.clone(),
        sched.clone(),
        workers[0].clone(),
        secret.clone(),
    ];
    if let Err(report) = kubernetes_validate(&docs) {
        panic!("the Dask launcher's objects are invalid:\n{report}");
    }
    let bob_token = token_of(&fake, &bob);
    assert_ne!(bob_token, token);
    assert_eq!(
        heartbeat(&gw, &alice, &bob_token, &beat(3, vec![])).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        heartbeat(
            &gw,
            &alice,
            &bob_token,
            &beat(0, workers.iter().map(worker_name).collect())
        )
        .await,
        StatusCode::FORBIDDEN
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pods(&fake, &alice, "worker").len(), 2, "workers kept");

    // Bob's scheduler pod fails: his cluster is FAILED, its pod and Secret are removed.
    fake.set_pod_status(
        NS,
        &format!("dask-scheduler-{bob}"),
        json!({"phase": "Failed", "containerStatuses": [{"name": "scheduler", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
    );
    let model = wait_status(&gw, &format!("token {BOB}"), &bob, 15, |s| s == "FAILED").await;
    assert_eq!(model["status"], "FAILED", "{model}");
    until("bob's pod, Secret and NetworkPolicy removed", 10, || {
        fake.get("pods", NS, &format!("dask-scheduler-{bob}"))
            .is_none()
            && fake.get("secrets", NS, &format!("dask-{bob}")).is_none()
            && policy_of(&fake, &bob).is_none()
    })
    .await;

    // Scale down: the scheduler retired both workers; their pods are deleted.
    let names: Vec<String> = workers.iter().map(worker_name).collect();
    assert!(
        heartbeat(&gw, &alice, &token, &beat(0, names))
            .await
            .is_success()
    );
    until("worker pods deleted", 10, || {
        pods(&fake, &alice, "worker").is_empty()
    })
    .await;
    assert_eq!(
        pods(&fake, &alice, "scheduler").len(),
        1,
        "{:?}",
        fake.requests()
            .into_iter()
            .filter(|r| r.starts_with("DELETE"))
            .collect::<Vec<_>>()
    );

    // Shutdown: scheduler pod and Secret go.
    let (s, _, _) = call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/clusters/{alice}"),
        Some(&auth),
        None,
        None,
    )
    .await;
    assert!(s.is_success(), "{s}");
    until("alice's pods, Secret and NetworkPolicy removed", 10, || {
        pods(&fake, &alice, "scheduler").is_empty()
            && fake.get("secrets", NS, &format!("dask-{alice}")).is_none()
            && policy_of(&fake, &alice).is_none()
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_removes_the_pods_of_clusters_it_does_not_know() {
    let fake = FakeKube::start().await;
    let old = gateway(&fake).await;
    let name = create(&old, ALICE, json!({})).await;
    fake.wait_for("pods", NS, &format!("dask-scheduler-{name}"))
        .await;
    // Another gateway's Dask pod in the same namespace.
    let mut foreign = fake
        .get("pods", NS, &format!("dask-scheduler-{name}"))
        .unwrap();
    foreign["metadata"] = json!({"name": "dask-scheduler-other", "namespace": NS,
        "labels": foreign["metadata"]["labels"].clone(),
        "annotations": {"stackhub.io/gateway": "lumi", "stackhub.io/dask-cluster": "other"}});
    fake.insert("pods", NS, foreign.clone());
    let mut foreign_policy = policy_of(&fake, &name).unwrap();
    foreign_policy["metadata"]["name"] = json!("dask-other");
    foreign_policy["metadata"]["annotations"] = foreign["metadata"]["annotations"].clone();
    fake.insert("networkpolicies", NS, foreign_policy);
    // The old gateway is gone without stopping its cluster (a crash); the new one, with the
    // same gateway id, removes its pod and Secret at start.
    std::mem::forget(old);
    let new = gateway(&fake).await;
    until(
        "the orphan's pod, Secret and NetworkPolicy removed",
        10,
        || {
            fake.get("pods", NS, &format!("dask-scheduler-{name}"))
                .is_none()
                && fake.get("secrets", NS, &format!("dask-{name}")).is_none()
                && policy_of(&fake, &name).is_none()
        },
    )
    .await;
    assert!(
        fake.get("pods", NS, "dask-scheduler-other").is_some()
            && policy_of(&fake, "other").is_some(),
        "another gateway's pod and policy stay"
    );
    new.stop().await;
}

/// A gateway that cannot say which pods are its own runs no cluster as pods: their NetworkPolicy
/// could not admit it, and pods without one are open to every pod in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateways_pod_labels_no_cluster_starts_unprotected() {
    let fake = FakeKube::start().await;
    let gw = gateway_with(&fake, |_| {}).await;
    let name = create(&gw, ALICE, json!({})).await;
    let model = wait_status(&gw, &format!("token {ALICE}"), &name, 10, |s| s == "FAILED").await;
    assert_eq!(model["status"], "FAILED", "{model}");
    assert!(
        fake.list("pods").is_empty() && fake.list("networkpolicies").is_empty(),
        "nothing created"
    );
    until("no Secret left", 10, || fake.list("secrets").is_empty()).await;
    gw.stop().await;
    // The launcher's refusal names the setting.
    let launcher = KubeDaskLauncher::new(fake.client(), kube_config(), &DaskConfig::default());
    let spec = ClusterSpec {
        name: "c1".into(),
        user: "alice".into(),
        group: None,
        api_url: "http://gw/api".into(),
        token: kernel_gateway::config::Secret::new("t".repeat(64)),
        tls: kernel_gateway::dask::tls::new_cluster_tls("c1").unwrap(),
        worker_cores: 1,
        worker_memory_bytes: 1 << 30,
        heartbeat_period: 10,
        idle_timeout: 0,
        dashboard_prefix: "/clusters/c1".into(),
    };
    let e = launcher
        .start_scheduler(&spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("dask.gateway_pod_labels"), "{e}");
    assert!(fake.list("pods").is_empty() && fake.list("networkpolicies").is_empty());
}
