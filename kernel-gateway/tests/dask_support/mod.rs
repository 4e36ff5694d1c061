//! Helpers of the Dask end-to-end tests (`dask*.rs`): the DEDL and Dask 2023 Pythons, a JWKS
//! endpoint signing site JWTs, the gateway config, HTTP calls, the clusters' processes, a real
//! ClientHello, dashboard pages and the bokeh WebSocket.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kernel_gateway::Config;
use kernel_gateway::config::JwtConfig;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::common::{Gateway, config, http_with};

pub const ISSUER: &str = "https://hub.test/";
pub const AUDIENCE: &str = "site-a";

/// The DEDL environment's Python (distributed + dask-gateway): `STACKHUB_DEDL_VENV`, else the
/// cache entry `scripts/lib.sh ensure_dedl_env` builds.
pub fn dedl_python() -> PathBuf {
    venv_python(
        "STACKHUB_DEDL_VENV",
        "python-dedl-",
        "import dask_gateway, distributed",
        "no DEDL environment with dask_gateway and distributed (set STACKHUB_DEDL_VENV); \
         run `scripts/test`, which builds it",
    )
}

/// The Data Lake's pinned Dask stack (distributed 2023.8.0, the dask-gateway 2023.1.1 client
/// and preload): `STACKHUB_DASK2023_VENV`, else the cache entry `scripts/lib.sh
/// ensure_dask2023_env` builds.
pub fn dask2023_python() -> PathBuf {
    venv_python(
        "STACKHUB_DASK2023_VENV",
        "dask2023-",
        "import sys, dask_gateway, distributed, bokeh; \
         sys.exit((dask_gateway.__version__, distributed.__version__) != ('2023.1.1', '2023.8.0'))",
        "no environment with dask-gateway 2023.1.1 and distributed 2023.8.0 (set \
         STACKHUB_DASK2023_VENV); run `scripts/test`, which builds it \
         (scripts/requirements-dask2023.txt)",
    )
}

/// The stock client running `body` (after the shared prelude:
/// `stackhub_e2e::support::dask_client_script`) with `python`, against the gateway at `addr`
/// with the `Authorization` header `authorization`; stdin and stdout piped, killed when dropped.
pub fn stock_client(
    python: &Path,
    body: &str,
    addr: std::net::SocketAddr,
    authorization: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(python)
        .args(["-c", &stackhub_e2e::support::dask_client_script(body)])
        .env("GATEWAY_ADDRESS", format!("http://{addr}"))
        .env("GATEWAY_AUTHORIZATION", authorization)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the stock client starts")
}

/// `<venv>/bin/python` of `$var`, else of the first `<cache>/stackhub/venvs/<prefix>*`; it must
/// run `check`, or the test fails with `missing`.
fn venv_python(var: &str, prefix: &str, check: &str, missing: &str) -> PathBuf {
    let venv = std::env::var_os(var).map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("stackhub/venvs");
        std::fs::read_dir(cache)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                    && p.join("bin/python").exists()
            })
    });
    let python = venv.map(|v| v.join("bin/python"));
    let ok = python.as_ref().is_some_and(|p| {
        std::process::Command::new(p)
            .args(["-c", check])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ok, "{missing}");
    python.unwrap()
}

/// An RSA key signing the site JWTs, and a JWKS endpoint serving it.
pub struct Signer {
    encoding: EncodingKey,
    pub jwks_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Signer {
    pub async fn start() -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let public = private.to_public_key();
        let jwks = json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Signer {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwks_url: format!("http://{addr}/jwks"),
            task,
        }
    }

