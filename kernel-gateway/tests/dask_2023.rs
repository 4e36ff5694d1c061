//! The client the Data Lake pins, end to end: the stock `dask_gateway` 2023.1.1 client with
//! distributed 2023.8.0 (scripts/requirements-dask2023.txt, `STACKHUB_DASK2023_VENV`) against a
//! real `stackhub-gateway` router and listener whose clusters run that environment's
//! `dask scheduler` / `dask worker` with the 2023.1.1 scheduler preload (heartbeats, adaptive
//! scaling, the idle timeout) and bokeh 3.2 dashboard; the hub's kind of credential (a per-user
//! JWT checked against a real JWKS endpoint). `dask.rs` does the same with 2026.3.0.
// Helpers outside `#[test]` fns panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use common::Gateway;
use dask_support::{
    Signer, bearer, bokeh_script, bokeh_ws, dask_config_with, dask2023_python, gateway_logs, get,
    next_event, processes_under, session_token, stock_client, temp_root, wait_status,
};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Where the hub publishes the site's dashboards (`[dask] dashboard_prefix`).
const PREFIX: &str = "/hub/dask/lumi";

/// The 2023.1.1 client's session: bad options refused, the options form, a new cluster with
/// options, list, scale, get_client through the gateway's scheduler proxy, a computation,
/// (pause for the test's dashboard checks), adapt, shutdown.
const CLIENT_SCRIPT: &str = r#"
import dask_gateway, distributed

gw = gateway()
# `submit` sends new_cluster's request (new_cluster itself, failing, leaves a Gateway whose
# `__del__` can deadlock the client's event loop thread: a client bug).
refused = {}
for bad in ({"worker_gpus": 1}, {"worker_cores": 64}):
    try:
        gw.submit(**bad)
    except ValueError as e:
        refused[next(iter(bad))] = str(e)
opts = gw.cluster_options()
fields = {k: [f.__class__.__name__, f.min, f.max] for k, f in opts._fields.items()}
opts.worker_cores = 1
opts.worker_memory = 1.5
cluster = gw.new_cluster(opts)
listed = {c.name: c.options for c in gw.list_clusters()}
say(event="created", name=cluster.name, dashboard=cluster.dashboard_link, fields=fields,
    refused=refused, listed=listed, client=[dask_gateway.__version__, distributed.__version__])
cluster.scale(2)
client = cluster.get_client()
# (distributed 2023.8's Client.wait_for_workers calls GatewayCluster.wait_for_workers, which
# 2023.1.1 lacks.)
def workers(n):
    deadline = time.time() + 60
    while len(client.scheduler_info()["workers"]) != n and time.time() < deadline:
        time.sleep(0.2)
    return len(client.scheduler_info()["workers"])
assert workers(2) == 2
futures = client.map(lambda x: x * x, range(100))
total = client.submit(sum, futures).result()
info = client.scheduler_info()["workers"].values()
say(event="computed", total=total, nthreads=[w["nthreads"] for w in info],
    memory=[w["memory_limit"] for w in info],
    scheduler=client.get_versions()["scheduler"]["packages"]["distributed"])
