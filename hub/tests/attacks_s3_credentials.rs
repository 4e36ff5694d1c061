//! Attacks on `POST /hub/api/sites/{id}/s3-credentials`, the temporary S3 credentials a full
//! JupyterLab's `credential_process` fetches for its user's space, written as the requests a
//! hostile user sends: against the real endpoint and the hub's embedded S3 store.
//!
//! The credentials go only to the caller's own user, to tokens holding the scope a server's own
//! token holds, and to users who may use a profile whose S3 space is at that site; and they
//! reach that user's prefix only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use axum::http::{Method, StatusCode};
use common::{Hub, hub_with, test_db};
use hub::RoleConfig;
use hub::sites::SiteRegistry;
use serde_json::{Value, json};

/// A temporary data directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("hub-attacks-s3-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The embedded S3 store on a free port and one site, `central`, whose S3 is that store; the
/// default profiles (the full Lab, whose S3 site is `central` by default, and the remote ones)
/// with the full Lab restricted to the role `lab-users` (alice and bob) and the remote-kernels
/// profile at `central` removed, so only the Lab gives an S3 space there.
async fn hub_with_s3(dir: &TempDir) -> Hub {
    let data = dir.0.clone();
    let hub = hub_with(test_db().await, move |c| {
        c.data_dir = data;
        c.s3.embedded = true;
        c.s3.port = 0;
        // The default sites keep their S3 in the embedded store; only `central` is kept.
        c.sites.retain(|s| s.id == "central");
        c.roles.push(RoleConfig {
            name: "lab-users".to_owned(),
            scopes: Vec::new(),
            users: vec!["alice".to_owned(), "bob".to_owned()],
            ..RoleConfig::default()
        });
        c.profile_list.retain(|p| p.slug != "remote-central");
        let lab = c
            .profile_list
            .iter_mut()
            .find(|p| p.slug == "jupyterlab")
            .expect("the default profiles include jupyterlab");
        lab.allowed_roles = vec!["lab-users".to_owned()];
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

const URL: &str = "/hub/api/sites/central/s3-credentials";

/// An S3 client of the embedded store holding what the endpoint answered.
fn client(hub: &Hub, creds: &Value) -> aws_sdk_s3::Client {
    let endpoint = hub
        .state
        .sites()
        .unwrap()
        .embedded_endpoint()
        .unwrap()
        .to_owned();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(hub.state.config().s3.region.clone()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            creds["AccessKeyId"].as_str().unwrap(),
            creds["SecretAccessKey"].as_str().unwrap(),
            creds["SessionToken"].as_str().map(str::to_owned),
            None,
            "test",
        ))
        .force_path_style(true)
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn credentials_of(hub: &Hub, token: &str) -> Value {
    let r = hub.call(Method::POST, URL, Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn s3_credentials_are_credential_process_json_for_the_callers_own_space() {
    let dir = temp_dir();
    let hub = hub_with_s3(&dir).await;
    let alice = hub.user_token("alice", None).await;
    let r = hub.call(Method::POST, URL, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let c = &r.body;
    assert_eq!(c["Version"], 1, "{c}");
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(c[k].as_str().is_some_and(|v| !v.is_empty()), "{k}: {c}");
    }
    let exp = chrono::DateTime::parse_from_rfc3339(c["Expiration"].as_str().unwrap()).unwrap();
    assert!(exp > chrono::Utc::now(), "{c}");

    // They work in alice's space.
    let s3 = client(&hub, c);
    s3.put_object()
        .bucket("stackhub")
        .key("users/alice/mine.txt")
        .body(ByteStream::from_static(b"alice's"))
        .send()
        .await
        .unwrap();
    let listed = s3
        .list_objects_v2()
        .bucket("stackhub")
        .prefix("users/alice/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(1));
}

#[tokio::test]
async fn s3_credentials_cannot_read_or_write_another_users_prefix() {
    let dir = temp_dir();
    let hub = hub_with_s3(&dir).await;
    let alice = hub.user_token("alice", None).await;
    let bob = hub.user_token("bob", None).await;
    let bobs = client(&hub, &credentials_of(&hub, &bob).await);
    bobs.put_object()
        .bucket("stackhub")
        .key("users/bob/secret.txt")
        .body(ByteStream::from_static(b"bob's"))
        .send()
        .await
        .unwrap();

    // Alice's credentials, from the real endpoint, against bob's prefix: every way in refused.
    let s3 = client(&hub, &credentials_of(&hub, &alice).await);
    let get = s3
        .get_object()
        .bucket("stackhub")
        .key("users/bob/secret.txt")
        .send()
        .await;
    assert!(get.is_err(), "alice read bob's object");
    let list = s3
        .list_objects_v2()
        .bucket("stackhub")
        .prefix("users/bob/")
        .send()
        .await;
    assert!(list.is_err(), "alice listed bob's prefix: {list:?}");
    let list_all = s3.list_objects_v2().bucket("stackhub").send().await;
    assert!(
        list_all.is_err(),
        "alice listed the whole bucket: {list_all:?}"
    );
    let put = s3
        .put_object()
        .bucket("stackhub")
        .key("users/bob/planted.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(put.is_err(), "alice wrote into bob's prefix");
    // A look-alike prefix is another user's too.
    let put = s3
        .put_object()
        .bucket("stackhub")
        .key("users/alice-evil/x.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(put.is_err(), "alice wrote into users/alice-evil/");
    // Bob's object is untouched and his own.
    let got = bobs
        .get_object()
        .bucket("stackhub")
        .key("users/bob/secret.txt")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"bob's");
}

#[tokio::test]
async fn another_users_token_gets_its_own_users_credentials_never_mine() {
    let dir = temp_dir();
    let hub = hub_with_s3(&dir).await;
    let alice = hub.user_token("alice", None).await;
    let bob = hub.user_token("bob", None).await;
    // The endpoint has no user in its path: bob's token always means bob. Whatever bob adds to
    // the request, he gets credentials for users/bob/ only, which cannot read alice's space.
    let alices = client(&hub, &credentials_of(&hub, &alice).await);
    alices
        .put_object()
        .bucket("stackhub")
        .key("users/alice/private.txt")
        .body(ByteStream::from_static(b"alice's"))
        .send()
        .await
        .unwrap();
    for body in [
        None,
        Some(json!({"user": "alice"})),
        Some(json!({"name": "alice", "prefix": "users/alice/"})),
    ] {
        let body = body.map(|b| b.to_string());
        let r = hub
            .call(Method::POST, URL, Some(&bob), body.as_deref())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let s3 = client(&hub, &r.body);
        let get = s3
            .get_object()
            .bucket("stackhub")
            .key("users/alice/private.txt")
            .send()
            .await;
        assert!(
            get.is_err(),
            "bob's token got credentials reading alice's space"
        );
    }
    // And for a user path: only the caller's own user (the route has none to name another).
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/central/s3-credentials?user=alice",
            Some(&bob),
            None,
        )
        .await;
    let s3 = client(&hub, &r.body);
    assert!(
        s3.get_object()
            .bucket("stackhub")
            .key("users/alice/private.txt")
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_token_without_the_scope_is_refused() {
    let dir = temp_dir();
    let hub = hub_with_s3(&dir).await;
    // A token of alice's that may only read her model: not what a server's token holds.
    let narrow = hub
        .user_token("alice", Some(&["read:users!user=alice"]))
        .await;
    let r = hub.call(Method::POST, URL, Some(&narrow), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.body.get("SecretAccessKey").is_none(), "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("users:activity"),
        "{}",
        r.text
    );

    // No token at all.
    let r = hub.call(Method::POST, URL, None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn a_user_without_a_profile_at_the_site_is_refused() {
    let dir = temp_dir();
    let hub = hub_with_s3(&dir).await;
    // Mallory may use no profile with an S3 space at `central` (the Lab needs `lab-users`).
    let mallory = hub.user_token("mallory", None).await;
    let r = hub.call(Method::POST, URL, Some(&mallory), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.body.get("SecretAccessKey").is_none(), "{}", r.text);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("central") && message.contains("lab-users"),
        "{message}"
    );

    // No such site.
    let alice = hub.user_token("alice", None).await;
    let r = hub
        .call(
            Method::POST,
            "/hub/api/sites/lumi/s3-credentials",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}
