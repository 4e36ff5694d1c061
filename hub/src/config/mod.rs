//! The hub's typed configuration: defaults that work locally, a TOML file, environment overrides.
//!
//! Precedence (lowest first): built-in defaults, the TOML file (`stackhub --config FILE`), the
//! environment (read through [`Lookup`], so tests pass a map), command-line flags (`--ip`,
//! `--port`, applied by `main`). A bad value is reported as a [`ConfigError`] naming the key,
//! never its value, and `main` exits with 64 (`EX_USAGE`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod env;
pub(crate) mod host;
pub(crate) mod oidc;
pub(crate) mod services;
pub(crate) mod sites;
mod validate;

pub use self::env::{ENV_ADMIN_TOKEN, Lookup, ProcessEnv};

/// A secret string: never printed by `Debug`, no `Display` (shared with the other crates).
pub use stackhub_common::Secret;

/// A configuration value is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (values of secret keys are never included).
        message: String,
    },
    /// One key has a bad value.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key (TOML path or environment variable).
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// How users log in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shared password of the development authenticator (any user name plus this password logs
    /// in). FOR LOCAL USE ONLY. Unset: nobody can log in with a password.
    pub dev_password: Option<Secret>,
    /// Users made admin when they log in.
    pub admin_users: Vec<String>,
    /// If not empty, only these users may log in.
    pub allowed_users: Vec<String>,
    /// OpenID Connect login (`[auth.oidc]`); unset = the development login.
    pub oidc: Option<oidc::OidcConfig>,
}

/// A role from the config file (JupyterHub's `load_roles`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// The role's name (`user`, `server` and `token` redefine those built-in roles; `admin`
    /// cannot be redefined).
    pub name: String,
    /// What it is for (for people).
    pub description: String,
    /// The scopes it grants.
    pub scopes: Vec<String>,
    /// Users holding it.
    pub users: Vec<String>,
    /// Groups holding it (their members get its scopes).
    pub groups: Vec<String>,
    /// Services holding it (names from `[[services]]`).
    pub services: Vec<String>,
}

/// Which spawner starts single-user servers (`spawner.kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpawnerKind {
    /// `jupyterhub-singleuser` processes on this machine (the default).
    #[default]
    Local,
    /// A pod per server (`spawner.kubernetes_config` names the settings).
    Kubernetes,
}

/// How single-user servers are spawned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnerConfig {
    /// `"local"` (default) or `"kubernetes"`.
    pub kind: SpawnerKind,
    /// With `kind = "kubernetes"`: a JSON file holding the Kubernetes spawner's settings
    /// ([`spawner::k8s::KubeSpawnerConfig`]; the Helm chart renders it). The cluster is reached
    /// in-cluster or through `KUBECONFIG`.
    pub kubernetes_config: Option<PathBuf>,
    /// The Kubernetes spawner's settings, read from `kubernetes_config` by [`Config::load`].
    #[serde(skip)]
    pub kubernetes: Option<spawner::k8s::KubeSpawnerConfig>,
    /// The Python environment with `jupyterhub-singleuser` (default: `.venv`, or `STACKHUB_VENV`).
    pub venv: PathBuf,
    /// The command; empty = `<venv>/bin/jupyterhub-singleuser`.
    pub cmd: Vec<String>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Variables set last in the server's environment (may override anything).
    pub environment: std::collections::BTreeMap<String, String>,
    /// Seconds a server gets from launch until it answers `GET {url}api`; also the shortest
    /// time its launch gets. A launch may take longer when the spawner's own start timeout
    /// (the Kubernetes spawner's `start_timeout_secs`: scheduling, image pull) is longer: the
    /// hub then waits that plus 10 s, so it never gives up on a pod whose state is not saved.
    pub start_timeout: u64,
    /// Milliseconds a start request waits for readiness before answering 202 instead of 201.
    pub slow_spawn_timeout_ms: u64,
    /// Seconds a server gets after SIGTERM before SIGKILL.
    pub stop_grace: u64,
    /// `JUPYTER_CONFIG_PATH` of every server: a directory in the server's image holding the
    /// files of `hub/share/server/` (the singleuser image has them in
    /// `/etc/stackhub/server`). Unset: the hub writes them under its data directory (local
    /// servers). `remote_config_dir` is the old name.
    #[serde(alias = "remote_config_dir")]
    pub server_config_dir: Option<String>,
    /// Scopes users' OAuth tokens for their servers may carry besides access to the server
    /// (JupyterHub's `Spawner.oauth_client_allowed_scopes`), e.g. `["shares!user",
    /// "read:users:name", "read:groups:name"]` so JupyterLab's share dialog works with the
    /// Lab's own token. `!user` means the server's owner, `!server` the server. A token gets
    /// only what its user holds.
    pub oauth_client_allowed_scopes: Vec<String>,
}

