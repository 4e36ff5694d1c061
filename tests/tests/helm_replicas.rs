//! The hub chart's replicas (issue 23): with PostgreSQL (`database.existingSecret`) it runs two
//! hubs by default, rolled one at a time (a new one ready before an old one stops), kept by a
//! PodDisruptionBudget, spread over nodes when possible, each with no volume of its own and one
//! shared cookie secret; with SQLite one hub, replaced by stopping it first. More than one on
//! SQLite, or PostgreSQL without a cookie secret, is refused when rendering, saying why. Ready
//! is `/hub/ready`, alive `/hub/health`. Everything rendered passes `kubernetes-validate
//! --strict`.
//!
//! Tested as shipped: the chart rendered with PostgreSQL values runs as many real `stackhub`
//! processes as its Deployment says, each with exactly the rendered config and environment,
//! on the test PostgreSQL server; each answers its readiness probe, one leads, and what a
//! browser does on one (a login, then a token made through the token page's form with the
//! `_xsrf` of the other's page) works on the other.
//!
//! PostgreSQL: `STACKHUB_TEST_POSTGRES_URL` (`scripts/test` starts a server and sets it); helm
//! and kubernetes-validate: `ensure_k8s_tools`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helm_common;
mod helm_rendered;
mod hub_common;
mod k8s_common;

use std::time::{Duration, Instant};

use helm_common::{find, run_helm, template_with};
use helm_rendered::{Hub, Secrets, render};
use hub_common::{
    ADMIN_TOKEN, COOKIE_SECRET, free_ports, log_tail, logged_in_browser, postgres_database,
    scratch_dir, venv,
};
use k8s_fake::{FakeKube, kubernetes_validate};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Executor;

/// PostgreSQL and the cookie secret as an operator gives them: Secret references.
const POSTGRES: [&str; 3] = [
    "database.existingSecret=hub-db",
    "cookieSecret.existingSecret=hub-cookie",
    "adminToken.existingSecret=hub-admin",
];

fn template(sets: &[&str]) -> Vec<Value> {
    template_with("helm/stackhub", "hub", &[], sets)
}

/// `helm template` that must fail: its output.
fn refused(sets: &[&str]) -> String {
    let mut args = vec!["template", "rel", "helm/stackhub"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out) = run_helm(&args);
    assert!(!ok, "rendered {sets:?}");
    out
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment")[0]
}

fn selector(docs: &[Value]) -> Value {
    deployment(docs)["spec"]["selector"]["matchLabels"].clone()
}

fn with(sets: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    sets.iter().chain(more).copied().collect()
}

/// What replicas need: the count, PostgreSQL's rolling update, a PodDisruptionBudget over the
/// hub's pods, anti-affinity, no volume but an empty directory, one cookie secret.
fn check_replicas(docs: &[Value], n: u64) {
    let spec = &deployment(docs)["spec"];
    assert_eq!(spec["replicas"], n);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let pod = &spec["template"]["spec"];
    let data = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(
        data,
        &json!({"name": "data", "emptyDir": {}}),
        "no claim to share"
    );
    assert!(find(docs, "PersistentVolumeClaim").is_empty());
    // One Secret for every replica's cookie secret (and the database URL).
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let cookie: Vec<&Value> = env
        .iter()
        .filter(|e| e["name"] == "STACKHUB_COOKIE_SECRET")
        .collect();
    assert_eq!(
        cookie,
        [
            &json!({"name": "STACKHUB_COOKIE_SECRET", "valueFrom": {"secretKeyRef": {"name": "hub-cookie", "key": "cookie-secret"}}})
        ]
    );
    let pdbs = find(docs, "PodDisruptionBudget");
    if n > 1 {
        assert_eq!(pdbs.len(), 1);
        assert_eq!(pdbs[0]["apiVersion"], "policy/v1");
        assert_eq!(pdbs[0]["spec"]["minAvailable"], 1);
        assert_eq!(pdbs[0]["spec"]["selector"]["matchLabels"], selector(docs));
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            term["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(
            term["podAffinityTerm"]["labelSelector"]["matchLabels"],
            selector(docs)
        );
    } else {
        assert!(pdbs.is_empty());
        assert!(pod["affinity"].is_null(), "{}", pod["affinity"]);
    }
}

#[test]
fn replicas_follow_the_database() {
    let mut all = Vec::new();
    // PostgreSQL: 2 by default, else as many as asked.
    for (sets, n) in [
        (POSTGRES.to_vec(), 2),
        (with(&POSTGRES, &["replicas=3"]), 3),
        (with(&POSTGRES, &["replicas=1"]), 1),
    ] {
        let docs = template(&sets);
        check_replicas(&docs, n);
        all.extend(docs);
    }
    // SQLite: one hub, stopped before the next starts (its lock refuses a second), its
    // database on the claim.
    for sets in [&[][..], &["replicas=1"]] {
        let docs = template(sets);
        let spec = &deployment(&docs)["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"], json!({"type": "Recreate"}));
        assert!(find(&docs, "PodDisruptionBudget").is_empty());
        assert!(spec["template"]["spec"]["affinity"].is_null());
        assert_eq!(find(&docs, "PersistentVolumeClaim").len(), 1);
        let data = spec["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .unwrap()
            .clone();
        assert_eq!(data["persistentVolumeClaim"]["claimName"], "rel-stackhub");
        all.extend(docs);
    }
    // Probes: ready is /hub/ready (below the base URL), alive /hub/health, on the API port;
    // the readiness check may take its 2 s for the database.
    for (sets, base) in [
        (POSTGRES.to_vec(), "/"),
        (vec!["baseUrl=/jupyter/"], "/jupyter/"),
    ] {
        let docs = template(&sets);
        let c = &deployment(&docs)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            format!("{base}hub/ready")
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"],
            format!("{base}hub/health")
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "hub-api");
        }
        assert!(c["readinessProbe"]["timeoutSeconds"].as_u64().unwrap() > 2);
        // The Services select every replica.
        for s in find(&docs, "Service") {
            assert_eq!(s["spec"]["selector"], selector(&docs));
        }
    }
    // Refused, saying why and what to set.
    let out = refused(&["replicas=3"]);
    assert!(
        out.contains("replicas: 3 needs PostgreSQL")
            && out.contains("SQLite serves a single hub")
            && out.contains("database.existingSecret"),
        "{out}"
    );
    let out = refused(&["database.existingSecret=hub-db"]);
    assert!(
        out.contains("needs cookieSecret.existingSecret") && out.contains("same keys"),
        "{out}"
    );
    // The schema: a whole number of at least one.
    for bad in ["replicas=0", "replicas=two", "replicas=1.5"] {
        let out = refused(&with(&POSTGRES, &[bad]));
        assert!(out.contains("replicas"), "{bad}: {out}");
    }
    if let Err(report) = kubernetes_validate(&all) {
        panic!("the hub chart renders invalid manifests:\n{report}");
    }
}

