//! Failover (issue 23, "Done when"): two real `stackhub` replicas on one PostgreSQL database
//! with one cookie secret, behind a real HAProxy (round robin, one retry on the other replica,
//! health checks; it names the replica that served each answer). Local-process servers: 20
//! stand-ins (a tiny Python server, slow to become ready) and one real `jupyterhub-singleuser`
//! with a kernel.
//!
//! Under a steady API load (each request retried once by its client) and while 20 spawns are
//! in flight, the replica that leads and carries the kernel's WebSocket is killed with SIGKILL.
//! Then: every spawn completes on the survivor and its server answers at `/user/NAME/`; a
//! spawn's progress stream, read through the survivor, ends `ready`; no API request failed
//! twice; a login cookie still reaches `/hub/home`; the kernel's WebSocket reconnects through
//! the survivor and the kernel still holds `x = 42`. The killed replica restarted rejoins (HAProxy
//! sends it requests again) with no duplicate work: each stand-in started once, and every
//! stand-in process running is one a ready server points to.
//!
//! PostgreSQL: `STACKHUB_TEST_POSTGRES_URL` (`scripts/test` starts a server and sets it);
//! HAProxy: Debian's (`scripts/test` installs it). The test fails when either is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ha_common;
mod hub_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ha_common::load::Load;
use ha_common::{
    Haproxy, Replica, closes_within, execute, kernel_socket, postgres_database, served_by,
    standin_pids, starts,
};
use hub_common::{admin, free_ports, issue_token, logged_in_browser, read_progress, scratch_dir};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Executor;

/// How many stand-in servers start at once.
const SPAWNS: usize = 20;
/// Seconds a stand-in waits before it listens: its spawn is in flight meanwhile.
const STANDIN_DELAY: &str = "4";

fn standin_users() -> Vec<String> {
    (0..SPAWNS).map(|i| format!("u{i:02}")).collect()
}

