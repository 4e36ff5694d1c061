//! Attacks on the Kubernetes spawner's object names and ownership, against the in-memory fake
//! API server: a user whose objects' names collide with another user's (forced here by
//! creating the victim's objects under the attacker's names, as a name-hash collision or an
//! earlier version would) must neither mount the victim's claim, nor delete or replace the
//! victim's pod or Secret; stored state of earlier versions still stops its own pod. And a
//! start its caller gives up on leaves no pod or Secret behind.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_fake::FakeKube;
use serde_json::{Value, json};
use spawner::k8s::{
    KubeSpawner, KubeSpawnerConfig, NamespaceMode, StorageConfig, claim_name, owner_annotations,
    pod_name, server_labels,
};
use spawner::{ProgressSink, ServerId, SpawnRequest, Spawner, State};

const NS: &str = "hub";

fn config() -> KubeSpawnerConfig {
    KubeSpawnerConfig {
        namespace: NamespaceMode::Hub {
            namespace: NS.to_owned(),
        },
        image: "docker.io/library/python:3.12".to_owned(),
        start_timeout_secs: 5,
        ..Default::default()
    }
}

fn no_storage() -> KubeSpawnerConfig {
    KubeSpawnerConfig {
        storage: StorageConfig {
            enabled: false,
            ..Default::default()
        },
        ..config()
    }
}

fn server(user: &str) -> ServerId {
    ServerId {
        user: user.to_owned(),
        name: String::new(),
    }
}

fn request(user: &str) -> SpawnRequest {
    SpawnRequest {
        server: server(user),
        prefix: format!("/user/{user}/"),
        env: BTreeMap::from([(
            "JUPYTERHUB_API_TOKEN".to_owned(),
            format!("token-of-{user}"),
        )]),
        spec: spawner::LaunchSpec::default(),
    }
}

/// Metadata of an object of `owner`'s (this hub's labels, `owner`'s annotations) named `name`.
fn meta_of(config: &KubeSpawnerConfig, owner: &ServerId, name: &str) -> Value {
    json!({
        "name": name,
        "labels": server_labels(config, owner),
        "annotations": owner_annotations(owner),
    })
}

fn victim_pod(config: &KubeSpawnerConfig, name: &str) -> Value {
    json!({
        "metadata": meta_of(config, &server("victim"), name),
        "spec": {"containers": [{"name": "notebook", "image": "victim-image"}]},
    })
}

fn victim_secret(config: &KubeSpawnerConfig, name: &str) -> Value {
    json!({
        "metadata": meta_of(config, &server("victim"), name),
        "type": "Opaque",
        "stringData": {"JUPYTERHUB_API_TOKEN": "token-of-victim"},
    })
}

async fn start_result(spawner: &KubeSpawner, user: &str) -> Result<spawner::Spawned, String> {
    tokio::time::timeout(
        Duration::from_secs(20),
        spawner.start(request(user), ProgressSink::discard()),
    )
    .await
    .expect("the start ends")
    .map_err(|e| e.to_string())
}

fn pod_creations(fake: &FakeKube) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.starts_with("POST") && r.contains("/pods"))
        .collect()
}

#[tokio::test]
async fn start_colliding_with_another_users_claim_does_not_mount_it() {
    let fake = FakeKube::start().await;
    let config = config();
    let attacker = server("mallory");
    let claim = claim_name(&config, &spawner::LaunchSpec::default(), &attacker);
    let victims = fake.insert(
        "persistentvolumeclaims",
        NS,
        json!({
            "metadata": meta_of(&config, &server("victim"), &claim),
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "10Gi"}}},
        }),
    );
    let spawner = KubeSpawner::new(fake.client(), config);
    let err = start_result(&spawner, "mallory").await.unwrap_err();
    assert!(
        err.contains("belongs to another user") && err.contains(&claim),
        "{err}"
    );
    assert!(
        !err.contains("victim"),
        "the victim is named to the attacker: {err}"
    );
    assert!(
        pod_creations(&fake).is_empty(),
        "a pod was created that mounts the victim's claim: {:?}",
        fake.requests()
    );
    let claim_now = fake.get("persistentvolumeclaims", NS, &claim).unwrap();
    assert_eq!(claim_now["metadata"]["uid"], victims["metadata"]["uid"]);
}

