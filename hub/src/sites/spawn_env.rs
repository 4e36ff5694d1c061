//! The environment of a remote-kernels single-user server (a stock `jupyterhub-singleuser` in
//! gateway mode): jupyter_server's `GatewayClient` settings with the hub's token for this user
//! and site, the user's S3 grant at the site (which `GatewayClient` forwards in every kernel
//! start, `JUPYTER_GATEWAY_ALLOWED_ENVS`, and which the S3 contents manager of
//! `hub/share/server/stackhub_remote.py` uses).

use std::collections::BTreeMap;

use s3_exchange::{
    ENV_ACCESS_KEY_ID, ENV_BUCKET, ENV_DEFAULT_REGION, ENV_ENDPOINT_URL, ENV_PREFIX, ENV_REGION,
    ENV_SECRET_ACCESS_KEY, ENV_SESSION_TOKEN, Grant,
};

use super::registry::Site;

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