/// `user`'s default server model through `base` (`null` when it has none), retried over
/// failed answers (a request cut by the kill).
async fn server_of(api: &Client, base: &str, user: &str) -> Value {
    for _ in 0..50 {
        if let Ok(r) = admin(api, Method::GET, format!("{base}/hub/api/users/{user}"))
            .send()
            .await
            && r.status() == StatusCode::OK
            && let Ok(v) = r.json::<Value>().await
        {
            return v["servers"][""].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET /hub/api/users/{user} through HAProxy keeps failing");
}

/// Poll until `user`'s server is ready; panics after `within` with the last model and what
/// the replicas in `logs` logged of it.
async fn until_ready(
    api: &Client,
    base: &str,
    user: &str,
    within: Duration,
    logs: &[&Replica],
) -> Value {
    let start = Instant::now();
    loop {
        let model = server_of(api, base, user).await;
        if model["ready"] == true {
            return model;
        }
        assert!(
            start.elapsed() < within,
            "{user}'s server is not ready after {within:?}: {model}\n{}",
            logs.iter()
                .map(|r| format!("{}: {}", r.name, r.log_of(&format!("{user}/"))))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The hub's configuration, the same for both replicas: servers reach the hub through HAProxy;
/// one site (nothing listens at its gateway); the Lab (default) and the stand-in profiles.
fn config(lb: u16, gateway: u16, standin_dir: &std::path::Path) -> String {
    let python = hub_common::venv().join("bin/python");
    let script = hub_common::workspace().join("tests/tests/ha_common/standin_server.py");
    format!(
        "hub_connect_url = \"http://127.0.0.1:{lb}\"\n\n\
         [s3]\nembedded = false\nhealth_interval_secs = 300\n\n\
         [[sites]]\nid = \"lumi\"\nname = \"LUMI\"\ngateway_url = \"http://127.0.0.1:{gateway}\"\n\n\
         [[profile_list]]\ndisplay_name = \"JupyterLab\"\nslug = \"lab\"\ndefault = true\n\
         site = \"\"\n\n\
         [[profile_list]]\ndisplay_name = \"Stand-in\"\nslug = \"standin\"\n\
         [profile_list.spawner_override]\ncmd = [\"{python}\", \"{script}\"]\n\
         environment = {{ STANDIN_DIR = \"{dir}\", STANDIN_DELAY = \"{STANDIN_DELAY}\" }}\n",
        python = python.display(),
        script = script.display(),
        dir = standin_dir.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_spawn_session_kernel_or_request() {
    let (dir, _cleanup) = scratch_dir("ha-failover");
    let (mut pg, db_name, db_url) = postgres_database(&dir).await;
    let db_url = db_url.to_string();
    let [lb_port, a_port, a_hub, b_port, b_hub, gateway] = free_ports::<6>();
    let standin_dir = dir.join("starts");
    std::fs::create_dir_all(&standin_dir).unwrap();
    let config_file = dir.join("stackhub.toml");
    std::fs::write(&config_file, config(lb_port, gateway, &standin_dir)).unwrap();

    let mut a = Replica::new("a", [a_port, a_hub], &dir, &config_file, &db_url);
    let mut b = Replica::new("b", [b_port, b_hub], &dir, &config_file, &db_url);
    a.start().await;
    b.start().await;
    let lb = Haproxy::start(&dir, lb_port, &[("a", a_port), ("b", b_port)]).await;
    let base = lb.base();
    let up = Instant::now();
    while lb.servers().unwrap().iter().any(|(_, s)| s != "UP") {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "HAProxy does not see both replicas up: {:?}\n{}",
            lb.servers(),
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let api = Client::new();
    let users = standin_users();
    let mut everyone: Vec<String> = users.clone();
    everyone.extend(["alice".to_owned(), "carol".to_owned()]);
    let r = admin(&api, Method::POST, format!("{base}/hub/api/users"))
        .json(&json!({ "usernames": everyone }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    let load = Load::start(base.clone(), "alice");
    let browser = logged_in_browser(&base, "carol").await;

    // Alice's Lab (the real jupyterhub-singleuser), a kernel in it, `x = 42` over its
    // WebSocket: all through HAProxy, with an API token of alice's.
    let token = issue_token(&api, &base, "alice", "ha").await;
    let r = admin(
        &api,
        Method::POST,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.status());
    until_ready(&api, &base, "alice", Duration::from_secs(90), &[]).await;
    let r = api
        .post(format!("{base}/user/alice/api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "start a kernel in the Lab");
    let kernel: Value = r.json().await.unwrap();
    let kernel = kernel["id"].as_str().unwrap().to_owned();
    // The WebSocket to be cut goes through the leader (pinned there), so the kill also moves
    // the leadership, which takes the orphaned spawns over.
    let leader = if a.leads(&api).await { "a" } else { "b" };
    let (mut ws, carrier) = kernel_socket(&base, "alice", &kernel, &token, Some(leader)).await;
    assert_eq!(carrier, leader, "HAProxy does not pin the WebSocket");
    assert_eq!(execute(&mut ws, "x = 42").await, "");
    let (victim, survivor) = if leader == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // 20 stand-in spawns at once, through HAProxy's round robin: about half on each replica.
    let posts = join_all(users.iter().map(|user| {
        let (api, base) = (api.clone(), base.clone());
        async move {
            let r = admin(
                &api,
                Method::POST,
                format!("{base}/hub/api/users/{user}/server"),
            )
            .json(&json!({"profile": "standin"}))
            .send()
            .await
            .unwrap();
            let status = r.status();
            (user.clone(), status, served_by(r.headers()))
        }
    }))
    .await;
    let mut accepted_by = BTreeMap::new();
    for (user, status, replica) in posts {
        assert!(
            matches!(status.as_u16(), 201 | 202),
            "{user}'s start: {status}"
        );
        accepted_by.insert(user, replica);
    }
    // The spawns the victim runs that are still in flight when it dies.
    let models = join_all(users.iter().map(|u| server_of(&api, &base, u))).await;
    let in_flight: Vec<String> = users
        .iter()
        .zip(&models)
        .filter(|(u, m)| accepted_by[*u] == victim.name && m["pending"] == "spawn")
        .map(|(u, _)| u.clone())
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no spawn of {} in flight to kill (accepted by: {accepted_by:?}; models: {models:?})",
        victim.name
    );

    assert!(victim.leads(&api).await && !survivor.leads(&api).await);
    let killed = Instant::now();
    victim.kill();
    eprintln!(
        "killed replica {}, the leader (its spawns in flight: {in_flight:?}); survivor {}",
        victim.name, survivor.name
    );
    // The progress of one of them, through the survivor (its request retried once, as every
    // client's: it may meet a connection to the dead replica).
    let progress = tokio::spawn({
        let (api, base, user) = (api.clone(), base.clone(), in_flight[0].clone());
        async move {
            let url = format!("{base}/hub/api/users/{user}/server/progress");
            let resp = match admin(&api, Method::GET, url.clone()).send().await {
                Ok(r) if r.status() == StatusCode::OK => r,
                first => {
                    eprintln!("{user}'s progress stream, retried once after: {first:?}");
                    admin(&api, Method::GET, url).send().await.unwrap()
                }
            };
            read_progress(resp).await
        }
    });

    // The kernel's WebSocket went through the dead replica: it is cut; it reconnects through
    // the survivor and the kernel still holds x.
    assert!(
        closes_within(&mut ws, Duration::from_secs(10)).await,
        "the kernel's WebSocket through the killed replica stays open"
    );
    let (mut ws, carrier) = kernel_socket(&base, "alice", &kernel, &token, None).await;
    assert_eq!(
        carrier, survivor.name,
        "the WebSocket reconnected elsewhere"
    );
    assert_eq!(execute(&mut ws, "x").await, "42", "the kernel lost x");
    let reconnected = killed.elapsed();

    // Every spawn completes, on the survivor, and its server answers through HAProxy.
    let mut pids = BTreeMap::new();
    for user in &users {
        let model = until_ready(
            &api,
            &base,
            user,
            Duration::from_secs(60),
            &[&*victim, &*survivor],
        )
        .await;
        pids.insert(user.clone(), model["state"]["pid"].as_i64().unwrap());
    }
    let all_ready = killed.elapsed();
    for user in &users {
        let r = api
            .get(format!("{base}/user/{user}/"))
            .send()
            .await
            .unwrap();
        let (status, url, by) = (r.status(), r.url().clone(), served_by(r.headers()));
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        assert!(
            status == StatusCode::OK && body["standin"] == user.as_str(),
            "/user/{user}/ through HAProxy: {status} from {url} by {by}: {text:.300}\n\
             the survivor's log: {}",
            survivor.log()
        );
        assert_eq!(
            body["pid"], pids[user],
            "{user}'s server is another process"
        );
    }
    let events = tokio::time::timeout(Duration::from_secs(30), progress)
        .await
        .expect("the progress stream did not end")
        .unwrap();
    assert_eq!(
        events.last().unwrap()["ready"],
        true,
        "{}'s progress: {events:?}",
        in_flight[0]
    );

    // The login cookie still works.
    let r = browser
        .get(format!("{base}/hub/home"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.url().path(), "/hub/home", "carol's login was lost");
    // HAProxy's health check marks the victim down.
    let noticed = Instant::now();
    while !lb.state_of(victim.name).starts_with("DOWN") {
        assert!(
            noticed.elapsed() < Duration::from_secs(5),
            "HAProxy: {:?}",
            lb.servers()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The victim restarted rejoins: HAProxy sends it requests again, and it serves them.
    let restarted = Instant::now();
    victim.start().await;
    loop {
        let r = browser
            .get(format!("{base}/hub/home"))
            .send()
            .await
            .unwrap();
        if served_by(r.headers()) == victim.name {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.url().path(), "/hub/home", "the restarted replica's login");
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "HAProxy sends nothing to the restarted replica: {:?}",
            lb.servers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejoined = restarted.elapsed();
    assert_eq!(lb.state_of(victim.name), "UP", "{:?}", lb.servers());
    // Time for duplicate work to show, while the load goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // No API request failed twice.
    let calls = load.stop().await;
    let failed: Vec<_> = calls.iter().filter(|c| c.failed()).collect();
    let retried = calls.iter().filter(|c| c.attempts.len() > 1).count();
    assert!(
        failed.is_empty(),
        "{} of {} API requests failed twice: {failed:#?}",
        failed.len(),
        calls.len()
    );
    let first_ok = calls
        .iter()
        .flat_map(|c| &c.attempts)
        .filter(|a| a.ok && a.ended > killed)
        .map(|a| a.ended - killed)
        .min()
        .unwrap();
    // No duplicate work: each stand-in started once, and none runs that no server points to.
    for user in &users {
        let s = starts(&standin_dir, user);
        assert_eq!(
            s.len(),
            1,
            "{user}'s stand-in started {} times: {s:?}",
            s.len()
        );
    }
    let running = standin_pids(&standin_dir);
    let pointed: BTreeSet<i64> = pids.values().copied().collect();
    assert_eq!(running, pointed, "stand-ins running vs ready servers' pids");

    eprintln!(
        "kill → first successful API call {first_ok:?}; → kernel reconnected with x {reconnected:?}; \
         → all {SPAWNS} spawns ready {all_ready:?}; restart → rejoined {rejoined:?}"
    );
    eprintln!(
        "API load: {} requests, {retried} retried once, none failed twice",
        calls.len()
    );

    drop((a, b, lb));
    let _ = pg
        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
        .await;
}
