//! Dask at the sites through the hub, on real components: real `stackhub-gateway` processes as
//! Central and LUMI serving Dask beside their kernels, and LEONARDO with Dask turned off; the hub
//! lists each site's Dask Gateway with its health (`GET /hub/api/sites`, the public
//! `bridges.json`); a full JupyterLab (stock `jupyterhub-singleuser`) gets the stock client's
//! settings (`DASK_GATEWAY__*`), and a notebook kernel ("Python DEDL": distributed 2026.8,
//! `dask_gateway` 2026.3.0) starts a cluster at Central and one at LUMI through
//! `stackhub_dask` (the user's site tokens from the hub), computes on each and writes the result
//! to the user's S3 space at that site. Central's dashboards are published through the hub
//! (`/hub/dask/central/...`, the gateway's `[dask] dashboard_prefix`): the owner's browser
//! session reads the page, its assets and the bokeh WebSocket there; another user, no session,
//! a page of another origin and paths that try to leave the cluster are refused. LUMI's are
//! configured to be opened at the gateway itself (`dask_public_address`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use hub_common::{Hub, free_ports, progress_of, scratch_dir, user_with_token};
use remote_common::{Gateway, run, site_health, site_token, start_server, stop_server, wait_site};
use serde_json::{Value, json};

fn hub_config(base: &str, central: &str, lumi: &str, leonardo: &str) -> String {
    let mut out = format!(
        "public_url = \"{base}/\"\ngateway_token_issuer = \"stackhub\"\n\n[s3]\nhealth_interval_secs = 1\n\n\
         [spawner]\nstart_timeout = 90\n\n"
    );
    for (site, name, url) in [
        ("central", "Central Site", central),
        ("lumi", "LUMI Bridge", lumi),
        ("leonardo", "LEONARDO Bridge", leonardo),
    ] {
        // LUMI's dashboards are opened at its gateway, not through the hub.
        let public = if site == "lumi" {
            format!("dask_public_address = \"{url}\"\n")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "[[sites]]\nid = \"{site}\"\nname = \"{name}\"\ngateway_url = \"{url}\"\n{public}\
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
    if site == "central":
        kept = cluster  # its dashboard is read through the hub next
    else:
        cluster.shutdown()
print("RESULT " + json.dumps({"env": env, "listed": listed, "results": results}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_runs_dask_clusters_at_two_sites_and_stores_results_at_each() {
    let (dir, _cleanup) = scratch_dir("dask-sites");
    let [port, hub_port, central_port, lumi_port, leo_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let central = Gateway::start_site(
        &dir,
        "central",
        central_port,
        &base,
        "",
        "[dask]\ndashboard_prefix = \"/hub/dask/central\"\n",
    );
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
        hub_config(&base, &central.url, &lumi.url, &leonardo.url),
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
               "public_address": lumi.url, "available": true, "reason": null}),
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
            "DASK_GATEWAY__PUBLIC_ADDRESS": base,
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
        let public = if site == "central" {
            format!("{base}/hub/dask/central")
        } else {
            lumi.url.clone()
        };
        assert_eq!(
            r["dashboard"].as_str().unwrap(),
            format!(
                "{public}/clusters/{}/status",
                r["cluster"].as_str().unwrap()
            ),
            "{got}"
        );
    }
    assert_ne!(
        got["results"]["central"]["cluster"], got["results"]["lumi"]["cluster"],
        "{got}"
    );
    let kept = got["results"]["central"]["cluster"].as_str().unwrap();
    dashboards_through_the_hub(&base, kept).await;
    let out = run(
        &base,
        "alice",
        &kernel,
        &[("authorization", auth.as_str())],
        "kept.shutdown()\nprint('SHUT')",
    )
    .await;
    assert!(out.contains("SHUT"), "{out}");

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

/// A browser session's cookie header for `user` (development password).
async fn session_cookie(base: &str, user: &str) -> String {
    let api = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = api
        .post(format!("{base}/hub/login"))
        .form(&[("username", user), ("password", hub_common::PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{user}'s login");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    assert!(!cookies.is_empty(), "{user}'s login set no cookie");
    cookies.join("; ")
}

/// Opens `path`'s bokeh WebSocket through the hub with `headers`: the first message's text,
/// or the status the upgrade was answered with.
async fn bokeh_ws(
    base: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<String, u16> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    stackhub_e2e::support::bokeh_ws(&url, token, headers).await
}

/// Central's dashboard of alice's running cluster `name`, through the hub: hers to read with
/// her browser session, no one else's.
async fn dashboards_through_the_hub(base: &str, name: &str) {
    let api = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let alice = session_cookie(base, "alice").await;
    let bob = session_cookie(base, "bob").await;
    let root = format!("/hub/dask/central/clusters/{name}");
    let get = |path: String, cookie: Option<&str>| {
        let mut r = api.get(format!("{base}{path}"));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let r = get(format!("{root}/status"), Some(&alice)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    assert!(r.headers().get("set-cookie").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("Dask Diagnostic UI"), "{page}");
    // Bokeh's absolute links stay under the hub's path.
    let at = page
        .find("/static/js/bokeh.min.js")
        .expect("no bokeh script");
    let begin = page[..at].rfind('"').unwrap() + 1;
    let script = &page[begin..at + "/static/js/bokeh.min.js".len()];
    assert!(script.starts_with(&format!("{root}/static/")), "{script}");
    let r = get(script.to_owned(), Some(&alice)).await.unwrap();
    assert_eq!(r.status(), 200, "{script}");
    assert!(r.bytes().await.unwrap().len() > 100_000);
    let token_at = page.find(r#""token":""#).expect("no bokeh session token") + 9;
    let token = &page[token_at..][..page[token_at..].find('"').unwrap()];
    let ws = format!("{root}/status/ws");
    let ack = bokeh_ws(base, &ws, token, &[("cookie", &alice), ("origin", base)])
        .await
        .unwrap();
    assert!(ack.contains("ACK"), "{ack}");

    // Another user's session: the cluster is not there for them.
    let r = get(format!("{root}/status"), Some(&bob)).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        bokeh_ws(base, &ws, token, &[("cookie", &bob), ("origin", base)]).await,
        Err(404)
    );
    // No session: the login page (a page), 401 (a WebSocket).
    let r = get(format!("{root}/status"), None).await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/hub/login"),
        "{:?}",
        r.headers()
    );
    assert_eq!(
        bokeh_ws(base, &ws, token, &[("origin", base)]).await,
        Err(401)
    );
    // A page elsewhere riding alice's cookie into her dashboard's WebSocket.
    assert_eq!(
        bokeh_ws(
            base,
            &ws,
            token,
            &[("cookie", &alice), ("origin", "http://evil.example")]
        )
        .await,
        Err(403)
    );
    // Paths that would leave the cluster for the gateway's API (where alice's credential
    // would list her clusters) or another place: refused (400), or resolved by the proxy in
    // front to a path the hub does not serve (404); never forwarded.
    for trick in [
        format!("{root}/%2e%2e/%2e%2e/api/v1/clusters/"),
        format!("{root}/%252e%252e/%252e%252e/api/v1/clusters/"),
        format!("{root}/..%2f..%2fapi%2fv1%2fclusters%2f"),
        format!("/hub/dask/central/clusters/{name}%2f..%2f..%2fapi/v1/clusters/"),
    ] {
        let r = get(trick.clone(), Some(&alice)).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            matches!(status, 400 | 404) && !body.contains("dashboard_route"),
            "{trick}: {status} {body}"
        );
    }
    let r = api
        .post(format!("{base}{root}/status"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = get(
        format!("/hub/dask/nowhere/clusters/{name}/status"),
        Some(&alice),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
}
