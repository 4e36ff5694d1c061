//! Dask clusters at a site, end to end: a real `stackhub-gateway` router and listener, the stock
//! `dask_gateway` 2026.3.0 client of the DEDL environment in a Python subprocess, real
//! `dask scheduler` / `dask worker` processes (distributed 2026.8) with the dask-gateway
//! preload, the scheduler proxy on the gateway's own port, and the hub's kind of credential (a
//! per-user JWT checked against a real JWKS endpoint).
// Helpers outside `#[test]` fns panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::{ALICE, Gateway};
use dask_support::{
    Signer, bearer, call, client_hello, dask_config, dedl_python, gateway_logs, next_event,
    processes_under, running_cluster, stock_client, temp_root, wait_status,
};
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The stock client's session: options, new cluster, scale, get_client through the proxy, a
/// computation, (pause for the test's checks), adapt, shutdown.
const CLIENT_SCRIPT: &str = r#"
gw = gateway()
opts = gw.cluster_options()
assert sorted(opts) == ["worker_cores", "worker_memory"], dict(opts)
opts.worker_memory = 1.0
cluster = gw.new_cluster(opts)
say(event="created", name=cluster.name, dashboard=cluster.dashboard_link)
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=60)
futures = client.map(lambda x: x * x, range(100))
total = client.submit(sum, futures).result()
say(event="computed", total=total, workers=len(client.scheduler_info()["workers"]),
    listed=[c.name for c in gw.list_clusters()])
sys.stdin.readline()
cluster.adapt(minimum=1, maximum=2)
deadline = time.time() + 30
while len(client.scheduler_info()["workers"]) != 1 and time.time() < deadline:
    time.sleep(0.5)
