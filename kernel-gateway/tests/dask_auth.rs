//! Who may do what with Dask clusters: the identity provider's access tokens (a Keycloak-shaped
//! RS256 JWT from an in-test JWKS, trusted through `jwt_extra_issuers` beside the hub's site
//! JWTs), hub API tokens (`Authorization: jupyterhub <token>`, checked with a small real HTTP
//! server in this test that answers `GET /hub/api/user` as the stackhub hub does: the user
//! model with `kind`, `name`, `groups`, and 403 for a token it does not know), and the
//! `stack-dask-*` quota roles deciding options, workers and clusters. The stock `dask_gateway`
//! 2026.3.0 client of the DEDL environment shows what users see.
// Helpers outside `#[test]` fns panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod dask_support;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap as AxumHeaders;
use common::Gateway;
use dask_support::{
    Signer, bearer, call, dask_config, dedl_python, processes_under, stock_client, temp_root,
    wait_status,
};
use hyper::{Method, StatusCode};
use kernel_gateway::Config;
use kernel_gateway::config::JwtConfig;
use serde_json::{Value, json};
use stackhub_e2e::support::dask_client_script;

const IDP_ISSUER: &str = "https://idp.test/realms/dedl";

/// A Keycloak access token's claims for `user` with realm `roles` and `groups`.
fn idp_claims(user: &str, roles: &[&str], groups: &[&str], ttl_secs: i64) -> Value {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap();
    json!({
        "iss": IDP_ISSUER, "aud": "account", "azp": "dedl-stack-client", "typ": "Bearer",
        "sub": format!("f:{user}"), "preferred_username": user,
        "realm_access": {"roles": roles}, "groups": groups,
        "iat": now - 60, "exp": now + ttl_secs,
    })
}

