//! The bridge-site chart's Dask, run as its Deployment says (issue 20: "the bridge-site chart
//! deploys it"). `helm template` renders the chart with its default Dask values; its ConfigMap
//! is laid out as the gateway pod mounts it; the real `stackhub-gateway` runs with exactly that
//! config against the in-memory API server (`k8s-fake`); the stock `dask_gateway` client
//! (2026.3.0, from the Python DEDL environment) authenticates with the hub's site JWT (a
//! `stack-dask-medium` user), reads its options and creates a cluster.
//!
//! No pod runs in the fake, so the test checks what the gateway creates for the cluster against
//! the rendered chart: the NetworkPolicy admits exactly the Deployment's gateway pods in the
//! release namespace (and the cluster's own pods); the scheduler pod runs the chart's Dask image
//! and heartbeats to the gateway's Service by its cluster DNS name; the Role grants each call
//! the launcher makes. The client's shutdown removes the cluster's pod, Secret and policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helm_common;
mod k8s_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use helm_common::{find, lay_out_bridge, template_with};
use k8s_common::{
    Cleanup, Proc, binary, free_port, kubeconfig, log_tail, test_dir, venv, wait_for,
};
use k8s_fake::FakeKube;
use serde_json::{Value, json};
use stackhub_e2e::support::dask_client_script;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The release's namespace; the kernel (and Dask) namespace by default.
const NS: &str = "site";
/// The hub's `gateway_token_issuer`.
const ISSUER: &str = "https://hub.test";

/// The stock client: options (the caller's limits), a cluster submitted (it stays PENDING: no
/// scheduler runs in the fake), listed, (the test's checks), stopped.
const CLIENT: &str = r#"
gw = gateway()
opts = gw.cluster_options()
limits = {k: f.max for k, f in opts._fields.items()}
opts.worker_cores = 2
name = gw.submit(opts)
say(event="submitted", name=name, limits=limits,
    listed=[(c.name, c.status.name) for c in gw.list_clusters()])
sys.stdin.readline()
gw.stop_cluster(name)
say(event="stopped")
gw.close()
"#;

/// The Python of the Python DEDL kernelspec `scripts/test` installs into the venv
/// (`ensure_dedl_env`): distributed, dask-gateway.
fn dedl_python() -> PathBuf {
    let spec = venv().join("share/jupyter/kernels/python_dedl/kernel.json");
    let text = std::fs::read_to_string(&spec).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/test (ensure_dedl_env installs the Python DEDL kernel)",
            spec.display()
        )
    });
    let spec: Value = serde_json::from_str(&text).unwrap();
    PathBuf::from(spec["argv"][0].as_str().unwrap())
}

/// Serves `body` as JSON to every request (the hub's `/hub/api/sites/jwks.json`).
async fn serve_json(body: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/hub/api/sites/jwks.json")
}

