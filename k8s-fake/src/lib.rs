//! An in-memory Kubernetes API server for tests (no cluster can run on our machines).
//!
//! It keeps core/v1 objects (pods, persistentvolumeclaims, events, namespaces, secrets,
//! services) and `networking.k8s.io/v1` NetworkPolicies (under `/apis/networking.k8s.io/v1`;
//! any other API group is 404, as on a server without it) with `uid`, `resourceVersion` and
//! `creationTimestamp`; answers create, get, list,
//! delete (with `preconditions.uid`) and watch (`?watch=1` from a `resourceVersion`, JSON lines);
//! honours equality label and field selectors; answers 404 / 409 with the API server's
//! `Status` bodies; and lets a test play the kubelet: set a pod's status, add events.
//! No kubelet runs anything: pods stay `Pending` until the test moves them.

mod routes;
mod selector;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use selector::{Selector, SelectorError};
pub use validate::{KUBERNETES_VERSION, kubernetes_validate, kubernetes_validate_tool};

/// One change, as a watch streams it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The store's resourceVersion after the change.
    pub rv: u64,
    /// Plural resource, e.g. `pods`.
    pub resource: String,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before, for `DELETED`).
    pub object: Value,
}

type Key = (String, String, String);

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    requests: Vec<String>,
    ip_counter: u8,
}

#[derive(Debug)]
struct Inner {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
}

/// The fake API server; it stops when dropped.
#[derive(Debug)]
pub struct FakeKube {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "events" => "Event",
        "namespaces" => "Namespace",
        "secrets" => "Secret",
        "services" => "Service",
        "configmaps" => "ConfigMap",
        "networkpolicies" => "NetworkPolicy",
        _ => "Unknown",
    }
}

/// The `apiVersion` of a resource's objects.
pub(crate) fn api_version_of(resource: &str) -> &'static str {
    match resource {
        "networkpolicies" => "networking.k8s.io/v1",
        _ => "v1",
    }
}

/// The resources served under `/apis/{group}/{version}` (the rest are core `/api/v1`).
pub(crate) fn served_in_group(group_version: &str, resource: &str) -> bool {
    api_version_of(resource) == group_version && group_version != "v1"
}

/// The API server's error body.
fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
        json!({"name": name, "kind": resource}),
    )
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

