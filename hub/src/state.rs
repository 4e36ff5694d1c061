//! [`AppState`]: the database, the config and the seams, shared by every handler.

use std::sync::Arc;

use crate::auth::{Authenticator, DevAuthenticator, OidcAuth};
use crate::cache::Caches;
use crate::config::Config;
use crate::db::Db;
use crate::spawn::{Orchestrator, Planner, Unavailable};

/// Everything handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    config: Config,
    authenticator: Arc<dyn Authenticator>,
    orchestrator: Arc<dyn Orchestrator>,
    planner: Planner,
    oidc: Option<Arc<OidcAuth>>,
    sites: Option<Arc<crate::sites::SiteRegistry>>,
    xsrf_key: XsrfKey,
    caches: Arc<Caches>,
    services: Arc<crate::services::Services>,
}

/// The key `_xsrf` tokens are derived with (never printed).
struct XsrfKey(Vec<u8>);

impl std::fmt::Debug for XsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XsrfKey(***)")
    }
}

impl AppState {
    /// State with the development authenticator and no spawning.
    pub fn new(config: Config, db: Db) -> Self {
        let key = config
            .cookie_secret
            .as_ref()
            .and_then(|s| hex::decode(s.expose()).ok())
            .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
        let authenticator = Arc::new(DevAuthenticator::new(&config.auth));
        let planner = Planner::new(db.clone(), &config, None);
        let services = Arc::new(crate::services::Services::from_config(&config));
        Self {
            inner: Arc::new(Inner {
                db,
                config,
                authenticator,
                orchestrator: Arc::new(Unavailable),
                planner,
                oidc: None,
                sites: None,
                xsrf_key: XsrfKey(key),
                caches: Arc::new(Caches::default()),
                services,
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            db: arc.db.clone(),
            config: arc.config.clone(),
            authenticator: arc.authenticator.clone(),
            orchestrator: arc.orchestrator.clone(),
            planner: arc.planner.clone(),
            oidc: arc.oidc.clone(),
            sites: arc.sites.clone(),
            xsrf_key: XsrfKey(arc.xsrf_key.0.clone()),
            caches: Arc::clone(&arc.caches),
            services: Arc::clone(&arc.services),
        });
        let mut inner = inner;
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Use another authenticator.
    #[must_use]
    pub fn with_authenticator(self, a: Arc<dyn Authenticator>) -> Self {
        self.rebuild(|i| i.authenticator = a)
    }

    /// Use a spawn orchestrator.
    #[must_use]
    pub fn with_orchestrator(self, o: Arc<dyn Orchestrator>) -> Self {
        self.rebuild(|i| i.orchestrator = o)
    }

    /// Log in with OpenID Connect (also becomes the authenticator).
    #[must_use]
    pub fn with_oidc(self, oidc: Arc<OidcAuth>) -> Self {
        self.rebuild(|i| {
            i.authenticator = oidc.clone();
            i.oidc = Some(oidc);
        })
    }

    /// Use a site registry (remote kernels at the bridges).
    #[must_use]
    pub fn with_sites(self, sites: Arc<crate::sites::SiteRegistry>) -> Self {
        self.rebuild(|i| {
            i.planner = Planner::new(i.db.clone(), &i.config, Some(Arc::clone(&sites)));
            i.sites = Some(sites);
        })
    }

    /// The site registry, when configured.
    pub fn sites(&self) -> Option<&Arc<crate::sites::SiteRegistry>> {
        self.inner.sites.as_ref()
    }

    /// The OpenID Connect login, when configured.
    pub(crate) fn oidc(&self) -> Option<Arc<OidcAuth>> {
        self.inner.oidc.clone()
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &dyn Authenticator {
        self.inner.authenticator.as_ref()
    }

    /// The spawn orchestrator.
    pub fn orchestrator(&self) -> &dyn Orchestrator {
        self.inner.orchestrator.as_ref()
    }

    /// Plans every start (the picker, query spawns and the REST API).
    pub fn planner(&self) -> &Planner {
        &self.inner.planner
    }

    /// The configured services.
    pub fn services(&self) -> &Arc<crate::services::Services> {
        &self.inner.services
    }

    /// The caches of API reads (valid for the database's current generation).
    pub(crate) fn caches(&self) -> &Caches {
        &self.inner.caches
    }

    pub(crate) fn xsrf_key(&self) -> &[u8] {
        &self.inner.xsrf_key.0
    }
}
