//! What the hub adds to every spawn's environment besides JupyterHub's, from the [`Plan`]:
//! the profile (`STACKHUB_PROFILE`), the limits of the launch and the owner's quota
//! (`CPU_LIMIT` / `MEM_LIMIT` / `STACKHUB_QUOTA*`), a remote-kernels server's site (its S3
//! space provisioned, the gateway token issued), a full JupyterLab's S3 space (where it is and
//! where to fetch credentials for it: `crate::sites::lab_s3_env`), the Dask Gateway client's
//! settings for that site (`crate::sites::dask::server_env`) and, for OpenID Connect users, a freshly
//! refreshed access token
//! (`STACKHUB_ACCESS_TOKEN`, `STACKHUB_ACCESS_TOKEN_EXPIRES_AT`) the server can hand to remote
//! kernel gateways, with `STACKHUB_ACCESS_TOKEN_URL` (`GET …/users/{name}/oidc-token`, with the
//! server's own API token) to fetch a fresh one later.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use serde_json::Value;
use spawner::LaunchSpec;

use super::{Plan, ServerRef};
use crate::auth::OidcAuth;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::sites::{RemoteServer, SiteRegistry, lab_s3_env, remote_server_env, s3_site_of};

/// Extra environment for one spawn.
#[derive(Default)]
pub struct Prepared {
    /// Added to the server's environment (may hold tokens: never log values).
    pub env: BTreeMap<String, String>,
}

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Called by the spawn pipeline before each start.
#[async_trait::async_trait]
pub trait PrepareSpawn: Send + Sync + Debug + 'static {
    /// The extra environment of `server` for a start as `plan` says.
    ///
    /// # Errors
    /// An [`ApiError`] refusing the start (a site that cannot take it after all).
    async fn prepare(&self, server: &ServerRef, plan: &Plan) -> Result<Prepared, ApiError>;

    /// Extra proxy route data for `owner`'s server launched as `launch`: a remote-kernels
    /// server's `kernel_gateway` (see [`proxy::KERNEL_GATEWAY_KEY`]), so its kernel WebSockets
    /// go straight to the site.
    fn route_data(
        &self,
        _owner: &RouteOwner<'_>,
        _launch: &LaunchSpec,
    ) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
}

/// The server a proxy route belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RouteOwner<'a> {
    /// The user's name.
    pub user: &'a str,
    /// The server's name, empty for the default server.
    pub server: &'a str,
    /// The server's OAuth client id, which is also the name of its login cookie.
    pub oauth_client_id: &'a str,
}

/// The hub's [`PrepareSpawn`]: stored quota, and the identity provider's token when configured.
#[derive(Debug, Clone)]
pub struct HubPrepare {
    db: Db,
    oidc: Option<Arc<OidcAuth>>,
    hub_api_url: String,
    sites: Option<Arc<SiteRegistry>>,
    /// `JUPYTER_CONFIG_PATH` of every server (empty: not set).
    server_config_dir: String,
}

impl HubPrepare {
    /// Over the hub's database, with the OIDC login if configured; `hub_api_url` is the API as
    /// servers reach it (`http://127.0.0.1:8081/hub/api`).
    pub fn new(db: Db, oidc: Option<Arc<OidcAuth>>, hub_api_url: String) -> Self {
        Self {
            db,
            oidc,
            hub_api_url,
            sites: None,
            server_config_dir: String::new(),
        }
    }

    /// Start remote-kernels profiles at `sites`.
    #[must_use]
    pub fn with_sites(mut self, sites: Arc<SiteRegistry>) -> Self {
        self.sites = Some(sites);
        self
    }

    /// Servers read the hub's jupyter_server configuration in `dir`
    /// ([`super::write_server_config`]) as the server sees it.
    #[must_use]
    pub fn with_server_config_dir(mut self, dir: String) -> Self {
        self.server_config_dir = dir;
        self
    }

    /// The launch's part: the profile, the limits as the spawner applies them, the quota.
    fn launch_env(plan: &Plan, out: &mut Prepared) {
        if let Some(q) = &plan.quota {
            out.env.extend(q.env());
        }
        let spec = &plan.spec;
        if let Some(slug) = spec.profile_slug() {
            out.env
                .insert("STACKHUB_PROFILE".to_owned(), slug.to_owned());
        }
        if let Some(c) = spec.resources.cpu_limit {
            out.env.insert("CPU_LIMIT".to_owned(), format!("{c}"));
        }
        if let Some(m) = spec.resources.memory_limit {
            out.env.insert("MEM_LIMIT".to_owned(), m.to_string());
        }
    }

