//! Planning a start: the one step the picker's form, query spawns and the REST API share.
//!
//! [`Planner::plan`] parses the user's options once, resolves them against the profiles and
//! their access rules, applies the owner's quota and checks the site of a remote-kernels
//! profile, giving a [`Plan`] whose [`LaunchSpec`] the pipeline stores with the server and the
//! spawner reads. [`Planner::start`] adds the checks on the server (pending, running), creates
//! a new named server and hands the plan to the [`Orchestrator`]. Every refusal is a
//! [`Refusal`], with its HTTP status, its form field and a metric label.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use spawner::{LaunchError, LaunchSpec};

use super::{Orchestrator, ServerRef, StartOutcome};
use crate::config::RoleConfig;
use crate::db::{self, Db, ServerRow, UserRow};
use crate::error::ApiError;
use crate::profiles::{self, Identity, OptionsError, Profile, UserOptions};
use crate::quota::UserQuota;
use crate::sites::SiteRegistry;

/// Why a start is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The options name something unknown or invalid (400) or not allowed (403).
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The choice does not fit the owner's quota.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The remote-kernels profile's site cannot take servers now (400).
    #[error(
        "'{profile}' cannot start now: site '{site}' is unavailable: {reason}. Choose another \
         profile or ask an administrator."
    )]
    SiteUnavailable {
        /// The profile's title.
        profile: String,
        /// The site.
        site: String,
        /// Why.
        reason: String,
    },
    /// The server is starting or stopping (400).
    #[error("{0} is pending {1}")]
    Pending(String, String),
    /// The server already runs (400).
    #[error("{0} is already running")]
    Running(String),
    /// Anything else (its own status).
    #[error(transparent)]
    Other(#[from] ApiError),
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(ApiError::from(e))
    }
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Options(OptionsError::Forbidden { .. })
            | Self::Launch(LaunchError::Gpus { .. }) => StatusCode::FORBIDDEN,
            Self::Options(_)
            | Self::Launch(_)
            | Self::SiteUnavailable { .. }
            | Self::Pending(..)
            | Self::Running(_) => StatusCode::BAD_REQUEST,
            Self::Other(e) => e.status(),
        }
    }

    /// The form field the message belongs next to.
    pub fn field(&self) -> &str {
        match self {
            Self::Options(e) => e.field(),
            _ => "profile",
        }
    }

    /// The `reason` label of `stackhub_spawn_refused_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Options(OptionsError::Forbidden { .. }) => "forbidden",
            Self::Options(OptionsError::Invalid { .. }) => "invalid_options",
            Self::Launch(_) => "quota",
            Self::SiteUnavailable { .. } => "site_unavailable",
            Self::Pending(..) => "pending",
            Self::Running(_) => "running",
            Self::Other(e) if e.status() == StatusCode::BAD_REQUEST => "limit",
            Self::Other(_) => "error",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Other(e) => e,
            r if r.status() == StatusCode::FORBIDDEN => Self::Forbidden(r.to_string()),
            r => Self::BadRequest(r.to_string()),
        }
    }
}

/// A start, planned: what the pipeline saves and launches.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The options as the user gave them (saved with the server).
    pub options: Value,
    /// What to launch.
    pub spec: LaunchSpec,
    /// The owner's quota when one applies (its `max_servers` is enforced in the start's
    /// transaction, its role goes into the environment).
    pub quota: Option<UserQuota>,
}

/// What a start request asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The options; `None` = the server's saved ones.
    pub options: Option<Value>,
    /// The display name of a named server created by this start.
    pub display_name: Option<String>,
}

/// Plans starts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Planner {
    inner: Arc<PlannerInner>,
}

#[derive(Debug)]
struct PlannerInner {
    db: Db,
    profiles: Vec<Profile>,
    roles: Vec<RoleConfig>,
    sites: Option<Arc<SiteRegistry>>,
}

impl Planner {
    /// Over the config's profiles and roles, the database (quotas) and the sites, if any.
    pub fn new(db: Db, config: &crate::Config, sites: Option<Arc<SiteRegistry>>) -> Self {
        Self {
            inner: Arc::new(PlannerInner {
                db,
                profiles: config.profile_list.clone(),
                roles: config.roles.clone(),
                sites,
            }),
        }
    }

    /// The profiles offered.
    pub(crate) fn profiles(&self) -> &[Profile] {
        &self.inner.profiles
    }

    /// The identity `owner` has for the profiles' access rules.
    pub(crate) fn identity(&self, owner: &UserRow) -> Identity {
        Identity::with_roles(&self.inner.roles, owner)
    }

    /// Check `options` only (the picker showing a query's choice): the refusal, if any.
    pub(crate) fn check(&self, owner: &UserRow, options: &UserOptions) -> Result<(), Refusal> {
        profiles::resolve(self.profiles(), &self.identity(owner), options)?;
        Ok(())
    }