impl Default for SpawnerConfig {
    fn default() -> Self {
        Self {
            kind: SpawnerKind::Local,
            kubernetes_config: None,
            kubernetes: None,
            venv: PathBuf::from(".venv"),
            cmd: Vec::new(),
            args: Vec::new(),
            environment: std::collections::BTreeMap::new(),
            start_timeout: 60,
            slow_spawn_timeout_ms: 500,
            stop_grace: 5,
            server_config_dir: None,
            oauth_client_allowed_scopes: Vec::new(),
        }
    }
}

/// The hub's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the public listener.
    pub ip: IpAddr,
    /// Port of the public listener.
    pub port: u16,
    /// Address the hub itself listens on behind the proxy (single-user servers call it).
    pub hub_ip: IpAddr,
    /// Port the hub itself listens on behind the proxy.
    pub hub_port: u16,
    /// Directory for the SQLite file and runtime files.
    pub data_dir: PathBuf,
    /// Database URL; default: the SQLite file `<data_dir>/stackhub.sqlite`.
    pub db_url: Option<Secret>,
    /// Public URL of the hub (used for absolute URLs such as pagination links); default: derived
    /// from the request's `Host`.
    pub public_url: Option<String>,
    /// Per-user origins (JupyterHub's `subdomain_host`): `https://hub.example[:port]` serves
    /// each user's servers on `NAME.hub.example` (the name as a DNS label, see
    /// [`host::dns_label`]) and the hub's pages on `hub.example` only; a page from one
    /// user's server then cannot act on the hub or another server as its visitor. Needs a
    /// wildcard DNS record (and certificate) for `*.hub.example`. Default: unset (every server
    /// under the hub's origin, at `/user/NAME/`). When set, `public_url` defaults to it.
    pub subdomain_host: Option<host::SubdomainHost>,
    /// Base URL path of the hub (`/`): the hub lives at `<base_url>hub/`.
    pub base_url: String,
    /// URL servers use to reach the hub's own listener (`http://hub-api:8081`; JupyterHub's
    /// `hub_connect_url`); default: `http://<hub_ip>:<hub_port>` (loopback when unspecified).
    pub hub_connect_url: Option<String>,
    /// Secret for signing `_xsrf` tokens (hex, 32 bytes or more); default: random per process.
    pub cookie_secret: Option<Secret>,
    /// Lifetime of the login cookie and OAuth access tokens, in days.
    pub cookie_max_age_days: u32,
    /// Bootstrap admin API token (usually from `STACKHUB_ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// Name of the service owning the bootstrap token.
    pub admin_service_name: String,
    /// Login settings.
    pub auth: AuthConfig,
    /// Extra roles (`[[roles]]`, JupyterHub's `load_roles`).
    pub roles: Vec<RoleConfig>,
    /// Scopes defined here (`[custom_scopes."custom:NAME"]`, JupyterHub's `custom_scopes`).
    pub custom_scopes: std::collections::BTreeMap<String, services::CustomScope>,
    /// Services (`[[services]]`, JupyterHub's `services`): managed (a `command` the hub runs)
    /// and/or proxied (a `url` the proxy routes `/services/NAME/` to), with API tokens, roles
    /// and OAuth login through the hub.
    pub services: Vec<services::ServiceConfig>,
    /// The idle culler (`[idle_culler]`), a managed service when enabled.
    pub idle_culler: services::IdleCullerConfig,
    /// Spawner settings.
    pub spawner: SpawnerConfig,
    /// Quota roles (`[[quotas]]`), highest first; default: the Data Lake's
    /// `stack-jupyter-{high,medium,low}`.
    pub quotas: Vec<stackhub_common::QuotaRole>,
    /// The S3 store embedded in the hub (`[s3]`).
    pub s3: sites::EmbeddedS3Config,
    /// Sites where remote kernels run (`[[sites]]`); default: the five Data Lake sites as local
    /// gateways using the embedded store.
    pub sites: Vec<sites::SiteConfig>,
    /// Server profiles (`[[profile_list]]`, KubeSpawner's schema plus access lists, kind, site
    /// and warning); default: the Data Lake's six options. Empty = no picker.
    pub profile_list: Vec<spawner::profile::Profile>,
    /// `iss` of the gateway tokens the hub signs (env `STACKHUB_GATEWAY_TOKEN_ISSUER`); default:
    /// `public_url` when set, else `stackhub`. A site's gateway expects it (`[jwt] issuer`).
    pub gateway_token_issuer: Option<String>,
    /// The largest request body any hub route reads, in bytes (API JSON, login and picker
    /// forms, OAuth); a larger one is refused with 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// An external proxy (`[proxy]`); default: the proxy embedded in the hub process.
    pub proxy: ProxyConfig,
}

