//! The hub's typed configuration: defaults that work locally, a TOML file, environment overrides.
//!
//! Precedence (lowest first): built-in defaults, the TOML file (`stackhub --config FILE`), the
//! environment (read through [`Lookup`], so tests pass a map), command-line flags (`--ip`,
//! `--port`, applied by `main`). A bad value is reported as a [`ConfigError`] naming the key,
//! never its value, and `main` exits with 64 (`EX_USAGE`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    pub oidc: Option<crate::auth::OidcConfig>,
}

/// A role from the config file (JupyterHub's `load_roles`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// The role's name.
    pub name: String,
    /// The scopes it grants.
    pub scopes: Vec<String>,
    /// Users holding it.
    pub users: Vec<String>,
    /// Groups holding it (their members get its scopes).
    pub groups: Vec<String>,
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
    /// `JUPYTER_CONFIG_PATH` of remote-kernels servers: a directory in the server's image
    /// holding `hub/share/remote_server_config.py` as `jupyter_server_config.py` (the
    /// singleuser image has it in `/etc/stackhub/remote-server`). Unset: the hub writes the
    /// file under its data directory (local servers).
    pub remote_config_dir: Option<String>,
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
            remote_config_dir: None,
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
    /// [`crate::origins::dns_label`]) and the hub's pages on `hub.example` only; a page from one
    /// user's server then cannot act on the hub or another server as its visitor. Needs a
    /// wildcard DNS record (and certificate) for `*.hub.example`. Default: unset (every server
    /// under the hub's origin, at `/user/NAME/`). When set, `public_url` defaults to it.
    pub subdomain_host: Option<crate::origins::SubdomainHost>,
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
    /// Extra roles.
    pub roles: Vec<RoleConfig>,
    /// Spawner settings.
    pub spawner: SpawnerConfig,
    /// Quota roles (`[[quotas]]`), highest first; default: the Data Lake's
    /// `stack-jupyter-{high,medium,low}`.
    pub quotas: Vec<crate::quota::QuotaRole>,
    /// The S3 store embedded in the hub (`[s3]`).
    pub s3: crate::sites::EmbeddedS3Config,
    /// Sites where remote kernels run (`[[sites]]`); default: the five Data Lake sites as local
    /// gateways using the embedded store.
    pub sites: Vec<crate::sites::SiteConfig>,
    /// Server profiles (`[[profile_list]]`, KubeSpawner's schema plus access lists, kind, site
    /// and warning); default: the Data Lake's six options. Empty = no picker.
    pub profile_list: Vec<crate::profiles::Profile>,
    /// `iss` of the gateway tokens the hub signs (env `STACKHUB_GATEWAY_TOKEN_ISSUER`); default:
    /// `public_url` when set, else `stackhub`. A site's gateway expects it (`[jwt] issuer`).
    pub gateway_token_issuer: Option<String>,
    /// The largest request body any hub route reads, in bytes (API JSON, login and picker
    /// forms, OAuth); a larger one is refused with 413. Default 1 MiB.
    pub max_body_bytes: usize,
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
            spawner: SpawnerConfig::default(),
            quotas: crate::quota::default_quota_roles(),
            s3: crate::sites::EmbeddedS3Config::default(),
            sites: crate::sites::default_sites(),
            profile_list: crate::profiles::default_profiles(),
            gateway_token_issuer: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
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
        crate::profiles::normalize(&mut config.profile_list);
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

    fn apply_env(&mut self, env: &dyn Lookup) -> Result<(), ConfigError> {
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
        if let Some(v) = env.get(ENV_PUBLIC_URL) {
            self.public_url = Some(v);
        }
        if let Some(v) = env.get(ENV_SUBDOMAIN_HOST) {
            self.subdomain_host = if v.is_empty() {
                None
            } else {
                Some(
                    crate::origins::SubdomainHost::parse(&v)
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
        crate::sites::apply_env(&mut self.sites, env).map_err(|(k, r)| invalid(&k, r))?;
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

    /// Check values that parse but make no sense.
    ///
    /// # Errors
    /// The first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.base_url.starts_with('/') || !self.base_url.ends_with('/') {
            return Err(invalid("base_url", "must start and end with `/`"));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|_| invalid("public_url", "not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("public_url", "must be http or https"));
            }
            if let Some(sub) = &self.subdomain_host
                && !parsed
                    .host_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case(sub.domain()))
            {
                return Err(invalid(
                    "public_url",
                    format!("must be on the subdomain_host's host `{}`", sub.domain()),
                ));
            }
        }
        if let Some(db) = &self.db_url {
            let db = db.expose();
            if !(db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"))
            {
                return Err(invalid(
                    "db_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if let Some(secret) = &self.cookie_secret {
            match hex::decode(secret.expose()) {
                Ok(bytes) if bytes.len() >= 32 => {}
                _ => return Err(invalid("cookie_secret", "must be at least 32 bytes of hex")),
            }
        }
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        if self.spawner.start_timeout == 0 {
            return Err(invalid(
                "spawner.start_timeout",
                "must be at least 1 second",
            ));
        }
        if let Some(url) = &self.hub_connect_url {
            let parsed =
                url::Url::parse(url).map_err(|_| invalid("hub_connect_url", "not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("hub_connect_url", "must be http or https"));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.cookie_max_age_days == 0 {
            return Err(invalid("cookie_max_age_days", "must be at least 1"));
        }
        if let Some(oidc) = &self.auth.oidc {
            oidc.validate().map_err(|(k, r)| invalid(&k, r))?;
        }
        crate::quota::validate(&self.quotas).map_err(|(k, r)| invalid(&k, r))?;
        crate::sites::validate(&self.s3, &self.sites).map_err(|(k, r)| invalid(&k, r))?;
        crate::profiles::validate(&self.profile_list).map_err(|(k, r)| invalid(&k, r))?;
        for (i, role) in self.roles.iter().enumerate() {
            if role.name.is_empty() {
                return Err(invalid(&format!("roles[{i}].name"), "must not be empty"));
            }
            for scope in &role.scopes {
                if crate::scopes::validate_scope(scope).is_err() {
                    return Err(invalid(
                        &format!("roles[{i}].scopes"),
                        format!("unknown scope `{scope}`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// With `spawner.kind = "kubernetes"`: read `spawner.kubernetes_config` into
    /// `spawner.kubernetes`.
    fn load_spawner_settings(&mut self) -> Result<(), ConfigError> {
        if self.spawner.kind != SpawnerKind::Kubernetes {
            return Ok(());
        }
        let Some(path) = self.spawner.kubernetes_config.clone() else {
            return Err(invalid(
                "spawner.kubernetes_config",
                "must name the Kubernetes spawner's JSON settings file when spawner.kind = \"kubernetes\"",
            ));
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let k8s: spawner::k8s::KubeSpawnerConfig =
            serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if k8s.image.is_empty() {
            return Err(invalid(
                "spawner.kubernetes_config: image",
                "must not be empty",
            ));
        }
        if k8s.uid == 0 {
            return Err(invalid(
                "spawner.kubernetes_config: uid",
                "must not be 0 (servers never run as root)",
            ));
        }
        if k8s.start_timeout_secs == 0 {
            return Err(invalid(
                "spawner.kubernetes_config: start_timeout_secs",
                "must be at least 1 second",
            ));
        }
        self.spawner.kubernetes = Some(k8s);
        Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn defaults_work_locally() {
        let c = Config::load(None, &HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.ip.to_string(), "127.0.0.1");
        assert!(
            c.database_url()
                .expose()
                .ends_with(".stackhub/stackhub.sqlite?mode=rwc")
        );
    }

    #[test]
    fn env_overrides_and_errors_name_the_key() {
        let env = HashMap::from([(ENV_PORT, "9000"), (ENV_ADMIN_TOKEN, "0123456789abcdef0")]);
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(format!("{:?}", c.admin_token), "Some(Secret(***))");
        let env = HashMap::from([(ENV_PORT, "nope")]);
        let err = Config::load(None, &env).unwrap_err().to_string();
        assert!(err.contains(ENV_PORT), "{err}");
        let env = HashMap::from([(ENV_ADMIN_TOKEN, "short-secret")]);
        let err = Config::load(None, &env).unwrap_err().to_string();
        assert!(
            err.contains("admin_token") && !err.contains("short-secret"),
            "{err}"
        );
    }

    #[test]
    fn subdomain_host_is_parsed_once_and_sets_the_public_url() {
        let env = HashMap::<&str, &str>::new();
        assert!(Config::load(None, &env).unwrap().subdomain_host.is_none());
        let c = Config::from_toml("subdomain_host = \"https://hub.example\"\n").unwrap();
        assert_eq!(c.subdomain_host.unwrap().domain(), "hub.example");
        let err = Config::from_toml("subdomain_host = \"https://hub.example/x/\"\n").unwrap_err();
        assert!(err.contains("subdomain_host"), "{err}");
        let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "http://hub.test:8000")]);
        let c = Config::load(None, &env).unwrap();
        assert_eq!(
            c.subdomain_host.as_ref().unwrap().user_origin("alice"),
            "http://alice.hub.test:8000"
        );
        assert_eq!(c.public_url.as_deref(), Some("http://hub.test:8000/"));
        let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "10.0.0.1")]);
        let err = Config::load(None, &env).unwrap_err().to_string();
        assert!(err.contains(ENV_SUBDOMAIN_HOST), "{err}");
        let env = HashMap::from([
            (ENV_SUBDOMAIN_HOST, "https://hub.example"),
            (ENV_PUBLIC_URL, "https://other.example/"),
        ]);
        let err = Config::load(None, &env).unwrap_err().to_string();
        assert!(
            err.contains("public_url") && err.contains("hub.example"),
            "{err}"
        );
        let env = HashMap::from([(ENV_SUBDOMAIN_HOST, "")]);
        assert!(Config::load(None, &env).unwrap().subdomain_host.is_none());
    }

    #[test]
    fn toml_errors_never_echo_secrets() {
        let err = Config::from_toml("cookie_secret = 12345\n").unwrap_err();
        assert!(
            err.contains("cookie_secret") && !err.contains("12345"),
            "{err}"
        );
        let err = Config::from_toml("[auth]\ndev_password = \"hunter2\nport = 1\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = Config::from_toml("prot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let c = Config::from_toml("port = 8001\n[auth]\ndev_password = \"pw\"\n").unwrap();
        assert_eq!(c.port, 8001);
        assert_eq!(c.auth.dev_password.unwrap().expose(), "pw");
    }

    #[test]
    fn spawner_kind_is_checked_and_kubernetes_settings_are_loaded() {
        let dir = std::env::temp_dir().join(format!("hub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = HashMap::<&str, &str>::new();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let bad = file("bad-kind.toml", "[spawner]\nkind = \"docker\"\n");
        let err = Config::load(Some(&bad), &env).unwrap_err().to_string();
        assert!(
            err.contains("docker") && err.contains("kubernetes"),
            "{err}"
        );
        let missing = file("missing.toml", "[spawner]\nkind = \"kubernetes\"\n");
        let err = Config::load(Some(&missing), &env).unwrap_err().to_string();
        assert!(err.contains("spawner.kubernetes_config"), "{err}");
        let json = file(
            "k8s.json",
            r#"{"hub_id": "h1", "image": "img:1", "uid": 0}"#,
        );
        let toml = format!(
            "[spawner]\nkind = \"kubernetes\"\nkubernetes_config = \"{}\"\n",
            json.display()
        );
        let good = file("good.toml", &toml);
        let err = Config::load(Some(&good), &env).unwrap_err().to_string();
        assert!(err.contains("uid"), "{err}");
        std::fs::write(&json, r#"{"hub_id": "h1", "image": "img:1", "imagee": 1}"#).unwrap();
        let err = Config::load(Some(&good), &env).unwrap_err().to_string();
        assert!(err.contains("imagee") && err.contains("k8s.json"), "{err}");
        std::fs::write(&json, r#"{"hub_id": "h1", "image": "img:1"}"#).unwrap();
        let c = Config::load(Some(&good), &env).unwrap();
        assert_eq!(c.spawner.kind, SpawnerKind::Kubernetes);
        assert_eq!(c.spawner.kubernetes.unwrap().hub_id, "h1");
        assert_eq!(
            Config::load(None, &env).unwrap().spawner.kind,
            SpawnerKind::Local
        );
    }
}
