//! Per-user origins (`subdomain_host`) against a hostile page, in headless Chromium (Debian
//! `chromium`, npm `playwright-core`), with the real `stackhub` binary and real
//! `jupyterhub-singleuser` servers for alice and mallory.
//!
//! Mallory, a user, makes her own server serve a page with a script: she writes a Jupyter Server
//! config into her home (`~/.jupyter/jupyter_server_config.py`, adding a static directory of
//! hers, which Jupyter Server serves without authentication and without a sandbox) and the page
//! into that directory, then starts her server. Alice signs in, opens a file on her own server,
//! and follows mallory's link. The script tries, with alice's cookies, to read alice's file
//! (fetch and a frame), to read the hub's home page (its `_xsrf` token), to ask `/hub/api/user`
//! who is calling, and to mint a token for alice.
//!
//! With `subdomain_host` each server has its own origin and every attempt fails. The same test
//! with the setting off (every server under the hub's origin) shows the attack working, so the
//! test is able to fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_common;
mod hub_common;

use std::path::Path;

use serde_json::Value;

use browser_common::{artifacts, node};
use hub_common::{Hub, PASSWORD, admin, free_ports, log_tail, progress_of, scratch_dir};

const SECRET: &str = "alice-secret-7f3c2a";

/// The page mallory's server serves: it reports what it could reach in `window.__result`.
const EVIL_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Cat pictures</title></head>
<body><h1>Cat pictures</h1><pre id="out"></pre>
<script>
(async () => {
  const q = new URLSearchParams(location.search);
  const alice = q.get('alice'), hub = q.get('hub');
  const r = { origin: location.origin, ran: true };
  const file = alice + 'api/contents/secret.txt?content=1';
  try {
    const resp = await fetch(file, { credentials: 'include' });
    r.fetch_status = resp.status;
    r.fetch_body = (await resp.text()).slice(0, 400);
  } catch (e) { r.fetch_error = String(e); }
  r.frame_text = await new Promise((resolve) => {
    const f = document.createElement('iframe');
    const timer = setTimeout(() => resolve('timeout'), 20000);
    f.onload = () => {
      clearTimeout(timer);
      try { resolve(f.contentDocument.body.innerText.slice(0, 400)); }
      catch (e) { resolve('blocked: ' + e.name); }
    };
    f.src = file;
    document.body.appendChild(f);
  });
  try {
    const home = await fetch(hub + '/hub/home', { credentials: 'include' });
    const html = await home.text();
    const m = html.match(/data-xsrf="([^"]+)"/);
    r.home_status = home.status;
    r.xsrf = m ? m[1] : null;
  } catch (e) { r.home_error = String(e); }
  try {
    const headers = r.xsrf ? { 'X-XSRFToken': r.xsrf } : {};
    const who = await fetch(hub + '/hub/api/user', { credentials: 'include', headers });
    r.whoami_status = who.status;
    r.whoami = (await who.text()).slice(0, 300);
  } catch (e) { r.whoami_error = String(e); }
  try {
    const body = JSON.stringify({ note: 'minted-by-mallory' });
    const mint = r.xsrf
      ? await fetch(hub + '/hub/api/users/alice/tokens', { method: 'POST', credentials: 'include',
          headers: { 'X-XSRFToken': r.xsrf, 'Content-Type': 'application/json' }, body })
      : await fetch(hub + '/hub/api/users/alice/tokens', { method: 'POST', credentials: 'include',
          mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body });
    r.mint_status = mint.status;
    r.mint_body = (await mint.text()).slice(0, 300);
  } catch (e) { r.mint_error = String(e); }
  document.getElementById('out').textContent = JSON.stringify(r, null, 1);
  window.__result = r;
  window.__done = true;
})();
</script></body></html>
"#;

/// What one run saw: the browser's report and the notes of alice's tokens afterwards.
struct Seen {
    browser: Value,
    alice_tokens: Vec<String>,
    alice_url: String,
    host_routed: Vec<(String, u16, Option<String>)>,
}

