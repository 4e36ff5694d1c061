//! Services (JupyterHub's `c.JupyterHub.services`): what the config declares, resolved once
//! into [`Services`] when the hub is built.
//!
//! - `register`: at start-up, the database follows the config: each service with the scopes of
//!   its roles, its API token (hashed), its OAuth client; services no longer configured are
//!   removed with their tokens and clients. Proxied services get their `/services/NAME/` route.
//! - `supervise`: managed services (a `command`) run as child processes with JupyterHub's
//!   `JUPYTERHUB_*` environment (and none of the hub's own), are restarted with back-off when
//!   they exit and stopped with the hub.

mod register;
mod supervise;

pub use self::register::RegisterError;
pub use self::supervise::Supervisor;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::services::ServiceConfig;
use crate::config::{Config, Secret};

/// How users log in to a service through the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceOAuth {
    /// Client id (`service-NAME` by default).
    pub client_id: String,
    /// Registered redirect URI.
    pub redirect_uri: String,
    /// Users are not asked to confirm.
    pub no_confirm: bool,
    /// Scopes a user's token for this service always carries: access to it.
    pub access_scopes: Vec<String>,
    /// Scopes the client may ask for (access scopes included).
    pub allowed_scopes: Vec<String>,
}

/// One configured service, resolved.
#[derive(Debug)]
pub struct Service {
    pub(crate) config: ServiceConfig,
    /// `{base_url}services/NAME/`.
    pub(crate) prefix: String,
    /// The roles it holds.
    pub(crate) roles: Vec<String>,
    /// The scopes of those roles (as configured: metascopes and filters unexpanded).
    pub(crate) scopes: Vec<String>,
    pub(crate) oauth: Option<ServiceOAuth>,
    /// Its API token: configured, or made for this run when the hub manages it.
    token: Option<Secret>,
    /// The managed process's pid (0: not running).
    pid: AtomicU32,
}

impl Service {
    /// The name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The API token (configured or made at start-up).
    pub fn api_token(&self) -> Option<&Secret> {
        self.token()
    }

    pub(crate) fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// The data stored with its proxy route (`{"service": NAME}`, as JupyterHub's).
    pub(crate) fn route_data(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut data = serde_json::Map::new();
        data.insert(
            "service".to_owned(),
            serde_json::Value::String(self.name().to_owned()),
        );
        data
    }

    /// The managed process's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    pub(crate) fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
    }
}

/// Every configured service.
#[derive(Debug, Default)]
pub struct Services {
    list: Vec<Arc<Service>>,
}

impl Services {
    /// Resolve the config's services (roles, scopes, prefixes, OAuth clients) and make a token
    /// for each managed service that has none configured.
    pub fn from_config(config: &Config) -> Self {
        let list = config
            .services
            .iter()
            .map(|s| {
                let roles = crate::auth::service_roles(config, &s.name);
                let mut scopes: Vec<String> = roles
                    .iter()
                    .flat_map(|r| crate::auth::role_scopes(config, r))
                    .collect();
                scopes.sort();
                scopes.dedup();
                let prefix = format!("{}services/{}/", config.base_url, s.name);
                let oauth = s.oauth_available().then(|| {
                    let access_scopes = vec![
                        "access:services".to_owned(),
                        format!("access:services!service={}", s.name),
                    ];
                    let mut allowed_scopes = s.oauth_client_allowed_scopes.clone();
                    allowed_scopes.push(format!("access:services!service={}", s.name));
                    allowed_scopes.sort();
                    allowed_scopes.dedup();
                    ServiceOAuth {
                        client_id: s
                            .oauth_client_id
                            .clone()
                            .unwrap_or_else(|| format!("service-{}", s.name)),
                        redirect_uri: s
                            .oauth_redirect_uri
                            .clone()
                            .unwrap_or_else(|| format!("{prefix}oauth_callback")),
                        no_confirm: s.oauth_no_confirm,
                        access_scopes,
                        allowed_scopes,
                    }
                });
                let token = s
                    .api_token
                    .clone()
                    .or_else(|| s.managed().then(|| Secret::new(crate::db::new_secret())));
                Arc::new(Service {
                    config: s.clone(),
                    prefix,
                    roles,
                    scopes,
                    oauth,
                    token,
                    pid: AtomicU32::new(0),
                })
            })
            .collect();
        Self { list }
    }

    /// Every service, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.list.iter()
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Service>> {
        self.list.iter().find(|s| s.name() == name)
    }

    /// The service whose OAuth client is `client_id`.
    pub(crate) fn by_client(&self, client_id: &str) -> Option<&Arc<Service>> {
        self.list
            .iter()
            .find(|s| s.oauth.as_ref().is_some_and(|o| o.client_id == client_id))
    }
}
