//! Schema level: every manifest the Kubernetes spawner generates, for a spread of users,
//! profiles and settings, passes `kubernetes-validate --strict` for the targeted Kubernetes
//! version; and the validator really rejects a broken manifest (so a pass means something).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_fake::kubernetes_validate;
use k8s_openapi::api::core::v1::Toleration;
use serde_json::{Value, json};
use spawner::k8s::{KubeSpawnerConfig, NamespaceMode, Profile, build};
use spawner::{Quota, ServerId, SpawnRequest};

fn config() -> KubeSpawnerConfig {
    let gpu = Profile {
        display_name: "GPU".to_owned(),
        image: Some("registry.example.org/eo/gpu:1.2".to_owned()),
        node_selector: BTreeMap::from([("accelerator".to_owned(), "a100".to_owned())]),
        tolerations: vec![Toleration {
            key: Some("nvidia.com/gpu".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Default::default()
        }],
        cpu_request: Some(1.0),
        memory_request: Some(8 << 30),
        per_named_server_storage: Some(true),
        env: BTreeMap::from([("NVIDIA_VISIBLE_DEVICES".to_owned(), "all".to_owned())]),
        ..Default::default()
    };
    KubeSpawnerConfig {
        profiles: BTreeMap::from([
            ("gpu".to_owned(), gpu),
            ("small".to_owned(), Profile::default()),
        ]),
        default_profile: Some("small".to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ..Default::default()
    }
}

fn request(user: &str, server: &str, options: Value, quota: Quota) -> SpawnRequest {
    SpawnRequest {
        server: ServerId {
            user: user.to_owned(),
            name: server.to_owned(),
        },
        prefix: format!("/user/{user}/{server}"),
        env: BTreeMap::from([("JUPYTERHUB_USER".to_owned(), user.to_owned())]),
        user_options: options,
        quota,
        overrides: spawner::Overrides::default(),
    }
}

fn docs(config: &KubeSpawnerConfig, req: &SpawnRequest) -> Vec<Value> {
    let m = build(config, req).unwrap();
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
        (&hub, request("ada", "", json!({}), Quota::default())),
        (
            &hub,
            request("ada", "gpu", json!({"profile": "gpu"}), big.clone()),
        ),
        (
            &hub,
            request("Ada.Lovelace@esa.int", "", json!({}), big.clone()),
        ),
        (
            &hub,
            request(
                &"long".repeat(40),
                &"server".repeat(20),
                json!({"profile": "gpu"}),
                big.clone(),
            ),
        ),
        (
            &per_user,
            request(
                "bo",
                "x",
                json!({"profile": "small"}),
                Quota {
                    cpu: Some(0.25),
                    memory_bytes: Some(512 << 20),
                    gpus: None,
                },
            ),
        ),
        (&no_storage, request("cy", "", json!({}), big.clone())),
    ] {
        all.extend(docs(c, &req));
    }
    // The GPU profile's per-server claim and the long names were really generated.
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
    let mut pod = docs(&config(), &request("ada", "", json!({}), Quota::default()))[1].clone();
    pod["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    let report = kubernetes_validate(&[pod]).unwrap_err();
    assert!(report.contains("imagePullPolcy"), "{report}");
}