/// A replica as the chart ships it, with the ports standing in for its pod.
struct Replica {
    hub: Hub,
    probes: String,
}

impl Replica {
    /// `GET` a probe path on the hub's API port, as the kubelet does: (status, body).
    async fn probe(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .hub
            .api
            .get(format!("{}{path}", self.probes))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_on_postgresql_runs_replicas_that_share_everything() {
    let (dir, _cleanup) = scratch_dir("helm-replicas");
    let (mut pg, db_name, db_url) = postgres_database(&dir).await;

    // The operator's values: the Secrets of PostgreSQL, the cookie secret and the admin token;
    // the idle culler from the venv's copy of the release the hub image installs.
    let values = format!(
        "database: {{existingSecret: hub-db}}\ncookieSecret: {{existingSecret: hub-cookie}}\n\
         adminToken: {{existingSecret: hub-admin}}\ncull: {{command: [{}]}}\n",
        venv().join("bin/jupyterhub-idle-culler").display()
    );
    let values_file = dir.join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let secrets = Secrets::from([
        (("hub-db".into(), "url".into()), db_url.to_string()),
        (
            ("hub-cookie".into(), "cookie-secret".into()),
            COOKIE_SECRET.into(),
        ),
        (("hub-admin".into(), "token".into()), ADMIN_TOKEN.into()),
    ]);
    let r = render(&dir, &[&values_file], &secrets);
    assert_eq!(r.replicas, 2, "PostgreSQL: two replicas by default");
    let fake = FakeKube::start().await;
    let mut replicas = Vec::new();
    for i in 0..r.replicas {
        // Each pod: its own ports and data directory (an empty directory on PostgreSQL).
        let pod_dir = dir.join(format!("replica-{i}"));
        std::fs::create_dir_all(&pod_dir).unwrap();
        let [port, hub_port] = free_ports::<2>();
        let hub = Hub::start(&pod_dir, &r, &fake, port, hub_port).await;
        replicas.push(Replica {
            hub,
            probes: format!("http://127.0.0.1:{hub_port}"),
        });
    }
    // Each is ready (the database answers, the feed is heard) and alive; exactly one leads.
    let (ready_path, live_path) = (&r.probes[0], &r.probes[1]);
    assert_eq!(ready_path, "/hub/ready");
    let start = Instant::now();
    loop {
        let mut leaders = 0;
        let mut all_ready = true;
        for rep in &replicas {
            let (status, body) = rep.probe(ready_path).await;
            if status != StatusCode::OK {
                all_ready = false;
                continue;
            }
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["database"], "ok", "{body}");
            assert_eq!(body["change_feed"], "listening", "{body}");
            leaders += u32::from(body["leader"] == true);
            assert_eq!(rep.probe(live_path).await.0, StatusCode::OK);
        }
        if all_ready && leaders == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not every replica ready with one leader ({leaders}) after 15 s; the logs:\n{}",
            replicas
                .iter()
                .map(|rep| log_tail(&rep.hub.proc.log))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} replicas ready, one leading, after {:?}",
        replicas.len(),
        start.elapsed()
    );

    // A browser logs in on the first; the second honours the login and the first page's
    // `_xsrf` (one cookie secret), and makes a token the first accepts.
    let (a, b) = (&replicas[0].hub, &replicas[1].hub);
    let s = a
        .admin(Method::POST, "/hub/api/users/alice")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::CREATED);
    let browser = logged_in_browser(&a.base, "alice").await;
    let page = browser
        .get(format!("{}/hub/token", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let xsrf = page
        .split("name=\"_xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("_xsrf in the token page's form")
        .to_owned();
    let r2 = browser
        .post(format!("{}/hub/token", b.base))
        .form(&[("_xsrf", xsrf.as_str()), ("note", "made through B")])
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), StatusCode::OK);
    let page = r2.text().await.unwrap();
    let token = page
        .split("<code id=\"new-token-value\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("no new token on B's answer:\n{page}"))
        .to_owned();
    let me = |hub: &Hub| {
        hub.api
            .get(format!("{}/hub/api/user", hub.base))
            .header("Authorization", format!("token {token}"))
            .send()
    };
    let r3 = me(a).await.unwrap();
    assert_eq!(r3.status(), StatusCode::OK, "B's token on A");
    assert_eq!(r3.json::<Value>().await.unwrap()["name"], "alice");
    assert_eq!(me(b).await.unwrap().status(), StatusCode::OK);

    drop(replicas);
    let _ = pg
        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
        .await;
}
