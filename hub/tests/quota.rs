//! Quota roles with the development login: a hub group grants a quota row; the quota is stored
//! at login, shown on the home page, added to the REST user model (single and list), handed to
//! the spawner (`SpawnRequest::spec` resources and the environment), and `max_servers` is enforced.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{ADMIN_TOKEN, Hub, PASSWORD};
use hub::proxy::EmbeddedProxy;
use hub::{Config, Db, HubBuilder, QuotaRole, Secret, SpawnSettings};
use spawner::testing::FakeSpawner;

async fn setup(recorder: Arc<FakeSpawner>) -> Hub {
    let mut config = Config::default();
    config.admin_token = Some(Secret::new(ADMIN_TOKEN));
    config.auth.dev_password = Some(Secret::new(PASSWORD));
    config.quotas.insert(
        0,
        QuotaRole {
            role: "gpu-users".to_owned(),
            cpus: 4.0,
            memory: "8Gi".to_owned(),
            gpus: 1,
            max_servers: Some(1),
            max_kernels: Some(3),
        },
    );
    config.validate().unwrap();
    let db = Db::connect(&Secret::new("sqlite::memory:")).await.unwrap();
    hub::bootstrap_admin_token(&db, &config.admin_service_name, config.admin_token.as_ref())
        .await
        .unwrap();
    let built = HubBuilder::new(config, db)
        .spawn_settings(SpawnSettings {
            hub_api_url: "http://127.0.0.1:8081/hub/api".to_owned(),
            base_url: "/".to_owned(),
            public_url: None,
            subdomain_host: None,
            start_timeout: Duration::from_secs(10),
            slow_spawn_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(10),
            oauth_client_allowed_scopes: Vec::new(),
        })
        .spawner(
            recorder,
            Arc::new(EmbeddedProxy::new(Arc::new(proxy::RouteTable::new()))),
        )
        .build();
    Hub {
        app: built.app,
        state: built.state,
    }
}

#[tokio::test]
async fn group_quota_is_stored_shown_exposed_and_enforced() {
    let recorder = Arc::new(FakeSpawner::default());
    let h = setup(Arc::clone(&recorder)).await;
    let r = h.admin(Method::POST, "/hub/api/users/alice", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.body["quota"],
        serde_json::Value::Null,
        "no quota before login"
    );
    let r = h
        .admin(
            Method::POST,
            "/hub/api/groups/gpu-users",
            Some(r#"{"users":["alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // The quota is resolved and stored at login.
    let (cookie, _) = h.login("alice").await;
    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    assert_eq!(r.body["quota"]["role"], "gpu-users", "{}", r.text);
    assert_eq!(r.body["quota"]["gpus"], 1);
    assert_eq!(r.body["quota"]["memory_bytes"], 8u64 << 30);
    assert_eq!(r.body["quota"]["max_kernels"], 3);
    let r = h.admin(Method::GET, "/hub/api/users", None).await;
    assert_eq!(r.body[0]["quota"]["role"], "gpu-users", "{}", r.text);
    let r = h
        .send(
            Request::get("/hub/home")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        r.text.contains(
            "Quota: gpu-users: 4 CPUs, 8 GiB memory, 1 GPU, up to 1 servers, up to 3 remote kernels"
        ),
        "{}",
        r.text
    );

    // The spawner gets the quota; a second server is over `max_servers`.
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/server", None)
        .await;
    assert!(
        matches!(r.status.as_u16(), 201 | 202),
        "{} {}",
        r.status,
        r.text
    );
    let env = recorder.envs.lock().await[0].clone();
    let quota = recorder.specs.lock().await[0].resources.clone();
    assert_eq!(quota.cpu_limit, Some(4.0));
    assert_eq!(quota.memory_limit, Some(8 << 30));
    assert_eq!(quota.gpus, 1);
    assert_eq!(env["CPU_LIMIT"], "4");
    assert_eq!(env["MEM_LIMIT"], (8u64 << 30).to_string());
    assert_eq!(env["STACKHUB_QUOTA_ROLE"], "gpu-users");
    assert!(!env.contains_key("STACKHUB_ACCESS_TOKEN"), "no OIDC here");
    let r = h
        .admin(Method::POST, "/hub/api/users/alice/servers/second", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("gpu-users"));
    assert_eq!(recorder.specs.lock().await.len(), 1);

    // Leaving the group removes the quota at the next login.
    let r = h
        .admin(
            Method::DELETE,
            "/hub/api/groups/gpu-users/users",
            Some(r#"{"users":["alice"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    h.login("alice").await;
    let r = h.admin(Method::GET, "/hub/api/users/alice", None).await;
    assert_eq!(r.body["quota"], serde_json::Value::Null, "{}", r.text);
}