/// `stackhub-gateway` with the container's args (moved to `config`), the Deployment's
/// environment (none with JWT auth) and, standing in for the pod: its port, the kubeconfig of
/// the fake (in place of the service account) and logging.
async fn start_gateway(dir: &Path, config: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(binary("stackhub-gateway"));
    cmd.arg("--config")
        .arg(config)
        .arg("--port")
        .arg(port.to_string())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let log = dir.join("gateway.log");
    let mut proc = Proc::spawn(cmd, &log);
    let url = format!("http://127.0.0.1:{port}/api/health");
    wait_for("the gateway's Dask API", 30, || {
        assert!(
            proc.running(),
            "stackhub-gateway exited:\n{}",
            log_tail(&log)
        );
        let url = url.clone();
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    proc
}

fn labels(v: &Value) -> Value {
    v["matchLabels"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_gateway_runs_dask_clusters_as_isolated_pods() {
    let dir = test_dir("helm-bridge-dask");
    let _cleanup = Cleanup(dir.clone());
    let fake = FakeKube::start().await;
    kubeconfig(&dir, &fake);
    let tokens = hub::sites::jwt::GatewayTokens::from_seed(&[7; 32])
        .unwrap()
        .with_issuer(ISSUER);
    let jwks = serve_json(tokens.jwks()).await;

    // The chart with its defaults, taking the hub's site JWTs (its JWKS; audience: the site id).
    let sets = [
        format!("jwt.jwksUrl={jwks}"),
        format!("jwt.issuer={ISSUER}"),
        "jwt.audience={central}".to_owned(),
        "jwt.algorithms={EdDSA}".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let docs = template_with("helm/bridge-site", NS, &[], &sets);
    let config = lay_out_bridge(&docs, &dir.join("etc-stackhub"));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("launcher = \"kubernetes\""), "{text}");
    let deployment = find(&docs, "Deployment")[0];
    let gateway_pod = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = find(&docs, "Service")[0];
    let service_url = format!(
        "http://{}.{NS}.svc:{}/api",
        service["metadata"]["name"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"]
    );
    // The Service reaches the gateway's pods on the port it serves Dask on.
    assert_eq!(service["spec"]["selector"], *gateway_pod);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let dask_image = find(&docs, "ConfigMap")[0]["data"]["kubernetes-launcher.json"]
        .as_str()
        .map(|t| serde_json::from_str::<Value>(t).unwrap()["images"]["python_dedl"].clone())
        .unwrap();

    let port = free_port();
    let mut gateway = start_gateway(&dir, &config, port).await;
    let roles = ["stack-dask-medium".to_owned()];
    let jwt = tokens.issue("alice", "central", &roles, 600).unwrap().token;
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/options"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(
        status,
        200,
        "the hub's site JWT: {body}\n{}",
        log_tail(&gateway.log)
    );
    let mut client = tokio::process::Command::new(dedl_python())
        .args(["-c", &dask_client_script(CLIENT)])
        .env("GATEWAY_ADDRESS", format!("http://127.0.0.1:{port}"))
        .env("GATEWAY_AUTHORIZATION", format!("Bearer {jwt}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(client.stdout.take().unwrap()));
    let mut next = async |event: &str| -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {event} from the client; gateway log:\n{}",
                    log_tail(&gateway.log)
                )
            })
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "the client exited before {event}; gateway log:\n{}",
                    log_tail(&gateway.log)
                )
            });
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], event, "{v}");
        v
    };
    let submitted = next("submitted").await;
    // The chart's quota roles: stack-dask-medium's largest worker.
    assert_eq!(
        submitted["limits"],
        json!({"worker_cores": 4, "worker_memory": 8.0})
    );
    let name = submitted["name"].as_str().unwrap().to_owned();
    assert_eq!(submitted["listed"], json!([[name, "PENDING"]]));

    // What the gateway made for the cluster in the kernel namespace.
    let object = format!("dask-{name}");
    let sched = fake
        .wait_for("pods", NS, &format!("dask-scheduler-{name}"))
        .await;
    let policy = fake
        .get("networkpolicies", NS, &object)
        .expect("the cluster's NetworkPolicy");
    let secret = fake
        .get("secrets", NS, &object)
        .expect("the cluster's Secret");
    let container = &sched["spec"]["containers"][0];
    assert_eq!(
        container["image"], dask_image,
        "the python_dedl kernel image"
    );
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(env("DASK_GATEWAY_API_URL"), Some(json!(service_url)));
    // Dashboards through the hub: the scheduler serves them under the hub's path for the site.
    let command = container["command"].as_array().unwrap();
    let i = command
        .iter()
        .position(|a| a == "--dashboard-prefix")
        .unwrap();
    assert_eq!(command[i + 1], format!("/hub/dask/central/clusters/{name}"));
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "1000m", "memory": (2u64 << 30).to_string()}),
        "dask.scheduler"
    );
    assert_eq!(
        sched["metadata"]["labels"]["eodc.dask/group"],
        "stack-dask-medium"
    );
    assert_eq!(
        secret["metadata"]["labels"]["stackhub.io/dask-cluster"],
        name
    );
    // The policy selects the cluster's pods and admits the chart's gateway pods (in the
    // release namespace) and the cluster's own; nothing else.
    let spec = &policy["spec"];
    let selected = labels(&spec["podSelector"]);
    for (k, v) in selected.as_object().unwrap() {
        assert_eq!(
            sched["metadata"]["labels"][k], *v,
            "the scheduler pod is selected"
        );
    }
    assert_eq!(selected["stackhub.io/dask-cluster"], name.as_str());
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2, "{spec}");
    assert_eq!(labels(&ingress[0]["from"][0]["podSelector"]), selected);
    let gateway_peer = &ingress[1]["from"][0];
    assert_eq!(labels(&gateway_peer["podSelector"]), *gateway_pod);
    assert_eq!(
        labels(&gateway_peer["namespaceSelector"]),
        json!({"kubernetes.io/metadata.name": NS})
    );
    let ports: Vec<&Value> = ingress[1]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [&json!(8786), &json!(8787), &json!(8788)]);
    // The chart's own Dask policy: the same gateway peer for every Dask pod of this gateway.
    let chart_policy = find(&docs, "NetworkPolicy")
        .into_iter()
        .find(|p| p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "dask")
        .expect("the chart's Dask NetworkPolicy");
    for (k, v) in labels(&chart_policy["spec"]["podSelector"])
        .as_object()
        .unwrap()
    {
        assert_eq!(
            sched["metadata"]["labels"][k], *v,
            "the chart's policy selects Dask pods"
        );
    }
    assert_eq!(chart_policy["spec"]["ingress"][0]["from"][0], *gateway_peer);
    // The Role grants each call the launcher made.
    let rules = find(&docs, "Role")[0]["rules"].as_array().unwrap().clone();
    let allowed = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"].as_array().unwrap().contains(&json!(group))
                && r["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(resource))
                && r["verbs"].as_array().unwrap().contains(&json!(verb))
        })
    };
    for (group, resource) in [
        ("", "pods"),
        ("", "secrets"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        assert!(allowed(group, resource, "create"), "create {resource}");
    }

    // The stock client stops the cluster: its pod, Secret and policy go.
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"\n")
        .await
        .unwrap();
    next("stopped").await;
    wait_for("the cluster's objects removed", 15, || async {
        (fake
            .get("pods", NS, &format!("dask-scheduler-{name}"))
            .is_none()
            && fake.get("secrets", NS, &object).is_none()
            && fake.get("networkpolicies", NS, &object).is_none())
        .then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/clusters/{name}"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "STOPPED");
    // Every other call the launcher made is granted too.
    for r in fake.requests() {
        let (verb, path) = r.split_once(' ').unwrap();
        let path = path.split('?').next().unwrap();
        let (group, rest) = match path.strip_prefix("/apis/") {
            Some(p) => {
                let mut it = p.splitn(3, '/');
                (
                    it.next().unwrap().to_owned(),
                    it.nth(1).unwrap_or_default().to_owned(),
                )
            }
            None => (
                String::new(),
                path.trim_start_matches("/api/v1/").to_owned(),
            ),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.first() != Some(&"namespaces") || parts.len() < 3 {
            continue;
        }
        let verb = match (verb, parts.len()) {
            ("POST", _) => "create",
            ("DELETE", _) => "delete",
            ("GET", 3) if r.contains("watch=") => "watch",
            ("GET", 3) => "list",
            _ => "get",
        };
        assert!(
            allowed(&group, parts[2], verb),
            "the Role does not grant {r}"
        );
    }
    let status = client.wait().await.unwrap();
    assert!(status.success(), "the client failed");
    gateway.stop(std::time::Duration::from_secs(5));
}
