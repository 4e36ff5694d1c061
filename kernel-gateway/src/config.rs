//! Gateway configuration: a TOML file, environment overrides read through a lookup function, and
//! defaults that work on a laptop.
//!
//! ```toml
//! ip = "127.0.0.1"
//! port = 8888
//! default_kernel_name = "python3"
//! max_kernels_per_user = 10        # -1 = unlimited
//! cull_idle_timeout = 0            # seconds, 0 = never
//! cull_interval = 300
//! cull_connected = false
//! cull_busy = false
//! kernel_launch_timeout = 60
//! kernelspec_dirs = ["/opt/kernels"] # searched before JUPYTER_PATH and the data dirs
//! unauthorized_users = ["root"]
//! [[users]]                          # token → user; the shared token maps to `shared_token_user`
//! name = "alice"
//! token_sha256 = "<hex sha256 of the token>"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Environment variables read for the shared token, first match wins.
pub const TOKEN_ENV_VARS: [&str; 3] = [
    "STACKHUB_GATEWAY_AUTH_TOKEN",
    "EG_AUTH_TOKEN",
    "KG_AUTH_TOKEN",
];

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
}

/// A user that authenticates with its own token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserToken {
    /// The user's name (what kernels are owned by and limits count against).
    pub name: String,
    /// The token in clear (discouraged; prefer `token_sha256`).
    #[serde(default)]
    pub token: Option<String>,
    /// Lowercase hex SHA-256 of the token.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Everything the gateway can be configured with.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub ip: String,
    /// Port to listen on (0 = any free port).
    pub port: u16,
    /// Shared token (`Authorization: token …`); usually from the environment. `None` with no
    /// `users` = open server (every caller is `shared_token_user`).
    pub auth_token: Option<String>,
    /// The user a caller presenting the shared token (or any caller of an open server) is.
    pub shared_token_user: String,
    /// Per-user tokens.
    pub users: Vec<UserToken>,
    /// Kernelspec used when a start request names none.
    pub default_kernel_name: String,
    /// Extra kernelspec directories (each holding `<name>/kernel.json`), searched first.
    pub kernelspec_dirs: Vec<PathBuf>,
    /// Users refused everywhere (EG `EG_UNAUTHORIZED_USERS`).
    pub unauthorized_users: Vec<String>,
    /// If non-empty, only these users may start kernels (EG `EG_AUTHORIZED_USERS`).
    pub authorized_users: Vec<String>,
    /// Maximum kernels (running + starting) per user; -1 = unlimited.
    pub max_kernels_per_user: i64,
    /// Seconds a kernel may stay idle before it is culled; 0 = never.
    pub cull_idle_timeout: u64,
    /// Seconds between culling passes.
    pub cull_interval: u64,
    /// Cull kernels that still have a WebSocket open.
    pub cull_connected: bool,
    /// Cull kernels that are busy.
    pub cull_busy: bool,
    /// Seconds to wait for a kernel to answer `kernel_info` after launch (overridable per start
    /// with `KERNEL_LAUNCH_TIMEOUT`, never above this).
    pub kernel_launch_timeout: u64,
    /// Seconds between heartbeats.
    pub heartbeat_interval: f64,
    /// Missed heartbeats before a kernel is declared dead.
    pub heartbeat_misses: u32,
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// Messages kept per session while its client is away.
    pub offline_buffer_messages: usize,
    /// Server environment variables passed to every kernel (besides `PATH`, `HOME`, `LANG`…).
    pub inherited_envs: Vec<String>,
    /// Extra environment set on every kernel.
    pub kernel_env: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ip: "127.0.0.1".to_owned(),
            port: 8888,
            auth_token: None,
            shared_token_user: "anonymous".to_owned(),
            users: Vec::new(),
            default_kernel_name: "python3".to_owned(),
            kernelspec_dirs: Vec::new(),
            unauthorized_users: vec!["root".to_owned()],
            authorized_users: Vec::new(),
            max_kernels_per_user: -1,
            cull_idle_timeout: 0,
            cull_interval: 300,
            cull_connected: false,
            cull_busy: false,
            kernel_launch_timeout: 60,
            heartbeat_interval: 3.0,
            heartbeat_misses: 3,
            max_message_bytes: 256 << 20,
            offline_buffer_messages: 10_000,
            inherited_envs: Vec::new(),
            kernel_env: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("users", &self.users)
            .field("default_kernel_name", &self.default_kernel_name)
            .field("max_kernels_per_user", &self.max_kernels_per_user)
            .field("cull_idle_timeout", &self.cull_idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] / [`ConfigError::Parse`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Applies environment overrides through `lookup` (tests pass a map; `main` passes `std::env::var`).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(token) = TOKEN_ENV_VARS
            .iter()
            .find_map(|k| lookup(k))
            .filter(|t| !t.is_empty())
        {
            self.auth_token = Some(token);
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval <= 0.0 || !self.heartbeat_interval.is_finite() {
            return Err(ConfigError::Invalid {
                key: "heartbeat_interval",
                reason: "must be > 0".into(),
            });
        }
        if self.heartbeat_misses == 0 {
            return Err(ConfigError::Invalid {
                key: "heartbeat_misses",
                reason: "must be >= 1".into(),
            });
        }
        if self.kernel_launch_timeout == 0 {
            return Err(ConfigError::Invalid {
                key: "kernel_launch_timeout",
                reason: "must be >= 1".into(),
            });
        }
        for u in &self.users {
            if u.token.is_none() && u.token_sha256.is_none() {
                return Err(ConfigError::Invalid {
                    key: "users",
                    reason: format!("user {:?} has neither token nor token_sha256", u.name),
                });
            }
        }
        Ok(())
    }

    /// Heartbeat period.
    pub fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval)
    }
}
