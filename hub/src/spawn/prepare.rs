//! What the hub adds to every spawn besides JupyterHub's environment: the chosen profile
//! (checked against the profiles again, its `spawner_override` applied: environment, CPU and
//! memory within the quota, image / cmd / args for the spawner, `STACKHUB_PROFILE*`), the
//! user's quota (as `SpawnRequest::quota` and `CPU_LIMIT` / `MEM_LIMIT` / `STACKHUB_QUOTA*`,
//! with `max_servers` for the pipeline to enforce in its transaction) and, for OpenID Connect users, a freshly refreshed access token
//! (`STACKHUB_ACCESS_TOKEN`, `STACKHUB_ACCESS_TOKEN_EXPIRES_AT`) the server can hand to remote
//! kernel gateways, with `STACKHUB_ACCESS_TOKEN_URL` (`GET …/users/{name}/oidc-token`, with the
//! server's own API token) to fetch a fresh one later.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use serde_json::Value;

use super::ServerRef;
use crate::auth::OidcAuth;
use crate::config::RoleConfig;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::profiles::{Identity, Profile, ProfileKind};
use crate::quota::UserQuota;
use crate::sites::{RemoteServer, SiteRegistry, remote_server_env};

/// Extra environment and limits for one spawn.
#[derive(Default)]
pub struct Prepared {
    /// Added to the server's environment (may hold tokens: never log values).
    pub env: BTreeMap<String, String>,
    /// Limits for the spawner.
    pub quota: spawner::Quota,
    /// The profile's image / cmd / args.
    pub overrides: spawner::Overrides,
    /// Servers the owner may run at once, with the quota role saying so.
    pub max_servers: Option<(u32, String)>,
}

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("quota", &self.quota)
            .field("overrides", &self.overrides)
            .field("max_servers", &self.max_servers)
            .finish()
    }
}

/// Called by the spawn pipeline before each start.
#[async_trait::async_trait]
pub trait PrepareSpawn: Send + Sync + Debug + 'static {
    /// The extra environment and the quota of `server`'s owner, for a start with
    /// `user_options`.
    ///
    /// # Errors
    /// An [`ApiError`] refusing the start (options not allowed, a profile that cannot start).
    async fn prepare(&self, server: &ServerRef, user_options: &Value)
    -> Result<Prepared, ApiError>;

    /// Extra proxy route data for `owner`'s server started with `user_options` (checked
    /// when it started): a remote-kernels server's `kernel_gateway` (see
    /// [`proxy::KERNEL_GATEWAY_KEY`]), so its kernel WebSockets go straight to the site.
    fn route_data(
        &self,
        _owner: &RouteOwner<'_>,
        _user_options: &Value,
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
    profiles: Vec<Profile>,
    roles: Vec<RoleConfig>,
    sites: Option<Arc<SiteRegistry>>,
    /// `JUPYTER_CONFIG_PATH` of remote-kernels servers.
    remote_config_dir: String,
}

impl HubPrepare {
    /// Over the hub's database, with the OIDC login if configured; `hub_api_url` is the API as
    /// servers reach it (`http://127.0.0.1:8081/hub/api`).
    pub fn new(db: Db, oidc: Option<Arc<OidcAuth>>, hub_api_url: String) -> Self {
        Self {
            db,
            oidc,
            hub_api_url,
            profiles: Vec::new(),
            roles: Vec::new(),
            sites: None,
            remote_config_dir: String::new(),
        }
    }

    /// Start remote-kernels profiles at `sites`; their servers read the config in
    /// `remote_config_dir` ([`crate::sites::write_remote_server_config`]).
    #[must_use]
    pub fn with_sites(mut self, sites: Arc<SiteRegistry>, remote_config_dir: String) -> Self {
        self.sites = Some(sites);
        self.remote_config_dir = remote_config_dir;
        self
    }

    /// Check and apply the config's profiles (`profile_list`, and `roles` for who may use
    /// them).
    #[must_use]
    pub fn with_profiles(mut self, config: &crate::Config) -> Self {
        self.profiles.clone_from(&config.profile_list);
        self.roles.clone_from(&config.roles);
        self
    }