    /// Plan a start of one of `owner`'s servers with `options` (`null` = defaults).
    ///
    /// # Errors
    /// A [`Refusal`] saying why it cannot start.
    pub async fn plan(&self, owner: &UserRow, options: &Value) -> Result<Plan, Refusal> {
        let parsed = UserOptions::parse(options)?;
        let resolved = profiles::resolve(self.profiles(), &self.identity(owner), &parsed)?;
        let quota = {
            let mut conn = self.inner.db.pool().acquire().await?;
            crate::quota::of_user(&mut conn, owner.id).await?
        };
        let limits = quota
            .as_ref()
            .map(UserQuota::spawner_quota)
            .unwrap_or_default();
        let spec = LaunchSpec::build(
            resolved.profile.as_ref(),
            resolved.choices,
            &resolved.overrides,
            &limits,
        )?;
        if let Some(site) = spec.remote_site() {
            let profile = spec
                .profile
                .as_ref()
                .map(|p| p.display_name.clone())
                .unwrap_or_default();
            let reason = match &self.inner.sites {
                None => Some("no sites are configured on this hub".to_owned()),
                Some(registry) => registry.site_available(site).await.err().map(|e| e.reason),
            };
            if let Some(reason) = reason {
                return Err(Refusal::SiteUnavailable {
                    profile,
                    site: site.to_owned(),
                    reason,
                });
            }
        }
        Ok(Plan {
            options: parsed.to_value(),
            spec,
            quota,
        })
    }

    /// Start `owner`'s server `server` (`""` = default): refused while it is pending or
    /// running; a named server that does not exist yet is created (within the owner's
    /// `max_servers`); then the orchestrator starts it.
    ///
    /// # Errors
    /// A [`Refusal`] saying why it cannot start.
    pub async fn start(
        &self,
        orchestrator: &dyn Orchestrator,
        owner: &UserRow,
        server: &str,
        req: StartRequest,
    ) -> Result<StartOutcome, Refusal> {
        let result = self.try_start(orchestrator, owner, server, req).await;
        if let Err(refusal) = &result {
            tracing::info!(user = %owner.name, server, reason = refusal.metric_label(), "start refused: {refusal}");
            crate::metrics::spawn_refused(refusal.metric_label()).await;
        }
        result
    }

    async fn try_start(
        &self,
        orchestrator: &dyn Orchestrator,
        owner: &UserRow,
        server: &str,
        req: StartRequest,
    ) -> Result<StartOutcome, Refusal> {
        let row = {
            let mut conn = self.inner.db.pool().acquire().await?;
            db::servers::get(&mut conn, owner.id, server).await?
        };
        let label = if server.is_empty() {
            format!("{}'s server", owner.name)
        } else {
            format!("{}'s server {server}", owner.name)
        };
        if let Some(row) = &row {
            if let Some(pending) = &row.pending {
                return Err(Refusal::Pending(label, pending.clone()));
            }
            if row.ready() {
                return Err(Refusal::Running(label));
            }
        }
        let options = req
            .options
            .or_else(|| row.as_ref().map(|r| r.user_options.clone()))
            .unwrap_or(Value::Null);
        let plan = self.plan(owner, &options).await?;
        if row.is_none() && !server.is_empty() {
            self.create(owner, server, req.display_name.as_deref(), &plan.options)
                .await?;
        }
        let sref = ServerRef {
            user_id: owner.id,
            user: owner.name.clone(),
            server: server.to_owned(),
        };
        Ok(orchestrator.start(&sref, plan).await?)
    }

    /// Create a stopped named server within the owner's quota (`max_servers` named servers),
    /// atomically: 409 if it exists, 400 at the limit.
    ///
    /// # Errors
    /// An [`ApiError`] saying why not.
    pub(crate) async fn create(
        &self,
        owner: &UserRow,
        server: &str,
        display_name: Option<&str>,
        options: &Value,
    ) -> Result<ServerRow, ApiError> {
        let mut tx = self.inner.db.begin().await?;
        let quota = crate::quota::of_user(&mut tx, owner.id).await?;
        let limit = quota.as_ref().and_then(|q| q.max_servers);
        // JupyterHub 6.0: an empty display name means the server's name; any other must be a
        // valid display name (parsed once here, for the REST API and the picker alike).
        let display_name = display_name
            .filter(|d| !d.is_empty())
            .map(str::parse::<crate::names::DisplayName>)
            .transpose()?;
        let created = db::servers::create_limited(
            &mut tx,
            owner.id,
            server,
            display_name.as_ref().map(crate::names::DisplayName::as_str),
            options,
            limit,
        )
        .await?;
        match created {
            Ok(row) => {
                tx.commit().await?;
                tracing::info!(user = %owner.name, server = %server, "created server");
                Ok(row)
            }
            Err(db::servers::NotCreated::Exists) => Err(ApiError::Conflict(format!(
                "Server {}/{server} already exists",
                owner.name
            ))),
            Err(db::servers::NotCreated::Limit(n)) => Err(ApiError::BadRequest(format!(
                "User {} already has {n} named servers, the most quota role {} allows",
                owner.name,
                quota.map(|q| q.role).unwrap_or_default()
            ))),
        }
    }
}
