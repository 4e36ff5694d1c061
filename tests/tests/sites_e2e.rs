//! The site registry against real components: a real kernel gateway (in-process
//! `kernel_gateway::serve`, token-protected) and the hub's embedded S3 store. Health reasons
//! name what is wrong (gateway down, refused credentials, S3 not configured, secret variable
//! unset); `site_available` follows the checks; `GET /hub/api/sites` and `bridges.json` serve
//! them; a stopped gateway turns its site unavailable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use hub::sites::{
    GatewayAuth, SiteConfig, SiteRegistry, SiteS3Config, SiteS3Mode, remote_server_env,
};
use hub::{AppState, Config, Db, Secret};
use serde_json::Value;

struct Gw {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gw {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

async fn gateway(token: &str) -> Gw {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = kernel_gateway::Config {
        port: addr.port(),
        auth_token: Some(token.to_owned()),
        remote_site: true,
        ..kernel_gateway::Config::default()
    };
    let runtime = std::env::temp_dir().join(format!("sites-e2e-gw-{}", addr.port()));
    let launcher = Arc::new(kernel_gateway::LocalLauncher::new(runtime, "127.0.0.1"));
    let manager = Arc::new(kernel_gateway::KernelManager::new(config, launcher, |_| {
        None
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kernel_gateway::serve(listener, manager, async move {
        let _ = stopped.await;
    }));
    Gw {
        url: format!("http://{addr}/"),
        stop: Some(stop),
        task,
    }
}

fn site(id: &str, gateway_url: &str, s3: Option<SiteS3Mode>) -> SiteConfig {
    SiteConfig {
        id: id.to_owned(),
        name: format!("{id} site"),
        gateway_url: gateway_url.to_owned(),
        gateway_auth: GatewayAuth::Token,
        token_env: Some("SITE_TOKEN".to_owned()),
        s3: s3.map(|mode| SiteS3Config {
            mode,
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            sts_endpoint: None,
            region: Some("r".to_owned()),
            bucket: Some("b".to_owned()),
            access_key_id: Some("AKID".to_owned()),
            secret_env: Some("MN_SECRET_NOT_SET".to_owned()),
            role_arn: None,
            role_prefix: "stackhub-user-".to_owned(),
            duration_secs: 3600,
        }),
        dask_address: Some(format!("http://dask.{id}.example")),
        dask_proxy_address: Some(format!("tcp://dask.{id}.example:80")),
    }
}

#[tokio::test]
async fn registry_reports_health_with_reasons_and_serves_the_api() {
    let dir = std::env::temp_dir().join(format!("sites-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gw = gateway("site-token-0123").await;
    let wrong = gateway("another-token-456").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    config.sites = vec![
        site("lumi", &gw.url, Some(SiteS3Mode::Embedded)),
        site("leonardo", &dead, Some(SiteS3Mode::Embedded)),
        site("eumetsat", &gw.url, None),
        site("marenostrum", &gw.url, Some(SiteS3Mode::Static)),
        site("central", &wrong.url, Some(SiteS3Mode::Embedded)),
    ];
    config.validate().unwrap();
    let env: HashMap<&str, &str> = HashMap::from([("SITE_TOKEN", "site-token-0123")]);
    let registry = SiteRegistry::start(&config, &env).await.unwrap();

    let err = registry.site_available("lumi").await.unwrap_err();
    assert!(err.reason.contains("not been checked"), "{err}");
    registry.check_all().await;

    let lumi = registry.site_available("lumi").await.unwrap();
    assert_eq!(lumi.name, "lumi site");
    let reason = |id: &'static str| {
        let registry = Arc::clone(&registry);
        async move { registry.site_available(id).await.unwrap_err().reason }
    };
    let r = reason("leonardo").await;
    assert!(r.contains("not reachable") && r.contains(&dead), "{r}");
    let r = reason("eumetsat").await;
    assert!(r.contains("S3 is not configured"), "{r}");
    let r = reason("marenostrum").await;
    assert!(
        r.contains("MN_SECRET_NOT_SET") && r.contains("not set"),
        "{r}"
    );
    let r = reason("central").await;
    assert!(r.contains("refused the hub's credentials"), "{r}");
    assert!(!r.contains("site-token-0123"), "{r}");
    let r = reason("nowhere").await;
    assert!(r.contains("no such site"), "{r}");

    // Provisioning at an available site: the remote server's environment.
    let grant = lumi.provision("alice").await.unwrap();
    let env = remote_server_env(&lumi, &grant);
    assert_eq!(env["JUPYTER_GATEWAY_URL"], gw.url);
    assert_eq!(env["JUPYTER_GATEWAY_AUTH_TOKEN"], "site-token-0123");
    assert_eq!(env["STACKHUB_S3_PREFIX"], "users/alice/");
    assert!(env["JUPYTER_GATEWAY_ALLOWED_ENVS"].contains("AWS_SESSION_TOKEN"));
    assert_eq!(
        env["AWS_ENDPOINT_URL"],
        registry.embedded_endpoint().unwrap()
    );
    let e = registry
        .sites()
        .iter()
        .find(|s| s.id == "eumetsat")
        .unwrap()
        .provision("alice")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("S3 is not configured"), "{e}");

    // The API.
    let db = Db::connect(&Secret::new(format!(
        "sqlite://{}?mode=rwc",
        dir.join("hub.sqlite").display()
    )))
    .await
    .unwrap();
    let admin = Secret::new("sites-e2e-admin-token-0123456789");
    hub::bootstrap_admin_token(&db, "admin-bootstrap", Some(&admin))
        .await
        .unwrap();
    let state = AppState::new(config.clone(), db).with_sites(Arc::clone(&registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hub::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let anon = http
        .get(format!("{base}/hub/api/sites"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 403);
    let sites: Value = http
        .get(format!("{base}/hub/api/sites"))
        .header("Authorization", format!("token {}", admin.expose()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_id = |id: &str| {
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("lumi")["available"], true);
    assert_eq!(by_id("lumi")["s3"]["mode"], "embedded");
    assert_eq!(by_id("lumi")["s3"]["bucket"], "stackhub");
    assert_eq!(by_id("eumetsat")["available"], false);
    assert!(by_id("eumetsat")["s3"].is_null());
    assert!(
        by_id("eumetsat")["reasons"][0]
            .as_str()
            .unwrap()
            .contains("S3 is not configured")
    );
    assert!(!sites.to_string().contains("site-token-0123"));
    let bridges: Value = http
        .get(format!("{base}/hub/api/sites/bridges.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        bridges,
        serde_json::json!({"lumi": {"name": "lumi site", "address": "http://dask.lumi.example",
                                    "proxy_address": "tcp://dask.lumi.example:80"}})
    );

    // A gateway that stops turns its site unavailable at the next check.
    gw.stop().await;
    registry.check_all().await;
    let r = reason("lumi").await;
    assert!(r.contains("not reachable"), "{r}");

    let _ = stop_tx.send(());
    let _ = server.await;
    wrong.stop().await;
    registry.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
