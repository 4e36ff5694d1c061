//! Remote Compute Kernels end to end, on real components: the `stackhub` binary with its embedded
//! S3 store, two real `stackhub-gateway` processes as remote sites (LUMI and LEONARDO) that
//! validate the hub's tokens against its JWKS, a stock `jupyterhub-singleuser` in gateway mode
//! with the `s3contents` contents manager, and ipykernel kernels running `boto3`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;
mod remote_common;

use hub_common::{
    ADMIN_TOKEN, Hub, PASSWORD, free_ports, live_under, progress_of, scratch_dir, user_with_token,
};
use remote_common::{
    Gateway, open_channels, run, site_token, start_server, stop_server, wait_site,
};
use serde_json::{Value, json};
use stackhub_e2e::secrets::{SecretScan, descendants};

/// The hub's cookie secret in this run (hex, 32 bytes): registered as a secret to search for.
const COOKIE_SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

fn hub_config(lumi: &str, leonardo: &str, unused: &str) -> String {
    let mut out =
        String::from("[s3]\nhealth_interval_secs = 1\n\n[spawner]\nstart_timeout = 90\n\n");
    for (slug, site, name, url, s3) in [
        ("remote-lumi", "lumi", "LUMI Bridge", lumi, true),
        (
            "remote-leonardo",
            "leonardo",
            "LEONARDO Bridge",
            leonardo,
            true,
        ),
        (
            "remote-marenostrum",
            "marenostrum",
            "MareNostrum Bridge",
            unused,
            false,
        ),
    ] {
        out.push_str(&format!(
            "[[sites]]\nid = \"{site}\"\nname = \"{name}\"\ngateway_url = \"{url}\"\n\
             gateway_auth = \"hub-jwt\"\n"
        ));
        if s3 {
            out.push_str("s3 = { mode = \"embedded\" }\n");
        }
        out.push('\n');
        out.push_str(&format!(
            "[[profile_list]]\ndisplay_name = \"Remote Compute Kernels - {name}\"\n\
             slug = \"{slug}\"\nkind = \"remote-kernels\"\nsite = \"{site}\"\n\
             warning = \"No home directory: files live in S3 at {name}.\"\n\n"
        ));
    }
    out.push_str(
        "[[profile_list]]\ndisplay_name = \"JupyterLab\"\nslug = \"jupyterlab\"\ndefault = true\n",
    );
    out
}