/// Mallory's home: a Jupyter Server config adding a static directory, and the page in it.
fn plant_mallorys_page(data: &Path) {
    let home = data.join("users/mallory");
    std::fs::create_dir_all(home.join(".jupyter")).unwrap();
    std::fs::create_dir_all(home.join("www")).unwrap();
    std::fs::write(
        home.join(".jupyter/jupyter_server_config.py"),
        format!(
            "c.ServerApp.extra_static_paths = [{:?}]\n",
            home.join("www").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(home.join("www/cats.html"), EVIL_PAGE).unwrap();
    let alice = data.join("users/alice");
    std::fs::create_dir_all(&alice).unwrap();
    std::fs::write(alice.join("secret.txt"), SECRET).unwrap();
}

async fn start_server(api: &reqwest::Client, base: &str, user: &str) {
    let r = admin(
        api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/{user}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "create {user}");
    let r = admin(
        api,
        reqwest::Method::POST,
        format!("{base}/hub/api/users/{user}/server"),
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(r.status().as_u16(), 201 | 202),
        "start {user}: {}",
        r.status()
    );
    let events = progress_of(api, base, user).await;
    assert_eq!(events.last().unwrap()["ready"], true, "{user}: {events:?}");
}

async fn run(label: &str, subdomains: bool) -> Seen {
    let (dir, _cleanup) = scratch_dir(&format!("origins-{label}"));
    let [port, hub_port] = free_ports::<2>();
    let public = format!("http://hub.test:{port}");
    std::fs::write(
        dir.join("hub.toml"),
        "profile_list = []\n[spawner]\nstart_timeout = 300\n",
    )
    .unwrap();
    plant_mallorys_page(&dir.join("data"));
    let setting = if subdomains {
        ("STACKHUB_SUBDOMAIN_HOST", public.clone())
    } else {
        ("STACKHUB_PUBLIC_URL", format!("{public}/"))
    };
    let config = dir.join("hub.toml").display().to_string();
    let mut hub = Hub::start_with_env(
        &dir,
        port,
        hub_port,
        &["--config", &config],
        &[(setting.0, setting.1.as_str())],
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let api = reqwest::Client::new();
    start_server(&api, &base, "alice").await;
    start_server(&api, &base, "mallory").await;
    let url_of = |model: &Value| {
        model["servers"][""]["full_url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let get = |path: String| admin(&api, reqwest::Method::GET, format!("{base}{path}")).send();
    let alice: Value = get("/hub/api/users/alice".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mallory: Value = get("/hub/api/users/mallory".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (alice_url, mallory_url) = (url_of(&alice), url_of(&mallory));

    // Host routing seen from outside the browser: (Host, path) → status and Location.
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut host_routed = Vec::new();
    for (host, path) in [
        (format!("mallory.hub.test:{port}"), "/user/alice/api/status"),
        (format!("alice.hub.test:{port}"), "/hub/api/user"),
        (format!("alice.hub.test:{port}"), "/hub/login"),
    ] {
        let r = raw
            .get(format!("{base}{path}"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        host_routed.push((format!("{host}{path}"), r.status().as_u16(), location));
    }

    let art = artifacts().display().to_string();
    let page = format!("{mallory_url}static/cats.html");
    let (public2, alice2, label2) = (public.clone(), alice_url.clone(), label.to_owned());
    let browser = tokio::task::spawn_blocking(move || {
        node(
            "browser_origins.mjs",
            &[&public2, &alice2, &page, "alice", PASSWORD, &art, &label2],
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nhub log:\n{}", log_tail(&dir.join("hub.log"))));
    eprintln!("{label}: {browser:#}");

    let tokens: Value = get("/hub/api/users/alice/tokens".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_tokens = tokens["api_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["note"].as_str().unwrap_or_default().to_owned())
        .collect();
    hub.terminate();
    Seen {
        browser,
        alice_tokens,
        alice_url,
        host_routed,
    }
}

fn read_alices_file(attack: &Value) -> bool {
    let fetched = attack["fetch_body"].as_str().unwrap_or_default();
    let framed = attack["frame_text"].as_str().unwrap_or_default();
    fetched.contains(SECRET) || framed.contains(SECRET)
}

#[tokio::test]
async fn a_page_from_mallorys_server_cannot_read_alices_server_or_act_on_the_hub_as_alice() {
    // Per-user origins on.
    let seen = run("subdomains", true).await;
    let b = &seen.browser;
    let attack = &b["attack"];
    let port = seen
        .alice_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        seen.alice_url,
        format!("http://alice.hub.test:{port}/user/alice/")
    );
    assert_eq!(
        b["own"], SECRET,
        "alice reads her own file on her own host: {b}"
    );
    assert_eq!(attack["ran"], true, "{b}");
    assert_eq!(
        attack["origin"],
        format!("http://mallory.hub.test:{port}"),
        "{b}"
    );
    assert!(
        !read_alices_file(attack),
        "mallory's page read alice's file: {b}"
    );
    assert!(
        attack["xsrf"].is_null(),
        "mallory's page read the hub's _xsrf token: {b}"
    );
    assert_ne!(attack["whoami_status"], 200, "{b}");
    assert!(
        !attack["whoami"]
            .as_str()
            .unwrap_or_default()
            .contains("alice"),
        "{b}"
    );
    assert!(
        !seen.alice_tokens.iter().any(|n| n == "minted-by-mallory"),
        "mallory's page minted a token for alice: {:?}",
        seen.alice_tokens
    );
    // Cookies: the hub's are host-only on the hub host, HttpOnly and SameSite=Lax; alice's
    // server's OAuth cookie lives on her own host.
    for c in b["cookies"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let hub_cookie = matches!(name, "jupyterhub-hub-login" | "jupyterhub-session-id")
            || (name == "_xsrf" && c["path"].as_str().unwrap().starts_with("/hub"));
        if hub_cookie {
            assert_eq!(c["domain"], "hub.test", "{c}");
            assert_eq!(c["httpOnly"], true, "{c}");
            assert_eq!(c["sameSite"], "Lax", "{c}");
        }
        if name.starts_with("jupyterhub-user-alice") {
            assert_eq!(c["domain"], "alice.hub.test", "{c}");
        }
        assert!(
            !c["domain"].as_str().unwrap().starts_with('.'),
            "no domain cookie: {c}"
        );
    }
    assert!(
        b["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "jupyterhub-user-alice" && c["domain"] == "alice.hub.test"),
        "{b}"
    );
    // Outside the browser: alice's path on mallory's host is not alice's server, and the hub's
    // pages and API are not answered on a user's host (sent to the hub host instead).
    for (what, status, location) in &seen.host_routed {
        assert_eq!(*status, 302, "{what}");
        let location = location.as_deref().unwrap_or_default();
        assert!(
            location.starts_with(&format!("http://hub.test:{port}/")),
            "{what} → {location}"
        );
    }

    // The same page with the setting off: every server shares the hub's origin, and the very
    // same script reads alice's file and acts on the hub as alice.
    let seen = run("shared", false).await;
    let b = &seen.browser;
    let attack = &b["attack"];
    assert_eq!(b["own"], SECRET, "{b}");
    assert!(
        read_alices_file(attack),
        "shared origin: the page reads alice's file: {b}"
    );
    assert!(attack["xsrf"].is_string(), "{b}");
    assert_eq!(attack["whoami_status"], 200, "{b}");
    assert!(
        attack["whoami"].as_str().unwrap().contains("\"alice\""),
        "{b}"
    );
    assert!(
        seen.alice_tokens.iter().any(|n| n == "minted-by-mallory"),
        "shared origin: the page mints a token for alice: {:?}",
        seen.alice_tokens
    );
}
