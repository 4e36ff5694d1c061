//! Sites: the Central Site and the bridges where remote kernels run, each with a kernel gateway
//! and an S3 exchange.
//!
//! # Layout
//! - the configuration (`[s3]`, `[[sites]]`) is `crate::config::sites`;
//! - `registry`: [`SiteRegistry`]: the sites with their exchanges, periodic health checks, and
//!   [`SiteRegistry::site_available`] for the profile picker.
//! - the routes (`GET /hub/api/sites`, `bridges.json`, site tokens) are `crate::api::sites`,
//!   the proxy's kernel-channel check `crate::kernel_auth`;
//! - `dask`: a site's Dask Gateway ([`dask::SiteDask`]): its addresses (by default the gateway's
//!   own), its health, the `DASK_GATEWAY__*` environment of a server;
//! - `jwt`: the hub's per-user, per-site gateway tokens (EdDSA JWTs) and their JWKS.
//! - `spawn_env`: the environment of a remote-kernels single-user server at a site, and the S3
//!   part of a full JupyterLab's (the site of its user's S3 space).

use crate::config::sites as config;
pub mod dask;
pub mod jwt;
mod registry;
mod shared_health;
mod spawn_env;

pub use self::config::{
    DEFAULT_GATEWAY_TOKEN_LIFETIME_SECS, EmbeddedS3Config, GatewayAuth, SiteConfig, SiteS3Config,
    SiteS3Mode, default_sites, site_env_prefix,
};
pub use self::registry::{Site, SiteHealth, SiteRegistry, SiteUnavailable, StartSitesError};
pub use self::spawn_env::{
    DEFAULT_LAB_S3_SITE, ENV_S3_CREDENTIALS_URL, REMOTE_ENV_NAMES, RemoteServer, lab_s3_env,
    remote_server_env, s3_site_of,
};
