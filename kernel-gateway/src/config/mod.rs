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
//! allow_origin = ""                # CORS + WebSocket Origin check, see below
//! local_memory_limit = "data"      # local kernels: RLIMIT_DATA ("as" = RLIMIT_AS, "off")
//! kernel_port_range = [20000, 32000] # local kernels' ports; [0, 0] = ephemeral
//! max_message_bytes = 67108864        # largest WebSocket message/frame from a client (1009 above)
//! max_connection_queue_bytes = 67108864 # unread output per WebSocket before it is closed (1008)
//! offline_buffer_bytes = 67108864     # per kernel: output kept for clients that went away
//! offline_buffer_messages = 10000     # per session: the same, counted in messages
//! detached_session_timeout = 600      # seconds a session without a client keeps its buffer
//! [[users]]                          # token → user; the shared token maps to `shared_token_user`
//! name = "alice"
//! token_sha256 = "<hex sha256 of the token>"
//! roles = ["stack-jupyter-medium"] # optional: quota roles of a token user
//!
//! site_id = "lumi"                 # this site's id: the default JWT audience
//!
//! [jwt]                            # JWT bearers (absent = tokens only)
//! jwks_url = "https://identity.example/auth/realms/dedl/protocol/openid-connect/certs"
//! issuer = "https://identity.example/auth/realms/dedl"   # required (the hub's: its issuer)
//! audience = ["account"]           # default: [site_id]; one of the two is required
//! required_role = "stack-jupyter"  # "" = none
//! # accept_any_issuer = false      # opt-outs of the iss / aud checks (unsafe: a token minted
//! # accept_any_audience = false    # for another site or service is then accepted here)
//!
//! [[jwt_extra_issuers]]            # more trusted issuers beside [jwt] (same keys), e.g. the
//! jwks_url = "https://identity.example/auth/realms/dedl/protocol/openid-connect/certs"
//! issuer = "https://identity.example/auth/realms/dedl"   # identity provider beside the hub
//! audience = ["account"]
//! role_claims = ["realm_access.roles", "groups"]
//!
//! [[quota_roles]]                  # highest first; default: the Data Lake's stack-jupyter-*
//! role = "stack-jupyter-high"
//! cpus = 12
//! memory = "32Gi"
//! gpus = 0
//! max_kernels = 20                 # optional, else max_kernels_per_user
//!
//! [slurm]                          # kernels as Slurm jobs (see launcher::slurm::SlurmConfig)
//! slurm_conf = "/etc/slurm/slurm.conf"
//! callback_url = "https://gw.example/slurm-callback"
//! ```
//!
//! CORS and Origin (Enterprise Gateway's `allow_origin` family, env `EG_ALLOW_ORIGIN` /
//! `KG_ALLOW_ORIGIN` and friends): by default no `Access-Control-*` header is sent and a WebSocket
//! upgrade carrying an `Origin` is accepted only from the same host (clients without `Origin`,
//! i.e. non-browsers, are always accepted). `allow_origin = "*"` allows every origin; otherwise a
//! comma-separated list of exact origins (`https://lab.example.org`) is allowed and echoed back.
//! `OPTIONS` preflights are answered 200 without authentication.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::quota::{QuotaRole, default_quota_roles};

mod auth;
pub(crate) use self::auth::https_or_loopback;
pub use self::auth::{JwtConfig, UserToken};
pub use stackhub_common::Secret;

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