#[tokio::test]
async fn start_colliding_with_another_users_pod_does_not_delete_it() {
    let fake = FakeKube::start().await;
    let config = no_storage();
    let name = pod_name(&server("mallory"));
    let victims = fake.insert("pods", NS, victim_pod(&config, &name));
    let spawner = KubeSpawner::new(fake.client(), config);
    let err = start_result(&spawner, "mallory").await.unwrap_err();
    assert!(
        err.contains("belongs to another user") && err.contains(&name),
        "{err}"
    );
    let pod = fake.get("pods", NS, &name).expect("the victim's pod stays");
    assert_eq!(pod["metadata"]["uid"], victims["metadata"]["uid"]);
    assert_eq!(pod["spec"]["containers"][0]["image"], "victim-image");
    let deletes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE") && r.contains("/pods/"))
        .collect();
    assert!(deletes.is_empty(), "{deletes:?}");
    // The attacker's own Secret, created before the pod, is removed again.
    assert!(fake.get("secrets", NS, &name).is_none());
}

#[tokio::test]
async fn start_colliding_with_another_users_secret_does_not_replace_it() {
    let fake = FakeKube::start().await;
    let config = no_storage();
    let name = pod_name(&server("mallory"));
    let victims = fake.insert("secrets", NS, victim_secret(&config, &name));
    let spawner = KubeSpawner::new(fake.client(), config);
    let err = start_result(&spawner, "mallory").await.unwrap_err();
    assert!(err.contains("belongs to another user"), "{err}");
    let secret = fake
        .get("secrets", NS, &name)
        .expect("the victim's Secret stays");
    assert_eq!(secret["metadata"]["uid"], victims["metadata"]["uid"]);
    assert_eq!(
        secret["stringData"]["JUPYTERHUB_API_TOKEN"],
        "token-of-victim"
    );
    assert!(pod_creations(&fake).is_empty());
}

#[tokio::test]
async fn objects_of_another_hub_or_without_an_owner_are_not_reused() {
    for (label_hub, annotations) in [
        (
            json!("other-hub"),
            json!(owner_annotations(&server("mallory"))),
        ),
        (json!("stackhub"), json!({})),
        (
            json!("stackhub"),
            // Our annotation says mallory, KubeSpawner's says someone else: not provably ours.
            json!({"stackhub.io/user": "mallory", "stackhub.io/server": "",
                   "hub.jupyter.org/username": "victim"}),
        ),
    ] {
        let fake = FakeKube::start().await;
        let config = no_storage();
        let name = pod_name(&server("mallory"));
        let mut labels = json!(server_labels(&config, &server("mallory")));
        labels["stackhub.io/hub"] = label_hub;
        let other = fake.insert(
            "pods",
            NS,
            json!({"metadata": {"name": name, "labels": labels, "annotations": annotations},
                   "spec": {"containers": [{"name": "c", "image": "other"}]}}),
        );
        let spawner = KubeSpawner::new(fake.client(), config);
        let err = start_result(&spawner, "mallory").await.unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(
            fake.get("pods", NS, &name).unwrap()["metadata"]["uid"],
            other["metadata"]["uid"]
        );
    }
}

