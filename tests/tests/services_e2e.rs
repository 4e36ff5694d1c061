//! End to end: hub services on the real `stackhub` binary.
//!
//! - `jupyterhub-idle-culler` (PyPI) runs as a hub-managed service from `[idle_culler]`, with
//!   a role holding only the scopes it needs, culls an idle `jupyterhub-singleuser` server, and
//!   is restarted by the hub when killed.
//! - A proxied, managed service written with JupyterHub's own `HubOAuth`
//!   (`tests/services/whoami_oauth.py`) at `/services/whoami/` logs a browser-like client in
//!   through the hub's OAuth and sees who they are; it gets JupyterHub's `JUPYTERHUB_*`
//!   environment and none of the hub's secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::Value;

mod hub_common;

use hub_common::{
    ADMIN_TOKEN, Hub, PASSWORD, admin, free_ports, logged_in_browser, scratch_dir, venv, workspace,
};
use stackhub_e2e::secrets::SecretScan;

async fn services(api: &reqwest::Client, base: &str) -> Value {
    let r = admin(
        api,
        reqwest::Method::GET,
        format!("{base}/hub/api/services"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Wait until `check` returns `Some`, up to `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_services_cull_idle_servers_and_log_users_in_through_the_hub() {
    let (dir, _cleanup) = scratch_dir("services");
    let [port, hub_port, whoami_port] = free_ports::<3>();
    let base = format!("http://127.0.0.1:{port}");
    let python = venv().join("bin/python");
    let script = workspace().join("tests/services/whoami_oauth.py");
    let config = dir.join("stackhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[idle_culler]
enabled = true
timeout = 8
every = 2

[[services]]
name = "whoami"
url = "http://127.0.0.1:{whoami_port}"
command = ["{python}", "{script}"]
oauth_no_confirm = true

# Every user may use the whoami service.
[[roles]]
name = "user"
scopes = ["self", "access:services!service=whoami"]
"#,
            python = python.display(),
            script = script.display(),
        ),
    )
    .unwrap();
    let mut hub = Hub::start_with(
        &dir,
        port,
        hub_port,
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let api = reqwest::Client::new();

    // Both services are registered and running, the culler with its own narrow role.
    let listed = wait_for("both services to run", Duration::from_secs(20), || {
        let api = api.clone();
        let base = base.clone();
        async move {
            let s = services(&api, &base).await;
            (s["idle-culler"]["pid"].as_u64().unwrap_or(0) > 0
                && s["whoami"]["pid"].as_u64().unwrap_or(0) > 0)
                .then_some(s)
        }
    })
    .await;
    let culler = &listed["idle-culler"];
    assert_eq!(
        culler["roles"],
        serde_json::json!(["idle-culler"]),
        "{culler}"
    );
    assert!(
        culler["command"][0]
            .as_str()
            .unwrap()
            .ends_with("jupyterhub-idle-culler"),
        "{culler}"
    );
    assert!(
        culler["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--timeout=8"),
        "{culler}"
    );
    assert_eq!(listed["whoami"]["prefix"], "/services/whoami/");

    // A browser-like client logs in to the hub, then opens the service: HubOAuth sends it
    // through the hub's OAuth and the service sees alice.
    let r = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/alice"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let browser = logged_in_browser(&base, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let whoami: Value = loop {
        let last = match browser.get(format!("{base}/services/whoami/")).send().await {
            Ok(r) if r.status() == 200 => break r.json().await.unwrap(),
            Ok(r) => {
                let head = format!("{} at {}", r.status(), r.url());
                format!("{head}: {}", r.text().await.unwrap_or_default())
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "the whoami service did not answer: {last}\n{}",
            hub_common::log_tail(&dir.join("hub.log"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(whoami["name"], "alice", "{whoami}");
    assert_eq!(whoami["kind"], "user");
    let scopes: Vec<String> = serde_json::from_value(whoami["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"access:services!service=whoami".to_owned()),
        "{scopes:?}"
    );
    // The service has JupyterHub's environment and none of the hub's.
    let names: Vec<String> = browser
        .get(format!("{base}/services/whoami/env-names"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for expected in [
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_API_URL",
        "JUPYTERHUB_CLIENT_ID",
        "JUPYTERHUB_OAUTH_CALLBACK_URL",
        "JUPYTERHUB_SERVICE_NAME",
        "JUPYTERHUB_SERVICE_PREFIX",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for leaked in [
        "STACKHUB_ADMIN_TOKEN",
        "STACKHUB_DEV_PASSWORD",
        "STACKHUB_DATA_DIR",
    ] {
        assert!(
            !names.iter().any(|n| n == leaked),
            "{leaked} leaked: {names:?}"
        );
    }

    // The culler: alice's idle server is stopped after the timeout.
    let r = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.status());
    let server = |api: reqwest::Client, base: String| async move {
        let user: Value = admin(
            &api,
            reqwest::Method::GET,
            format!("{base}/hub/api/users/alice"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        user["servers"][""].clone()
    };
    wait_for(
        "alice's server to be ready",
        Duration::from_secs(60),
        || {
            let (api, base) = (api.clone(), base.clone());
            async move { (server(api, base).await["ready"] == true).then_some(()) }
        },
    )
    .await;
    wait_for(
        "the culler to stop alice's idle server",
        Duration::from_secs(90),
        || {
            let (api, base) = (api.clone(), base.clone());
            async move { server(api, base).await.is_null().then_some(()) }
        },
    )
    .await;
    // The culler's own log line reaches the hub's log, and says it stopped the server for
    // being idle at least the timeout (from the activity the hub reported).
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    let inactive = log
        .split("Culling server alice (inactive for ")
        .nth(1)
        .and_then(|rest| rest.get(..8))
        .unwrap_or_else(|| {
            panic!(
                "no culling line for alice in the hub's log:\n{}",
                hub_common::log_tail(&dir.join("hub.log"))
            )
        });
    let secs = inactive
        .split(':')
        .map(|p| p.parse::<u64>().unwrap())
        .fold(0, |acc, p| acc * 60 + p);
    assert!(
        secs >= 8,
        "culled after {inactive} idle, before the timeout"
    );

    // Killing the culler: the hub starts it again.
    let old = listed["idle-culler"]["pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    let new = wait_for(
        "the culler to be restarted",
        Duration::from_secs(20),
        || {
            let (api, base) = (api.clone(), base.clone());
            async move {
                let pid = services(&api, &base).await["idle-culler"]["pid"]
                    .as_u64()
                    .unwrap_or(0);
                (pid > 0 && pid != old).then_some(pid)
            }
        },
    )
    .await;
    assert!(pid_alive(new));

    // No secret in the hub's log or the services' argument lists.
    let whoami_pid = services(&api, &base).await["whoami"]["pid"]
        .as_u64()
        .unwrap();
    let mut scan = SecretScan::new();
    scan.add("admin token", ADMIN_TOKEN)
        .add("dev password", PASSWORD);
    let whoami_pid = i64::try_from(whoami_pid).unwrap();
    let culler_pid = i64::try_from(new).unwrap();
    assert!(
        scan.add_environ(whoami_pid) >= 1,
        "the service's JUPYTERHUB_API_TOKEN is registered"
    );
    scan.add_environ(culler_pid);
    scan.cmdlines(&[whoami_pid, culler_pid]);
    scan.file(&dir.join("hub.log"));
    scan.assert_clean();
    let (new, whoami_pid) = (culler_pid, whoami_pid);

    // Stopping the hub stops its services.
    hub.terminate();
    for pid in [new, whoami_pid] {
        assert!(
            !pid_alive(u64::try_from(pid).unwrap()),
            "service process {pid} outlived the hub"
        );
    }
}