    /// The profile's part: checked options, overrides applied to `out`.
    async fn apply_profile(
        &self,
        conn: &mut sqlx::AnyConnection,
        server: &ServerRef,
        user_options: &Value,
        quota: Option<&UserQuota>,
        out: &mut Prepared,
    ) -> Result<(), ApiError> {
        if self.profiles.is_empty() {
            return Ok(());
        }
        let user = db::users::get_by_id(conn, server.user_id)
            .await?
            .ok_or_else(ApiError::no_access)?;
        let id = Identity::with_roles(&self.roles, &user);
        let resolved = crate::profiles::resolve(&self.profiles, &id, user_options)?;
        crate::profiles::startable(&resolved, self.sites.as_deref()).await?;
        let Some(profile) = resolved.profile else {
            return Ok(());
        };
        if profile.kind == ProfileKind::RemoteKernels {
            self.remote(&user.name, &profile, quota, out).await?;
        }
        let o = resolved.overrides;
        out.env.extend(o.environment.clone());
        out.env
            .insert("STACKHUB_PROFILE".to_owned(), profile.slug.clone());
        let mut cpu = quota.map(|q| q.cpus);
        if let Some(c) = o.cpu_limit {
            cpu = Some(cpu.map_or(c, |q| q.min(c)));
        }
        let mut mem = quota.map(|q| q.memory_bytes);
        if let Some(m) = o.mem_limit.as_deref() {
            let bytes = crate::quota::parse_memory(m).ok_or_else(|| {
                ApiError::BadRequest(format!("'{m}' is not a memory quantity such as 2Gi"))
            })?;
            mem = Some(mem.map_or(bytes, |q| q.min(bytes)));
        }
        if let Some(c) = cpu {
            out.quota.cpu = Some(c);
            out.env.insert("CPU_LIMIT".to_owned(), format!("{c}"));
        }
        if let Some(m) = mem {
            out.quota.memory_bytes = Some(m);
            out.env.insert("MEM_LIMIT".to_owned(), m.to_string());
        }
        out.overrides = spawner::Overrides {
            image: o.image,
            cmd: o.cmd,
            args: o.args,
            no_home: profile.kind == ProfileKind::RemoteKernels,
        };
        Ok(())
    }

    /// A remote-kernels server at the profile's site: the user's S3 space there is provisioned
    /// with credentials confined to it, and the hub's gateway token is issued.
    async fn remote(
        &self,
        user: &str,
        profile: &Profile,
        quota: Option<&UserQuota>,
        out: &mut Prepared,
    ) -> Result<(), ApiError> {
        let site_id = profile.site.as_deref().unwrap_or_default();
        let unavailable = |e: crate::sites::SiteUnavailable| {
            ApiError::BadRequest(format!(
                "'{}' cannot start now: site '{}' is unavailable: {}",
                profile.display_name, e.site, e.reason
            ))
        };
        let registry = self.sites.as_ref().ok_or_else(|| {
            ApiError::BadRequest("no sites are configured on this hub".to_owned())
        })?;
        let site = registry
            .site_available(site_id)
            .await
            .map_err(unavailable)?;
        let grant = site.provision(user).await.map_err(unavailable)?;
        let roles: Vec<String> = quota.map(|q| q.role.clone()).into_iter().collect();
        let authorization = site
            .gateway_authorization(user, &roles)
            .map_err(unavailable)?;
        tracing::info!(user, site = %site.id, prefix = %grant.space.prefix, "provisioned a remote-kernels server");
        out.env.extend(remote_server_env(&RemoteServer {
            site: &site,
            grant: &grant,
            authorization,
            hub_api_url: &self.hub_api_url,
            config_dir: &self.remote_config_dir,
        }));
        Ok(())
    }
}

#[async_trait::async_trait]
impl PrepareSpawn for HubPrepare {
    fn route_data(
        &self,
        owner: &RouteOwner<'_>,
        user_options: &Value,
    ) -> serde_json::Map<String, Value> {
        let mut data = serde_json::Map::new();
        let slug = user_options.get("profile").and_then(Value::as_str);
        let profile = match slug {
            Some(slug) => self.profiles.iter().find(|p| p.slug == slug),
            None => None,
        };
        if let (Some(p), Some(registry)) = (profile, &self.sites)
            && p.kind == ProfileKind::RemoteKernels
            && let Some(site) = p.site.as_deref().and_then(|id| registry.site(id))
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

    async fn prepare(
        &self,
        server: &ServerRef,
        user_options: &Value,
    ) -> Result<Prepared, ApiError> {
        let mut out = Prepared::default();
        let mut conn = self.db.pool().acquire().await?;
        let quota = crate::quota::of_user(&mut conn, server.user_id).await?;
        if let Some(q) = &quota {
            out.max_servers = q.max_servers.map(|m| (m, q.role.clone()));
            out.env.extend(q.env());
            out.quota = q.spawner_quota();
        }
        self.apply_profile(&mut conn, server, user_options, quota.as_ref(), &mut out)
            .await?;
        drop(conn);
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
                    crate::api::models::seg(&server.user)
                ),
            );
        }
        Ok(out)
    }
}
