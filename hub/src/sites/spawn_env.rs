//! The environment of a remote-kernels single-user server (a stock `jupyterhub-singleuser` in
//! gateway mode): jupyter_server's `GatewayClient` settings and the user's S3 grant at the site,
//! which `GatewayClient` forwards in every kernel start (`JUPYTER_GATEWAY_ALLOWED_ENVS`).

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

/// `JUPYTER_GATEWAY_*` for `site` plus `grant`'s kernel variables. The values hold credentials:
/// pass them to the process environment only, never to logs or command lines.
pub fn remote_server_env(site: &Site, grant: &Grant) -> BTreeMap<String, String> {
    let mut env = grant.kernel_env();
    env.insert("JUPYTER_GATEWAY_URL".to_owned(), site.gateway_url.clone());
    if let Some(auth) = site.gateway_authorization() {
        let token = auth.trim_start_matches("token ").to_owned();
        env.insert("JUPYTER_GATEWAY_AUTH_TOKEN".to_owned(), token);
        env.insert("JUPYTER_GATEWAY_AUTH_SCHEME".to_owned(), "token".to_owned());
    }
    env.insert(
        "JUPYTER_GATEWAY_ALLOWED_ENVS".to_owned(),
        REMOTE_ENV_NAMES.join(","),
    );
    env
}
