//! Renewal of the hub-issued gateway token, on real components: the LUMI site's tokens live
//! [`LIFETIME`] seconds (`gateway_token_lifetime_secs`), its `stackhub-gateway` allows one second
//! of clock skew, and a stock `jupyterhub-singleuser` in gateway mode keeps starting and listing
//! kernels at LUMI after its first token expired, because its `HubGatewayTokenRenewer` fetched
//! a new one from the hub (`POST /hub/api/sites/lumi/token`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use std::time::Duration;

use hub_common::{
    ADMIN_TOKEN, Hub, free_ports, live_under, progress_of, scratch_dir, user_with_token,
};
use remote_common::{Gateway, run, site_token, start_server, stop_server, wait_site};
use serde_json::{Value, json};
use stackhub_e2e::secrets::{SecretScan, descendants};

/// Seconds a LUMI gateway token is valid.
const LIFETIME: i64 = 6;
/// The gateway's `[jwt] leeway_secs`.
const LEEWAY: i64 = 1;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn count(path: &std::path::Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_user_server_renews_its_gateway_token_before_it_expires() {
    let (dir, _cleanup) = scratch_dir("remote-renewal");
    let [port, hub_port, lumi_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let lumi = Gateway::start_with(
        &dir,
        "lumi",
        lumi_port,
        &base,
        &format!("leeway_secs = {LEEWAY}"),
    );
    lumi.wait_ready().await;
    std::fs::write(
        dir.join("hub.toml"),
        format!(
            "[s3]\nhealth_interval_secs = 1\n\n[spawner]\nstart_timeout = 90\n\n\
             [[sites]]\nid = \"lumi\"\nname = \"LUMI Bridge\"\ngateway_url = \"{}\"\n\
             gateway_auth = \"hub-jwt\"\ngateway_token_lifetime_secs = {LIFETIME}\n\
             s3 = {{ mode = \"embedded\" }}\n\n\
             [[profile_list]]\ndisplay_name = \"Remote Compute Kernels - LUMI Bridge\"\n\
             slug = \"remote-lumi\"\nkind = \"remote-kernels\"\nsite = \"lumi\"\n",
            lumi.url
        ),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let hub = Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let api = reqwest::Client::new();
    let token = user_with_token(&api, &base, "alice", "renewal").await;
    wait_site(&api, &base, "lumi", true).await;

    // The site's tokens live LIFETIME seconds; one fetched now is refused once it has expired.
    let early = site_token(&api, &base, "lumi", &token).await;
    let early_expiry = early["expires_at"].as_i64().unwrap();
    assert!(
        (LIFETIME - 1..=LIFETIME).contains(&(early_expiry - now())),
        "{early}"
    );
    let early = early["token"].as_str().unwrap().to_owned();
    let hub_log = dir.join("hub.log");
    let issued = ["issued a gateway token", "user=alice", "site=lumi"];
    assert_eq!(count(&hub_log, &issued), 1);

    // Alice's remote-kernels server starts with a token the hub issued at spawn.
    let r = start_server(&api, &base, "alice", "remote-lumi").await;
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start: {}",
        r.status()
    );
    let events = progress_of(&api, &base, "alice").await;
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
    let ready_at = now();
    let user_api = |method: reqwest::Method, path: &str| {
        api.request(method, format!("{base}/user/alice/{path}"))
            .header("Authorization", format!("token {token}"))
    };
    let r = user_api(reqwest::Method::POST, "api/kernels")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "first kernel start");
    let first: Value = r.json().await.unwrap();

    // Wait until the spawn-time token (issued before `ready_at`) is past its expiry and the
    // gateway's leeway: the gateway refuses the token fetched before the server started.
    let wait = (ready_at + LIFETIME + LEEWAY + 1 - now()).max(0);
    tokio::time::sleep(Duration::from_secs(wait.try_into().unwrap())).await;
    let r = api
        .get(format!("{}/api/kernels", lumi.url))
        .bearer_auth(&early)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an expired hub token at the gateway");

    // Through the single-user server, LUMI still answers: list, start, and run code over the
    // server's kernel WebSocket relay (a token from another origin is not taken directly).
    let listed: Value = user_api(reqwest::Method::GET, "api/kernels")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == first["id"]),
        "{listed}"
    );
    let r = user_api(reqwest::Method::POST, "api/kernels")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "kernel start after the first token expired"
    );
    let second: Value = r.json().await.unwrap();
    let out = run(
        &base,
        "alice",
        second["id"].as_str().unwrap(),
        &[
            ("authorization", &format!("token {token}")),
            ("origin", "https://elsewhere.example"),
        ],
        "print('renewed', 6 * 7)",
    )
    .await;
    assert!(out.contains("renewed 42"), "{out}");
    // The run's secrets, and the argument lists of everything it started, while it runs.
    let mut scan = SecretScan::new();
    scan.add("the admin token", ADMIN_TOKEN)
        .add("alice's API token", &token)
        .add("alice's first LUMI token", &early);
    let mut pids = descendants(&[i64::from(hub.child.as_ref().unwrap().id())]);
    for pid in live_under(&dir) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let from_environ: usize = pids.iter().map(|pid| scan.add_environ(*pid)).sum();
    assert!(
        from_environ >= 4,
        "secrets from the processes' environments: {from_environ}"
    );
    assert!(
        scan.add_kernel_keys(&pids) >= 2,
        "the kernels' message keys"
    );
    let read = scan.cmdlines(&pids);
    assert!(read >= 5, "argument lists read: {read} of {pids:?}");

    // The server renewed its token at the hub, and said so (without the token).
    let server_log = dir.join("data/logs/alice.log");
    assert!(
        count(&server_log, &["renewed the gateway token for lumi"]) >= 1,
        "no renewal in the server's log:\n{}",
        std::fs::read_to_string(&server_log).unwrap_or_default()
    );
    assert!(
        count(&hub_log, &issued) >= 2,
        "the hub issued no token to alice's server"
    );
    stop_server(&api, &base, "alice").await;
    // No secret in any log: the server's, the hub's, the gateway's.
    let logs = scan.logs_under(&dir);
    assert!(logs >= 3, "logs searched: {logs}");
    scan.assert_clean();
}