impl FakeKube {
    /// Start on 127.0.0.1 (a port the OS picks: nothing else binds to it).
    ///
    /// # Panics
    /// When it cannot listen.
    pub async fn start() -> Self {
        let (changes, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::default()),
            changes,
        });
        let app = routes::router(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake API server listens");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr, task }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for it, with `default` as the default namespace.
    ///
    /// # Panics
    /// Never for a started server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.store.lock().requests.clone()
    }

    /// An object, if it exists.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.inner
            .store
            .lock()
            .objects
            .get(&(resource.to_owned(), ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every object of a resource (any namespace).
    pub fn list(&self, resource: &str) -> Vec<Value> {
        self.inner
            .store
            .lock()
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Create an object directly (as if another client had), returning it as stored.
    ///
    /// # Panics
    /// When it already exists or has no name.
    pub fn insert(&self, resource: &str, ns: &str, object: Value) -> Value {
        self.inner
            .create(resource, ns, object)
            .unwrap_or_else(|(_, m)| panic!("insert {resource}: {m}"))
    }

    /// Wait until `resource` `ns/name` exists (for a test playing the kubelet).
    ///
    /// # Panics
    /// After 30 s.
    pub async fn wait_for(&self, resource: &str, ns: &str, name: &str) -> Value {
        let mut rx = self.inner.changes.subscribe();
        if let Some(v) = self.get(resource, ns, name) {
            return v;
        }
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(c)
                        if c.resource == resource
                            && c.namespace == ns
                            && c.object["metadata"]["name"] == name
                            && c.kind != "DELETED" =>
                    {
                        return c.object;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("fake closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{resource} {ns}/{name} never appeared"))
    }

    /// Merge `status` into the pod's `.status` (the kubelet's job), emitting `MODIFIED`.
    ///
    /// # Panics
    /// When the pod does not exist.
    pub fn set_pod_status(&self, ns: &str, name: &str, status: Value) {
        self.inner
            .modify("pods", ns, name, |pod| {
                let st = &mut pod["status"];
                if !st.is_object() {
                    *st = json!({});
                }
                if let (Some(dst), Value::Object(src)) = (st.as_object_mut(), status) {
                    for (k, v) in src {
                        dst.insert(k, v);
                    }
                }
            })
            .unwrap_or_else(|| panic!("no pod {ns}/{name}"));
    }

    /// Mark the pod `Running` with a fresh IP and a running container; returns the IP.
    pub fn run_pod(&self, ns: &str, name: &str) -> String {
        let ip = {
            let mut s = self.inner.store.lock();
            s.ip_counter = s.ip_counter.wrapping_add(1);
            format!("10.42.0.{}", s.ip_counter)
        };
        let pod = self
            .get("pods", ns, name)
            .unwrap_or_else(|| panic!("no pod {ns}/{name}"));
        let statuses: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                       "restartCount": 0, "started": true,
                       "state": {"running": {"startedAt": chrono::Utc::now().to_rfc3339()}}})
            })
            .collect();
        self.set_pod_status(
            ns,
            name,
            json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": statuses}),
        );
        ip
    }

    /// Add a `core/v1` Event about a pod, as the scheduler or kubelet would.
    ///
    /// # Panics
    /// When the pod does not exist.
    pub fn add_pod_event(&self, ns: &str, pod: &str, type_: &str, reason: &str, message: &str) {
        let p = self
            .get("pods", ns, pod)
            .unwrap_or_else(|| panic!("no pod {ns}/{pod}"));
        let name = format!("{pod}.{}", uuid::Uuid::new_v4().simple());
        let now = chrono::Utc::now().to_rfc3339();
        self.insert(
            "events",
            ns,
            json!({
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod,
                                   "uid": p["metadata"]["uid"], "apiVersion": "v1"},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "kubelet"},
            }),
        );
    }
}

