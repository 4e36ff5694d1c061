//! The stackhub hub: users, servers, tokens, OAuth and the JupyterHub-compatible REST API.
//!
//! # Layout
//! - `config`: the typed configuration (TOML file + environment through a lookup trait).
//! - `db`: the database (sqlx `Any`: SQLite by default, PostgreSQL by URL) and migrations.
//! - `scopes`: JupyterHub scopes, roles and filters.
//! - `names`: validated `UserName`, `ServerName`, `GroupName`.
//! - `auth`: the `Authenticator` seam, the login pipeline, and the `ApiCaller` / `CurrentUser`
//!   extractors.
//! - `api`: the REST API under `/hub/api` (one router per module).
//! - `oauth`: the OAuth2 provider under `/hub/api/oauth2`.
//! - `pages`: login, logout and home pages.
//! - `profiles`: server profiles (KubeSpawner's `profile_list` plus access lists) and the one
//!   check of `user_options` against them.
//! - `quota`: quota roles → per-user limits (stored, shown, handed to spawners).
//! - `sites`: the site registry (gateways + S3 exchanges, health, `GET /hub/api/sites`).
//! - `spawn`: the `Orchestrator` seam the server endpoints call (spawning itself lives with
//!   the spawn-orchestration work).
//! - `cache`: write-through caches of token callers and user answers, valid for one database
//!   generation.
//! - `metrics`: Prometheus metrics at `/hub/metrics`.
//! - `error`: `ApiError` and the `{"status","message"}` body.
//! - `origins`: per-user origins (`subdomain_host`) and the security headers and cookie flags
//!   of every response.
//!
//! [`app`] builds the router; [`serve`] runs it on a listener until a shutdown future ends.
//! Every response carries `X-JupyterHub-Version`.

mod api;
mod auth;
mod bootstrap;
mod cache;
mod config;
mod db;
mod error;
mod limits;
mod metrics;
mod names;
mod oauth;
mod origins;
mod pages;
mod profiles;
pub mod proxy;
mod quota;
mod scopes;
pub mod sites;
mod spawn;
mod state;

pub use self::api::JUPYTERHUB_VERSION;
pub use self::auth::{
    ApiCaller, AuthOutcome, Authenticator, CallerKind, CurrentUser, DevAuthenticator, LOGIN_COOKIE,
    LoginForm, OidcAuth, OidcConfig, SESSION_COOKIE, XSRF_COOKIE,
};
pub use self::bootstrap::{BootstrapError, bootstrap_admin_token};
pub use self::config::{
    AuthConfig, Config, ConfigError, ENV_ADMIN_TOKEN, Lookup, ProcessEnv, RoleConfig, Secret,
    SpawnerConfig, SpawnerKind,
};
pub use self::db::{ClientRow, Db, DbError, ServerRow, Tx, hash_secret, new_secret};
pub use self::error::ApiError;
pub use self::names::{BadName, GroupName, ServerName, UserName};
pub use self::origins::{SubdomainHost, ViaPublicProxy, dns_label};
pub use self::pages::shared_account_warning;
pub use self::profiles::{
    Choice, OptionsError, Profile, ProfileKind, ProfileOption, SpawnerOverride, UnlistedChoice,
    default_profiles,
};
pub use self::quota::{QuotaRole, UserQuota, default_quota_roles};
pub use self::spawn::{
    HubPrepare, LAUNCH_MARGIN, Orchestrator, Plan, Planner, PrepareSpawn, Prepared, ProgressStream,
    Refusal, RouteOwner, ServerRef, SpawnFailure, SpawnOrchestrator, SpawnSettings, StartOutcome,
    StartRequest, StopOutcome, Unavailable,
};
pub use self::state::AppState;

use std::future::Future;

use axum::Router;
use axum::http::header::{HeaderValue, LOCATION};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// The header JupyterHub puts on every response.
pub const VERSION_HEADER: &str = "x-jupyterhub-version";

/// The hub's router.
pub fn app(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    let routes = Router::new()
        .merge(api::router())
        .merge(sites::router())
        .merge(oauth::router())
        .merge(pages::router())
        .merge(auth::oidc::routes::router())
        .merge(metrics::router())
        .layer(axum::middleware::from_fn(metrics::track))
        .fallback(pages::spawn::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origins::guard,
        ));
    limits::limit_bodies(routes, max_body)
        .layer(axum::middleware::map_response(add_version))
        .with_state(state)
}

async fn add_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static(VERSION_HEADER),
        HeaderValue::from_static(JUPYTERHUB_VERSION),
    );
    resp
}

/// A 302 redirect (axum's `Redirect` has 303/307/308 only; JupyterHub clients expect 302).
pub(crate) fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(LOCATION, v)]).into_response(),
        Err(_) => error::json_error(StatusCode::BAD_REQUEST, "Invalid redirect target"),
    }
}

/// Serve the hub on `listener` until `shutdown` completes, then finish in-flight requests.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
