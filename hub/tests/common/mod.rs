//! Test helpers: an app on a fresh database (in-memory SQLite, or a new PostgreSQL database when
//! `STACKHUB_TEST_DB=postgres`), request helpers, and a validator for responses against the
//! upstream OpenAPI file: JupyterHub's `rest-api.yml` (BSD-3-Clause), which `scripts/test`
//! fetches from the `jupyterhub` source distribution on PyPI (`scripts/lib.sh`
//! `ensure_jupyterhub_rest_api`) and names in `STACKHUB_JUPYTERHUB_REST_API`.

// Test helpers panic on failure by design.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::field_reassign_with_default
)]

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hub::{AppState, Config, Db, Secret};
use serde_json::Value;
use tower::ServiceExt;

pub mod fake;
pub mod shares;

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const PASSWORD: &str = "dev-password";

pub struct Hub {
    pub app: Router,
    pub state: AppState,
}

pub async fn hub() -> Hub {
    hub_on(test_db().await).await
}

/// The app on a given database.
pub async fn hub_on(db: Db) -> Hub {
    hub_with(db, |_| {}).await
}

/// The app on a given database, with the test config changed by `f`.
pub async fn hub_with(db: Db, f: impl FnOnce(&mut Config)) -> Hub {
    let mut config = Config::default();
    config.admin_token = Some(Secret::new(ADMIN_TOKEN));
    config.auth.dev_password = Some(Secret::new(PASSWORD));
    config.auth.admin_users = vec!["root".to_owned()];
    f(&mut config);
    hub::bootstrap_admin_token(&db, &config.admin_service_name, config.admin_token.as_ref())
        .await
        .unwrap();
    let admin_service = config.admin_service_name.clone();
    let state = AppState::new(config, db);
    state
        .services()
        .register(state.db(), &admin_service)
        .await
        .unwrap();
    Hub {
        app: hub::app(state.clone()),
        state,
    }
}

/// The admin URL of the test PostgreSQL server (`scripts/test` starts one and sets
/// `STACKHUB_TEST_POSTGRES_URL`). Panics when it is missing: PostgreSQL tests fail, never skip.
pub fn postgres_admin_url() -> String {
    match std::env::var("STACKHUB_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "STACKHUB_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server \
             (scripts/test starts one; or source scripts/lib.sh and run start_postgres)"
        ),
    }
}

/// A fresh, empty, migrated PostgreSQL database on the test server, named after a random id.
pub async fn postgres_db() -> Db {
    let url = postgres_db_url().await;
    Db::connect(&Secret::new(url.as_str())).await.unwrap()
}

/// Two replicas' connections to one fresh PostgreSQL database (each with its own replica id,
/// change feed and leader election).
pub async fn postgres_replicas() -> (Db, Db) {
    let url = postgres_db_url().await;
    let a = Db::connect(&Secret::new(url.as_str())).await.unwrap();
    let b = Db::connect(&Secret::new(url.as_str())).await.unwrap();
    (a, b)
}