impl Inner {
    fn record(
        &self,
        store: &mut Store,
        resource: &str,
        ns: &str,
        kind: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: store.rv,
            resource: resource.to_owned(),
            namespace: ns.to_owned(),
            kind,
            object,
        };
        store.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    fn create(
        &self,
        resource: &str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, (StatusCode, String)> {
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                "metadata.name: Required value".to_owned(),
            ));
        };
        if let Some(body_ns) = obj["metadata"]["namespace"].as_str()
            && body_ns != ns
        {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                ),
            ));
        }
        let mut s = self.store.lock();
        let key = (resource.to_owned(), ns.to_owned(), name.clone());
        if s.objects.contains_key(&key) {
            return Err((
                StatusCode::CONFLICT,
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        if !ns.is_empty() && resource != "namespaces" {
            // Namespaces are implicit for `default`; others must exist when any were created.
            let has_namespaces = s.objects.keys().any(|(r, _, _)| r == "namespaces");
            let exists =
                s.objects
                    .contains_key(&("namespaces".to_owned(), String::new(), ns.to_owned()));
            if has_namespaces && !exists && ns != "default" {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("namespaces \"{ns}\" not found"),
                ));
            }
        }
        s.rv += 1;
        obj["apiVersion"] = json!(api_version_of(resource));
        obj["kind"] = json!(kind_of(resource));
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["resourceVersion"] = json!(s.rv.to_string());
        meta["creationTimestamp"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        if !ns.is_empty() {
            meta["namespace"] = json!(ns);
        }
        if resource == "pods" && obj["status"].is_null() {
            obj["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
        }
        if resource == "persistentvolumeclaims" && obj["status"].is_null() {
            obj["status"] = json!({"phase": "Pending"});
        }
        s.objects.insert(key, obj.clone());
        self.record(&mut s, resource, ns, "ADDED", obj.clone());
        Ok(obj)
    }

    fn modify(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut s = self.store.lock();
        s.rv += 1;
        let rv = s.rv;
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        let obj = s.objects.get_mut(&key)?;
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = obj.clone();
        self.record(&mut s, resource, ns, "MODIFIED", obj.clone());
        Some(obj)
    }

    fn delete(&self, resource: &str, ns: &str, name: &str, options: &Value) -> Response {
        let mut s = self.store.lock();
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        let Some(obj) = s.objects.get(&key) else {
            return not_found(resource, name);
        };
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && obj["metadata"]["uid"].as_str() != Some(uid)
        {
            let have = obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
                json!({"name": name, "kind": resource}),
            );
        }
        let mut obj = s.objects.remove(&key).unwrap_or_default();
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        obj["metadata"]["deletionTimestamp"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        self.record(&mut s, resource, ns, "DELETED", obj.clone());
        (StatusCode::OK, axum::Json(obj)).into_response()
    }

    fn list(&self, resource: &str, ns: Option<&str>, q: &BTreeMap<String, String>) -> Response {
        let (labels, fields) = match selectors(q) {
            Ok(s) => s,
            Err(m) => return bad_request(m),
        };
        if is_watch(q) {
            return self.watch(resource, ns, q, labels, fields);
        }
        let s = self.store.lock();
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .filter(|v| labels.matches_labels(v) && fields.matches_fields(v))
            .cloned()
            .collect();
        let body = json!({
            "apiVersion": api_version_of(resource),
            "kind": format!("{}List", kind_of(resource)),
            "metadata": {"resourceVersion": s.rv.to_string()},
            "items": items,
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn watch(
        &self,
        resource: &str,
        ns: Option<&str>,
        q: &BTreeMap<String, String>,
        labels: Selector,
        fields: Selector,
    ) -> Response {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        // Subscribe before reading the history: no change falls in between.
        let rx = self.changes.subscribe();
        let s = self.store.lock();
        // From resourceVersion 0 / unset the real server starts with ADDED for every current
        // object; from a given version it replays what changed after it.
        let resource = resource.to_owned();
        let ns = ns.map(str::to_owned);
        let wanted = {
            let resource = resource.clone();
            let ns = ns.clone();
            move |c: &Change| {
                c.resource == resource
                    && ns.as_ref().is_none_or(|n| *n == c.namespace)
                    && labels.matches_labels(&c.object)
                    && fields.matches_fields(&c.object)
            }
        };
        let replay: Vec<Change> = if from == 0 {
            s.objects
                .iter()
                .filter(|((r, n, _), _)| *r == resource && ns.as_ref().is_none_or(|ns| ns == n))
                .map(|((r, n, _), v)| Change {
                    rv: s.rv,
                    resource: r.clone(),
                    namespace: n.clone(),
                    kind: "ADDED",
                    object: v.clone(),
                })
                .filter(|c| wanted(c))
                .collect()
        } else {
            s.history
                .iter()
                .filter(|c| c.rv > from && wanted(c))
                .cloned()
                .collect()
        };
        let last = s.rv;
        drop(s);
        let live = tokio_stream_from(rx).filter(move |c| {
            let keep = c.rv > last && wanted(c);
            async move { keep }
        });
        let stream = futures_util::stream::iter(replay)
            .chain(live)
            .map(|c| {
                let mut line = serde_json::to_vec(&json!({"type": c.kind, "object": c.object}))
                    .unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
            })
            .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

fn tokio_stream_from(rx: broadcast::Receiver<Change>) -> impl futures_util::Stream<Item = Change> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(c) => return Some((c, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn is_watch(q: &BTreeMap<String, String>) -> bool {
    matches!(q.get("watch").map(String::as_str), Some("1" | "true"))
}

fn selectors(q: &BTreeMap<String, String>) -> Result<(Selector, Selector), String> {
    let labels = Selector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| format!("unable to parse requirement: {e}"))?;
    let fields = Selector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| format!("invalid field selector: {e}"))?;
    Ok((labels, fields))
}