    /// A JWT with exactly `claims`, signed with this key (`kid` `k1`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A site JWT for `user` expiring `ttl_secs` from now (negative: already expired).
    pub fn token(&self, user: &str, ttl_secs: i64) -> String {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap();
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": user, "preferred_username": user,
            "iat": now - 120, "exp": now + ttl_secs,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn dask_config(root: &Path, jwks_url: Option<&str>) -> Config {
    dask_config_with(root, jwks_url, dedl_python())
}

/// [`dask_config`] running the clusters with `python` (its `dask` and the dask-gateway preload).
pub fn dask_config_with(root: &Path, jwks_url: Option<&str>, python: PathBuf) -> Config {
    let mut c = config();
    if let Some(url) = jwks_url {
        c.jwt = Some(JwtConfig {
            jwks_url: url.to_owned(),
            issuer: Some(ISSUER.into()),
            audience: vec![AUDIENCE.into()],
            required_role: String::new(),
            ..JwtConfig::default()
        });
    }
    c.dask.python = Some(python);
    c.dask.runtime_dir = Some(root.to_owned());
    c.dask.heartbeat_period = 2;
    c.dask.idle_timeout = 0;
    c.dask.max_worker_cores = 2;
    c.dask.max_worker_memory_gib = 2.0;
    c.dask.max_workers_per_cluster = 3;
    c
}

pub fn temp_root() -> PathBuf {
    std::env::temp_dir().join(format!(
        "stackhub-dask-test-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// One request with the given `Authorization` / `Cookie` headers.
pub async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    auth: Option<&str>,
    cookie: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut headers = Vec::new();
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http_with(gw.addr, method, path, &headers, body).await
}

pub fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Polls `user`'s cluster until `done(status)` or `secs` pass; returns the last model.
pub async fn wait_status(
    gw: &Gateway,
    auth: &str,
    name: &str,
    secs: u64,
    done: impl Fn(&str) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, _, body) = call(
            gw,
            Method::GET,
            &format!("/api/v1/clusters/{name}"),
            Some(auth),
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        if done(body["status"].as_str().unwrap_or("")) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Processes whose working directory is under `root` (the clusters' processes).
pub fn processes_under(root: &Path) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(root))
        })
        .collect()
}

/// A real TLS ClientHello (rustls) naming `server_name`.
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    wire
}

/// The gateway's log lines in the test output (shown when a test fails): why a cluster failed.
pub fn gateway_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kernel_gateway=info")
        .try_init();
}

/// The next JSON line a stock-client script printed with `say(event=...)`: it must be `event`.
pub async fn next_event(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    event: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no {event} event from the client within 90 s"))
        .unwrap()
        .unwrap_or_else(|| panic!("the client exited before {event}"));
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert_eq!(v["event"], event, "{v}");
    v
}

/// `GET path` with `headers`: status, headers, body.
pub async fn get(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(format!("http://{}{path}", gw.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// Opens the bokeh WebSocket of a status page whose session token is `token`; `Err(status)`
/// when the upgrade is answered otherwise.
pub async fn bokeh_ws(
    gw: &Gateway,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<String, StatusCode> {
    stackhub_e2e::support::bokeh_ws(&format!("ws://{}{path}", gw.addr), token, headers)
        .await
        .map_err(|s| StatusCode::from_u16(s).unwrap())
}

/// Creates a cluster as `auth` (default options); its name.
pub async fn new_cluster(gw: &Gateway, auth: &str) -> String {
    let (s, _, v) = call(
        gw,
        Method::POST,
        "/api/v1/clusters/",
        Some(auth),
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["name"].as_str().unwrap().to_owned()
}

/// Creates a cluster as `auth` (default options) and waits until it runs; its name.
pub async fn running_cluster(gw: &Gateway, auth: &str) -> String {
    let name = new_cluster(gw, auth).await;
    let model = wait_status(gw, auth, &name, 60, |s| s != "PENDING").await;
    assert_eq!(model["status"], "RUNNING", "{model}");
    name
}

/// The bokeh session token a status page embeds.
pub fn session_token(page: &str) -> String {
    let start = page.find(r#""token":""#).expect("no bokeh session token") + 9;
    page[start..][..page[start..].find('"').unwrap()].to_owned()
}

/// The bokeh script a status page loads (a static asset).
pub fn bokeh_script(page: &str) -> String {
    let start = page.find(r#"src=""#).unwrap();
    let at = page[start..].find("/static/js/bokeh.min.js").unwrap() + start;
    let begin = page[..at].rfind('"').unwrap() + 1;
    page[begin..][..page[begin..].find('"').unwrap()].to_owned()
}