/// The URL of a fresh, empty PostgreSQL database on the test server.
async fn postgres_db_url() -> String {
    use sqlx::{Connection, Executor};
    let admin = postgres_admin_url();
    let name = format!("stackhub_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A fresh in-memory SQLite database.
pub async fn sqlite_db() -> Db {
    Db::connect(&Secret::new("sqlite::memory:")).await.unwrap()
}

/// The database the API tests run on: `STACKHUB_TEST_DB` = `sqlite` (default) or `postgres`.
/// `scripts/test` runs the hub's tests once with each.
pub async fn test_db() -> Db {
    match std::env::var("STACKHUB_TEST_DB").as_deref() {
        Err(_) | Ok("" | "sqlite") => sqlite_db().await,
        Ok("postgres") => postgres_db().await,
        Ok(other) => panic!("STACKHUB_TEST_DB={other:?}: expected `sqlite` or `postgres`"),
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Hub {
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(
            headers
                .get("x-jupyterhub-version")
                .map(|v| v.to_str().unwrap()),
            Some(hub::JUPYTERHUB_VERSION),
            "every response carries X-JupyterHub-Version"
        );
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("token {t}"));
        }
        let req = match body {
            Some(s) => b
                .header("content-type", "application/json")
                .body(Body::from(s.to_owned()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<&str>) -> Resp {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// Create `name` and a token for them with `scopes` (None = inherit); returns the token.
    pub async fn user_token(&self, name: &str, scopes: Option<&[&str]>) -> String {
        let r = self
            .admin(Method::POST, &format!("/hub/api/users/{name}"), None)
            .await;
        assert!(r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT);
        let body = match scopes {
            Some(s) => serde_json::json!({"scopes": s}).to_string(),
            None => "{}".to_owned(),
        };
        let r = self
            .admin(
                Method::POST,
                &format!("/hub/api/users/{name}/tokens"),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// `POST /hub/api/oauth2/token` with the form `form`.
    pub async fn token_request(&self, form: &str) -> Resp {
        let req = Request::post("/hub/api/oauth2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        self.send(req).await
    }

    /// Exchange the code of the OAuth redirect `location` for a token, as a client with
    /// `client_secret_post`.
    pub async fn exchange_code(
        &self,
        location: &str,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
    ) -> Resp {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code_of(location))
            .append_pair("redirect_uri", redirect_uri)
            .finish();
        self.token_request(&form).await
    }

    /// Log in through the form; returns the `Cookie` header value for later requests.
    pub async fn login(&self, name: &str) -> (String, HashMap<String, String>) {
        let req = Request::post("/hub/login?next=%2Fhub%2Fhome")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("username={name}&password={PASSWORD}")))
            .unwrap();
        let r = self.send(req).await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
        assert_eq!(r.headers["location"], "/hub/home");
        let mut cookies = HashMap::new();
        for c in r.headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            cookies.insert(k.to_owned(), v.to_owned());
        }
        let header = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        (header, cookies)
    }
}

/// The `code` of an OAuth redirect's `location`.
pub fn code_of(location: &str) -> String {
    let q = location.split_once('?').unwrap().1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

/// Where JupyterHub's REST API description is: `STACKHUB_JUPYTERHUB_REST_API`, else where
/// `scripts/lib.sh` `ensure_jupyterhub_rest_api` caches it.
fn jupyterhub_rest_api() -> std::path::PathBuf {
    let path = std::env::var_os("STACKHUB_JUPYTERHUB_REST_API")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache")
                })
                .join("stackhub/jupyterhub/rest-api.yml")
        });
    assert!(
        path.is_file(),
        "JupyterHub's REST API description is not at {}: run scripts/test, or `source \
         scripts/lib.sh; ensure_venv; ensure_jupyterhub_rest_api` (it fetches the jupyterhub \
         sdist from PyPI), or set STACKHUB_JUPYTERHUB_REST_API",
        path.display()
    );
    path
}

/// The OpenAPI document as JSON.
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = jupyterhub_rest_api();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        serde_json::to_value(yaml).unwrap()
    })
}

/// Drop `null`-valued object members, recursively. The upstream OpenAPI file declares fields
/// such as `server`, `pending`, `last_activity`, `started`, `expires_at` and `note` as plain
/// strings although JupyterHub itself returns `null` for them (and our contract, the compat
/// spec section 3, says so too); a `null` member is therefore checked as if absent.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Validate `body` against the response schema of `method path_template` → `status` in the
/// OpenAPI file. Panics with the validation errors.
pub fn validate(method: &str, path_template: &str, status: u16, body: &Value) {
    let spec = spec();
    let op = &spec["paths"][path_template][method.to_lowercase()];
    assert!(
        !op.is_null(),
        "no operation {method} {path_template} in the OpenAPI file"
    );
    let resp = &op["responses"][status.to_string()];
    assert!(
        !resp.is_null(),
        "no {status} response for {method} {path_template}"
    );
    let Some(schema) = resp["content"]["application/json"].get("schema") else {
        panic!("no JSON schema for {status} of {method} {path_template}");
    };
    check_schema(schema, body, &format!("{method} {path_template} {status}"));
}

/// Validate `body` against a component schema, e.g. `User`.
pub fn validate_component(name: &str, body: &Value) {
    let schema = serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
    check_schema(&schema, body, name);
}

fn check_schema(schema: &Value, body: &Value, what: &str) {
    let mut root = schema.clone();
    root["components"] = spec()["components"].clone();
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    let validator = jsonschema::validator_for(&root).expect("schema compiles");
    let instance = strip_nulls(body);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: response does not match the OpenAPI file: {errors:#?}\n{body:#}"
    );
}
