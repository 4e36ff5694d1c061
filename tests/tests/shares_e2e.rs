//! End to end, sharing (JupyterHub 5.0+): the real `stackhub` binary, a stock
//! `jupyterhub-singleuser` from the venv, and cookie-keeping browsers. alice makes the REST
//! calls JupyterLab's collaboration share dialog makes and shares her server with bob; bob opens
//! `/user/alice/lab` through the hub's OAuth provider; alice revokes and bob's new login is
//! refused while his old OAuth token stops reporting access; then bob accepts a share code on
//! the accept page and reaches the server again, and an expired code is refused. No token or
//! code is left in any log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::{Value, json};

mod hub_common;

use hub_common::{
    ADMIN_TOKEN, Hub, PASSWORD, admin, free_ports, progress_of, scratch_dir, user_with_token, venv,
};
use stackhub_e2e::secrets::SecretScan;

/// Undo the HTML escaping minijinja applies to attribute values.
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

/// The first form of a page: its action and its (hidden and checked) inputs.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let form = &html[html.find("<form").expect("a form on the page")..];
    let action = attr(&form[..form.find('>').unwrap()], "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..i + rest[i..].find('>').unwrap()];
        if let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value")) {
            fields.push((name, value));
        }
        rest = &rest[i + 6..];
    }
    (action, fields)
}

/// The Lab page's `jupyter-config-data`.
fn page_config(html: &str) -> Value {
    let start = html
        .find("id=\"jupyter-config-data\"")
        .expect("page config in the Lab page");
    let open = start + html[start..].find('>').unwrap() + 1;
    let close = open + html[open..].find("</script>").unwrap();
    serde_json::from_str(&html[open..close]).unwrap()
}