#[tokio::test]
async fn stop_with_a_state_naming_another_users_pod_or_secret_deletes_neither() {
    let fake = FakeKube::start().await;
    let config = no_storage();
    let name = pod_name(&server("mallory"));
    let pod = fake.insert("pods", NS, victim_pod(&config, &name));
    fake.insert("secrets", NS, victim_secret(&config, &name));
    let spawner = KubeSpawner::new(fake.client(), config);
    // Mallory's state names the pod by name and even by uid.
    let state = State(json!({"namespace": NS, "pod": name, "uid": pod["metadata"]["uid"]}));
    spawner
        .stop(&server("mallory"), &state, true)
        .await
        .unwrap();
    assert!(
        fake.get("pods", NS, &name).is_some(),
        "victim's pod deleted"
    );
    assert!(
        fake.get("secrets", NS, &name).is_some(),
        "victim's Secret deleted"
    );
    // Mallory's own pod is gone (an old uid) and a Secret of its name is the victim's.
    let second = ServerId {
        user: "mallory".to_owned(),
        name: "second".to_owned(),
    };
    let name = pod_name(&second);
    fake.insert("secrets", NS, victim_secret(&no_storage(), &name));
    let state = State(json!({"namespace": NS, "pod": name, "uid": "gone"}));
    spawner.stop(&second, &state, true).await.unwrap();
    assert!(
        fake.get("secrets", NS, &name).is_some(),
        "victim's Secret deleted by a stop whose pod is gone"
    );
}

#[tokio::test]
async fn state_of_an_earlier_version_with_an_old_name_still_stops_its_pod() {
    let fake = FakeKube::start().await;
    let config = no_storage();
    let long = "l".repeat(70);
    let owner = server(&long);
    // The name the 32-bit FNV scheme gave (`jupyter--` + 45 chars + `-` + 8 hex digits).
    let old = format!("jupyter--{}-1a2b3c4d", "l".repeat(45));
    assert_ne!(old, pod_name(&owner));
    let pod = fake.insert(
        "pods",
        NS,
        json!({"metadata": meta_of(&config, &owner, &old),
               "spec": {"containers": [{"name": "notebook", "image": "x"}]}}),
    );
    fake.insert(
        "secrets",
        NS,
        json!({"metadata": meta_of(&config, &owner, &old), "type": "Opaque"}),
    );
    let spawner = KubeSpawner::new(fake.client(), config);
    let state = State(json!({"namespace": NS, "pod": old, "uid": pod["metadata"]["uid"]}));
    spawner.stop(&owner, &state, true).await.unwrap();
    assert!(fake.get("pods", NS, &old).is_none(), "its pod stays");
    assert!(fake.get("secrets", NS, &old).is_none(), "its Secret stays");
}

#[tokio::test]
async fn a_start_whose_caller_gives_up_removes_its_pod_and_secret_at_its_timeout() {
    let fake = FakeKube::start().await;
    let config = KubeSpawnerConfig {
        start_timeout_secs: 2,
        ..config()
    };
    let spawner = KubeSpawner::new(fake.client(), config);
    let name = pod_name(&server("ada"));
    // The caller (a hub with a shorter timeout) drops the start while the pod is pending.
    let dropped = tokio::time::timeout(
        Duration::from_millis(1500),
        spawner.start(request("ada"), ProgressSink::discard()),
    )
    .await;
    assert!(dropped.is_err(), "the pod never runs: the start cannot end");
    assert!(fake.get("pods", NS, &name).is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fake.get("pods", NS, &name).is_some() || fake.get("secrets", NS, &name).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod or Secret of an abandoned start is orphaned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fake.get("persistentvolumeclaims", NS, "claim--ada")
            .is_some(),
        "the claim stays"
    );
}

#[tokio::test]
async fn cancel_start_removes_the_pod_and_secret_at_once() {
    let fake = FakeKube::start().await;
    let spawner = KubeSpawner::new(
        fake.client(),
        KubeSpawnerConfig {
            start_timeout_secs: 600,
            ..config()
        },
    );
    assert_eq!(
        spawner.start_timeout(),
        Some(Duration::from_secs(620)),
        "the timeout the hub waits for"
    );
    let name = pod_name(&server("bo"));
    let start = tokio::spawn({
        let s = spawner.clone();
        async move { s.start(request("bo"), ProgressSink::discard()).await }
    });
    fake.wait_for("pods", NS, &name).await;
    // A second start of the same server while the first runs is refused, touching nothing.
    let again = start_result(&spawner, "bo").await.unwrap_err();
    assert!(again.contains("already in progress"), "{again}");
    spawner.cancel_start(&server("bo")).await;
    let err = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .expect("a cancelled start ends")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(fake.get("pods", NS, &name).is_none());
    assert!(fake.get("secrets", NS, &name).is_none());
}