sys.stdin.readline()
cluster.adapt(minimum=1, maximum=1)
say(event="adapted", workers=workers(1))
client.close()
cluster.shutdown()
say(event="stopped")
gw.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_lake_client_2023_runs_a_real_cluster() {
    gateway_logs();
    let python = dask2023_python();
    let signer = Signer::start().await;
    let root = temp_root();
    let mut config = dask_config_with(&root, Some(&signer.jwks_url), python.clone());
    config.dask.dashboard_prefix = PREFIX.into();
    let gw = Gateway::start(config).await;
    let alice = signer.token("alice", 600);
    let bob = bearer(&signer.token("bob", 600));

    let mut child = stock_client(&python, CLIENT_SCRIPT, gw.addr, &bearer(&alice));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let created = next_event(&mut lines, "created").await;
    assert_eq!(created["client"], json!(["2023.1.1", "2023.8.0"]));
    // Refused before anything was created, with the gateway's message naming the option.
    let refused = &created["refused"];
    assert!(
        refused["worker_gpus"]
            .as_str()
            .is_some_and(|m| m.contains("worker_gpus")),
        "{created}"
    );
    assert!(
        refused["worker_cores"]
            .as_str()
            .is_some_and(|m| m.contains("max_worker_cores")),
        "{created}"
    );
    assert_eq!(
        created["fields"],
        json!({"worker_cores": ["Integer", 1, 2], "worker_memory": ["Float", 0.25, 2.0]}),
        "the options form as the 2023 client reads it"
    );
    let name = created["name"].as_str().unwrap().to_owned();
    assert_eq!(
        created["listed"],
        json!({&name: {"worker_cores": 1, "worker_memory": 1.5}}),
        "only the cluster made with good options: {created}"
    );
    let status_path = format!("{PREFIX}/clusters/{name}/status");
    assert!(
        created["dashboard"]
            .as_str()
            .unwrap()
            .ends_with(&status_path),
        "{created}"
    );

    let computed = next_event(&mut lines, "computed").await;
    assert_eq!(
        computed["total"],
        json!((0..100).map(|x| x * x).sum::<i64>()),
        "{computed}"
    );
    assert_eq!(computed["nthreads"], json!([1, 1]), "{computed}");
    assert_eq!(
        computed["memory"],
        json!([1_610_612_736_u64, 1_610_612_736_u64]),
        "1.5 GiB per worker: {computed}"
    );
    assert_eq!(
        computed["scheduler"], "2023.8.0",
        "the cluster runs the gateway's [dask] python"
    );

    // The dashboard (bokeh 3.2 behind distributed 2023.8), published under the hub's prefix:
    // the owner's page, its bokeh script and WebSocket; another user is told nothing is there.
    let auth = bearer(&alice);
    let owner = [("authorization", auth.as_str())];
    let (s, _, body) = get(&gw, &status_path, &owner).await;
    let page = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("Bokeh.embed"), "{page}");
    let script = bokeh_script(&page);
    assert!(
        script.starts_with(&format!("{PREFIX}/clusters/{name}/static/")),
        "{script}"
    );
    let (s, _, js) = get(&gw, &script, &owner).await;
    assert_eq!(s, StatusCode::OK, "{script}");
    assert!(
        String::from_utf8_lossy(&js).contains(r#"version="3.2.2""#),
        "bokeh 3.2.2's script"
    );
    let token = session_token(&page);
    let ws_path = format!("{status_path}/ws");
    let ack = bokeh_ws(&gw, &ws_path, &token, &owner).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&ack).unwrap()["msgtype"],
        "ACK",
        "{ack}"
    );
    let other = [("authorization", bob.as_str())];
    for path in [&status_path, &script] {
        let (s, _, body) = get(&gw, path, &other).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(s, StatusCode::NOT_FOUND, "bob read alice's {path}");
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(
        bokeh_ws(&gw, &ws_path, &token, &other).await,
        Err(StatusCode::NOT_FOUND)
    );

    // Adapt down to one worker, then shutdown from the client.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let adapted = next_event(&mut lines, "adapted").await;
    assert_eq!(adapted["workers"], json!(1), "{adapted}");
    next_event(&mut lines, "stopped").await;
    assert!(child.wait().await.unwrap().success());
    let model = wait_status(&gw, &auth, &name, 15, |s| s == "STOPPED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    gw.stop().await;
    let left = processes_under(&root);
    assert!(left.is_empty(), "cluster processes left: {left:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A cluster nobody uses: the 2023.1.1 preload asks the gateway to stop it after the idle
/// timeout, with its cluster token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_lake_2023_idle_cluster_stops_by_itself() {
    gateway_logs();
    let python = dask2023_python();
    let signer = Signer::start().await;
    let root = temp_root();
    let mut config = dask_config_with(&root, Some(&signer.jwks_url), python.clone());
    config.dask.idle_timeout = 2;
    let gw = Gateway::start(config).await;
    let alice = signer.token("alice", 600);
    let script = r#"
gw = gateway()
cluster = gw.new_cluster(shutdown_on_close=False)
say(event="created", name=cluster.name)
"#;
    let mut child = stock_client(&python, script, gw.addr, &bearer(&alice));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let created = next_event(&mut lines, "created").await;
    assert!(child.wait().await.unwrap().success());
    let name = created["name"].as_str().unwrap();
    let auth = bearer(&alice);
    let model = wait_status(&gw, &auth, name, 30, |s| s == "STOPPED" || s == "FAILED").await;
    assert_eq!(model["status"], "STOPPED", "{model}");
    assert!(processes_under(&root).is_empty());
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}
