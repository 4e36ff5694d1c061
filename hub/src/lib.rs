//! The stackhub hub: users, servers, tokens, OAuth and the JupyterHub-compatible REST API.
//!
//! # Layers
//! Each module uses only the layers below it; no import cycle between the top-level modules.
//!
//! 1. Leaves: `names` (validated names, URL segments), `error` (`ApiError`), `scopes`
//!    (JupyterHub scopes, roles, filters), `limits` (request body size).
//! 2. `config`: the typed configuration (TOML file + environment through a lookup trait), with
//!    every configured type: OpenID Connect (`config::oidc`), sites and the embedded S3 store
//!    (`config::sites`), per-user origins (`config::host`); profiles and quota rows come from
//!    the shared crates (`spawner::profile`, `stackhub_common`).
//! 3. `db`: the database (sqlx `Any`: SQLite by default, PostgreSQL by URL) and migrations.
//! 4. Domain, over config and db: `quota` (quota roles → per-user limits), `auth` (the
//!    `Authenticator` seam, the login pipeline, the OpenID Connect client, [`ApiCaller`] as a
//!    value), `profiles` (who may use which profile; the one parse of `user_options`), `sites`
//!    (the site registry: gateways, S3 exchanges, health), `metrics` (what is recorded), `proxy`
//!    (the route table seam), `cache`, `services` (configured services resolved with their
//!    roles; start-up registration in the database and proxy; the managed-service supervisor).
//! 5. `spawn`: the `Planner` every start goes through, the `Orchestrator` seam and the spawn
//!    pipeline over a `spawner::Spawner`.
//! 6. `state`: [`AppState`], holding config, db, authenticator, planner, orchestrator, sites.
//! 7. Web, over state: `extract` (the [`ApiCaller`] / [`CurrentUser`] extractors), `api` (the
//!    REST API under `/hub/api`, sites, metrics), `oauth` (the OAuth2 provider), `pages` (login,
//!    OpenID Connect login, home, picker, spawn progress, admin), `origins` (the hub-host guard,
//!    security headers, cookie flags), `kernel_auth` (the proxy's kernel-channel check),
//!    `dask_dashboards` (sites' Dask dashboards for the signed-in owner, through the hub).
//! 8. `builder`: config → app ([`HubBuilder`]), the wiring `main` and the tests share.
//!
//! [`app`] builds the router; [`serve`] runs it on a listener until a shutdown future ends.
//! Every response carries `X-JupyterHub-Version`.

mod api;
mod auth;
mod bootstrap;
mod builder;
mod cache;
mod config;
mod dask_dashboards;
mod db;
mod error;
mod extract;
mod kernel_auth;
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
mod services;
pub mod sites;
mod spawn;
mod state;

pub use self::api::JUPYTERHUB_VERSION;
pub use self::auth::{
    AuthOutcome, Authenticator, DevAuthenticator, LoginForm, OidcAuth, OidcConfig,
};
pub use self::bootstrap::{BootstrapError, bootstrap_admin_token};
pub use self::builder::{BuiltHub, HubBuilder};
pub use self::config::services::{CustomScope, IDLE_CULLER, IdleCullerConfig, ServiceConfig};
pub use self::config::{
    AuthConfig, Config, ConfigError, ENV_ADMIN_TOKEN, Lookup, ProcessEnv, ProxyConfig, RoleConfig,
    Secret, SpawnerConfig, SpawnerKind,
};
pub use self::db::{
    Backend, ClientRow, Db, DbError, FEED_APPLICATION_NAME, FeedStatus, LEADER_APPLICATION_NAME,
    ServerRow, Tx, hash_secret, new_secret,
};
pub use self::error::ApiError;
pub use self::extract::{
    ApiCaller, CallerKind, CurrentUser, LOGIN_COOKIE, SESSION_COOKIE, XSRF_COOKIE,
};
pub use self::kernel_auth::HubKernelAuth;
pub use self::names::{BadName, DisplayName, GroupName, ServerName, UserName};
pub use self::origins::{SubdomainHost, ViaPublicProxy, dns_label};
pub use self::pages::shared_account_warning;
pub use self::profiles::{
    Choice, OptionsError, Profile, ProfileKind, ProfileOption, SpawnerOverride, UnlistedChoice,
    default_profiles,
};
pub use self::quota::{QuotaRole, UserQuota, default_quota_roles};
pub use self::services::{RegisterError, Service, Services, Supervisor};
pub use self::spawn::{
    EXAMPLE_FILES, HubPrepare, LAUNCH_MARGIN, Orchestrator, Plan, Planner, PrepareSpawn, Prepared,
    ProgressStream, Refusal, RouteCheck, RouteOwner, SERVER_CONFIG_FILES, ServerRef, SpawnFailure,
    SpawnOrchestrator, SpawnSettings, StartOutcome, StartRequest, StopOutcome, Unavailable,
    write_server_config,
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
        .merge(api::sites::router())
        .merge(dask_dashboards::router())
        .merge(oauth::router())
        .merge(pages::router())
        .merge(pages::oidc_router())
        .merge(api::metrics::router())
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
