//! Schema level: every manifest the Kubernetes spawner generates, for a spread of users,
//! profiles and settings, passes `kubernetes-validate --strict` for the targeted Kubernetes
//! version; and the validator really rejects a broken manifest (so a pass means something).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_fake::kubernetes_validate;
use k8s_openapi::api::core::v1::Toleration;
use serde_json::{Value, json};
use spawner::k8s::{KubeSpawnerConfig, NamespaceMode, build};
use spawner::profile::SpawnerOverride;
use spawner::{LaunchSpec, Quota, ServerId, SpawnRequest};

/// What a GPU profile of the hub's `profile_list` overrides.
fn gpu() -> SpawnerOverride {
    SpawnerOverride {
        image: Some("registry.example.org/eo/gpu:1.2".to_owned()),
        cmd: Some(vec!["start-gpu-lab".to_owned()]),
        args: Some(vec!["--debug".to_owned()]),
        node_selector: BTreeMap::from([("accelerator".to_owned(), "a100".to_owned())]),
        tolerations: vec![Toleration {
            key: Some("nvidia.com/gpu".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Default::default()
        }],
        cpu_guarantee: Some(1.0),
        mem_guarantee: Some("8Gi".to_owned()),
        gpus: Some(2),
        per_named_server_storage: Some(true),
        environment: BTreeMap::from([("NVIDIA_VISIBLE_DEVICES".to_owned(), "all".to_owned())]),
        ..Default::default()
    }
}

fn config() -> KubeSpawnerConfig {
    KubeSpawnerConfig {
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ..Default::default()
    }
}

fn request(user: &str, server: &str, o: &SpawnerOverride, quota: Quota) -> SpawnRequest {
    SpawnRequest {
        server: ServerId {
            user: user.to_owned(),
            name: server.to_owned(),
        },
        prefix: format!("/user/{user}/{server}"),
        env: BTreeMap::from([("JUPYTERHUB_USER".to_owned(), user.to_owned())]),
        spec: LaunchSpec::build(None, vec![], o, &quota).unwrap(),
    }
}

fn docs(config: &KubeSpawnerConfig, req: &SpawnRequest) -> Vec<Value> {
    let m = build(config, req);
    let mut out = vec![
        serde_json::to_value(&m.namespace).unwrap(),
        serde_json::to_value(&m.pod).unwrap(),
        serde_json::to_value(&m.secret).unwrap(),
    ];
    if let Some(c) = &m.claim {
        out.push(serde_json::to_value(c).unwrap());
    }
    out
}

#[test]
fn generated_manifests_pass_strict_schema_validation() {
    let big = Quota {
        cpu: Some(16.0),
        memory_bytes: Some(64 << 30),
        gpus: Some(2),
    };
    let none = SpawnerOverride::default();
    let mut all = Vec::new();
    let hub = config();
    let per_user = KubeSpawnerConfig {
        namespace: NamespaceMode::PerUser {
            prefix: "eo-".to_owned(),
        },
        service_account: Some("notebook".to_owned()),
        ..config()
    };
    let no_storage = KubeSpawnerConfig {
        storage: spawner::k8s::StorageConfig {
            enabled: false,
            ..Default::default()
        },
        ..config()
    };
    for (c, req) in [
        (&hub, request("ada", "", &none, Quota::default())),
        (&hub, request("ada", "gpu", &gpu(), big.clone())),
        (
            &hub,
            request("Ada.Lovelace@esa.int", "", &none, big.clone()),
        ),
        (
            &hub,
            request(
                &"long".repeat(40),
                &"server".repeat(20),
                &gpu(),
                big.clone(),
            ),
        ),
        (
            &per_user,
            request(
                "bo",
                "x",
                &none,
                Quota {
                    cpu: Some(0.25),
                    memory_bytes: Some(512 << 20),
                    gpus: None,
                },
            ),
        ),
        (&no_storage, request("cy", "", &none, big.clone())),
    ] {
        all.extend(docs(c, &req));
    }
    // The GPU launch's pod carries everything it overrides, within the quota.
    let pod = all
        .iter()
        .find(|d| d["kind"] == "Pod" && d["metadata"]["annotations"]["stackhub.io/server"] == "gpu")
        .unwrap();
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.org/eo/gpu:1.2");
    assert_eq!(c["command"], json!(["start-gpu-lab"]));
    assert_eq!(c["args"], json!(["--debug"]));
    assert_eq!(c["resources"]["limits"]["cpu"], "16000m");
    assert_eq!(c["resources"]["requests"]["cpu"], "1000m");
    assert_eq!(
        c["resources"]["requests"]["memory"],
        (8u64 << 30).to_string()
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(pod["spec"]["nodeSelector"]["accelerator"], "a100");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
    // Without overrides: the spawner's image and command, no selector.
    let plain = all
        .iter()
        .find(|d| {
            d["kind"] == "Pod"
                && d["metadata"]["annotations"]["stackhub.io/user"] == "ada"
                && d["metadata"]["annotations"]["stackhub.io/server"] == ""
        })
        .unwrap();
    assert_eq!(plain["spec"]["containers"][0]["image"], config().image);
    assert_eq!(
        plain["spec"]["containers"][0]["command"],
        json!(config().cmd)
    );
    assert!(plain["spec"].get("nodeSelector").is_none());
    // The GPU launch's per-server claim and the long names were really generated.
    assert!(
        all.iter()
            .any(|d| d["metadata"]["name"] == "claim--ada--gpu")
    );
    assert!(
        all.iter()
            .all(|d| d["metadata"]["name"].as_str().unwrap().len() <= 63)
    );
    if let Err(report) = kubernetes_validate(&all) {
        panic!("generated manifests are invalid:\n{report}");
    }
}

#[test]
fn the_validator_rejects_a_broken_pod() {
    let none = SpawnerOverride::default();
    let mut pod = docs(&config(), &request("ada", "", &none, Quota::default()))[1].clone();
    pod["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    let report = kubernetes_validate(&[pod]).unwrap_err();
    assert!(report.contains("imagePullPolcy"), "{report}");
}
