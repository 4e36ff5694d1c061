//! Request level: every API call the Kubernetes spawner makes, checked against a scripted
//! `tower-test` mock (method, path, query and body), with the API server's answers scripted.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use spawner::k8s::{KubeSpawner, KubeSpawnerConfig, NamespaceMode};
use spawner::{ProgressSink, Quota, ServerId, SpawnRequest, Spawner, State, Status};
use tower_test::mock::{self, Handle};

type Mock = Handle<Request<Body>, Response<Body>>;

fn spawner(ns_mode: NamespaceMode) -> (KubeSpawner, Mock) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let config = KubeSpawnerConfig {
        namespace: ns_mode,
        ..Default::default()
    };
    (KubeSpawner::new(client, config), handle)
}

fn hub_ns() -> NamespaceMode {
    NamespaceMode::Hub {
        namespace: "hub".to_owned(),
    }
}

/// The next request: method, path?query, JSON body (Null when empty).
async fn next(handle: &mut Mock) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
    let (req, send) = handle.next_request().await.expect("a request");
    let method = req.method().clone();
    let uri = req.uri().path_and_query().unwrap().to_string();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, body, send)
}

fn reply(send: mock::SendResponse<Response<Body>>, code: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn running_pod(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "hub", "uid": uid, "resourceVersion": "7",
                        "labels": {"app.kubernetes.io/managed-by": "stackhub", "stackhub.io/hub": "stackhub",
                                   "stackhub.io/user": "ada", "stackhub.io/server": ""},
                        "annotations": {"stackhub.io/user": "ada", "stackhub.io/server": ""}},
           "spec": {"containers": [{"name": "notebook", "image": "i"}]},
           "status": {"phase": "Running", "podIP": "10.1.2.3"}})
}

/// An object of `kind` with this hub's labels and owner annotations naming (`user`, `server`).
fn owned(kind: &str, name: &str, uid: &str, user: &str, server: &str) -> Value {
    json!({"apiVersion": "v1", "kind": kind,
           "metadata": {"name": name, "namespace": "hub", "uid": uid, "resourceVersion": "3",
                        "labels": {"app.kubernetes.io/managed-by": "stackhub", "stackhub.io/hub": "stackhub",
                                   "stackhub.io/user": user, "stackhub.io/server": server},
                        "annotations": {"stackhub.io/user": user, "stackhub.io/server": server,
                                        "hub.jupyter.org/username": user,
                                        "hub.jupyter.org/servername": server}}})
}

fn state() -> State {
    State(json!({"namespace": "hub", "pod": "jupyter--ada", "uid": "u-1", "claim": "claim--ada"}))
}

fn ada() -> ServerId {
    ServerId {
        user: "ada".to_owned(),
        name: String::new(),
    }
}

#[tokio::test]
async fn start_creates_claim_then_pod_then_watches_it() {
    let (spawner, mut h) = spawner(hub_ns());
    let req = SpawnRequest {
        server: ada(),
        prefix: "/user/ada/".to_owned(),
        env: BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), "t".to_owned())]),
        spec: spawner::LaunchSpec::within_quota(&Quota {
            cpu: Some(0.5),
            memory_bytes: Some(1 << 30),
            gpus: Some(1),
        }),
    };
    let task = tokio::spawn(async move { spawner.start(req, ProgressSink::discard()).await });

    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::POST,
            "/api/v1/namespaces/hub/persistentvolumeclaims?"
        )
    );
    assert_eq!(body["metadata"]["name"], "claim--ada");
    assert_eq!(body["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    // The claim exists from an earlier start: kept, not an error, once it is read and its
    // owner annotations name ada.
    reply(send, StatusCode::CONFLICT, &status(409, "AlreadyExists"));
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::GET,
            "/api/v1/namespaces/hub/persistentvolumeclaims/claim--ada"
        )
    );
    reply(
        send,
        StatusCode::OK,
        &owned("PersistentVolumeClaim", "claim--ada", "c-1", "ada", ""),
    );

    // The token goes into the server's Secret, not into the pod spec.
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::POST, "/api/v1/namespaces/hub/secrets?")
    );
    assert_eq!(body["metadata"]["name"], "jupyter--ada");
    assert_eq!(body["stringData"], json!({"JUPYTERHUB_API_TOKEN": "t"}));
    reply(send, StatusCode::CREATED, &body);

    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::POST, "/api/v1/namespaces/hub/pods?")
    );
    assert_eq!(body["metadata"]["name"], "jupyter--ada");
    let c = &body["spec"]["containers"][0];
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "1073741824", "nvidia.com/gpu": "1"})
    );
    assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], "1");
    assert_eq!(c["command"], json!(["jupyterhub-singleuser"]));
    assert_eq!(body["spec"]["automountServiceAccountToken"], false);
    let mut pod = running_pod("jupyter--ada", "u-1");
    pod["status"] = json!({"phase": "Pending"});
    reply(send, StatusCode::CREATED, &pod);

    // The two watchers list first (pod by name, events by involved object), in either order.
    let mut saw = Vec::new();
    for _ in 0..2 {
        let (m, uri, _, send) = next(&mut h).await;
        assert_eq!(m, Method::GET);
        if uri.starts_with("/api/v1/namespaces/hub/pods?") {
            assert!(
                uri.contains("fieldSelector=metadata.name%3Djupyter--ada"),
                "{uri}"
            );
            reply(
                send,
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": "8"}, "items": [running_pod("jupyter--ada", "u-1")]}),
            );
            saw.push("pods");
        } else {
            assert!(uri.starts_with("/api/v1/namespaces/hub/events?"), "{uri}");
            assert!(
                uri.contains("fieldSelector=involvedObject.name%3Djupyter--ada"),
                "{uri}"
            );
            reply(
                send,
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "EventList",
                "metadata": {"resourceVersion": "8"}, "items": []}),
            );
            saw.push("events");
        }
        if task.is_finished() {
            break;
        }
    }
    let spawned = task.await.unwrap().unwrap();
    assert!(saw.contains(&"pods"));
    assert_eq!(spawned.url, "http://10.1.2.3:8888");
    assert_eq!(spawned.state, state());
}