/// Opens `kernel`'s WebSocket through the hub's proxy with `headers` (`("authorization", "token
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_kernels_at_a_bridge_site_exchange_through_s3() {
    let (dir, _cleanup) = scratch_dir("remote-e2e");
    let [port, hub_port, lumi_port, leo_port, unused_port] = free_ports();
    let base = format!("http://127.0.0.1:{port}");
    let lumi = Gateway::start(&dir, "lumi", lumi_port, &base);
    let mut leonardo = Gateway::start(&dir, "leonardo", leo_port, &base);
    lumi.wait_ready().await;
    leonardo.wait_ready().await;
    std::fs::write(
        dir.join("hub.toml"),
        hub_config(
            &lumi.url,
            &leonardo.url,
            &format!("http://127.0.0.1:{unused_port}"),
        ),
    )
    .unwrap();
    let config = dir.join("hub.toml").display().to_string();
    // s3s logs whole requests at debug level; asking for it must not put credentials in the log.
    let hub = Hub::start_with_env(
        &dir,
        port,
        hub_port,
        &["--config", &config],
        &[
            ("RUST_LOG", "info,s3s=trace"),
            ("STACKHUB_COOKIE_SECRET", COOKIE_SECRET),
        ],
    )
    .await;
    let hub_pid = i64::from(hub.child.as_ref().unwrap().id());
    let api = reqwest::Client::new();
    let token = user_with_token(&api, &base, "alice", "remote e2e").await;
    wait_site(&api, &base, "lumi", true).await;

    // A site without S3 is never offered; its start is refused, saying why.
    let s = wait_site(&api, &base, "marenostrum", false).await;
    assert!(
        s["reasons"].to_string().contains("S3 is not configured"),
        "{s}"
    );
    let r = start_server(&api, &base, "alice", "remote-marenostrum").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let mut error_bodies = vec![body.to_string()];
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("S3 is not configured"),
        "{body}"
    );

    // Alice logs in and picks "Remote Compute Kernels - LUMI Bridge" on the options page.
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    let r = browser
        .post(format!("{base}/hub/login?next=%2Fhub%2Fspawn"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Remote Compute Kernels - LUMI Bridge"),
        "{page}"
    );
    assert!(page.contains("No home directory: files live in S3 at LUMI Bridge."));
    let xsrf = page
        .split("name=\"_xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("_xsrf in the options form")
        .to_owned();
    let r = browser
        .post(format!("{base}/hub/spawn/alice"))
        .form(&[("_xsrf", xsrf.as_str()), ("profile", "remote-lumi")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "picker submit: {}", r.status());
    let events = progress_of(&api, &base, "alice").await;
    let last = events.last().unwrap();
    assert_eq!(last["ready"], true, "{events:?}");
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "JupyterLab through the hub");
    let cookies = {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = format!("{base}/user/alice/").parse().unwrap();
        jar.cookies(&url)
            .expect("the Lab's cookies")
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert!(r.text().await.unwrap().contains("jupyter-config-data"));

    // The Lab's kernel picker lists the site's kernelspecs; a kernel starts at LUMI.
    let user_api = |method: reqwest::Method, path: &str| {
        api.request(method, format!("{base}/user/alice/{path}"))
            .header("Authorization", format!("token {token}"))
    };
    let specs: Value = user_api(reqwest::Method::GET, "api/kernelspecs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(specs["kernelspecs"].get("python3").is_some(), "{specs}");
    let r = user_api(reqwest::Method::POST, "api/kernels")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "kernel start through the Lab");
    let kernel: Value = r.json().await.unwrap();
    let kernel_id = kernel["id"].as_str().unwrap().to_owned();
    // The hub issues alice a LUMI token; with it, the LUMI gateway lists her kernel.
    let issued = site_token(&api, &base, "lumi", &token).await;
    let jwt = issued["token"]
        .as_str()
        .expect("a gateway token")
        .to_owned();
    let at_lumi: Value = api
        .get(format!("{}/api/kernels", lumi.url))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        at_lumi
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == kernel_id),
        "{at_lumi}"
    );
    // The LEONARDO gateway takes no LUMI token.
    let r = api
        .get(format!("{}/api/kernels", leonardo.url))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // In the kernel, boto3 with no arguments writes and reads under alice's prefix and is
    // denied bob's.
    let out = run(
        &base,
        "alice",
        &kernel_id,
        &[("authorization", &format!("token {token}"))],
        "import boto3, os\n\
         s3 = boto3.client('s3')\n\
         b, p = os.environ['STACKHUB_S3_BUCKET'], os.environ['STACKHUB_S3_PREFIX']\n\
         s3.put_object(Bucket=b, Key=p + 'hello.txt', Body=b'hello from LUMI')\n\
         print('READ', s3.get_object(Bucket=b, Key=p + 'hello.txt')['Body'].read().decode())\n\
         print('PREFIX', p)\n\
         try:\n    s3.get_object(Bucket=b, Key='users/bob/hello.txt'); print('LEAK')\n\
         except s3.exceptions.ClientError as e:\n    print('DENIED', e.response['Error']['Code'])\n",
    )
    .await;
    assert!(out.contains("READ hello from LUMI"), "{out}");
    assert!(out.contains("PREFIX users/alice/"), "{out}");
    assert!(out.contains("DENIED AccessDenied"), "{out}");
    assert!(!out.contains("LEAK"), "{out}");
    // Every secret of the run so far, and the argument lists of every process it started
    // (hub, proxy, gateways, the single-user server, the kernel), read while they run.
    let mut scan = SecretScan::new();
    scan.add("the admin token", ADMIN_TOKEN)
        .add("alice's API token", &token)
        .add("alice's LUMI gateway token", &jwt)
        .add("the hub's cookie secret", COOKIE_SECRET);
    let key = run(
        &base,
        "alice",
        &kernel_id,
        &[("authorization", &format!("token {token}"))],
        "print('KEY=' + get_ipython().kernel.session.key.decode())",
    )
    .await;
    let key = key.trim().strip_prefix("KEY=").expect("the kernel's key");
    scan.add("the kernel's message key", key);
    let root_key = std::fs::read_to_string(dir.join("data/s3/root-key")).unwrap();
    let (root_id, root_secret) = root_key.trim().split_once(':').unwrap();
    scan.add("the S3 root access key id", root_id)
        .add("the S3 root secret key", root_secret);
    // The credential cookies. `jupyterhub-session-id` is no credential (JupyterHub: "meaningless
    // in itself", it only ties the OAuth cookies together for logout) and `_xsrf` is in every
    // form.
    for cookie in cookies.split("; ") {
        if let Some((name, value)) = cookie.split_once('=')
            && (name.starts_with("jupyterhub-user-") || name.starts_with("jupyterhub-hub-login"))
        {
            scan.add(&format!("cookie {name}"), value);
        }
    }
    let mut pids = descendants(&[hub_pid]);
    for pid in live_under(&dir) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let from_environ: usize = pids.iter().map(|pid| scan.add_environ(*pid)).sum();
    // The server's hub token, the kernel's S3 key, secret and session token at least.
    assert!(
        from_environ >= 4,
        "secrets from the processes' environments: {from_environ}"
    );
    let read = scan.cmdlines(&pids);
    assert!(read >= 5, "argument lists read: {read} of {pids:?}");
    // That WebSocket took the short way: the proxy went straight to the LUMI gateway, so the
    // single-user server's relay (jupyter_server logs "Connecting to ws://…/channels") never
    // saw it.
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    assert!(
        !server_log.contains(&format!("{kernel_id}/channels")),
        "the kernel channel went through the single-user server:\n{server_log}"
    );
    let lumi_log = std::fs::read_to_string(dir.join("gateway-lumi.log")).unwrap();
    assert!(
        !lumi_log.contains(&token),
        "the hub token reached the gateway's log"
    );
    // The kernel's boto3 calls carried its session token to the embedded S3 store; even with
    // s3s asked to trace, the hub's log holds no credential header.
    let hub_log = std::fs::read_to_string(dir.join("hub.log"))
        .unwrap()
        .to_ascii_lowercase();
    for header in ["x-amz-security-token", "authorization: aws4"] {
        assert!(!hub_log.contains(header), "{header} in the hub's log");
    }

    // A notebook saved in the Lab is an object in S3 ...
    let notebook = json!({"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "source": "print('saved at LUMI')", "metadata": {},
                   "outputs": [], "execution_count": null}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}});
    let r = user_api(reqwest::Method::PUT, "api/contents/saved.ipynb")
        .json(&notebook)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "save: {}", r.status());
    // The Lab's file browser lists it (s3contents reads each listed object's storage class).
    let listing: Value = user_api(reqwest::Method::GET, "api/contents")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listing["content"].to_string().contains("\"saved.ipynb\""),
        "{listing}"
    );
    let out = run(
        &base,
        "alice",
        &kernel_id,
        &[("cookie", &cookies), ("origin", &base)],
        "import boto3, os\n\
         s3 = boto3.client('s3')\n\
         r = s3.list_objects_v2(Bucket=os.environ['STACKHUB_S3_BUCKET'], \
         Prefix=os.environ['STACKHUB_S3_PREFIX'])\n\
         print(sorted(o['Key'] for o in r.get('Contents', [])))\n",
    )
    .await;
    assert!(out.contains("users/alice/saved.ipynb"), "{out}");
    // JupyterLab in a browser authenticates its kernel WebSocket with the single-user server's
    // OAuth cookie only: that went straight to the site too.
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    assert!(
        !server_log.contains(&format!("{kernel_id}/channels")),
        "the cookie-authenticated kernel channel went through the single-user server:\n{server_log}"
    );
    // The same cookie sent from a page of another site is not used: the proxy leaves the
    // request to the single-user server, which refuses a cross-origin cookie.
    let foreign = [
        ("cookie", cookies.as_str()),
        ("origin", "https://elsewhere.example"),
    ];
    match open_channels(&base, "alice", &kernel_id, &foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403, "cross-origin cookie WebSocket");
        }
        other => panic!("cross-origin cookie WebSocket: {:?}", other.map(|_| ())),
    }
    // What the proxy does not take directly still works through the single-user server's relay:
    // a token-authenticated WebSocket from another origin (jupyter_server skips its origin
    // check for tokens; the proxy's direct route does not take it).
    let out = run(
        &base,
        "alice",
        &kernel_id,
        &[
            ("authorization", &format!("token {token}")),
            ("origin", "https://elsewhere.example"),
        ],
        "print('relayed', 6 * 7)",
    )
    .await;
    assert!(out.contains("relayed 42"), "{out}");
    let server_log = std::fs::read_to_string(dir.join("data/logs/alice.log")).unwrap();
    assert!(
        server_log.contains(&format!("{kernel_id}/channels")),
        "the relayed kernel channel did not reach the single-user server:\n{server_log}"
    );

    // ... and survives a server restart.
    stop_server(&api, &base, "alice").await;
    let r = start_server(&api, &base, "alice", "remote-lumi").await;
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "restart: {}",
        r.status()
    );
    let events = progress_of(&api, &base, "alice").await;
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");
    let saved: Value = user_api(reqwest::Method::GET, "api/contents/saved.ipynb")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        saved["content"]["cells"][0]["source"], "print('saved at LUMI')",
        "{saved}"
    );
    stop_server(&api, &base, "alice").await;

    // A gateway configured as a remote site refuses a start without the S3 exchange.
    let r = api
        .post(format!("{}/api/kernels", lumi.url))
        .bearer_auth(&jwt)
        .json(&json!({"name": "python3", "env": {"KERNEL_USERNAME": "alice"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    error_bodies.push(body.to_string());
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("remote site") && message.contains("AWS_ACCESS_KEY_ID"),
        "{body}"
    );

    // A site whose gateway stops is shown as down and its profile refused, saying why.
    leonardo.stop();
    let s = wait_site(&api, &base, "leonardo", false).await;
    assert!(s["reasons"].to_string().contains("not reachable"), "{s}");
    let page = browser
        .get(format!("{base}/hub/spawn/alice"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let down = page
        .split("id=\"down-remote-leonardo\">")
        .nth(1)
        .expect("the LEONARDO profile marked down on the options page");
    assert!(
        down.starts_with("Unavailable: ") && down.contains("not reachable"),
        "{down}"
    );
    assert!(!page.contains("id=\"down-remote-lumi\""), "LUMI is up");
    let r = start_server(&api, &base, "alice", "remote-leonardo").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("LEONARDO Bridge") && message.contains("not reachable"),
        "{body}"
    );
    error_bodies.push(body.to_string());

    // No secret in any log of the run (hub, proxy, S3, gateways, servers), error body or
    // argument list.
    for (i, body) in error_bodies.iter().enumerate() {
        scan.text(&format!("error body {i}"), body);
    }
    let logs = scan.logs_under(&dir);
    assert!(logs >= 4, "logs searched: {logs}");
    scan.assert_clean();
}