/// A site answering `GET /hub/api/user` as the hub does, counting the questions.
struct FakeHub {
    api_url: String,
    asked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHub {
    async fn start() -> Self {
        let users: HashMap<&str, Value> = HashMap::from([
            (
                "hub-alice",
                json!({"kind": "user", "name": "alice", "admin": false,
                       "groups": ["services:dask:stack-dask-high"], "scopes": ["access:servers!user=alice"]}),
            ),
            (
                "hub-alice-dask",
                json!({"kind": "user", "name": "alice", "groups": ["services:dask:stack-dask-high"],
                       "scopes": ["access:servers!user=alice", "access:services!service=dask-gateway"]}),
            ),
            (
                "hub-carol",
                json!({"kind": "user", "name": "carol", "groups": ["stack-dask-low"]}),
            ),
            (
                "hub-dave",
                json!({"kind": "user", "name": "dave", "groups": ["stack-jupyter-high"]}),
            ),
            (
                "hub-service",
                json!({"kind": "service", "name": "announcer", "roles": ["stack-dask-high"]}),
            ),
        ]);
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().route(
            "/hub/api/user",
            axum::routing::get(move |headers: AxumHeaders| {
                let users = users.clone();
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("token "))
                        .unwrap_or_default();
                    if token == "hub-broken" {
                        return (StatusCode::BAD_GATEWAY, axum::Json(json!({"message": "oops"})));
                    }
                    match users.get(token) {
                        Some(model) => (StatusCode::OK, axum::Json(model.clone())),
                        None => (
                            StatusCode::FORBIDDEN,
                            axum::Json(json!({"status": 403, "message": "Missing or invalid credentials."})),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHub {
            api_url: format!("http://{addr}/hub/api"),
            asked,
            task,
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The hub's site JWTs in `[jwt]`, the identity provider's in `jwt_extra_issuers` (kernels
/// require `stack-jupyter` of its callers), the hub's API for jupyterhub tokens, and only
/// quota-role holders let in.
fn auth_config(
    root: &std::path::Path,
    hub: &Signer,
    idp: &Signer,
    hub_api: Option<&str>,
) -> Config {
    let mut c = dask_config(root, Some(&hub.jwks_url));
    c.jwt_extra_issuers = vec![JwtConfig {
        jwks_url: idp.jwks_url.clone(),
        issuer: Some(IDP_ISSUER.into()),
        audience: vec!["account".into()],
        role_claims: vec!["realm_access.roles".into(), "groups".into()],
        required_role: "stack-jupyter".into(),
        ..JwtConfig::default()
    }];
    c.dask.hub_api_url = hub_api.map(str::to_owned);
    c.dask.require_quota_role = true;
    c.validate().unwrap();
    c
}

async fn get(gw: &Gateway, path: &str, auth: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(gw, Method::GET, path, Some(auth), None, None).await;
    (s, v)
}

async fn post(gw: &Gateway, path: &str, auth: &str, body: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(gw, Method::POST, path, Some(auth), None, Some(body)).await;
    (s, v)
}

/// The `max` of the worker_cores and worker_memory fields of an options answer.
fn maxima(options: &Value) -> (Value, Value) {
    (
        options["cluster_options"][0]["spec"]["max"].clone(),
        options["cluster_options"][1]["spec"]["max"].clone(),
    )
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

/// The stock client reading the options with `auth="jupyterhub"` and with a Bearer IdP token.
const OPTIONS_SCRIPT: &str = r#"
out = {}
for name, auth in [("jupyterhub", "jupyterhub"), ("bearer", EnvAuth())]:
    gw = gateway(auth)
    opts = gw.cluster_options()
    fields = opts._fields
    try:
        opts.worker_cores = fields["worker_cores"].max + 1
        refused = None
    except ValueError as e:
        refused = str(e)
    out[name] = {"cores": fields["worker_cores"].max, "memory": fields["worker_memory"].max,
                 "refused": refused, "clusters": len(gw.list_clusters())}
    gw.close()
print(json.dumps(out), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_gets_the_options_of_its_quota_role() {
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let hub = FakeHub::start().await;
    let root = temp_root();
    let gw = Gateway::start(auth_config(&root, &hub_signer, &idp, Some(&hub.api_url))).await;

    // The identity provider's token: roles from realm_access.roles and group paths.
    let low = idp.sign(&idp_claims(
        "lou",
        &["stack-dask-low", "offline_access"],
        &[],
        600,
    ));
    let high = idp.sign(&idp_claims(
        "hana",
        &["stack-dask-low"],
        &["/services/dask/stack-dask-high"],
        600,
    ));
    let (s, v) = get(&gw, "/api/v1/options", &bearer(&low)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(maxima(&v), (json!(1), json!(2.0)), "{v}");
    let (s, v) = get(&gw, "/api/v1/options", &bearer(&high)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(maxima(&v), (json!(12), json!(24.0)), "{v}");
    // The hub's site JWT still works beside it (its roles claim carries the quota role).
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap();
    let site = hub_signer.sign(&json!({
        "iss": dask_support::ISSUER, "aud": dask_support::AUDIENCE, "sub": "mia",
        "preferred_username": "mia", "realm_access": {"roles": ["stack-dask-medium"]},
        "iat": now - 60, "exp": now + 600,
    }));
    let (s, v) = get(&gw, "/api/v1/options", &bearer(&site)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(maxima(&v), (json!(4), json!(8.0)), "{v}");
    // The issuer's required_role (stack-jupyter) still guards kernels, not Dask; a holder
    // reaches kernels with the same kind of token.
    let (s, v) = get(&gw, "/api/kernels", &bearer(&low)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let jupyter = idp.sign(&idp_claims("lou", &["stack-jupyter"], &[], 600));
    let (s, v) = get(&gw, "/api/kernels", &bearer(&jupyter)).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    // A hub API token: the hub's groups carry the quota role.
    let (s, v) = get(&gw, "/api/v1/options", "jupyterhub hub-carol").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(maxima(&v), (json!(1), json!(2.0)), "{v}");

    // The stock client: alice's hub token (stack-dask-high through a hub group), then lou's
    // IdP token (stack-dask-low). Each sees its own maxima and cannot pick beyond them.
    let out = tokio::process::Command::new(dedl_python())
        .args(["-c", &dask_client_script(OPTIONS_SCRIPT)])
        .env("GATEWAY_ADDRESS", format!("http://{}", gw.addr))
        .env("JUPYTERHUB_API_TOKEN", "hub-alice")
        .env("GATEWAY_AUTHORIZATION", bearer(&low))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&seen["jupyterhub"]["cores"], &seen["jupyterhub"]["memory"]),
        (&json!(12), &json!(24.0)),
        "{seen}"
    );
    assert_eq!(
        (&seen["bearer"]["cores"], &seen["bearer"]["memory"]),
        (&json!(1), &json!(2.0)),
        "{seen}"
    );
    assert!(
        seen["bearer"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("worker_cores")),
        "{seen}"
    );
    assert_eq!(seen["jupyterhub"]["clusters"], 0, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_requests_are_refused_naming_the_limit_and_the_role() {
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let root = temp_root();
    let mut config = auth_config(&root, &hub_signer, &idp, None);
    // One cluster at a time for the TUW role in this test.
    let tuw = config
        .dask
        .quota_roles
        .iter_mut()
        .find(|r| r.role == "stack-dask-tuw")
        .unwrap();
    tuw.max_clusters = Some(1);
    let gw = Gateway::start(config).await;
    let low = bearer(&idp.sign(&idp_claims("lou", &["stack-dask-low"], &[], 600)));
    let create = "/api/v1/clusters/";

    for body in [
        r#"{"cluster_options": {"worker_cores": 4}}"#,
        r#"{"cluster_options": {"worker_memory": 8.0}}"#,
    ] {
        let (s, v) = post(&gw, create, &low, body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let e = error_of(&v);
        assert!(e.contains("stack-dask-low"), "{e}");
        assert!(
            e.contains("from 1 to 1") || e.contains("to 2 (the limit"),
            "names the limit: {e}"
        );
    }
    let (_, v) = get(&gw, create, &low).await;
    assert_eq!(v, json!({}), "a refused request created a cluster");

    // A caller holding no Dask quota role: refused, told which roles grant access.
    let none = bearer(&idp.sign(&idp_claims(
        "nora",
        &["stack-jupyter"],
        &["/projects/x"],
        600,
    )));
    let (s, v) = get(&gw, "/api/v1/options", &none).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let e = error_of(&v);
    assert!(
        e.contains("nora") && e.contains("stack-dask-low") && e.contains("stack-dask-high"),
        "{e}"
    );
    let (s, v) = post(&gw, create, &none, "{}").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // One cluster too many for the role's max_clusters.
    let tuw = bearer(&idp.sign(&idp_claims("tina", &["stack-dask-tuw"], &[], 600)));
    let (s, v) = post(&gw, create, &tuw, "{}").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let first = v["name"].as_str().unwrap().to_owned();
    let (s, v) = post(&gw, create, &tuw, "{}").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let e = error_of(&v);
    assert!(
        e.contains("limit of 1 clusters") && e.contains("stack-dask-tuw"),
        "{e}"
    );
    let (s, _, _) = call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/clusters/{first}"),
        Some(&tuw),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_status(&gw, &tuw, &first, 30, |s| s == "STOPPED").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_forged_identity_provider_tokens_are_401() {
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let forger = Signer::start().await;
    let root = temp_root();
    let gw = Gateway::start(auth_config(&root, &hub_signer, &idp, None)).await;
    let roles = &["stack-dask-high"];
    let good = idp_claims("eve", roles, &[], 600);
    let (s, v) = get(&gw, "/api/v1/clusters/", &bearer(&idp.sign(&good))).await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({})),
        "the genuine token works"
    );

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.test/realms/dedl");
    let mut hub_iss = good.clone();
    hub_iss["iss"] = json!(dask_support::ISSUER);
    hub_iss["aud"] = json!(dask_support::AUDIENCE);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-client");
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let cases = [
        (
            "expired",
            idp.sign(&idp_claims("eve", roles, &[], -600)),
            "expired",
        ),
        ("another key, same kid", forger.sign(&good), "signature"),
        ("another issuer", idp.sign(&wrong_iss), "issuer"),
        // The IdP's key claiming to be the hub: the hub's keys do not verify it.
        ("the hub's issuer", idp.sign(&hub_iss), "signature"),
        ("another audience", idp.sign(&wrong_aud), "audience"),
        ("no audience", idp.sign(&no_aud), "aud"),
    ];
    for (what, token, says) in cases {
        let (s, h, v) = call(
            &gw,
            Method::GET,
            "/api/v1/clusters/",
            Some(&bearer(&token)),
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {v}");
        let e = error_of(&v);
        assert!(e.contains(says), "{what}: {e}");
        assert!(!e.contains(&token), "{what}: the token is echoed");
        assert!(
            !h.contains_key("set-cookie"),
            "{what}: a session was opened"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_tokens_are_checked_with_the_hub() {
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let hub = FakeHub::start().await;
    let root = temp_root();
    let gw = Gateway::start(auth_config(&root, &hub_signer, &idp, Some(&hub.api_url))).await;

    let (s, h, v) = call(
        &gw,
        Method::GET,
        "/api/v1/clusters/",
        Some("jupyterhub hub-alice"),
        None,
        None,
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    assert!(h.contains_key("set-cookie"), "a session is opened");
    // The hub's answer is reused for a few seconds.
    let asked = hub.asked.load(Ordering::SeqCst);
    let (s, _) = get(&gw, "/api/v1/options", "jupyterhub hub-alice").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        hub.asked.load(Ordering::SeqCst),
        asked,
        "asked the hub again"
    );

    for (token, status, says) in [
        (
            "not-a-hub-token",
            StatusCode::UNAUTHORIZED,
            "does not accept",
        ),
        ("hub-service", StatusCode::FORBIDDEN, "service"),
        ("hub-dave", StatusCode::FORBIDDEN, "stack-dask-low"),
        ("hub-broken", StatusCode::SERVICE_UNAVAILABLE, "502"),
    ] {
        let (s, h, v) = call(
            &gw,
            Method::GET,
            "/api/v1/options",
            Some(&format!("jupyterhub {token}")),
            None,
            None,
        )
        .await;
        assert_eq!(s, status, "{token}: {v}");
        let e = error_of(&v);
        assert!(e.contains(says), "{token}: {e}");
        assert!(!e.contains(token), "{token}: the token is echoed");
        assert!(
            !h.contains_key("set-cookie"),
            "{token}: a session was opened"
        );
    }
    // A hub token is not a bearer credential (it is no JWT, no [[users]] token).
    let (s, v) = get(&gw, "/api/v1/options", "Bearer hub-alice").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // The hub gone: 503, not a refusal of the user.
    let url = hub.api_url.clone();
    drop(hub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, v) = get(&gw, "/api/v1/options", "jupyterhub hub-carol").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(error_of(&v).contains(&url), "{v}");

    // A site without dask.hub_api_url refuses the scheme, saying what to send.
    let other = Gateway::start(auth_config(&temp_root(), &hub_signer, &idp, None)).await;
    let (s, v) = get(&other, "/api/v1/options", "jupyterhub hub-alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).contains("hub_api_url"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_requiring_a_hub_scope_refuses_tokens_without_it() {
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let hub = FakeHub::start().await;
    let mut config = auth_config(&temp_root(), &hub_signer, &idp, Some(&hub.api_url));
    config.dask.hub_required_scope = Some("access:services!service=dask-gateway".into());
    let gw = Gateway::start(config).await;
    // Alice's server token (no access to this service) is refused; one with it works.
    let (s, v) = get(&gw, "/api/v1/options", "jupyterhub hub-alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        error_of(&v).contains("access:services!service=dask-gateway"),
        "{v}"
    );
    let (s, v) = get(&gw, "/api/v1/options", "jupyterhub hub-alice-dask").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(maxima(&v), (json!(12), json!(24.0)), "{v}");
}

/// A `stack-dask-tuw` user (2 workers at most) asks for 5, then makes its own scheduler want
/// 10 (the user runs code on it), and checks what it got.
const MAX_WORKERS_SCRIPT: &str = r#"
import warnings

gw = gateway()
cluster = gw.new_cluster(worker_memory=0.5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cluster.scale(5)
client = cluster.get_client()
client.wait_for_workers(2, timeout=60)
say(event="scaled", warnings=[str(w.message) for w in caught])
sys.stdin.readline()
def want_ten(dask_scheduler):
    dask_scheduler.services["gateway"].count = 10
client.run_on_scheduler(want_ten)
say(event="asked")
sys.stdin.readline()
say(event="workers", workers=len(client.scheduler_info()["workers"]))
client.close()
cluster.shutdown()
gw.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_keeps_to_the_max_workers_of_its_role() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (hub_signer, idp) = (Signer::start().await, Signer::start().await);
    let root = temp_root();
    let gw = Gateway::start(auth_config(&root, &hub_signer, &idp, None)).await;
    let token = idp.sign(&idp_claims("tina", &["stack-dask-tuw"], &[], 600));
    let mut child = stock_client(&dedl_python(), MAX_WORKERS_SCRIPT, gw.addr, &bearer(&token));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("the client said nothing for 90 s")
            .unwrap()
            .expect("the client exited");
        serde_json::from_str(&line).unwrap()
    };
    // scale(5) is clamped to 2, and the stock client shows why.
    let scaled = next().await;
    assert_eq!(scaled["event"], "scaled", "{scaled}");
    let warning = scaled["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        warning.contains("limit of 2 workers") && warning.contains("stack-dask-tuw"),
        "{scaled}"
    );
    // Its own scheduler wanting 10: the gateway starts none beyond the role's 2.
    let before = processes_under(&root).len();
    stdin.write_all(b"\n").await.unwrap();
    assert_eq!(next().await["event"], "asked");
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let now = processes_under(&root).len();
        assert!(
            now <= before,
            "{now} processes for the cluster, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stdin.write_all(b"\n").await.unwrap();
    let workers = next().await;
    assert_eq!(workers["workers"], 2, "{workers}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&root);
}