#[tokio::test]
async fn an_existing_claim_of_another_user_is_read_and_refused_before_anything_is_created() {
    let (spawner, mut h) = spawner(hub_ns());
    let req = SpawnRequest {
        server: ada(),
        prefix: "/user/ada/".to_owned(),
        env: BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), "t".to_owned())]),
        spec: spawner::LaunchSpec::default(),
    };
    let task = tokio::spawn(async move { spawner.start(req, ProgressSink::discard()).await });
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::POST,
            "/api/v1/namespaces/hub/persistentvolumeclaims?"
        )
    );
    reply(send, StatusCode::CONFLICT, &status(409, "AlreadyExists"));
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::GET,
            "/api/v1/namespaces/hub/persistentvolumeclaims/claim--ada"
        )
    );
    reply(
        send,
        StatusCode::OK,
        &owned("PersistentVolumeClaim", "claim--ada", "c-9", "eve", ""),
    );
    // The start ends here: no Secret, no pod (the mock answers nothing more).
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("belongs to another user"), "{err}");
}

#[tokio::test]
async fn per_user_mode_creates_the_namespace_first() {
    let (spawner, mut h) = spawner(NamespaceMode::PerUser {
        prefix: "u-".to_owned(),
    });
    let req = SpawnRequest {
        server: ada(),
        prefix: "/user/ada/".to_owned(),
        env: BTreeMap::new(),
        spec: spawner::LaunchSpec::default(),
    };
    let task = tokio::spawn(async move { spawner.start(req, ProgressSink::discard()).await });
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!((m, uri.as_str()), (Method::POST, "/api/v1/namespaces?"));
    assert_eq!(body["metadata"]["name"], "u--ada");
    reply(send, StatusCode::FORBIDDEN, &status(403, "Forbidden"));
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("cannot create namespace u--ada"), "{err}");
}

#[tokio::test]
async fn poll_reads_the_pod_and_matches_its_uid() {
    let (spawner, mut h) = spawner(hub_ns());
    let s = spawner.clone();
    let t = tokio::spawn(async move { s.poll(&ada(), &state()).await });
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/pods/jupyter--ada")
    );
    reply(send, StatusCode::OK, &running_pod("jupyter--ada", "u-1"));
    assert_eq!(t.await.unwrap().unwrap(), Status::Running);

    let s = spawner.clone();
    let t = tokio::spawn(async move { s.poll(&ada(), &state()).await });
    let (_, _, _, send) = next(&mut h).await;
    reply(
        send,
        StatusCode::OK,
        &running_pod("jupyter--ada", "someone-else"),
    );
    assert_eq!(t.await.unwrap().unwrap(), Status::Exited(None));

    let t = tokio::spawn(async move { spawner.poll(&ada(), &state()).await });
    let (_, _, _, send) = next(&mut h).await;
    reply(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    assert_eq!(t.await.unwrap().unwrap(), Status::Exited(None));
}

