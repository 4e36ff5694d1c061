//! Dask at the sites through the hub, on real components: real `stackhub-gateway` processes as
//! Central and LUMI serving Dask beside their kernels, and LEONARDO with Dask turned off; the hub
//! lists each site's Dask Gateway with its health (`GET /hub/api/sites`, the public
//! `bridges.json`); a full JupyterLab (stock `jupyterhub-singleuser`) gets the stock client's
//! settings (`DASK_GATEWAY__*`), and a notebook kernel ("Python DEDL": distributed 2026.8,
//! `dask_gateway` 2026.3.0) starts a cluster at Central and one at LUMI through
//! `stackhub_dask` (the user's site tokens from the hub), computes on each and writes the result
//! to the user's S3 space at that site.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use hub_common::{Hub, free_ports, progress_of, scratch_dir, user_with_token};
use remote_common::{Gateway, run, site_health, site_token, start_server, stop_server, wait_site};
use serde_json::{Value, json};

fn hub_config(central: &str, lumi: &str, leonardo: &str) -> String {
    let mut out =
        String::from("[s3]\nhealth_interval_secs = 1\n\n[spawner]\nstart_timeout = 90\n\n");
    for (site, name, url) in [
        ("central", "Central Site", central),
        ("lumi", "LUMI Bridge", lumi),
        ("leonardo", "LEONARDO Bridge", leonardo),
    ] {
        out.push_str(&format!(
            "[[sites]]\nid = \"{site}\"\nname = \"{name}\"\ngateway_url = \"{url}\"\n\
             gateway_auth = \"hub-jwt\"\ns3 = {{ mode = \"embedded\" }}\n\n\
             [[profile_list]]\ndisplay_name = \"Remote Compute Kernels - {name}\"\n\
             slug = \"remote-{site}\"\nkind = \"remote-kernels\"\nsite = \"{site}\"\n\n"
        ));
    }
    out.push_str(
        "[[profile_list]]\ndisplay_name = \"JupyterLab\"\nslug = \"jupyterlab\"\ndefault = true\n",
    );
    out
}

/// What the notebook runs: a cluster at each site, a computation, the result in S3 there.
const NOTEBOOK: &str = r#"
import json, os
import stackhub_dask
from dask_gateway import Gateway

env = {k: v for k, v in os.environ.items() if k.startswith("DASK_GATEWAY__")}
# The stock client, configured by the hub alone: this server's site is Central.
listed = [c.name for c in Gateway().list_clusters()]
results = {}
for site in ["central", "lumi"]:
    gw = stackhub_dask.gateway(site)
    cluster = gw.new_cluster()
    cluster.scale(1)
    client = cluster.get_client()
    client.wait_for_workers(1, timeout=90)
    total = client.submit(lambda n: sum(i * i for i in range(n)), 1000).result()
    worker = next(iter(client.scheduler_info()["workers"].values()))["host"]
    fs, space = stackhub_dask.s3(site)
    fs.pipe(space + "dask-result.json", json.dumps({"site": site, "total": total}).encode())
    results[site] = {"stored": json.loads(fs.cat(space + "dask-result.json")), "worker": worker,
                     "cluster": cluster.name, "dashboard": cluster.dashboard_link}
    client.close()
    cluster.shutdown()
print("RESULT " + json.dumps({"env": env, "listed": listed, "results": results}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_runs_dask_clusters_at_two_sites_and_stores_results_at_each() {
    let (dir, _cleanup) = scratch_dir("dask-sites");
    let [port, hub_port, central_port, lumi_port, leo_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let central = Gateway::start(&dir, "central", central_port, &base);
    let lumi = Gateway::start(&dir, "lumi", lumi_port, &base);
    let leonardo = Gateway::start_site(
        &dir,
        "leonardo",
        leo_port,
        &base,
        "",
        "[dask]\nenabled = false\n",
    );
    for g in [&central, &lumi, &leonardo] {
        g.wait_ready().await;
    }
    std::fs::write(
        dir.join("hub.toml"),
        hub_config(&central.url, &lumi.url, &leonardo.url),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let _hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let api = reqwest::Client::new();
    let token = user_with_token(&api, &base, "alice", "dask sites").await;
    for site in ["central", "lumi", "leonardo"] {
        wait_site(&api, &base, site, true).await;
    }

    // Each site's Dask Gateway is its gateway's own address; LEONARDO's does not answer as one:
    // its kernels are still offered, its Dask is not.
    let s = site_health(&api, &base, "lumi").await;
    assert_eq!(
        s["dask"],
        json!({"address": lumi.url, "proxy_address": format!("gateway://127.0.0.1:{lumi_port}"),
               "available": true, "reason": null}),
        "{s}"
    );
    let s = site_health(&api, &base, "leonardo").await;
    assert_eq!(s["available"], true, "{s}");
    assert_eq!(s["dask"]["available"], false, "{s}");
    assert!(
        s["dask"]["reason"].as_str().unwrap().contains("HTTP 404"),
        "{s}"
    );
    // What the Data Lake's client loads (no credentials needed): the sites whose Dask answers.
    let bridges: Value = api
        .get(format!("{base}/hub/api/sites/bridges.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&String> = bridges.as_object().unwrap().keys().collect();
    listed.sort();
    assert_eq!(listed, ["central", "lumi"], "{bridges}");
    assert_eq!(bridges["central"]["address"], central.url.as_str());

    // Alice's full JupyterLab: its S3 site, and so its Dask site, is Central.
    let r = start_server(&api, &base, "alice", "jupyterlab").await;
    assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.status());
    let events = progress_of(&api, &base, "alice").await;
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
    let kernel: Value = api
        .post(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python_dedl"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kernel = kernel["id"].as_str().unwrap().to_owned();
    let auth = format!("token {token}");
    let out = run(
        &base,
        "alice",
        &kernel,
        &[("authorization", auth.as_str())],
        NOTEBOOK,
    )
    .await;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result from the notebook: {out}"));
    let got: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        got["env"],
        json!({
            "DASK_GATEWAY__ADDRESS": central.url,
            "DASK_GATEWAY__PROXY_ADDRESS": format!("gateway://127.0.0.1:{central_port}"),
            "DASK_GATEWAY__PUBLIC_ADDRESS": central.url,
            "DASK_GATEWAY__AUTH__TYPE": "stackhub_dask.SiteAuth",
        }),
        "{got}"
    );
    assert_eq!(got["listed"], json!([]), "{got}");
    let expected: i64 = (0..1000i64).map(|i| i * i).sum();
    for site in ["central", "lumi"] {
        let r = &got["results"][site];
        assert_eq!(
            r["stored"],
            json!({"site": site, "total": expected}),
            "{got}"
        );
        let gw = if site == "central" { &central } else { &lumi };
        assert!(
            r["dashboard"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/clusters/", gw.url)),
            "{got}"
        );
    }
    assert_ne!(
        got["results"]["central"]["cluster"], got["results"]["lumi"]["cluster"],
        "{got}"
    );
    // The clusters were shut down at their sites: nothing of alice's is left at either.
    for (site, gw) in [("central", &central), ("lumi", &lumi)] {
        let t = site_token(&api, &base, site, &token).await;
        let clusters: Value = api
            .get(format!(
                "{}/api/v1/clusters/?status=running,pending",
                gw.url
            ))
            .header(
                "Authorization",
                format!("Bearer {}", t["token"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(clusters, json!({}), "{site}: {clusters}");
    }
    stop_server(&api, &base, "alice").await;
}
