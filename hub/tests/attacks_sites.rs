//! Attacks on the sites' trust boundary, written as the requests a hostile user sends.
//!
//! `POST /hub/api/sites/{id}/token` hands out a JWT the site's gateway accepts: it must go only
//! to users who may use a profile running at that site (the profiles' `allowed_roles` /
//! `allowed_groups`), and it must name its issuer and the site (`iss`, `aud`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use base64::Engine;
use common::{Hub, hub_with, test_db};
use hub::RoleConfig;
use hub::sites::SiteRegistry;
use serde_json::Value;

/// A temporary data directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The default five sites (hub-issued tokens), with the `remote-lumi` profile restricted to
/// the role `lumi-users`, held by alice only.
async fn hub_with_sites(dir: &TempDir, public_url: Option<&str>) -> Hub {
    let data = dir.0.clone();
    let public_url = public_url.map(str::to_owned);
    let hub = hub_with(test_db().await, move |c| {
        c.data_dir = data;
        c.public_url = public_url;
        c.s3.embedded = false;
        c.roles.push(RoleConfig {
            name: "lumi-users".to_owned(),
            scopes: Vec::new(),
            users: vec!["alice".to_owned()],
            ..RoleConfig::default()
        });
        let lumi = c
            .profile_list
            .iter_mut()
            .find(|p| p.slug == "remote-lumi")
            .expect("the default profiles include remote-lumi");
        lumi.allowed_roles = vec!["lumi-users".to_owned()];
    })
    .await;
    let env: HashMap<String, String> = HashMap::new();
    let sites = SiteRegistry::start(hub.state.config(), &env).await.unwrap();
    let state = hub.state.clone().with_sites(sites);
    Hub {
        app: hub::app(state.clone()),
        state,
    }
}

fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("hub-attacks-sites-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The claims of a JWT (not verified: the gateway tests do that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn user_without_the_sites_profile_role_cannot_mint_a_gateway_token_for_it() {
    let dir = temp_dir();
    let hub = hub_with_sites(&dir, None).await;
    let mallory = hub.user_token("mallory", None).await;
    let alice = hub.user_token("alice", None).await;

    // Mallory may not use `remote-lumi`: no LUMI token, and the refusal says what is needed.
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/lumi/token",
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["status"], 403, "{}", r.text);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("lumi") && message.contains("lumi-users"),
        "{message}"
    );
    assert!(r.body.get("token").is_none(), "{}", r.text);

    // Alice holds the role: a token for LUMI, naming LUMI and the issuer.
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/lumi/token",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c = claims(r.body["token"].as_str().unwrap());
    assert_eq!(c["aud"], "lumi");
    assert_eq!(c["iss"], "stackhub");
    assert_eq!(c["preferred_username"], "alice");

    // The refusal is per site: LEONARDO's profile is open to everyone.
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/leonardo/token",
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(claims(r.body["token"].as_str().unwrap())["aud"], "leonardo");
}

#[tokio::test]
async fn user_cannot_mint_a_token_for_a_site_no_profile_runs_at() {
    let dir = temp_dir();
    let data = dir.0.clone();
    let hub = hub_with(test_db().await, move |c| {
        c.data_dir = data;
        c.s3.embedded = false;
        // Only the lab profile: no profile runs at any site.
        c.profile_list.retain(|p| p.slug == "jupyterlab");
    })
    .await;
    let env: HashMap<String, String> = HashMap::new();
    let sites = SiteRegistry::start(hub.state.config(), &env).await.unwrap();
    let state = hub.state.clone().with_sites(sites);
    let hub = Hub {
        app: hub::app(state.clone()),
        state,
    };
    let mallory = hub.user_token("mallory", None).await;
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/central/token",
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["status"], 403);
}

#[tokio::test]
async fn gateway_tokens_name_the_hubs_public_url_as_issuer() {
    let dir = temp_dir();
    let hub = hub_with_sites(&dir, Some("https://hub.example.org/")).await;
    let alice = hub.user_token("alice", None).await;
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/lumi/token",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c = claims(r.body["token"].as_str().unwrap());
    assert_eq!(c["iss"], "https://hub.example.org");
    assert_eq!(c["aud"], "lumi");
}

async fn admin_page(hub: &Hub) -> String {
    let (cookie, _) = hub.login("root").await;
    let req = axum::http::Request::builder()
        .method(Method::GET)
        .uri("/hub/admin")
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let r = hub.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
}

#[tokio::test]
async fn admin_page_warns_that_the_local_spawner_runs_every_user_as_one_unix_account() {
    // The default spawner (local processes): every user's server is the hub's own account.
    let hub = hub_with(test_db().await, |_| {}).await;
    let page = admin_page(&hub).await;
    assert!(page.contains("id=\"unsafe-mode\""), "{page}");
    assert!(
        page.contains("Unsafe for more than one user")
            && page.contains("spawner.kind = &quot;local&quot;")
            && page.contains("Unix account"),
        "{page}"
    );
    // A pod per user: no warning.
    let hub = hub_with(test_db().await, |c| {
        c.spawner.kind = hub::SpawnerKind::Kubernetes;
    })
    .await;
    let page = admin_page(&hub).await;
    assert!(!page.contains("unsafe-mode"), "{page}");
}
