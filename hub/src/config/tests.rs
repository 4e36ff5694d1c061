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

/// Load `toml` as a config file, with `env`.
fn load_toml(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let path = std::env::temp_dir().join(format!(
        "stackhub-config-{}-{}.toml",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, toml).unwrap();
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    let loaded = Config::load(Some(&path), &env);
    let _ = std::fs::remove_file(&path);
    loaded
}

fn load_err(toml: &str) -> String {
    load_toml(toml, &[]).unwrap_err().to_string()
}

#[test]
fn services_load_with_tokens_kept_secret() {
    let c = load_toml(
        r#"
[[services]]
name = "grafana"
url = "http://127.0.0.1:3000"
api_token = "grafana-token-0123456789"
info = { description = "dashboards" }

[[services]]
name = "announce"
url = "http://127.0.0.1:8888"

[[roles]]
name = "readers"
scopes = ["list:users", "read:users:activity"]
services = ["grafana"]
"#,
        &[(
            "STACKHUB_SERVICE_ANNOUNCE_API_TOKEN",
            "announce-token-0123456789",
        )],
    )
    .unwrap();
    assert_eq!(c.services.len(), 2);
    assert_eq!(
        c.services[0].api_token.as_ref().unwrap().expose(),
        "grafana-token-0123456789"
    );
    assert_eq!(
        c.services[1].api_token.as_ref().unwrap().expose(),
        "announce-token-0123456789",
        "the environment gives a service its token"
    );
    assert!(!format!("{c:?}").contains("grafana-token"));
    // A type error on a token never echoes it.
    let err = load_err("[[services]]\nname = \"x\"\napi_token = 12345678901234\n");
    assert!(
        err.contains("services[0].api_token") && !err.contains("12345678901234"),
        "{err}"
    );
}

#[test]
fn bad_services_are_start_up_errors_naming_the_service_and_field() {
    let cases = [
        (
            "[[services]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\napi_token = \"t0123456789abcdef\"\n[[services]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"\napi_token = \"t0123456789abcdef\"\n",
            &["services[1].name", "`a`", "twice"][..],
        ),
        (
            "[[services]]\nname = \"cull\"\ncommand = [\"/nonexistent/jupyterhub-idle-culler\"]\n",
            &[
                "services[0].command",
                "`cull`",
                "/nonexistent/jupyterhub-idle-culler",
            ],
        ),
        (
            "[[services]]\nname = \"cull\"\ncommand = [\"no-such-program-anywhere\"]\n",
            &["services[0].command", "no-such-program-anywhere"],
        ),
        (
            "[[services]]\nname = \"s\"\n[[roles]]\nname = \"r\"\nscopes = [\"read:everything\"]\nservices = [\"s\"]\n",
            &["roles[0].scopes", "`r`", "read:everything"],
        ),
        (
            "[[roles]]\nname = \"r\"\nscopes = [\"list:users\"]\nservices = [\"ghost\"]\n",
            &["roles[0].services", "ghost"],
        ),
        (
            "[[roles]]\nname = \"r\"\nscopes = [\"custom:grades:read\"]\n",
            &["roles[0].scopes", "custom:grades:read"],
        ),
        (
            "[[services]]\nname = \"bad/name\"\n",
            &["services[0].name", "bad/name"],
        ),
        (
            "[[services]]\nname = \"s\"\nurl = \"ftp://x\"\napi_token = \"t0123456789abcdef\"\n",
            &["services[0].url", "ftp://x"],
        ),
        (
            "[[services]]\nname = \"s\"\nurl = \"http://127.0.0.1:1\"\noauth_client_id = \"grafana\"\napi_token = \"t0123456789abcdef\"\n",
            &["services[0].oauth_client_id", "service-"],
        ),
        (
            "[[services]]\nname = \"s\"\nurl = \"http://127.0.0.1:1\"\n",
            &["services[0].api_token", "`s`"],
        ),
        (
            "[[roles]]\nname = \"admin\"\nscopes = [\"list:users\"]\n",
            &["roles[0].name", "admin"],
        ),
        (
            "[custom_scopes.\"custom:grades\"]\nsubscopes = [\"custom:nope\"]\n",
            &["custom_scopes", "custom:nope"],
        ),
        (
            "[idle_culler]\nenabled = true\ncommand = [\"/nonexistent/culler\"]\n",
            &["services[0].command", "idle-culler", "/nonexistent/culler"],
        ),
    ];
    for (toml, wanted) in cases {
        let err = load_err(toml);
        for w in wanted {
            assert!(err.contains(w), "{toml}\n=> {err}\n(expected {w:?})");
        }
        assert!(!err.contains("t0123456789abcdef"), "{err}");
    }
}

#[test]
fn the_idle_culler_becomes_a_managed_service_with_a_narrow_role() {
    let c = load_toml(
        "[idle_culler]\nenabled = true\ntimeout = 600\ncommand = [\"/bin/true\"]\n",
        &[],
    )
    .unwrap();
    let s = c.services.iter().find(|s| s.name == "idle-culler").unwrap();
    assert_eq!(
        s.command,
        [
            "/bin/true",
            "--timeout=600",
            "--cull-every=60",
            "--concurrency=10"
        ]
    );
    let role = c.roles.iter().find(|r| r.name == "idle-culler").unwrap();
    assert_eq!(role.services, ["idle-culler"]);
    assert_eq!(
        role.scopes,
        [
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers"
        ]
    );
    // Off by default, and the environment turns it off or on.
    assert!(load_toml("", &[]).unwrap().services.is_empty());
    let off = load_toml(
        "[idle_culler]\nenabled = true\ncommand = [\"/bin/true\"]\n",
        &[("STACKHUB_IDLE_CULLER", "false")],
    )
    .unwrap();
    assert!(off.services.is_empty());
    let err = load_toml("", &[("STACKHUB_IDLE_CULLER", "maybe")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("STACKHUB_IDLE_CULLER"), "{err}");
}

#[test]
fn an_external_proxy_is_configured_by_url_and_its_token_comes_from_the_environment() {
    let env = HashMap::<&str, &str>::new();
    assert!(Config::load(None, &env).unwrap().proxy.api_url.is_none());
    let c = Config::from_toml("[proxy]\napi_url = \"http://127.0.0.1:8001\"\n").unwrap();
    assert_eq!(c.proxy.api_url.as_deref(), Some("http://127.0.0.1:8001"));
    // The token is never read from the file.
    assert!(Config::from_toml("[proxy]\nauth_token = \"in-the-file-0123456789\"\n").is_err());
    let env = HashMap::from([
        (ENV_PROXY_API_URL, "http://chp:8001"),
        (ENV_PROXY_AUTH_TOKEN, "proxy-token-0123456789abcdef"),
    ]);
    let c = Config::load(None, &env).unwrap();
    assert_eq!(c.proxy.api_url.as_deref(), Some("http://chp:8001"));
    assert_eq!(
        format!("{:?}", c.proxy),
        "ProxyConfig { api_url: Some(\"http://chp:8001\"), auth_token: Some(Secret(***)) }"
    );
    for bad in ["chp:8001", "ftp://chp", "http://user:pw@chp:8001"] {
        let env = HashMap::from([(ENV_PROXY_API_URL, bad)]);
        let err = Config::load(None, &env).unwrap_err().to_string();
        assert!(err.contains("proxy.api_url"), "{bad}: {err}");
        assert!(!err.contains("pw@"), "{err}");
    }
}

#[test]
fn a_servers_token_may_carry_only_real_narrow_scopes() {
    let ok = Config::from_toml(
        "[spawner]\noauth_client_allowed_scopes = [\"shares!user\", \"read:users:name\", \"access:servers!server\"]\n",
    )
    .unwrap();
    ok.validate().unwrap();
    for bad in [
        "admin",
        "inherit",
        "shares!usr",
        "no-such-scope",
        "custom:undefined",
    ] {
        let c = Config::from_toml(&format!(
            "[spawner]\noauth_client_allowed_scopes = [\"{bad}\"]\n"
        ))
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("spawner.oauth_client_allowed_scopes") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}
