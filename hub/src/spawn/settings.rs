//! What the spawn pipeline needs besides the spawner and the proxy: URLs and timeouts.

use std::time::Duration;

/// What the pipeline needs besides the spawner and the proxy.
#[derive(Debug, Clone)]
pub struct SpawnSettings {
    /// The hub's internal API URL as servers reach it, e.g. `http://127.0.0.1:8081/hub/api`.
    pub hub_api_url: String,
    /// The hub's base URL path (`/`).
    pub base_url: String,
    /// The public URL of the hub, if configured.
    pub public_url: Option<String>,
    /// Per-user origins (`subdomain_host`): servers routed and announced on their user's host.
    pub subdomain_host: Option<crate::config::host::SubdomainHost>,
    /// From launch until the server must answer (`spawner.start_timeout`); also the shortest
    /// time a launch gets (see [`SpawnSettings::launch_timeout`]).
    pub start_timeout: Duration,
    /// How long a start request waits for readiness before answering 202.
    pub slow_spawn_timeout: Duration,
    /// Readiness poll interval.
    pub poll_interval: Duration,
    /// `spawner.oauth_client_allowed_scopes`, unexpanded (`!user`, `!server`).
    pub oauth_client_allowed_scopes: Vec<String>,
}

impl SpawnSettings {
    /// Settings from the hub's config, with the API reachable at `hub_api_url`.
    pub fn from_config(config: &crate::Config, hub_api_url: String) -> Self {
        Self {
            hub_api_url,
            base_url: config.base_url.clone(),
            public_url: config.public_url.clone(),
            subdomain_host: config.subdomain_host.clone(),
            start_timeout: Duration::from_secs(config.spawner.start_timeout),
            slow_spawn_timeout: Duration::from_millis(config.spawner.slow_spawn_timeout_ms),
            poll_interval: Duration::from_millis(10),
            oauth_client_allowed_scopes: config.spawner.oauth_client_allowed_scopes.clone(),
        }
    }

    /// How long the hub waits for a spawner's start to return: `start_timeout`, or the
    /// spawner's own start timeout plus [`LAUNCH_MARGIN`] when that is longer, so the hub never
    /// gives up on (and loses the state of) a server the spawner is still launching.
    pub fn launch_timeout(&self, spawner_timeout: Option<Duration>) -> Duration {
        spawner_timeout.map_or(self.start_timeout, |t| {
            self.start_timeout.max(t + LAUNCH_MARGIN)
        })
    }
}

/// What the hub adds to a spawner's own start timeout before it gives up on a launch.
pub const LAUNCH_MARGIN: Duration = Duration::from_secs(10);