/// `[proxy]`: route through an external configurable-http-proxy (or `stackhub-proxy`) instead
/// of the embedded one. The hub then serves only its own listener (`hub_ip`/`hub_port`) and
/// edits the external proxy's routes through its REST API; `PATCH /hub/api/proxy` can move it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The proxy's REST API (`http://127.0.0.1:8001`; env `STACKHUB_PROXY_API_URL`); unset =
    /// the embedded proxy.
    pub api_url: Option<String>,
    /// The API's token: only from the environment, `CONFIGPROXY_AUTH_TOKEN` (as
    /// configurable-http-proxy reads it), never from the file.
    #[serde(skip)]
    pub auth_token: Option<Secret>,
}

/// The default of [`Config::max_body_bytes`]: 1 MiB.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            hub_ip: IpAddr::from([127, 0, 0, 1]),
            hub_port: 8081,
            data_dir: PathBuf::from(".stackhub"),
            db_url: None,
            public_url: None,
            subdomain_host: None,
            base_url: "/".to_owned(),
            hub_connect_url: None,
            cookie_secret: None,
            cookie_max_age_days: 14,
            admin_token: None,
            admin_service_name: "admin-bootstrap".to_owned(),
            auth: AuthConfig::default(),
            roles: Vec::new(),
            custom_scopes: std::collections::BTreeMap::new(),
            services: Vec::new(),
            idle_culler: services::IdleCullerConfig::default(),
            spawner: SpawnerConfig::default(),
            quotas: stackhub_common::quota::default_quota_roles(),
            s3: sites::EmbeddedS3Config::default(),
            sites: sites::default_sites(),
            profile_list: spawner::profile::default_profiles(),
            gateway_token_issuer: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            proxy: ProxyConfig::default(),
        }
    }
}

/// Keys whose values must never appear in an error message.
const SECRET_KEYS: &[&str] = &["db_url", "cookie_secret", "admin_token"];

impl Config {
    /// Load the config: defaults, then `file` if given, then the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad key (or the file).
    pub fn load(file: Option<&Path>, env: &dyn Lookup) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.apply_service_env(env)?;
        config.expand_idle_culler()?;
        spawner::profile::normalize(&mut config.profile_list);
        config.validate()?;
        if let Some(sub) = &config.subdomain_host
            && config.public_url.is_none()
        {
            config.public_url = Some(format!("{}{}", sub.hub_origin(), config.base_url));
        }
        config.load_spawner_settings()?;
        Ok(config)
    }

    /// Parse TOML text; the error message never contains a secret's value.
    fn from_toml(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => format!("syntax error at line {line}: {}", e.message()),
                None => format!("syntax error: {}", e.message()),
            }
        })?;
        // Take the secrets out first so a type error on them cannot echo their value.
        let mut secrets = Vec::new();
        for key in SECRET_KEYS {
            if let Some(v) = table.remove(*key) {
                secrets.push((*key, secret_string(key, v)?));
            }
        }
        let service_tokens = services::take_tokens(&mut table)?;
        let mut dev_password = None;
        let mut oidc_secrets = (None, None);
        if let Some(toml::Value::Table(auth)) = table.get_mut("auth") {
            if let Some(v) = auth.remove("dev_password") {
                dev_password = Some(secret_string("auth.dev_password", v)?);
            }
            if let Some(toml::Value::Table(oidc)) = auth.get_mut("oidc") {
                if let Some(v) = oidc.remove("client_secret") {
                    oidc_secrets.0 = Some(secret_string("auth.oidc.client_secret", v)?);
                }
                if let Some(v) = oidc.remove("token_key") {
                    oidc_secrets.1 = Some(secret_string("auth.oidc.token_key", v)?);
                }
            }
        }
        let mut config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        for (key, value) in secrets {
            let value = Some(Secret::new(value));
            match key {
                "db_url" => config.db_url = value,
                "cookie_secret" => config.cookie_secret = value,
                _ => config.admin_token = value,
            }
        }
        for (i, token) in service_tokens {
            if let Some(s) = config.services.get_mut(i) {
                s.api_token = Some(Secret::new(token));
            }
        }
        if let Some(p) = dev_password {
            config.auth.dev_password = Some(Secret::new(p));
        }
        if let Some(oidc) = config.auth.oidc.as_mut() {
            if let Some(v) = oidc_secrets.0 {
                oidc.client_secret = Some(Secret::new(v));
            }
            if let Some(v) = oidc_secrets.1 {
                oidc.token_key = Some(Secret::new(v));
            }
        }
        Ok(config)
    }

    /// The database URL to connect to.
    pub fn database_url(&self) -> Secret {
        match &self.db_url {
            Some(url) => url.clone(),
            None => Secret::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("stackhub.sqlite").display()
            )),
        }
    }

    /// Lifetime of login cookies and OAuth tokens, in seconds.
    pub fn cookie_max_age_secs(&self) -> i64 {
        i64::from(self.cookie_max_age_days) * 24 * 3600
    }
}

fn secret_string(key: &str, v: toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s),
        _ => Err(format!("`{key}` must be a string")),
    }
}

#[cfg(test)]
mod tests;