/// A browser logged in as `user`.
async fn browser_for(base: &str, user: &str) -> reqwest::Client {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = browser
        .post(format!("{base}/hub/login?next=%2Fhub%2Fhome"))
        .form(&[("username", user), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{user} logs in");
    browser
}

/// Open alice's Lab as someone else: through the hub's OAuth consent page (another user's
/// server), submitted; the final response.
async fn open_alices_lab(browser: &reqwest::Client, base: &str) -> reqwest::Response {
    let r = browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    if r.url().path() != "/hub/api/oauth2/authorize" || r.status() != 200 {
        return r;
    }
    let (action, fields) = form_of(&r.text().await.unwrap());
    assert_eq!(action, "/hub/api/oauth2/authorize");
    browser
        .post(format!("{base}{action}"))
        .form(&fields)
        .send()
        .await
        .unwrap()
}

async fn get_json(api: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let r = api
        .get(url)
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_with_a_user_revoke_and_share_codes() {
    let (dir, _cleanup) = scratch_dir("shares");
    let [port, hub_port] = free_ports::<2>();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.join("stackhub.toml");
    // JupyterHub's documented role for the full sharing API, plus the listing the share dialog
    // does to offer names.
    std::fs::write(
        &config,
        r#"
[spawner]
# What the Lab's own token may do besides opening the server (JupyterHub's
# Spawner.oauth_client_allowed_scopes), so the share dialog works with it.
oauth_client_allowed_scopes = ["shares!user", "read:users:name", "read:groups:name", "list:users", "list:groups"]

[[roles]]
name = "user"
scopes = ["self", "shares!user", "read:users:name", "read:groups:name", "list:users", "list:groups"]
"#,
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
    let alice_api = user_with_token(&api, &base, "alice", "e2e").await;
    let bob = user_with_token(&api, &base, "bob", "e2e").await;

    // alice's server runs.
    let r = admin(
        &api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/alice/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start: {}",
        r.status()
    );
    let events = progress_of(&api, &base, "alice").await;
    assert_eq!(events.last().unwrap()["ready"], true, "{events:?}");

    // bob cannot open it yet: the hub refuses the OAuth login.
    let bob_browser = browser_for(&base, "bob").await;
    let r = open_alices_lab(&bob_browser, &base).await;
    assert_eq!(r.status(), 403, "{}", r.url());

    // alice opens her Lab: the dialog calls the hub with the Lab page's token (its OAuth
    // token), which carries the sharing scopes the spawner allows and nothing more.
    let alice_browser = browser_for(&base, "alice").await;
    let r = alice_browser
        .get(format!("{base}/user/alice/lab"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.url());
    let lab = page_config(&r.text().await.unwrap());
    assert_eq!(lab["hubUser"], "alice");
    let alice = lab["token"]
        .as_str()
        .expect("the Lab page's token")
        .to_owned();
    assert_ne!(alice, alice_api);

    // The share dialog's calls, with the Lab's token.
    let (status, root) = get_json(&api, format!("{base}/hub/api"), &alice).await;
    assert_eq!(status, 200);
    let major: u32 = root["version"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(major >= 5, "the dialog needs a hub >= 5: {root}");
    let (status, me) = get_json(&api, format!("{base}/hub/api/user"), &alice).await;
    assert_eq!(status, 200);
    let scopes: Vec<String> = serde_json::from_value(me["scopes"].clone()).unwrap();
    assert!(
        scopes.contains(&"shares!user=alice".to_owned()),
        "{scopes:?}"
    );
    assert!(
        !scopes
            .iter()
            .any(|s| s == "tokens!user=alice" || s.starts_with("servers")),
        "the Lab's token cannot act as alice beyond sharing: {scopes:?}"
    );
    let (status, users) = get_json(
        &api,
        format!("{base}/hub/api/users?limit=200&offset=0"),
        &alice,
    )
    .await;
    assert_eq!(status, 200, "{users}");
    assert!(users.to_string().contains("\"bob\""), "{users}");
    let (status, _) = get_json(&api, format!("{base}/hub/api/groups"), &alice).await;
    assert_eq!(status, 200);
    let r = api
        .post(format!("{base}/hub/api/shares/alice/"))
        .header("Authorization", format!("token {alice}"))
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let share: Value = r.json().await.unwrap();
    assert_eq!(share["scopes"], json!(["access:servers!server=alice/"]));
    assert_eq!(share["server"]["ready"], true, "{share}");
    let (_, listed) = get_json(&api, format!("{base}/hub/api/shares/alice/"), &alice).await;
    assert_eq!(listed["items"][0]["user"]["name"], "bob", "{listed}");

    // bob opens alice's Lab through the hub's OAuth (consent for someone else's server).
    let r = open_alices_lab(&bob_browser, &base).await;
    assert_eq!(r.status(), 200, "{}", r.url());
    assert_eq!(r.url().path(), "/user/alice/lab");
    let config = page_config(&r.text().await.unwrap());
    assert_eq!(config["hubUser"], "bob");
    assert_eq!(config["hubServerUser"], "alice");
    let bob_oauth = config["token"]
        .as_str()
        .expect("bob's OAuth token")
        .to_owned();
    let (_, whoami) = get_json(&api, format!("{base}/hub/api/user"), &bob_oauth).await;
    assert!(
        whoami["scopes"]
            .to_string()
            .contains("access:servers!server=alice/"),
        "{whoami}"
    );
    // A visitor's token for alice's server gets no power over alice's shares.
    assert!(
        !whoami["scopes"].to_string().contains("shares!user=alice"),
        "{whoami}"
    );
    let r = api
        .post(format!("{base}/hub/api/shares/alice/"))
        .header("Authorization", format!("token {bob_oauth}"))
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(r.status().as_u16(), 403 | 404),
        "bob re-shares alice's server: {}",
        r.status()
    );

    // alice revokes: bob's old OAuth token no longer reports access, a new login is refused.
    let r = api
        .patch(format!("{base}/hub/api/shares/alice/"))
        .header("Authorization", format!("token {alice}"))
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    let (status, whoami) = get_json(&api, format!("{base}/hub/api/user"), &bob_oauth).await;
    assert_eq!(status, 200);
    assert!(!whoami["scopes"].to_string().contains("alice"), "{whoami}");
    let fresh = browser_for(&base, "bob").await;
    let r = open_alices_lab(&fresh, &base).await;
    assert_eq!(r.status(), 403, "{}", r.url());

    // A share code: bob accepts it on the accept page and reaches the server again.
    let r = api
        .post(format!("{base}/hub/api/share-codes/alice/"))
        .header("Authorization", format!("token {alice}"))
        .json(&json!({"expires_in": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let issued: Value = r.json().await.unwrap();
    let code = issued["code"].as_str().unwrap().to_owned();
    let accept_url = issued["accept_url"].as_str().unwrap().to_owned();
    let bob_again = browser_for(&base, "bob").await;
    let r = bob_again
        .get(format!("{base}{accept_url}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("alice"), "{page}");
    let (action, fields) = form_of(&page);
    let r = bob_again
        .post(format!("{base}{action}"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    // Accepting redirects to the server, which sends bob through the OAuth consent.
    assert_eq!(
        r.url().path(),
        "/hub/api/oauth2/authorize",
        "{}",
        r.status()
    );
    let r = open_alices_lab(&bob_again, &base).await;
    assert_eq!(r.status(), 200, "{}", r.url());
    assert_eq!(r.url().path(), "/user/alice/lab");
    let (_, codes) = get_json(&api, format!("{base}/hub/api/share-codes/alice/"), &alice).await;
    assert_eq!(codes["items"][0]["exchange_count"], 1, "{codes}");

    // An expired code is refused (the clock moved on: its expiry is set in the past).
    let r = api
        .post(format!("{base}/hub/api/share-codes/alice/"))
        .header("Authorization", format!("token {alice}"))
        .json(&json!({"expires_in": 60}))
        .send()
        .await
        .unwrap();
    let expiring: Value = r.json().await.unwrap();
    let old_code = expiring["code"].as_str().unwrap().to_owned();
    let id: i64 = expiring["id"].as_str().unwrap()[3..].parse().unwrap();
    let db = dir.join("data/stackhub.sqlite");
    let status = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect({:?}); \
             c.execute('UPDATE share_codes SET expires_at = 1 WHERE id = {id}'); c.commit()",
            db.display().to_string()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let carol_token = user_with_token(&api, &base, "carol", "e2e").await;
    let carol = browser_for(&base, "carol").await;
    let r = carol
        .get(format!(
            "{base}{}",
            expiring["accept_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let page = r.text().await.unwrap();
    assert!(page.contains("expired"), "{page}");
    let r = open_alices_lab(&carol, &base).await;
    assert_eq!(r.status(), 403, "{}", r.url());

    hub.terminate();
    let mut scan = SecretScan::new();
    scan.add("the admin token", ADMIN_TOKEN)
        .add("alice's Lab token", &alice)
        .add("alice's token", &alice_api)
        .add("bob's token", &bob)
        .add("carol's token", &carol_token)
        .add("bob's OAuth token", &bob_oauth)
        .add("the share code", &code)
        .add("the expired share code", &old_code);
    let logs = scan.logs_under(&dir);
    assert!(logs >= 2, "logs searched: {logs}");
    scan.assert_clean();
}
