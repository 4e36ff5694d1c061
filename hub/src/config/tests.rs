use std::collections::HashMap;

use super::env::*;
use super::*;

#[test]
fn defaults_work_locally() {
    let c = Config::load(None, &HashMap::<&str, &str>::new()).unwrap();
    assert_eq!(c.port, 8000);
    assert_eq!(c.ip.to_string(), "127.0.0.1");
    assert!(
        c.database_url()
            .expose()
            .ends_with(".stackhub/stackhub.sqlite?mode=rwc")
    );
}

#[test]
fn env_overrides_and_errors_name_the_key() {
    let env = HashMap::from([(ENV_PORT, "9000"), (ENV_ADMIN_TOKEN, "0123456789abcdef0")]);
    let c = Config::load(None, &env).unwrap();
    assert_eq!(c.port, 9000);
    assert_eq!(format!("{:?}", c.admin_token), "Some(Secret(***))");
    let env = HashMap::from([(ENV_PORT, "nope")]);
    let err = Config::load(None, &env).unwrap_err().to_string();
    assert!(err.contains(ENV_PORT), "{err}");
    let env = HashMap::from([(ENV_ADMIN_TOKEN, "short-secret")]);
    let err = Config::load(None, &env).unwrap_err().to_string();
    assert!(
        err.contains("admin_token") && !err.contains("short-secret"),
        "{err}"
    );
}

#[test]
fn subdomain_host_is_parsed_once_and_sets_the_public_url() {
    let env = HashMap::<&str, &str>::new();
    assert!(Config::load(None, &env).unwrap().subdomain_host.is_none());
    let c = Config::from_toml("subdomain_host = \"https://hub.example\"\n").unwrap();
    assert_eq!(c.subdomain_host.unwrap().domain(), "hub.example");
    let err = Config::from_toml("subdomain_host = \"https://hub.example/x/\"\n").unwrap_err();
    assert!(err.contains("subdomain_host"), "{err}");
    let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "http://hub.test:8000")]);
    let c = Config::load(None, &env).unwrap();
    assert_eq!(
        c.subdomain_host.as_ref().unwrap().user_origin("alice"),
        "http://alice.hub.test:8000"
    );
    assert_eq!(c.public_url.as_deref(), Some("http://hub.test:8000/"));
    let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "10.0.0.1")]);
    let err = Config::load(None, &env).unwrap_err().to_string();
    assert!(err.contains(ENV_SUBDOMAIN_HOST), "{err}");
    let env = HashMap::from([
        (ENV_SUBDOMAIN_HOST, "https://hub.example"),
        (ENV_PUBLIC_URL, "https://other.example/"),
    ]);
    let err = Config::load(None, &env).unwrap_err().to_string();
    assert!(
        err.contains("public_url") && err.contains("hub.example"),
        "{err}"
    );
    let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "")]);
    assert!(Config::load(None, &env).unwrap().subdomain_host.is_none());
}

#[test]
fn toml_errors_never_echo_secrets() {
    let err = Config::from_toml("cookie_secret = 12345\n").unwrap_err();
    assert!(
        err.contains("cookie_secret") && !err.contains("12345"),
        "{err}"
    );
    let err = Config::from_toml("[auth]\ndev_password = \"hunter2\nport = 1\n").unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    let err = Config::from_toml("prot = 1\n").unwrap_err();
    assert!(err.contains("prot"), "{err}");
    let c = Config::from_toml("port = 8001\n[auth]\ndev_password = \"pw\"\n").unwrap();
    assert_eq!(c.port, 8001);
    assert_eq!(c.auth.dev_password.unwrap().expose(), "pw");
}

#[test]
fn spawner_kind_is_checked_and_kubernetes_settings_are_loaded() {
    let dir = std::env::temp_dir().join(format!("hub-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = HashMap::<&str, &str>::new();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let bad = file("bad-kind.toml", "[spawner]\nkind = \"docker\"\n");
    let err = Config::load(Some(&bad), &env).unwrap_err().to_string();
    assert!(
        err.contains("docker") && err.contains("kubernetes"),
        "{err}"
    );
    let missing = file("missing.toml", "[spawner]\nkind = \"kubernetes\"\n");
    let err = Config::load(Some(&missing), &env).unwrap_err().to_string();
    assert!(err.contains("spawner.kubernetes_config"), "{err}");
    let json = file(
        "k8s.json",
        r#"{"hub_id": "h1", "image": "img:1", "uid": 0}"#,
    );
    let toml = format!(
        "[spawner]\nkind = \"kubernetes\"\nkubernetes_config = \"{}\"\n",
        json.display()
    );
    let good = file("good.toml", &toml);
    let err = Config::load(Some(&good), &env).unwrap_err().to_string();
    assert!(err.contains("uid"), "{err}");
    std::fs::write(&json, r#"{"hub_id": "h1", "image": "img:1", "imagee": 1}"#).unwrap();
    let err = Config::load(Some(&good), &env).unwrap_err().to_string();
    assert!(err.contains("imagee") && err.contains("k8s.json"), "{err}");
    std::fs::write(&json, r#"{"hub_id": "h1", "image": "img:1"}"#).unwrap();
    let c = Config::load(Some(&good), &env).unwrap();
    assert_eq!(c.spawner.kind, SpawnerKind::Kubernetes);
    assert_eq!(c.spawner.kubernetes.unwrap().hub_id, "h1");
    assert_eq!(
        Config::load(None, &env).unwrap().spawner.kind,
        SpawnerKind::Local
    );
}

#[test]
fn bad_quota_rows_name_the_key() {
    let mut c = Config::load(None, &HashMap::<&str, &str>::new()).unwrap();
    c.quotas[1].memory = "lots".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("quotas[1].memory") && e.contains("lots"), "{e}");
    c.quotas[1].memory = "18Gi".into();
    c.quotas[2].cpus = -1.0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("quotas[2].cpus"), "{e}");
}