#[tokio::test]
async fn stop_deletes_by_uid_and_tolerates_gone() {
    let (spawner, mut h) = spawner(hub_ns());
    let s = spawner.clone();
    let t = tokio::spawn(async move { s.stop(&ada(), &state(), true).await });
    // The pod is read first: its uid and owner annotations must be the state's and ada's.
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/pods/jupyter--ada")
    );
    reply(send, StatusCode::OK, &running_pod("jupyter--ada", "u-1"));
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::DELETE, "/api/v1/namespaces/hub/pods/jupyter--ada?")
    );
    assert_eq!(body["preconditions"]["uid"], "u-1");
    assert_eq!(body["gracePeriodSeconds"], 0);
    reply(send, StatusCode::OK, &running_pod("jupyter--ada", "u-1"));
    // Then the Secret: read (owner check), deleted by its uid.
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/secrets/jupyter--ada")
    );
    reply(
        send,
        StatusCode::OK,
        &owned("Secret", "jupyter--ada", "s-1", "ada", ""),
    );
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::DELETE,
            "/api/v1/namespaces/hub/secrets/jupyter--ada?"
        )
    );
    assert_eq!(body["preconditions"]["uid"], "s-1");
    reply(send, StatusCode::OK, &status(200, "Success"));
    t.await.unwrap().unwrap();

    // Graceful, and both objects vanish between the read and the delete: fine.
    let s = spawner.clone();
    let t = tokio::spawn(async move { s.stop(&ada(), &state(), false).await });
    let (m, _, _, send) = next(&mut h).await;
    assert_eq!(m, Method::GET);
    reply(send, StatusCode::OK, &running_pod("jupyter--ada", "u-1"));
    let (m, _, body, send) = next(&mut h).await;
    assert_eq!(m, Method::DELETE);
    assert!(
        body.get("gracePeriodSeconds").is_none(),
        "graceful stop: {body}"
    );
    reply(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/secrets/jupyter--ada")
    );
    reply(
        send,
        StatusCode::OK,
        &owned("Secret", "jupyter--ada", "s-1", "ada", ""),
    );
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::DELETE,
            "/api/v1/namespaces/hub/secrets/jupyter--ada?"
        )
    );
    reply(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    t.await.unwrap().unwrap();

    // Both gone already: nothing to delete.
    let s = spawner.clone();
    let t = tokio::spawn(async move { s.stop(&ada(), &state(), false).await });
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/pods/jupyter--ada")
    );
    reply(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/secrets/jupyter--ada")
    );
    reply(send, StatusCode::NOT_FOUND, &status(404, "NotFound"));
    t.await.unwrap().unwrap();

    let t = tokio::spawn(async move { spawner.stop(&ada(), &state(), false).await });
    let (_, _, _, send) = next(&mut h).await;
    reply(send, StatusCode::OK, &running_pod("jupyter--ada", "u-1"));
    let (m, _, _, send) = next(&mut h).await;
    assert_eq!(m, Method::DELETE);
    reply(
        send,
        StatusCode::INTERNAL_SERVER_ERROR,
        &status(500, "InternalError"),
    );
    let err = t.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("cannot delete pod hub/jupyter--ada"), "{err}");
    // No further requests: the claim is never deleted.
    drop(h);
}

#[tokio::test]
async fn orphan_removal_lists_by_hub_labels_and_deletes_unknown_pods() {
    let (spawner, mut h) = spawner(hub_ns());
    let t = tokio::spawn(async move { spawner.remove_orphans(&[ada()]).await });
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(m, Method::GET);
    assert!(uri.starts_with("/api/v1/namespaces/hub/pods?"), "{uri}");
    assert!(uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dstackhub%2Cstackhub.io%2Fhub%3Dstackhub%2Capp.kubernetes.io%2Fcomponent%3Dsingleuser-server"), "{uri}");
    let mut bo = running_pod("jupyter--bo", "u-2");
    bo["metadata"]["labels"]["stackhub.io/user"] = json!("bo");
    bo["metadata"]["labels"]["stackhub.io/server"] = json!("x");
    bo["metadata"]["annotations"] = json!({"stackhub.io/user": "bo", "stackhub.io/server": "x"});
    // Whose is this one? Its annotations disagree: not attributable to a server, left alone.
    let mut cy = running_pod("jupyter--cy", "u-3");
    cy["metadata"]["annotations"] = json!({"stackhub.io/user": "cy", "stackhub.io/server": "",
                                           "hub.jupyter.org/username": "ada"});
    reply(
        send,
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
        "items": [running_pod("jupyter--ada", "u-1"), cy, bo]}),
    );
    // Only bo's pod (ada is known), by its uid.
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::DELETE, "/api/v1/namespaces/hub/pods/jupyter--bo?")
    );
    assert_eq!(body["preconditions"]["uid"], "u-2");
    reply(send, StatusCode::OK, &running_pod("jupyter--bo", "u-2"));
    // Its Secret: read, its owner checked, deleted by its uid.
    let (m, uri, _, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/hub/secrets/jupyter--bo")
    );
    reply(
        send,
        StatusCode::OK,
        &owned("Secret", "jupyter--bo", "s-2", "bo", "x"),
    );
    let (m, uri, body, send) = next(&mut h).await;
    assert_eq!(
        (m, uri.as_str()),
        (
            Method::DELETE,
            "/api/v1/namespaces/hub/secrets/jupyter--bo?"
        )
    );
    assert_eq!(body["preconditions"]["uid"], "s-2");
    reply(send, StatusCode::OK, &status(200, "Success"));
    let removed = t.await.unwrap().unwrap();
    assert_eq!(
        removed,
        vec![ServerId {
            user: "bo".to_owned(),
            name: "x".to_owned()
        }]
    );
}