/// How local kernels get their memory quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryLimitMode {
    /// `RLIMIT_DATA` (heap and private mappings; allocations beyond it fail with `MemoryError`).
    #[default]
    Data,
    /// `RLIMIT_AS` (all address space; breaks runtimes that reserve large ranges, e.g. CUDA).
    As,
    /// No limit: the quota is advisory for local kernels.
    Off,
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
    pub auth_token: Option<Secret>,
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
    /// Largest WebSocket message (and frame) accepted from a client, in bytes; a larger one
    /// closes the socket with 1009. Default 64 MiB: what a kernel message from a client really
    /// carries (code, a comm message, a widget's binary buffers; files go through the REST
    /// contents API, not here) fits with room to spare, and it is tungstenite's own default. A message is held about twice while it is decoded, so the limit also bounds what
    /// one client can make the gateway allocate at once.
    pub max_message_bytes: usize,
    /// Bytes of kernel output queued for one WebSocket (and of client messages queued for the
    /// kernel) before the client counts as not reading: the socket is closed with 1008 and the
    /// output is buffered offline for a reconnect. One message larger than this still goes to a
    /// client whose queue is empty.
    pub max_connection_queue_bytes: usize,
    /// Bytes kept by all offline buffers of one kernel together (output for clients that went
    /// away); past it a session drops its oldest buffered messages.
    pub offline_buffer_bytes: usize,
    /// Messages kept per session while its client is away.
    pub offline_buffer_messages: usize,
    /// Seconds a session keeps its buffered output after its client went away; then the session
    /// is dropped (a client reconnecting later starts afresh).
    pub detached_session_timeout: u64,
    /// Server environment variables passed to every kernel (besides `PATH`, `HOME`, `LANG`…).
    pub inherited_envs: Vec<String>,
    /// Extra environment set on every kernel.
    pub kernel_env: BTreeMap<String, String>,
    /// Roles of callers presenting the shared token (for the quota table).
    pub shared_token_roles: Vec<String>,
    /// JWT bearer authentication; `None` = tokens only.
    pub jwt: Option<JwtConfig>,
    /// More issuers whose JWTs are trusted beside `[jwt]` (each with its own keys, issuer,
    /// audience and claims; a token is checked by the entry naming its `iss`), e.g. the hub's
    /// site tokens in `[jwt]` and the identity provider's access tokens here. Each must name
    /// its issuer (no `accept_any_issuer`), and no two entries the same one.
    pub jwt_extra_issuers: Vec<JwtConfig>,
    /// Quota table, highest role first; the first role the caller holds applies.
    pub quota_roles: Vec<QuotaRole>,
    /// Quota role applied to callers holding none of the table's roles; `None` = no quota.
    pub default_quota_role: Option<String>,
    /// How local kernels enforce the memory quota.
    pub local_memory_limit: MemoryLimitMode,
    /// Ports handed to local kernels, `[lo, hi)`; `[0, 0]` = ephemeral ports from the OS.
    pub kernel_port_range: [u16; 2],
    /// `Access-Control-Allow-Origin`: empty = no CORS and same-origin WebSockets only, `*` = any,
    /// else a comma-separated list of origins.
    pub allow_origin: String,
    /// `Access-Control-Allow-Headers` (empty = not sent).
    pub allow_headers: String,
    /// `Access-Control-Allow-Methods` (empty = not sent).
    pub allow_methods: String,
    /// `Access-Control-Allow-Credentials: true` when set.
    pub allow_credentials: bool,
    /// `Access-Control-Expose-Headers` (empty = not sent).
    pub expose_headers: String,
    /// `Access-Control-Max-Age` in seconds (empty = not sent).
    pub max_age: String,
    /// Slurm launcher for kernelspecs with `metadata.stackhub.launcher = "slurm"`; `None` = off.
    pub slurm: Option<crate::launcher::slurm::SlurmConfig>,
    /// This site's id (`lumi`, as the hub's `[[sites]] id`): the default `[jwt] audience`.
    /// Env `STACKHUB_GATEWAY_SITE_ID`.
    pub site_id: Option<String>,
    /// This site's name as users know it (`LUMI Bridge`): kernelspecs' display names say where
    /// their kernels run (`Python 3 (ipykernel) at LUMI Bridge`), unless they name it already.
    /// Env `STACKHUB_GATEWAY_SITE_NAME`.
    pub site_name: Option<String>,
    /// A remote site (a Data Lake bridge): kernel starts must carry the S3 exchange
    /// configuration ([`crate::exchange`]), which reaches the kernel. Off = a plain Enterprise
    /// Gateway. Env `STACKHUB_GATEWAY_REMOTE_SITE`.
    pub remote_site: bool,
    /// A JSON file with the Kubernetes launcher's settings
    /// ([`crate::launcher::k8s::KubeLauncherConfig`]; the bridge-site chart renders it). Set:
    /// kernelspecs with `metadata.stackhub.launcher = "kubernetes"` run as pods.
    pub kubernetes_config: Option<PathBuf>,
    /// The Kubernetes launcher's settings, read from `kubernetes_config` by
    /// [`Config::load_launcher_settings`].
    #[serde(skip)]
    pub kubernetes: Option<crate::launcher::k8s::KubeLauncherConfig>,
    /// Launcher of kernelspecs that name none: `"local"` (default), `"kubernetes"` or
    /// `"slurm"` (which must be configured).
    pub default_launcher: String,
    /// Seconds between passes removing launcher resources (kernel pods) whose kernel is gone.
    pub orphan_cleanup_interval: u64,
    /// The site's working area: each user's kernels run in (and have as `HOME`)
    /// `<kernel_working_root>/<user>`, made owner-only for local and Slurm kernels; a pod starts
    /// there. Unset: the gateway's own working directory. Env
    /// `STACKHUB_GATEWAY_KERNEL_WORKING_ROOT`.
    pub kernel_working_root: Option<PathBuf>,
    /// Run kernels in the client's `KERNEL_WORKING_DIR` (Enterprise Gateway's
    /// `mirror_working_dirs`, env `EG_MIRROR_WORKING_DIRS`), for a gateway sharing the Lab's
    /// file system. Off: a kernel never runs in a path the client names.
    pub mirror_working_dirs: bool,
    /// The Dask Gateway-compatible service ([`crate::dask::DaskConfig`]).
    pub dask: crate::dask::DaskConfig,
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
            max_message_bytes: 64 << 20,
            max_connection_queue_bytes: 64 << 20,
            offline_buffer_bytes: 64 << 20,
            offline_buffer_messages: 10_000,
            detached_session_timeout: 600,
            inherited_envs: Vec::new(),
            kernel_env: BTreeMap::new(),
            shared_token_roles: Vec::new(),
            jwt: None,
            jwt_extra_issuers: Vec::new(),
            quota_roles: default_quota_roles(),
            default_quota_role: None,
            local_memory_limit: MemoryLimitMode::Data,
            kernel_port_range: crate::launcher::DEFAULT_PORT_RANGE,
            allow_origin: String::new(),
            allow_headers: String::new(),
            allow_methods: String::new(),
            allow_credentials: false,
            expose_headers: String::new(),
            max_age: String::new(),
            slurm: None,
            site_id: None,
            site_name: None,
            remote_site: false,
            kubernetes_config: None,
            kubernetes: None,
            default_launcher: "local".to_owned(),
            orphan_cleanup_interval: 300,
            kernel_working_root: None,
            mirror_working_dirs: false,
            dask: crate::dask::DaskConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("auth_token", &self.auth_token)
            .field("users", &self.users)
            .field("default_kernel_name", &self.default_kernel_name)
            .field("max_kernels_per_user", &self.max_kernels_per_user)
            .field("cull_idle_timeout", &self.cull_idle_timeout)
            .field("jwt", &self.jwt)
            .field("jwt_extra_issuers", &self.jwt_extra_issuers)
            .field("quota_roles", &self.quota_roles)
            .field("allow_origin", &self.allow_origin)
            .field("site_id", &self.site_id)
            .field("remote_site", &self.remote_site)
            .field("dask", &self.dask)
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

    /// Reads `kubernetes_config` (if set) into `kubernetes`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `kubernetes_config`, the file and what is wrong.
    pub fn load_launcher_settings(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.kubernetes_config else {
            return Ok(());
        };
        let bad = |reason: String| ConfigError::Invalid {
            key: "kubernetes_config",
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let k8s: crate::launcher::k8s::KubeLauncherConfig =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if k8s.namespace.is_empty() {
            return Err(bad("namespace must not be empty".to_owned()));
        }
        if k8s.uid == 0 {
            return Err(bad(
                "uid must not be 0 (kernels never run as root)".to_owned()
            ));
        }
        if k8s.launch_timeout_secs == 0 {
            return Err(bad("launch_timeout_secs must be >= 1".to_owned()));
        }
        self.kubernetes = Some(k8s);
        Ok(())
    }

    /// Applies environment overrides through `lookup` (tests pass a map; `main` passes `std::env::var`).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(token) = TOKEN_ENV_VARS
            .iter()
            .find_map(|k| lookup(k))
            .filter(|t| !t.is_empty())
        {
            self.auth_token = Some(Secret::new(token));
        }
        // EG spelling first, KG as fallback, as Enterprise Gateway itself does.
        let eg_kg =
            |name: &str| lookup(&format!("EG_{name}")).or_else(|| lookup(&format!("KG_{name}")));
        if let Some(v) = eg_kg("ALLOW_ORIGIN") {
            self.allow_origin = v;
        }
        if let Some(v) = eg_kg("ALLOW_HEADERS") {
            self.allow_headers = v;
        }
        if let Some(v) = eg_kg("ALLOW_METHODS") {
            self.allow_methods = v;
        }
        if let Some(v) = eg_kg("ALLOW_CREDENTIALS") {
            self.allow_credentials = v.eq_ignore_ascii_case("true") || v == "1";
        }
        if let Some(v) = eg_kg("EXPOSE_HEADERS") {
            self.expose_headers = v;
        }
        if let Some(v) = eg_kg("MAX_AGE") {
            self.max_age = v;
        }
        if let Some(v) = eg_kg("MIRROR_WORKING_DIRS") {
            self.mirror_working_dirs = v.eq_ignore_ascii_case("true") || v == "1";
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_KERNEL_WORKING_ROOT").filter(|v| !v.is_empty()) {
            self.kernel_working_root = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_REMOTE_SITE") {
            self.remote_site = v.eq_ignore_ascii_case("true") || v == "1";
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_SITE_NAME").filter(|v| !v.is_empty()) {
            self.site_name = Some(v);
        }
        if let Some(v) = lookup("STACKHUB_GATEWAY_SITE_ID").filter(|v| !v.is_empty()) {
            self.site_id = Some(v);
        }
        self.dask.apply_env(&lookup);
        if let Some(url) = lookup("STACKHUB_GATEWAY_JWKS_URL").filter(|u| !u.is_empty()) {
            self.jwt.get_or_insert_with(JwtConfig::default).jwks_url = url;
        }
        if let Some(jwt) = &mut self.jwt {
            if let Some(v) = lookup("STACKHUB_GATEWAY_JWT_ISSUER") {
                jwt.issuer = Some(v).filter(|v| !v.is_empty());
            }
            if let Some(v) = lookup("STACKHUB_GATEWAY_JWT_AUDIENCE") {
                jwt.audience = v
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect();
            }
            if let Some(v) = lookup("STACKHUB_GATEWAY_JWT_REQUIRED_ROLE") {
                jwt.required_role = v;
            }
        }
    }

    /// Whether every caller is let in without credentials.
    pub fn is_open(&self) -> bool {
        self.auth_token.is_none()
            && self.users.is_empty()
            && self.jwt.is_none()
            && self.jwt_extra_issuers.is_empty()
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dask.validate()?;
        if self.heartbeat_interval <= 0.0 || !self.heartbeat_interval.is_finite() {
            return Err(ConfigError::Invalid {
                key: "heartbeat_interval",
                reason: "must be > 0".into(),
            });
        }
        if let Some(root) = &self.kernel_working_root
            && !root.is_absolute()
        {
            return Err(ConfigError::Invalid {
                key: "kernel_working_root",
                reason: format!("{} is not an absolute path", root.display()),
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
        self.validate_client_limits()?;
        let [lo, hi] = self.kernel_port_range;
        if !((lo == 0 && hi == 0) || (lo > 0 && hi >= lo.saturating_add(5))) {
            return Err(ConfigError::Invalid {
                key: "kernel_port_range",
                reason: "must be [0, 0] or [lo, hi) with at least 5 ports".into(),
            });
        }
        if let Some(site) = &self.site_id
            && (site.is_empty()
                || !site
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(ConfigError::Invalid {
                key: "site_id",
                reason: format!("{site:?} must be letters, digits, `-` or `_`"),
            });
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate(self.site_id.as_deref())?;
        }
        self.validate_extra_issuers()?;
        stackhub_common::quota::validate(&self.quota_roles).map_err(|e| ConfigError::Invalid {
            key: "quota_roles",
            reason: e.to_string(),
        })?;
        if let Some(d) = &self.default_quota_role
            && !self.quota_roles.iter().any(|q| &q.role == d)
        {
            return Err(ConfigError::Invalid {
                key: "default_quota_role",
                reason: format!("{d:?} is not in quota_roles"),
            });
        }
        let configured = match self.default_launcher.as_str() {
            "local" => true,
            "kubernetes" => self.kubernetes_config.is_some(),
            "slurm" => self.slurm.is_some(),
            other => {
                return Err(ConfigError::Invalid {
                    key: "default_launcher",
                    reason: format!("{other:?} is not one of \"local\", \"kubernetes\", \"slurm\""),
                });
            }
        };
        if !configured {
            return Err(ConfigError::Invalid {
                key: "default_launcher",
                reason: format!(
                    "{:?} is not configured (set `kubernetes_config` or `[slurm]`)",
                    self.default_launcher
                ),
            });
        }
        if self.orphan_cleanup_interval == 0 {
            return Err(ConfigError::Invalid {
                key: "orphan_cleanup_interval",
                reason: "must be >= 1".into(),
            });
        }
        if let Some(slurm) = &self.slurm {
            slurm.validate().map_err(|reason| ConfigError::Invalid {
                key: "slurm",
                reason,
            })?;
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

    /// Each of `jwt_extra_issuers` as `[jwt]` is checked, naming its issuer, which must be set
    /// and differ from every other trusted issuer's.
    fn validate_extra_issuers(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<&str> = self
            .jwt
            .iter()
            .filter_map(|j| j.issuer.as_deref())
            .collect();
        for (i, extra) in self.jwt_extra_issuers.iter().enumerate() {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "jwt_extra_issuers",
                reason: format!("entry {i}: {reason}"),
            };
            let issuer = extra
                .issuer
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "must name its issuer (tokens are matched to an entry by their iss; \
                         accept_any_issuer is only for [jwt])"
                            .into(),
                    )
                })?;
            if seen.contains(&issuer) {
                return Err(invalid(format!(
                    "issuer {issuer:?} is already trusted by [jwt] or an earlier entry"
                )));
            }
            seen.push(issuer);
            extra
                .validate(self.site_id.as_deref())
                .map_err(|e| match e {
                    ConfigError::Invalid { key, reason } => {
                        invalid(format!("issuer {issuer:?}: {key}: {reason}"))
                    }
                    other => other,
                })?;
        }
        Ok(())
    }

    /// The byte limits of client WebSockets and buffers.
    fn validate_client_limits(&self) -> Result<(), ConfigError> {
        const MIN: usize = 64 << 10;
        const MAX: usize = 1 << 30;
        for (key, value) in [
            ("max_message_bytes", self.max_message_bytes),
            (
                "max_connection_queue_bytes",
                self.max_connection_queue_bytes,
            ),
            ("offline_buffer_bytes", self.offline_buffer_bytes),
        ] {
            if !(MIN..=MAX).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{value} is not between {MIN} (64 KiB) and {MAX} (1 GiB)"),
                });
            }
        }
        if self.offline_buffer_messages == 0 {
            return Err(ConfigError::Invalid {
                key: "offline_buffer_messages",
                reason: "must be >= 1".into(),
            });
        }
        if self.detached_session_timeout == 0 {
            return Err(ConfigError::Invalid {
                key: "detached_session_timeout",
                reason: "must be >= 1 (seconds)".into(),
            });
        }
        Ok(())
    }

    /// The allowed CORS origins (`allow_origin` split at commas).
    pub fn allowed_origins(&self) -> impl Iterator<Item = &str> {
        self.allow_origin
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
    }

    /// Heartbeat period.
    pub fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval)
    }
}

#[cfg(test)]
mod tests;
