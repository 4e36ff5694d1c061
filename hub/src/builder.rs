//! Config → app: the one wiring of the hub's parts that `main` and the tests share.
//!
//! [`HubBuilder`] takes the config and the database, and optionally a spawner with its proxy,
//! the site registry and the OpenID Connect client; [`HubBuilder::build`] plugs them together
//! (the spawn pipeline with the hub's environment step, the planner over the sites, the state)
//! and returns the router. Listeners, the embedded proxy's listener and signals stay in `main`.

use std::sync::Arc;

use axum::Router;
use spawner::Spawner;

use crate::auth::OidcAuth;
use crate::config::Config;
use crate::db::Db;
use crate::proxy::Proxy;
use crate::sites::SiteRegistry;
use crate::spawn::{HubPrepare, SpawnOrchestrator, SpawnSettings};
use crate::state::AppState;

/// Builds a hub from its config and parts.
#[derive(Debug)]
pub struct HubBuilder {
    config: Config,
    db: Db,
    spawner: Option<(Arc<dyn Spawner>, Arc<dyn Proxy>)>,
    sites: Option<Arc<SiteRegistry>>,
    server_config_dir: Option<String>,
    oidc: Option<Arc<OidcAuth>>,
    hub_api_url: String,
    settings: Option<SpawnSettings>,
}

/// A built hub.
#[derive(Debug, Clone)]
pub struct BuiltHub {
    /// What handlers share.
    pub state: AppState,
    /// The spawn pipeline, when a spawner was given (`reconcile` at start-up, `shutdown` at
    /// exit).
    pub orchestrator: Option<SpawnOrchestrator>,
    /// The hub's routes.
    pub app: Router,
}

impl HubBuilder {
    /// A hub over `config` and `db`, without spawning until [`Self::spawner`] is given.
    pub fn new(config: Config, db: Db) -> Self {
        let hub_api_url = format!(
            "http://127.0.0.1:{}{}hub/api",
            config.hub_port, config.base_url
        );
        Self {
            config,
            db,
            spawner: None,
            sites: None,
            server_config_dir: None,
            oidc: None,
            hub_api_url,
            settings: None,
        }
    }

    /// Start servers with `spawner`, routing them through `proxy`.
    #[must_use]
    pub fn spawner(mut self, spawner: Arc<dyn Spawner>, proxy: Arc<dyn Proxy>) -> Self {
        self.spawner = Some((spawner, proxy));
        self
    }

    /// Remote-kernels profiles start at `sites`.
    #[must_use]
    pub fn sites(mut self, sites: Arc<SiteRegistry>) -> Self {
        self.sites = Some(sites);
        self
    }

    /// Servers read the hub's jupyter_server configuration in `dir` (as they see it:
    /// [`crate::spawn::write_server_config`]'s directory, or a path in their image).
    #[must_use]
    pub fn server_config_dir(mut self, dir: String) -> Self {
        self.server_config_dir = Some(dir);
        self
    }

    /// Log in through OpenID Connect.
    #[must_use]
    pub fn oidc(mut self, oidc: Arc<OidcAuth>) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// The hub's API as single-user servers reach it (default: `http://127.0.0.1:HUB_PORT…`).
    #[must_use]
    pub fn hub_api_url(mut self, url: String) -> Self {
        self.hub_api_url = url;
        self
    }

    /// Spawn pipeline settings other than the config's (tests: short timeouts).
    #[must_use]
    pub fn spawn_settings(mut self, settings: SpawnSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Plug the parts together.
    pub fn build(self) -> BuiltHub {
        let settings = self
            .settings
            .unwrap_or_else(|| SpawnSettings::from_config(&self.config, self.hub_api_url.clone()));
        let mut state = AppState::new(self.config, self.db.clone());
        if let Some(sites) = &self.sites {
            state = state.with_sites(Arc::clone(sites));
        }
        let orchestrator = self.spawner.map(|(spawner, proxy)| {
            let mut prepare =
                HubPrepare::new(self.db.clone(), self.oidc.clone(), self.hub_api_url.clone());
            if let Some(sites) = &self.sites {
                prepare = prepare.with_sites(Arc::clone(sites));
            }
            if let Some(dir) = &self.server_config_dir {
                prepare = prepare.with_server_config_dir(dir.clone());
            }
            // The planner the API's starts use also plans a spawn taken over again.
            SpawnOrchestrator::new(self.db, spawner, proxy, settings)
                .with_prepare(Arc::new(prepare))
                .with_planner(state.planner().clone())
        });
        if let Some(o) = &orchestrator {
            state = state.with_orchestrator(Arc::new(o.clone()));
        }
        if let Some(oidc) = self.oidc {
            state = state.with_oidc(oidc);
        }
        BuiltHub {
            app: crate::app(state.clone()),
            state,
            orchestrator,
        }
    }
}
