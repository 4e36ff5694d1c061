//! The environment of a remote-kernels single-user server (a stock `jupyterhub-singleuser` in
//! gateway mode): jupyter_server's `GatewayClient` settings with the hub's token for this user
//! and site, the user's S3 grant at the site (which `GatewayClient` forwards in every kernel
//! start, `JUPYTER_GATEWAY_ALLOWED_ENVS`, and which the S3 contents manager of
//! `hub/share/server/stackhub_remote.py` uses); and the S3 part of a full JupyterLab's
//! environment: where the user's space is, and where the server fetches temporary credentials
//! for it (never the credentials themselves; `hub/share/server/stackhub_s3.py`).

use std::collections::BTreeMap;

use s3_exchange::{
    ENV_ACCESS_KEY_ID, ENV_BUCKET, ENV_DEFAULT_REGION, ENV_ENDPOINT_URL, ENV_PREFIX, ENV_REGION,
    ENV_SECRET_ACCESS_KEY, ENV_SESSION_TOKEN, Grant, Space,
};
use spawner::profile::ProfileKind;

use super::registry::{Site, SiteRegistry};

/// The site a full JupyterLab gets its user's S3 space at when its profile names none.
pub const DEFAULT_LAB_S3_SITE: &str = "central";

/// A full Lab's environment: the URL its `credential_process` asks for credentials at.
pub const ENV_S3_CREDENTIALS_URL: &str = "STACKHUB_S3_CREDENTIALS_URL";

/// The variables forwarded to kernels.
pub const REMOTE_ENV_NAMES: &[&str] = &[
    ENV_ACCESS_KEY_ID,
    ENV_SECRET_ACCESS_KEY,
    ENV_SESSION_TOKEN,
    ENV_ENDPOINT_URL,
    ENV_DEFAULT_REGION,
    ENV_REGION,
    ENV_BUCKET,
    ENV_PREFIX,
];

/// What a remote-kernels server needs besides JupyterHub's environment.
#[derive(Debug)]
pub struct RemoteServer<'a> {
    /// The site.
    pub site: &'a Site,
    /// The user's S3 grant there.
    pub grant: &'a Grant,
    /// `Authorization` value for the gateway and its expiry (epoch seconds), if any.
    pub authorization: Option<(String, Option<i64>)>,
    /// The hub API as the server reaches it (`http://127.0.0.1:8081/hub/api`).
    pub hub_api_url: &'a str,
}

/// The environment for `r`. The values hold credentials: pass them to the process environment
/// only, never to logs or command lines.
pub fn remote_server_env(r: &RemoteServer<'_>) -> BTreeMap<String, String> {
    let mut env = r.grant.kernel_env();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("JUPYTER_GATEWAY_URL", r.site.gateway_url.clone());
    if let Some(ca) = &r.site.ca_file {
        set("JUPYTER_GATEWAY_CA_CERTS", ca.display().to_string());
    }
    set("JUPYTER_GATEWAY_ALLOWED_ENVS", REMOTE_ENV_NAMES.join(","));
    set("STACKHUB_SITE", r.site.id.clone());
    set("STACKHUB_SITE_NAME", r.site.name.clone());
    if let Some((auth, expires_at)) = &r.authorization {
        let (scheme, token) = auth.split_once(' ').unwrap_or(("token", auth));
        set("JUPYTER_GATEWAY_AUTH_SCHEME", scheme.to_owned());
        set("JUPYTER_GATEWAY_AUTH_TOKEN", token.to_owned());
        if let Some(exp) = expires_at {
            set("STACKHUB_GATEWAY_TOKEN_EXPIRES_AT", exp.to_string());
            set(
                "STACKHUB_GATEWAY_TOKEN_URL",
                format!(
                    "{}/sites/{}/token",
                    r.hub_api_url.trim_end_matches('/'),
                    r.site.id
                ),
            );
        }
    }
    env
}

/// The id of the site whose S3 space a server of a profile of `kind` with `site` uses: a
/// remote-kernels profile's own site; for a full JupyterLab the profile's `site` when set (an
/// empty `site` means none), else [`DEFAULT_LAB_S3_SITE`] when such a site is configured.
pub fn s3_site_of<'a>(
    kind: ProfileKind,
    site: Option<&'a str>,
    registry: &SiteRegistry,
) -> Option<&'a str> {
    match (kind, site) {
        (_, Some("")) => None,
        (_, Some(id)) => Some(id),
        (ProfileKind::RemoteKernels, None) => None,
        (ProfileKind::Lab, None) => registry
            .site(DEFAULT_LAB_S3_SITE)
            .map(|_| DEFAULT_LAB_S3_SITE),
    }
}

/// The S3 part of a full JupyterLab's environment: the user's `space` at `site` (endpoint,
/// region, bucket, prefix; botocore and s3fs read `AWS_ENDPOINT_URL` and the region), the site,
/// and [`ENV_S3_CREDENTIALS_URL`] (`POST …/sites/{id}/s3-credentials`), from which the server's
/// `credential_process` fetches temporary credentials with its own API token. No credential is
/// in it.
pub fn lab_s3_env(site: &Site, space: &Space, hub_api_url: &str) -> BTreeMap<String, String> {
    let mut env = space.env();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("STACKHUB_S3_SITE", site.id.clone());
    set("STACKHUB_S3_SITE_NAME", site.name.clone());
    set(
        ENV_S3_CREDENTIALS_URL,
        format!(
            "{}/sites/{}/s3-credentials",
            hub_api_url.trim_end_matches('/'),
            site.id
        ),
    );
    env
}