    /// A remote-kernels server at the profile's site: the user's S3 space there is provisioned
    /// with credentials confined to it, and the hub's gateway token is issued.
    async fn remote(
        &self,
        user: &str,
        site_id: &str,
        plan: &Plan,
        out: &mut Prepared,
    ) -> Result<(), ApiError> {
        let unavailable = |e: crate::sites::SiteUnavailable| {
            ApiError::BadRequest(format!(
                "cannot start now: site '{}' is unavailable: {}",
                e.site, e.reason
            ))
        };
        // The planner checked the site's health; the handle is looked up, not checked again.
        let site = self
            .sites
            .as_ref()
            .and_then(|registry| registry.site(site_id))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("site '{site_id}' is not configured on this hub"))
            })?;
        let grant = site.provision(user).await.map_err(unavailable)?;
        let roles: Vec<String> = plan.quota.iter().map(|q| q.role.clone()).collect();
        let authorization = site
            .gateway_authorization(user, &roles)
            .map_err(unavailable)?;
        tracing::info!(user, site = %site.id, prefix = %grant.space.prefix, "provisioned a remote-kernels server");
        out.env.extend(remote_server_env(&RemoteServer {
            site,
            grant: &grant,
            authorization,
            hub_api_url: &self.hub_api_url,
        }));
        Ok(())
    }

    /// The stock Dask Gateway client's settings for the profile's site (a remote-kernels
    /// profile's site; a full Lab's S3 site, Central by default), when that site has Dask.
    fn dask(&self, plan: &Plan, out: &mut Prepared) {
        let (Some(profile), Some(registry)) = (&plan.spec.profile, &self.sites) else {
            return;
        };
        let Some(site) = s3_site_of(profile.kind, profile.site.as_deref(), registry)
            .and_then(|id| registry.site(id))
        else {
            return;
        };
        if let Some(dask) = site.dask() {
            out.env
                .extend(crate::sites::dask::server_env(&site.id, dask));
        }
    }

    /// A full JupyterLab: the user's S3 space at the profile's S3 site (see
    /// [`s3_site_of`]), without credentials (the server fetches them from the hub). A site
    /// without S3 or not configured leaves the Lab without its S3 browser, never unstartable.
    fn lab_s3(&self, user: &str, plan: &Plan, out: &mut Prepared) {
        let (Some(profile), Some(registry)) = (&plan.spec.profile, &self.sites) else {
            return;
        };
        if profile.kind != spawner::profile::ProfileKind::Lab {
            return;
        }
        let Some(id) = s3_site_of(profile.kind, profile.site.as_deref(), registry) else {
            return;
        };
        let Some(site) = registry.site(id) else {
            tracing::warn!(user, site = id, profile = %profile.slug, "the profile's S3 site is not configured: no S3 space in the Lab");
            return;
        };
        match site.exchange().map(|x| x.space(user)) {
            Some(Ok(space)) => out.env.extend(lab_s3_env(site, &space, &self.hub_api_url)),
            Some(Err(e)) => {
                tracing::warn!(user, site = id, error = %e, "no S3 space in the Lab");
            }
            None => {
                tracing::warn!(
                    user,
                    site = id,
                    "the profile's S3 site has no S3 store: no S3 space in the Lab"
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl PrepareSpawn for HubPrepare {
    fn route_data(
        &self,
        owner: &RouteOwner<'_>,
        launch: &LaunchSpec,
    ) -> serde_json::Map<String, Value> {
        let mut data = serde_json::Map::new();
        if let (Some(id), Some(registry)) = (launch.remote_site(), &self.sites)
            && let Some(site) = registry.site(id)
        {
            data.insert(
                proxy::KERNEL_GATEWAY_KEY.to_owned(),
                serde_json::json!({
                    "url": site.gateway_url.trim_end_matches('/'),
                    "site": site.id,
                    "user": owner.user,
                    "server": owner.server,
                    "cookie": owner.oauth_client_id,
                }),
            );
        }
        data
    }

    async fn prepare(&self, server: &ServerRef, plan: &Plan) -> Result<Prepared, ApiError> {
        let mut out = Prepared::default();
        Self::launch_env(plan, &mut out);
        if !self.server_config_dir.is_empty() {
            out.env.insert(
                "JUPYTER_CONFIG_PATH".to_owned(),
                self.server_config_dir.clone(),
            );
        }
        if let Some(site) = plan.spec.remote_site() {
            self.remote(&server.user, site, plan, &mut out).await?;
        } else {
            self.lab_s3(&server.user, plan, &mut out);
        }
        self.dask(plan, &mut out);
        if let Some(oidc) = &self.oidc
            && let Some(tokens) = oidc.fresh_tokens(&self.db, server.user_id).await?
        {
            out.env
                .insert("STACKHUB_ACCESS_TOKEN".to_owned(), tokens.access.clone());
            if let Some(t) = tokens.expires_at {
                out.env
                    .insert("STACKHUB_ACCESS_TOKEN_EXPIRES_AT".to_owned(), db::iso(t));
            }
            out.env.insert(
                "STACKHUB_ACCESS_TOKEN_URL".to_owned(),
                format!(
                    "{}/users/{}/oidc-token",
                    self.hub_api_url.trim_end_matches('/'),
                    crate::names::seg(&server.user)
                ),
            );
        }
        Ok(out)
    }
}
