//! Multi-tenancy: JWT bearers checked against a real JWKS endpoint, required role, quota roles
//! reaching (and limiting) a real ipykernel, and CORS / WebSocket Origin checks.
// Helpers outside `#[test]` fns panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::{ALICE, Gateway, config};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kernel_gateway::Config;
use kernel_gateway::config::JwtConfig;
use kernel_gateway::quota::{QuotaRole, default_quota_roles};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ISSUER: &str = "https://identity.test/auth/realms/dedl";
const AUDIENCE: &str = "stackhub-gateway";

/// A test RSA key with its `kid`.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn generate(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        TestKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        }
    }

    /// A signed token for `user` with `roles`, valid for an hour, with `edit` applied to the claims.
    fn token(&self, user: &str, roles: &[&str], edit: impl FnOnce(&mut Value)) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = json!({
            "iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": format!("sub-{user}"),
            "preferred_username": user, "iat": now, "exp": now + 3600,
            "realm_access": {"roles": roles},
        });
        edit(&mut claims);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
        )
    }
}

/// A JWKS endpoint on 127.0.0.1:0 whose key set the test can swap; counts fetches.
struct Jwks {
    url: String,
    keys: Arc<RwLock<Value>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    async fn serve(keys: &[&TestKey]) -> Self {
        let doc = Arc::new(RwLock::new(json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        })));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/realms/dedl/protocol/openid-connect/certs",
            axum::routing::get({
                let doc = doc.clone();
                let fetches = fetches.clone();
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(doc.read().await.clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Jwks {
            url: format!("http://{addr}/realms/dedl/protocol/openid-connect/certs"),
            keys: doc,
            fetches,
            task,
        }
    }

    async fn publish(&self, keys: &[&TestKey]) {
        *self.keys.write().await = json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        });
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwt_config(jwks: &Jwks) -> Config {
    Config {
        jwt: Some(JwtConfig {
            jwks_url: jwks.url.clone(),
            issuer: Some(ISSUER.to_owned()),
            audience: vec![AUDIENCE.to_owned()],
            ..JwtConfig::default()
        }),
        ..config()
    }
}

async fn status_of(gw: &Gateway, token: &str) -> (StatusCode, Value) {
    let (s, _, body) = gw
        .call(Method::GET, "/api/kernels", Some(token), None)
        .await;
    (s, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_rejections_are_401_missing_role_is_403_and_jwks_is_cached() {
    let key = TestKey::generate("k1");
    let other = TestKey::generate("k1"); // same kid, different key: bad signature
    let jwks = Jwks::serve(&[&key]).await;
    let gw = Gateway::start(jwt_config(&jwks)).await;

    let good = key.token("carol", &["stack-jupyter", "offline_access"], |_| {});
    let (s, body) = status_of(&gw, &good).await;
    assert_eq!((s, body), (StatusCode::OK, json!([])));
    // The shared/per-user tokens keep working beside JWTs.
    assert_eq!(status_of(&gw, ALICE).await.0, StatusCode::OK);

    let past = jsonwebtoken::get_current_timestamp() - 3600;
    let cases = [
        (
            "expired",
            key.token("carol", &["stack-jupyter"], |c| {
                c["exp"] = json!(past);
                c["iat"] = json!(past - 60);
            }),
            "expired",
        ),
        (
            "wrong audience",
            key.token("carol", &["stack-jupyter"], |c| {
                c["aud"] = json!("other-service")
            }),
            "audience",
        ),
        (
            "wrong issuer",
            key.token("carol", &["stack-jupyter"], |c| {
                c["iss"] = json!("https://evil.example")
            }),
            "issuer",
        ),
        (
            "bad signature",
            other.token("carol", &["stack-jupyter"], |_| {}),
            "signature",
        ),
        (
            "unknown kid",
            TestKey {
                kid: "nope".into(),
                ..TestKey::generate("nope")
            }
            .token("carol", &["stack-jupyter"], |_| {}),
            "unknown key",
        ),
        (
            "no username",
            key.token("carol", &["stack-jupyter"], |c| {
                c.as_object_mut().unwrap().remove("preferred_username");
            }),
            "preferred_username",
        ),
        ("garbage", "Bearer not.a.jwt".to_owned(), "malformed"),
    ];
    for (what, token, needle) in &cases {
        let (s, body) = status_of(&gw, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
        let raw = token.trim_start_matches("Bearer ");
        assert!(
            !message.contains(raw),
            "{what}: the token leaked into the error"
        );
    }

    // Valid token, but without the required role: 403 naming the role.
    let (s, body) = status_of(&gw, &key.token("eve", &["stack-dask"], |_| {})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'stack-jupyter'") && message.contains("eve"),
        "{message}"
    );

    // The WebSocket upgrade is authenticated the same way.
    let expired = &cases[0].1;
    let url = format!(
        "ws://{}/api/kernels/{}/channels",
        gw.addr,
        uuid::Uuid::new_v4()
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", expired.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected 401, got {other:?}"),
    }

    // One fetch served all of that: the unknown kid's refetch is rate-limited.
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_key_rotation_is_picked_up() {
    let k1 = TestKey::generate("k1");
    let k2 = TestKey::generate("k2");
    let jwks = Jwks::serve(&[&k1]).await;
    let mut config = jwt_config(&jwks);
    if let Some(j) = config.jwt.as_mut() {
        j.jwks_min_refresh_secs = 0;
    }
    let gw = Gateway::start(config).await;
    let t1 = k1.token("carol", &["stack-jupyter"], |_| {});
    assert_eq!(status_of(&gw, &t1).await.0, StatusCode::OK);
    jwks.publish(&[&k2]).await;
    let t2 = k2.token("carol", &["stack-jupyter"], |_| {});
    assert_eq!(status_of(&gw, &t2).await.0, StatusCode::OK);
    // k1 was retired: its tokens no longer pass.
    assert_eq!(status_of(&gw, &t1).await.0, StatusCode::UNAUTHORIZED);
    assert!(jwks.fetches.load(Ordering::SeqCst) >= 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_down_is_503_without_leaking_the_token() {
    let key = TestKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let config = jwt_config(&jwks);
    drop(jwks); // nothing listens there any more
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gw = Gateway::start(config).await;
    let token = key.token("carol", &["stack-jupyter"], |_| {});
    let (s, body) = status_of(&gw, &token).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        !body
            .to_string()
            .contains(token.trim_start_matches("Bearer "))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_role_reaches_the_real_kernel_and_is_enforced_locally() {
    let key = TestKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let mut quota_roles = default_quota_roles();
    quota_roles.push(QuotaRole {
        role: "stack-jupyter-tiny".into(),
        cpus: 1.0,
        memory: "1Gi".into(),
        gpus: 0,
        max_servers: None,
        max_kernels: Some(1),
    });
    let gw = Gateway::start(Config {
        quota_roles,
        ..jwt_config(&jwks)
    })
    .await;

    // carol holds medium and low: medium (6 CPU / 18 GiB) wins. She claims to be someone else
    // and asks for more than her quota; identity and limits come from the token regardless.
    let carol = key.token(
        "carol",
        &["stack-jupyter", "stack-jupyter-low", "stack-jupyter-medium"],
        |_| {},
    );
    let body = json!({"name": "python3", "env": {
        "KERNEL_USERNAME": "mallory", "KERNEL_CPUS": "64", "KERNEL_MEMORY": "1Ti",
        "KERNEL_CPUS_LIMIT": "64", "KERNEL_GPUS": "8"}});
    let (s, _, model) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(&carol),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    let (_, _, list) = gw
        .call(Method::GET, "/api/kernels", Some(&carol), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, _, list) = gw
        .call(Method::GET, "/api/kernels", Some(ALICE), None)
        .await;
    assert_eq!(list, json!([]), "alice must not see carol's kernel");

    let mut ws = gw.ws(&carol, &id, "s-carol", false).await;
    let out = ws
        .execute(
            "import os, resource\n\
             e = os.environ\n\
             print(e['KERNEL_USERNAME'], e['KERNEL_CPUS'], e['KERNEL_MEMORY'], e['KERNEL_GPUS'],\n\
                   e['KERNEL_CPUS_LIMIT'], e['KERNEL_MEMORY_LIMIT'], e['KERNEL_GPUS_LIMIT'],\n\
                   e['KERNEL_QUOTA_ROLE'], resource.getrlimit(resource.RLIMIT_DATA)[0],\n\
                   repr(e.get('CUDA_VISIBLE_DEVICES')))",
        )
        .await;
    assert_eq!(out.reply_status.as_deref(), Some("ok"), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!(
            "carol 6 18Gi 0 6 18Gi 0 stack-jupyter-medium {} ''",
            18u64 << 30
        )
    );
    drop(ws);

    // dave holds the tiny role: 1 CPU, 1 GiB, one kernel.
    let dave = key.token("dave", &["stack-jupyter", "stack-jupyter-tiny"], |_| {});
    let (s, _, model) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(&dave),
            Some(r#"{"name":"python3"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{model}");
    let dave_id = model["id"].as_str().unwrap().to_owned();
    let (s, _, body) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(&dave),
            Some(r#"{"name":"python3"}"#),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the tiny role allows one kernel: {body}"
    );
    let mut ws = gw.ws(&dave, &dave_id, "s-dave", false).await;
    let out = ws
        .execute(
            "import os\n\
             print(len(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'], os.environ['KERNEL_CPUS'])\n\
             try:\n    b = bytearray(2 * 1024**3)\n    print('allocated')\n\
             except MemoryError:\n    print('MemoryError')",
        )
        .await;
    assert_eq!(out.stdout.trim(), "1 1 1\nMemoryError", "{out:?}");
    // The kernel survives its failed allocation.
    let out = ws.execute("1 + 1").await;
    assert_eq!(out.result.as_deref(), Some("2"));
    gw.stop().await;
}

/// A raw request with extra headers; returns status and headers.
async fn raw(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_preflight_and_websocket_origin_check() {
    let gw = Gateway::start(Config {
        allow_origin: "https://lab.example".into(),
        allow_methods: "GET, POST, DELETE".into(),
        allow_credentials: true,
        ..config()
    })
    .await;
    let lab = [("Origin", "https://lab.example")];
    // Preflight: 200 without credentials.
    let (s, h) = raw(gw.addr, Method::OPTIONS, "/api/kernels", &lab).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://lab.example");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
    assert_eq!(h["access-control-allow-credentials"], "true");
    // Normal answers carry the header too (even errors), foreign origins get none.
    let (s, h) = raw(gw.addr, Method::GET, "/api", &lab).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["access-control-allow-origin"], "https://lab.example");
    let (_, h) = raw(
        gw.addr,
        Method::GET,
        "/api",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert!(h.get("access-control-allow-origin").is_none());

    let auth = common::auth_header(ALICE);
    let ws_headers = |origin: &'static str| {
        vec![
            ("Origin", origin),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
    };
    let path = format!("/api/kernels/{}/channels", uuid::Uuid::new_v4());
    let mut evil = ws_headers("https://evil.example");
    evil.push(("Authorization", &auth));
    let (s, _) = raw(gw.addr, Method::GET, &path, &evil).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "foreign origin WebSocket");
    // An allowed origin gets past the check (to the 404 of the unknown kernel).
    let mut good = ws_headers("https://lab.example");
    good.push(("Authorization", &auth));
    let (s, _) = raw(gw.addr, Method::GET, &path, &good).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    gw.stop().await;

    // Default: no CORS headers, same-origin WebSockets only.
    let gw = Gateway::start(config()).await;
    let host = gw.addr.to_string();
    let same = format!("http://{host}");
    let (_, h) = raw(gw.addr, Method::GET, "/api", &lab).await;
    assert!(h.get("access-control-allow-origin").is_none());
    let mut foreign = ws_headers("https://lab.example");
    foreign.push(("Authorization", &auth));
    let (s, _) = raw(gw.addr, Method::GET, &path, &foreign).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut same_origin = ws_headers("http://x");
    same_origin[0] = ("Origin", &same);
    same_origin.push(("Authorization", &auth));
    let (s, _) = raw(gw.addr, Method::GET, &path, &same_origin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    gw.stop().await;
}

/// A site gateway configured the way an operator writes it: `site_id` and the hub's issuer,
/// no explicit audience (the site's id is the default).
fn site_config(jwks: &Jwks, site: &str) -> Config {
    let mut c: Config = toml::from_str(&format!(
        "site_id = \"{site}\"\n[jwt]\njwks_url = \"{}\"\nissuer = \"{ISSUER}\"\n",
        jwks.url
    ))
    .unwrap();
    c.validate().unwrap();
    c.auth_token = Some(ALICE.into());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_minted_for_one_site_is_refused_by_another() {
    let key = TestKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let leonardo = Gateway::start(site_config(&jwks, "leonardo")).await;

    // The hub's token for LUMI, replayed at LEONARDO: refused.
    let for_lumi = key.token("mallory", &["stack-jupyter"], |c| c["aud"] = json!("lumi"));
    let (s, body) = status_of(&leonardo, &for_lumi).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("audience"),
        "{body}"
    );
    // The same user's token for LEONARDO gets in.
    let for_leonardo = key.token("mallory", &["stack-jupyter"], |c| {
        c["aud"] = json!("leonardo")
    });
    assert_eq!(status_of(&leonardo, &for_leonardo).await.0, StatusCode::OK);
    leonardo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_audience_or_issuer_is_refused() {
    let key = TestKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    // Audience and issuer configured explicitly (as the hub's run script does).
    let gw = Gateway::start(jwt_config(&jwks)).await;
    for (what, claim) in [("no aud", "aud"), ("no iss", "iss")] {
        let token = key.token("mallory", &["stack-jupyter"], |c| {
            c.as_object_mut().unwrap().remove(claim);
        });
        let (s, body) = status_of(&gw, &token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(claim),
            "{what}: {body}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_without_expected_issuer_and_audience_refuses_every_token() {
    // A validator reached without `validate` (an embedding that skipped it) fails closed.
    let key = TestKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let mut config = jwt_config(&jwks);
    if let Some(j) = config.jwt.as_mut() {
        j.issuer = None;
        j.audience.clear();
    }
    assert!(config.validate().is_err(), "validate refuses the config");
    let gw = Gateway::start(config).await;
    let token = key.token("mallory", &["stack-jupyter"], |_| {});
    assert_eq!(status_of(&gw, &token).await.0, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}
