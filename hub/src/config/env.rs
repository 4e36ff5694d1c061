//! Environment overrides (`STACKHUB_*`) and where they are read from.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Config, ConfigError, Secret, invalid};

/// Environment variable: listen address.
pub(crate) const ENV_IP: &str = "STACKHUB_IP";
/// Environment variable: listen port.
pub(crate) const ENV_PORT: &str = "STACKHUB_PORT";
/// Environment variable: data directory (SQLite file, runtime files).
pub(crate) const ENV_DATA_DIR: &str = "STACKHUB_DATA_DIR";
/// Environment variable: database URL (`sqlite://…` or `postgres://…`).
pub(crate) const ENV_DB_URL: &str = "STACKHUB_DB_URL";
/// Environment variable: public URL of the hub (`https://hub.example.org/`).
pub(crate) const ENV_PUBLIC_URL: &str = "STACKHUB_PUBLIC_URL";
/// Environment variable: serve each user's servers on a host of their own below this one
/// (`https://hub.example` → `NAME.hub.example`).
pub(crate) const ENV_SUBDOMAIN_HOST: &str = "STACKHUB_SUBDOMAIN_HOST";
/// Environment variable: the cookie secret (hex).
pub(crate) const ENV_COOKIE_SECRET: &str = "STACKHUB_COOKIE_SECRET";
/// Environment variable: the development authenticator's shared password.
pub(crate) const ENV_DEV_PASSWORD: &str = "STACKHUB_DEV_PASSWORD";
/// Environment variable: the hub's internal listen address (behind the proxy).
pub(crate) const ENV_HUB_IP: &str = "STACKHUB_HUB_IP";
/// Environment variable: the hub's internal listen port (behind the proxy).
pub(crate) const ENV_HUB_PORT: &str = "STACKHUB_HUB_PORT";
/// Environment variable: the Python environment holding `jupyterhub-singleuser`.
pub(crate) const ENV_VENV: &str = "STACKHUB_VENV";
/// Environment variable: the OpenID Connect client secret.
pub(crate) const ENV_OIDC_CLIENT_SECRET: &str = "STACKHUB_OIDC_CLIENT_SECRET";
/// Environment variable: the key encrypting identity-provider tokens at rest (hex, 32 bytes).
pub(crate) const ENV_OIDC_TOKEN_KEY: &str = "STACKHUB_OIDC_TOKEN_KEY";
/// Environment variable: the largest request body the hub reads, in bytes.
pub(crate) const ENV_MAX_BODY_BYTES: &str = "STACKHUB_MAX_BODY_BYTES";
/// Environment variable: an external proxy's REST API URL (`[proxy] api_url`).
pub(crate) const ENV_PROXY_API_URL: &str = "STACKHUB_PROXY_API_URL";
/// Environment variable: the external proxy's API token (configurable-http-proxy's name).
pub(crate) const ENV_PROXY_AUTH_TOKEN: &str = "CONFIGPROXY_AUTH_TOKEN";
/// Environment variable: the bootstrap admin API token (a service token with admin scopes).
pub const ENV_ADMIN_TOKEN: &str = "STACKHUB_ADMIN_TOKEN";

/// Reads configuration values by name (the process environment, or a map in tests).
pub trait Lookup {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

impl Lookup for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|v| (*v).to_owned())
    }
}

impl Config {
    pub(super) fn apply_env(&mut self, env: &dyn Lookup) -> Result<(), ConfigError> {
        if let Some(v) = env.get(ENV_IP) {
            self.ip = v
                .parse()
                .map_err(|_| invalid(ENV_IP, "not an IP address"))?;
        }
        if let Some(v) = env.get(ENV_PORT) {
            self.port = v
                .parse()
                .map_err(|_| invalid(ENV_PORT, "not a port number"))?;
        }
        if let Some(v) = env.get(ENV_HUB_IP) {
            self.hub_ip = v
                .parse()
                .map_err(|_| invalid(ENV_HUB_IP, "not an IP address"))?;
        }
        if let Some(v) = env.get(ENV_HUB_PORT) {
            self.hub_port = v
                .parse()
                .map_err(|_| invalid(ENV_HUB_PORT, "not a port number"))?;
        }
        if let Some(v) = env.get(ENV_VENV) {
            self.spawner.venv = PathBuf::from(v);
        }
        if let Some(v) = env.get(ENV_DATA_DIR) {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env.get(ENV_DB_URL) {
            self.db_url = Some(Secret::new(v));
        }
        if let Some(v) = env.get(ENV_PROXY_API_URL) {
            self.proxy.api_url = Some(v);
        }
        if let Some(v) = env.get(ENV_PROXY_AUTH_TOKEN).filter(|v| !v.is_empty()) {
            self.proxy.auth_token = Some(Secret::new(v));
        }
        if let Some(v) = env.get(ENV_PUBLIC_URL) {
            self.public_url = Some(v);
        }
        if let Some(v) = env.get(ENV_SUBDOMAIN_HOST) {
            self.subdomain_host = if v.is_empty() {
                None
            } else {
                Some(
                    super::host::SubdomainHost::parse(&v)
                        .map_err(|r| invalid(ENV_SUBDOMAIN_HOST, r))?,
                )
            };
        }
        if let Some(v) = env.get(ENV_COOKIE_SECRET) {
            self.cookie_secret = Some(Secret::new(v));
        }
        if let Some(v) = env.get(ENV_DEV_PASSWORD) {
            self.auth.dev_password = Some(Secret::new(v));
        }
        if let Some(v) = env.get(ENV_ADMIN_TOKEN) {
            self.admin_token = Some(Secret::new(v));
        }
        if let Some(v) = env.get(ENV_MAX_BODY_BYTES) {
            self.max_body_bytes = v
                .parse()
                .map_err(|_| invalid(ENV_MAX_BODY_BYTES, "not a number of bytes"))?;
        }
        super::sites::apply_env(&mut self.sites, env).map_err(|(k, r)| invalid(&k, r))?;
        if let Some(v) = env
            .get("STACKHUB_GATEWAY_TOKEN_ISSUER")
            .filter(|v| !v.is_empty())
        {
            self.gateway_token_issuer = Some(v);
        }
        if let Some(oidc) = self.auth.oidc.as_mut() {
            if let Some(v) = env.get(ENV_OIDC_CLIENT_SECRET) {
                oidc.client_secret = Some(Secret::new(v));
            }
            if let Some(v) = env.get(ENV_OIDC_TOKEN_KEY) {
                oidc.token_key = Some(Secret::new(v));
            }
        }
        Ok(())
    }
}
