//! The stackhub chart rendered and run as its Deployment says: `helm template` laid out as the
//! hub's pod sees it ([`render`]), and the real `stackhub` started with exactly the rendered
//! args and environment ([`Hub`]) against the in-memory Kubernetes API server. Used by
//! `helm_hub_pods` (servers as pods) and `helm_replicas` (two replicas on PostgreSQL).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use k8s_fake::FakeKube;
use spawner::k8s::KubeSpawnerConfig;

use crate::helm_common::{find, template_with};
use crate::hub_common::PASSWORD;
use crate::k8s_common::{Proc, binary, kubeconfig};

/// The release's namespace (`helm template --namespace`): the spawner's pods go there.
pub const NS: &str = "hub";
/// Where the rendered Deployment mounts the ConfigMap.
pub const CONFIG_MOUNT: &str = "/etc/stackhub";

/// The Secrets in the release's namespace, by (name, key): what the Deployment's
/// `secretKeyRef`s resolve to.
pub type Secrets = HashMap<(String, String), String>;

/// The chart rendered and laid out as the hub's pod sees it.
pub struct Rendered {
    /// The hub container's args, paths moved (`--config <dir>/etc-stackhub/stackhub.toml`).
    pub args: Vec<String>,
    /// The container's environment, every Secret reference resolved.
    pub env: Vec<(String, String)>,
    /// `kubernetes-spawner.json` as the spawner parses it.
    pub spawner: KubeSpawnerConfig,
    /// `name:port` of the Service single-user servers reach the hub's API by.
    pub hub_api_service: String,
    /// The paths of the container's readiness and liveness probes (on the `hub-api` port).
    pub probes: Vec<String>,
    /// The Deployment's `replicas`.
    pub replicas: u64,
}

/// `helm template` with `files`, laid out in `dir`. The only change to what is rendered: the
/// ConfigMap's files sit in `<dir>/etc-stackhub/` instead of the Deployment's mount
/// `/etc/stackhub/`, so every `/etc/stackhub/<key>` of a ConfigMap key (that is
/// `kubernetes_config` in `stackhub.toml`, and `--config` in the container's args) names
/// that directory. Nothing else is rewritten. `server_config_dir = "/etc/stackhub/server"`
/// names no ConfigMap key: it is a path in the single-user image, which the kubelet maps
/// (`helm_hub_pods`' `Kubelet`).
pub fn render(dir: &Path, files: &[&Path], secrets: &Secrets) -> Rendered {
    let docs = template_with("helm/stackhub", NS, files, &[]);
    let cm = find(&docs, "ConfigMap")[0];
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("the ConfigMap's volume");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap's mount");
    assert_eq!(mount["mountPath"], CONFIG_MOUNT);
    let here = dir.join("etc-stackhub");
    std::fs::create_dir_all(&here).unwrap();
    let data = cm["data"].as_object().unwrap();
    let moved = |text: &str| {
        data.keys().fold(text.to_owned(), |t, key| {
            t.replace(
                &format!("{CONFIG_MOUNT}/{key}"),
                here.join(key).to_str().unwrap(),
            )
        })
    };
    for (key, text) in data {
        std::fs::write(here.join(key), moved(text.as_str().unwrap())).unwrap();
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| moved(a.as_str().unwrap()))
        .collect();
    assert_eq!(
        args,
        [
            "--config".to_owned(),
            here.join("stackhub.toml").display().to_string()
        ]
    );
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            let name = r["name"]
                .as_str()
                .unwrap_or_else(|| panic!("not a Secret reference: {e}"));
            let key = (name.to_owned(), r["key"].as_str().unwrap().to_owned());
            let value = secrets.get(&key).unwrap_or_else(|| {
                panic!("the Deployment reads Secret {key:?}, which the test does not hold")
            });
            (e["name"].as_str().unwrap().to_owned(), value.clone())
        })
        .collect();
    let spawner = serde_json::from_str(data["kubernetes-spawner.json"].as_str().unwrap()).unwrap();
    let api = find(&docs, "Service")
        .into_iter()
        .find(|s| s["spec"]["ports"][0]["name"] == "hub-api")
        .expect("the hub API's Service");
    let hub_api_service = format!(
        "{}:{}",
        api["metadata"]["name"].as_str().unwrap(),
        api["spec"]["ports"][0]["port"]
    );
    let probes = ["readinessProbe", "livenessProbe"]
        .iter()
        .map(|probe| {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["port"], "hub-api", "{probe}: {get}");
            get["path"].as_str().unwrap().to_owned()
        })
        .collect();
    let replicas = find(&docs, "Deployment")[0]["spec"]["replicas"]
        .as_u64()
        .unwrap();
    Rendered {
        args,
        env,
        spawner,
        hub_api_service,
        probes,
        replicas,
    }
}

/// The real `stackhub` with the rendered args and environment; killed on drop.
pub struct Hub {
    pub proc: Proc,
    pub base: String,
    pub hub_port: u16,
    pub api: reqwest::Client,
}

impl Hub {
    /// The environment is only the Deployment's (its Secret references resolved), plus what
    /// stands in for the pod: ports (the container's 8000 and 8081 are taken here), the data
    /// volume (mounted at the config's `data_dir`), the kubeconfig of the in-memory API server
    /// (in place of the service account), the development login, and logging.
    pub async fn start(
        dir: &Path,
        r: &Rendered,
        fake: &FakeKube,
        port: u16,
        hub_port: u16,
    ) -> Self {
        let mut cmd = Command::new(binary("stackhub"));
        cmd.args(&r.args)
            .env_clear()
            .envs(r.env.iter().cloned())
            .env("STACKHUB_PORT", port.to_string())
            .env("STACKHUB_HUB_PORT", hub_port.to_string())
            .env("STACKHUB_DATA_DIR", dir.join("data"))
            .env("KUBECONFIG", kubeconfig(dir, fake))
            .env("STACKHUB_DEV_PASSWORD", PASSWORD)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        let log = dir.join("hub.log");
        let mut proc = Proc::spawn(cmd, &log);
        let base = format!("http://127.0.0.1:{port}");
        let api = reqwest::Client::new();
        proc.wait_for_hub(&base).await;
        Self {
            proc,
            base,
            hub_port,
            api,
        }
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        crate::hub_common::admin(&self.api, method, format!("{}{path}", self.base))
    }
}
