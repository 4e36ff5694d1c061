use super::*;

#[test]
fn jwks_url_must_be_https_except_loopback() {
    assert!(https_or_loopback("jwt.jwks_url", "https://idp.example/certs").is_ok());
    assert!(https_or_loopback("jwt.jwks_url", "http://127.0.0.1:8080/certs").is_ok());
    assert!(https_or_loopback("jwt.jwks_url", "http://[::1]:8080/certs").is_ok());
    assert!(https_or_loopback("jwt.jwks_url", "http://localhost/certs").is_ok());
    assert!(https_or_loopback("jwt.jwks_url", "http://idp.example/certs").is_err());
    assert!(https_or_loopback("jwt.jwks_url", "not a url").is_err());
}

#[test]
fn toml_jwt_quota_and_cors_with_eg_env_overrides() {
    let mut c: Config = toml::from_str(
        r#"
        allow_origin = "https://a.example"
        [jwt]
        jwks_url = "https://idp.example/certs"
        issuer = "https://idp.example"
        audience = ["account"]
        [[quota_roles]]
        role = "big"
        cpus = 1.5
        memory = "3Gi"
        max_kernels = 2
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    let jwt = c.jwt.as_ref().unwrap();
    assert_eq!(jwt.required_role, "stack-jupyter");
    assert_eq!(jwt.role_claims, ["realm_access.roles"]);
    assert_eq!(jwt.username_claim, "preferred_username");
    assert_eq!(c.quota_roles.len(), 1);
    assert!(!c.is_open());
    let env = BTreeMap::from([
        ("KG_ALLOW_ORIGIN", "*"),
        ("EG_ALLOW_CREDENTIALS", "true"),
        ("STACKHUB_GATEWAY_JWT_AUDIENCE", "a, b"),
    ]);
    c.apply_env(|k| env.get(k).map(|v| (*v).to_owned()));
    assert_eq!(c.allow_origin, "*");
    assert!(c.allow_credentials);
    assert_eq!(c.jwt.as_ref().unwrap().audience, ["a", "b"]);
    let defaults = Config::default();
    assert!(defaults.is_open());
    assert_eq!(defaults.quota_roles[0].role, "stack-jupyter-high");
    assert_eq!(defaults.allowed_origins().count(), 0);
}

#[test]
fn jwt_without_issuer_or_audience_refuses_to_start_unless_opted_out() {
    let load = |toml: &str| -> Result<Config, String> {
        let c: Config = toml::from_str(toml).map_err(|e| e.to_string())?;
        c.validate().map(|()| c).map_err(|e| e.to_string())
    };
    let jwks = "[jwt]\njwks_url = \"https://hub.example/hub/api/sites/jwks.json\"\n";
    let e = load(&format!("site_id = \"lumi\"\n{jwks}")).unwrap_err();
    assert!(
        e.contains("jwt.issuer") && e.contains("accept_any_issuer"),
        "{e}"
    );
    let e = load(&format!("{jwks}issuer = \"stackhub\"\n")).unwrap_err();
    assert!(e.contains("jwt.audience") && e.contains("site_id"), "{e}");
    let c = load(&format!(
        "site_id = \"lumi\"\n{jwks}issuer = \"stackhub\"\n"
    ))
    .unwrap();
    let jwt = c.jwt.clone().unwrap().for_site(c.site_id.as_deref());
    assert_eq!(jwt.audience, ["lumi"]);
    let jwt = c.jwt.clone().unwrap().for_site(None);
    assert!(jwt.audience.is_empty());
    load(&format!(
        "{jwks}accept_any_issuer = true\naccept_any_audience = true\n"
    ))
    .unwrap();
    let e = load("site_id = \"lu mi\"\n").unwrap_err();
    assert!(e.contains("site_id"), "{e}");
    let mut c = Config::default();
    c.apply_env(|k| (k == "STACKHUB_GATEWAY_SITE_ID").then(|| "leonardo".to_owned()));
    assert_eq!(c.site_id.as_deref(), Some("leonardo"));
}

#[test]
fn bad_quota_rows_are_rejected_by_key() {
    let c: Config =
        toml::from_str("[[quota_roles]]\nrole = \"x\"\ncpus = 1\nmemory = \"lots\"\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("quota_roles"), "{e}");
}

#[test]
fn default_launcher_and_kubernetes_settings_are_checked() {
    let dir = std::env::temp_dir().join(format!("gw-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c: Config = toml::from_str("default_launcher = \"docker\"\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("default_launcher") && e.contains("docker"),
        "{e}"
    );
    let c: Config = toml::from_str("default_launcher = \"kubernetes\"\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("kubernetes_config"), "{e}");
    let json = dir.join("k8s.json");
    let toml = format!(
        "default_launcher = \"kubernetes\"\nkubernetes_config = \"{}\"\n",
        json.display()
    );
    std::fs::write(&json, r#"{"namespace": "kernels", "uid": 0}"#).unwrap();
    let mut c: Config = toml::from_str(&toml).unwrap();
    let e = c.load_launcher_settings().unwrap_err().to_string();
    assert!(e.contains("uid") && e.contains("k8s.json"), "{e}");
    std::fs::write(&json, r#"{"namespace": "kernels", "imagez": {}}"#).unwrap();
    let e = c.load_launcher_settings().unwrap_err().to_string();
    assert!(e.contains("imagez"), "{e}");
    std::fs::write(&json, r#"{"namespace": "kernels", "gateway_id": "lumi"}"#).unwrap();
    c.load_launcher_settings().unwrap();
    c.validate().unwrap();
    assert_eq!(c.kubernetes.as_ref().unwrap().gateway_id, "lumi");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn extra_issuers_must_each_name_a_distinct_issuer_and_be_valid() {
    let load = |toml: &str| -> Result<Config, String> {
        let c: Config = toml::from_str(toml).map_err(|e| e.to_string())?;
        c.validate().map(|()| c).map_err(|e| e.to_string())
    };
    let hub = "site_id = \"lumi\"\n[jwt]\njwks_url = \"https://hub.example/jwks\"\nissuer = \"https://hub.example\"\nalgorithms = [\"EdDSA\"]\n";
    let idp = "[[jwt_extra_issuers]]\njwks_url = \"https://idp.example/certs\"\naudience = [\"account\"]\n";
    let c = load(&format!(
        "{hub}{idp}issuer = \"https://idp.example/realms/dedl\"\nrole_claims = [\"realm_access.roles\", \"groups\"]\n"
    ))
    .unwrap();
    assert!(!c.is_open());
    assert_eq!(c.jwt_extra_issuers[0].role_claims.len(), 2);
    // Alone (without [jwt]) an extra issuer closes the server too.
    let c = load(&format!(
        "site_id = \"lumi\"\n{idp}issuer = \"https://idp.example/realms/dedl\"\n"
    ))
    .unwrap();
    assert!(!c.is_open());
    let e = load(&format!("{hub}{idp}accept_any_issuer = true\n")).unwrap_err();
    assert!(
        e.contains("jwt_extra_issuers")
            && e.contains("entry 0")
            && e.contains("must name its issuer"),
        "{e}"
    );
    let e = load(&format!("{hub}{idp}issuer = \"https://hub.example\"\n")).unwrap_err();
    assert!(e.contains("already trusted"), "{e}");
    let e = load(&format!(
        "{hub}{idp}issuer = \"https://idp.example/realms/dedl\"\nalgorithms = [\"HS256\"]\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("entry 0")
            && e.contains("idp.example/realms/dedl")
            && e.contains("jwt.algorithms"),
        "{e}"
    );
    let e = load(&format!(
        "{hub}[[jwt_extra_issuers]]\njwks_url = \"http://idp.example/certs\"\nissuer = \"x\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("jwt.jwks_url") && e.contains("https"), "{e}");
}