say(event="adapted", workers=len(client.scheduler_info()["workers"]))
client.close()
cluster.shutdown()
say(event="stopped")
gw.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_client_runs_a_real_cluster_through_the_gateway() {
    gateway_logs();
    let signer = Signer::start().await;
    let root = temp_root();
    let gw = Gateway::start(dask_config(&root, Some(&signer.jwks_url))).await;
    let alice = signer.token("alice", 600);
    let bob = signer.token("bob", 600);

    // The 401-first handshake, then a session cookie bound to the caller.
    let (s, _, v) = call(&gw, Method::GET, "/api/version", None, None, None).await;
    assert_eq!((s, v["version"].is_string()), (StatusCode::OK, true), "{v}");
    let (s, h, v) = call(&gw, Method::GET, "/api/v1/clusters/", None, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        h.contains_key("www-authenticate") && v["error"].is_string(),
        "{v}"
    );
    let (s, h, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some(&bearer(&alice)),
        None,
        None,
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    let set_cookie = h["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with("dask-gateway-") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let alice_cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (s, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/options",
        None,
        Some(&alice_cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["cluster_options"][0]["spec"],
        json!({"type": "int", "min": 1, "max": 2})
    );

    // Bad input: clear errors, nothing created.
    let expired = signer.token("alice", -600);
    let (s, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some(&bearer(&expired)),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let post = |body: &'static str| {
        let auth = bearer(&alice);
        let gw = &gw;
        async move {
            call(
                gw,
                Method::POST,
                "/api/v1/clusters/",
                Some(&auth),
                None,
                Some(body),
            )
            .await
        }
    };
    let (s, _, v) = post("{\"cluster_options\": ").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"].as_str().unwrap().contains("malformed JSON"),
        "{v}"
    );
    let (s, _, v) = post(r#"{"cluster_options": {"worker_gpus": 1}}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("worker_gpus"), "{v}");
    let (s, _, v) = post(r#"{"cluster_options": {"worker_cores": 64}}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"].as_str().unwrap().contains("max_worker_cores"),
        "{v}"
    );
    let (s, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/nosuchcluster",
        Some(&bearer(&alice)),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().unwrap().contains("nosuchcluster"),
        "{v}"
    );
    let (_, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some(&bearer(&alice)),
        None,
        None,
    )
    .await;
    assert_eq!(v, json!({}), "a refused request created a cluster");

    // An unknown SNI name on the gateway's port is closed, not routed anywhere.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&client_hello("daskgateway-0000nosuchcluster"))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "an unknown cluster's connection got an answer");

    // The stock client.
    let mut child = stock_client(&dedl_python(), CLIENT_SCRIPT, gw.addr, &bearer(&alice));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let created = next_event(&mut lines, "created").await;
    let name = created["name"].as_str().unwrap().to_owned();
    assert!(
        created["dashboard"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/clusters/{name}/status"))
    );
    let computed = next_event(&mut lines, "computed").await;
    assert_eq!(
        computed["total"],
        json!((0..100).map(|x| x * x).sum::<i64>()),
        "{computed}"
    );
    assert_eq!(computed["workers"], json!(2), "{computed}");
    assert_eq!(computed["listed"], json!([name]), "{computed}");

    // Another user sees nothing of alice's cluster, and every operation on it is 404.
    let b = bearer(&bob);
    let (s, _, v) = call(&gw, Method::GET, "/api/v1/clusters/", Some(&b), None, None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    let path = format!("/api/v1/clusters/{name}");
    for (method, p, body) in [
        (Method::GET, path.clone(), None),
        (Method::GET, format!("{path}?wait"), None),
        (
            Method::POST,
            format!("{path}/scale"),
            Some(r#"{"count": 0}"#),
        ),
        (
            Method::POST,
            format!("{path}/adapt"),
            Some(r#"{"minimum": 0, "maximum": 0}"#),
        ),
        (Method::DELETE, path.clone(), None),
    ] {
        let (s, _, v) = call(&gw, method.clone(), &p, Some(&b), None, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {p}: {v}");
    }
    // Bob's own cluster: its token (a 0600 file, never in argv) is no key to alice's cluster.
    let (s, _, v) = call(
        &gw,
        Method::POST,
        "/api/v1/clusters/",
        Some(&b),
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let bob_cluster = v["name"].as_str().unwrap().to_owned();
    let token_file = root.join(&bob_cluster).join("api-token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !token_file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for f in ["api-token", "dask.pem"] {
        let mode = std::fs::metadata(root.join(&bob_cluster).join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let bob_token = std::fs::read_to_string(&token_file).unwrap();
    let heartbeat =
        json!({"scheduler_address": "tls://127.0.0.1:1", "api_address": "http://127.0.0.1:1",
        "count": 3, "active_workers": [], "closing_workers": [], "closed_workers": []})
        .to_string();
    let (s, _, v) = call(
        &gw,
        Method::POST,
        &format!("{path}/heartbeat"),
        Some(&format!("token {bob_token}")),
        None,
        Some(&heartbeat),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _, _) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some(&format!("token {bob_token}")),
        None,
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a cluster token is no user credential"
    );
    let (s, _, _) = call(
        &gw,
        Method::POST,
        &format!("{path}/heartbeat"),
        Some(&b),
        None,
        Some(&heartbeat),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a user may not heartbeat");
    // Alice can read her own cluster's token (on her scheduler); with it she may not point the
    // gateway's scheduler proxy or its calls elsewhere.
    let alice_token = std::fs::read_to_string(root.join(&name).join("api-token")).unwrap();
    let (s, _, v) = call(
        &gw,
        Method::POST,
        &format!("{path}/heartbeat"),
        Some(&format!("token {}", alice_token.trim())),
        None,
        Some(&heartbeat),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a heartbeat moved the scheduler: {v}"
    );
    // Alice's cluster is untouched, with its own TLS credentials.
    let model = wait_status(&gw, &bearer(&alice), &name, 0, |_| true).await;
    assert_eq!(model["status"], "RUNNING", "{model}");
    assert!(model["tls_key"].as_str().unwrap().contains("PRIVATE KEY"));
    // No secret in any cluster process's argv or environment.
    let key = model["tls_key"].as_str().unwrap();
    let key_line = key.lines().nth(1).unwrap();
    let pids = processes_under(&root);
    assert!(pids.len() >= 3, "scheduler, 2 workers: {pids:?}");
    for pid in &pids {
        for what in ["cmdline", "environ"] {
            let text = String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default(),
            )
            .into_owned();
            assert!(
                !text.contains(bob_token.trim()) && !text.contains(key_line),
                "secret in /proc/{pid}/{what}"
            );
        }
    }

    // Adapt, then shutdown from the client.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let adapted = next_event(&mut lines, "adapted").await;
    assert_eq!(adapted["workers"], json!(1), "{adapted}");
    next_event(&mut lines, "stopped").await;
    assert!(child.wait().await.unwrap().success());
    let model = wait_status(&gw, &bearer(&alice), &name, 15, |s| s == "STOPPED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    assert!(model["stop_time"].as_i64().unwrap() >= model["start_time"].as_i64().unwrap());
    assert!(
        model["tls_key"].is_null(),
        "credentials of a stopped cluster are not served"
    );
    assert!(
        !root.join(&name).exists(),
        "a stopped cluster's files are removed"
    );

    // Gateway shutdown stops bob's cluster: no process of any cluster is left.
    gw.stop().await;
    let left = processes_under(&root);
    assert!(
        left.is_empty(),
        "cluster processes outlived the gateway: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cluster_stops_by_itself() {
    gateway_logs();
    let root = temp_root();
    let mut config = dask_config(&root, None);
    config.dask.idle_timeout = 2;
    let gw = Gateway::start(config).await;
    let auth = format!("token {ALICE}");
    let name = running_cluster(&gw, &auth).await;
    let (s, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/?status=running",
        Some(&auth),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get(&name).is_some(), "{v}");
    let (s, _, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/?status=bogus",
        Some(&auth),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Idle for 2 s: the scheduler's preload stops it with its cluster token.
    let model = wait_status(&gw, &auth, &name, 30, |s| s == "STOPPED" || s == "FAILED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    assert!(processes_under(&root).is_empty());
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}

/// Processes of this test's warm schedulers: their command line is `python -c <program>` of
/// the local launcher, which names `warm_schedulers`, and they run as this gateway's
/// (`root` is in their environment through nothing else: their log is under it).
fn warm_schedulers(root: &std::path::Path) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let fd_log =
                std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|p| p.starts_with(root));
            String::from_utf8_lossy(&cmdline).contains("warm_schedulers") && fd_log
        })
        .collect()
}

/// A cluster takes the scheduler started ahead of it: the very process that was waiting
/// becomes the cluster's scheduler (its log and directory the cluster's), runs it, and
/// another one takes its place; stopping the gateway leaves none behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_scheduler_becomes_the_next_cluster() {
    gateway_logs();
    let root = temp_root();
    let mut config = dask_config(&root, None);
    config.dask.warm_schedulers = 1;
    let gw = Gateway::start(config).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let warm = loop {
        if let [pid] = warm_schedulers(&root)[..] {
            break pid;
        }
        assert!(Instant::now() < deadline, "no warm scheduler started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let auth = format!("token {ALICE}");
    let name = running_cluster(&gw, &auth).await;
    let cluster_dir = root.join(&name);
    let schedulers: Vec<i64> = processes_under(&root)
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == cluster_dir)
        })
        .collect();
    assert_eq!(
        schedulers,
        [warm],
        "the warm process is the cluster's scheduler"
    );
    let log = std::fs::read_to_string(cluster_dir.join("scheduler.log")).unwrap();
    assert!(log.contains("Scheduler at"), "{log}");
    let others: Vec<i64> = warm_schedulers(&root)
        .into_iter()
        .filter(|p| *p != warm)
        .collect();
    assert_eq!(
        others.len(),
        1,
        "a new warm scheduler takes its place: {others:?}"
    );
    let (s, _, _) = call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/clusters/{name}"),
        Some(&auth),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let model = wait_status(&gw, &auth, &name, 20, |s| s == "STOPPED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    gw.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(warm_schedulers(&root).is_empty() && processes_under(&root).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            warm_schedulers(&root)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
