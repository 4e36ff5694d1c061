//! Logging users in: the [`Authenticator`] seam and the pipeline the hub owns around it.
//!
//! An authenticator only turns a login form into an [`AuthOutcome`]. The hub then normalizes
//! and validates the name, applies `allowed_users` / `admin_users`, creates or updates the
//! user, their groups and roles (one transaction), and opens a login session.
//!
//! # Layout
//! - `oidc`: the OpenID Connect login (its own routes; the hub pipeline below is shared).
//! - `extract`: [`ApiCaller`] (API auth: token or cookie + `_xsrf`) and [`CurrentUser`] (pages:
//!   redirect to `/hub/login?next=`), the cookies and the `_xsrf` token.

mod caller;
pub(crate) mod oidc;

pub use self::caller::{ApiCaller, CallerKind};
pub use self::oidc::OidcAuth;
pub use self::oidc::config::OidcConfig;

use std::collections::HashMap;
use std::fmt::Debug;

use sqlx::AnyConnection;

use crate::config::{AuthConfig, Config, Secret};
use crate::db::{self, UserRow};
use crate::names::UserName;
use crate::scopes::{Owner, ScopeSet, builtin_role};

/// What a login form submitted (secrets redacted in `Debug`).
#[derive(Clone)]
pub struct LoginForm {
    /// User name as typed.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Every other field.
    pub extra: HashMap<String, String>,
}

impl Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

/// Who logged in, as the authenticator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthOutcome {
    /// User name (normalized by the hub afterwards).
    pub name: String,
    /// Admin flag; `None` = leave as configured/stored.
    pub admin: Option<bool>,
    /// Group names; `None` = do not manage groups.
    pub groups: Option<Vec<String>>,
    /// Role names; `None` = do not manage roles.
    pub roles: Option<Vec<String>>,
}

/// Turns a login into a user (JupyterHub's `Authenticator.authenticate`).
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + Debug + 'static {
    /// Short name for `/hub/api/info`.
    fn kind(&self) -> &'static str;

    /// Check the form; `None` = rejected.
    async fn authenticate(&self, form: &LoginForm) -> Option<AuthOutcome>;
}

/// The development authenticator: any user name with the shared password from the config.
/// FOR LOCAL USE ONLY: everyone who knows the password can be anyone.
#[derive(Debug, Clone)]
pub struct DevAuthenticator {
    password: Option<Secret>,
}

impl DevAuthenticator {
    /// From the `[auth]` config; without `dev_password` nobody can log in.
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            password: config.dev_password.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for DevAuthenticator {
    fn kind(&self) -> &'static str {
        "dev"
    }

    async fn authenticate(&self, form: &LoginForm) -> Option<AuthOutcome> {
        let expected = self.password.as_ref()?;
        let ok = constant_time_eq(
            expected.expose().as_bytes(),
            form.password.expose().as_bytes(),
        );
        (ok && !expected.expose().is_empty()).then(|| AuthOutcome {
            name: form.username.clone(),
            ..AuthOutcome::default()
        })
    }
}

/// Compare without an early exit (length still leaks, which is fine for a dev password).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A login failed or is not allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoginError {
    /// Wrong credentials, invalid name, or not in `allowed_users`.
    #[error("Invalid username or password")]
    Rejected,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Run the login pipeline; the logged-in user.
///
/// # Errors
/// [`LoginError::Rejected`] for any refusal, [`LoginError::Db`] if the database fails.
pub(crate) async fn login(
    authenticator: &dyn Authenticator,
    db: &crate::db::Db,
    config: &Config,
    form: &LoginForm,
) -> Result<UserRow, LoginError> {
    let outcome = authenticator
        .authenticate(form)
        .await
        .ok_or(LoginError::Rejected)?;
    let mut tx = db.begin().await?;
    let user = apply_outcome(config, &mut tx, &outcome, &[], &[]).await?;
    tx.commit().await?;
    Ok(user)
}

/// The hub's part of every login, inside the caller's transaction: normalize and check the
/// name, create or update the user, admin flag, groups and roles, and store the quota that the
/// identity provider's roles and groups (`idp_roles`, `idp_groups`) plus the hub's own grant.
///
/// # Errors
/// [`LoginError::Rejected`] for an invalid or not allowed name, [`LoginError::Db`].
pub(crate) async fn apply_outcome(
    config: &Config,
    tx: &mut AnyConnection,
    outcome: &AuthOutcome,
    idp_roles: &[String],
    idp_groups: &[String],
) -> Result<UserRow, LoginError> {
    let name = UserName::normalized(&outcome.name).map_err(|_| LoginError::Rejected)?;
    let auth = &config.auth;
    if !auth.allowed_users.is_empty()
        && !auth.allowed_users.iter().any(|u| u == name.as_str())
        && !auth.admin_users.iter().any(|u| u == name.as_str())
    {
        return Err(LoginError::Rejected);
    }
    let configured_admin = auth.admin_users.iter().any(|u| u == name.as_str());
    let now = db::now_micros();
    let user = match db::users::get(&mut *tx, name.as_str()).await? {
        Some(u) => u,
        None => db::users::create(&mut *tx, name.as_str(), configured_admin, now)
            .await?
            .ok_or(LoginError::Rejected)?,
    };
    let admin = outcome.admin.unwrap_or(user.admin) || configured_admin;
    if admin != user.admin {
        db::users::set_admin(&mut *tx, user.id, admin).await?;
    }
    if let Some(groups) = &outcome.groups {
        db::groups::set_user_groups(&mut *tx, user.id, groups).await?;
    }
    if let Some(roles) = &outcome.roles {
        db::users::set_roles(&mut *tx, user.id, roles).await?;
    }
    db::users::bump_activity(&mut *tx, user.id, now).await?;
    let user = db::users::get_by_id(&mut *tx, user.id)
        .await?
        .ok_or(LoginError::Rejected)?;
    let mut roles = user_roles(config, &user);
    roles.extend(idp_roles.iter().cloned());
    let mut groups = user.groups.clone();
    groups.extend(idp_groups.iter().cloned());
    let quota = crate::quota::resolve(&config.quotas, &roles, &groups);
    crate::quota::store(&mut *tx, user.id, quota.as_ref(), now).await?;
    Ok(user)
}

/// The scopes of a role: configured (a configured `user`, `server` or `token` role replaces the
/// built-in one) or built in; defined custom scopes bring their subscopes.
pub(crate) fn role_scopes(config: &Config, role: &str) -> Vec<String> {
    let mut scopes: Vec<String> = if config.roles.iter().any(|r| r.name == role) {
        config
            .roles
            .iter()
            .filter(|r| r.name == role)
            .flat_map(|r| r.scopes.iter().cloned())
            .collect()
    } else {
        builtin_role(role).unwrap_or_default()
    };
    let mut i = 0;
    while i < scopes.len() {
        let (name, filter) = match scopes[i].split_once('!') {
            Some((n, f)) => (n.to_owned(), Some(f.to_owned())),
            None => (scopes[i].clone(), None),
        };
        if let Some(custom) = config.custom_scopes.get(&name) {
            for sub in &custom.subscopes {
                let sub = match &filter {
                    Some(f) => format!("{sub}!{f}"),
                    None => sub.clone(),
                };
                if !scopes.contains(&sub) {
                    scopes.push(sub);
                }
            }
        }
        i += 1;
    }
    scopes
}

/// Whether `role` names a role (built in or configured).
pub(crate) fn is_role(config: &Config, role: &str) -> bool {
    builtin_role(role).is_some() || config.roles.iter().any(|r| r.name == role)
}

/// The configured roles service `name` holds.
pub(crate) fn service_roles(config: &Config, name: &str) -> Vec<String> {
    config
        .roles
        .iter()
        .filter(|r| r.services.iter().any(|s| s == name))
        .map(|r| r.name.clone())
        .collect()
}

/// All roles a user holds now: `user`, `admin` if admin, assigned ones, group ones, and
/// configured ones naming the user or one of their groups. `user` comes with its details
/// loaded ([`db::users::load_details`]), so this reads no database.
pub(crate) fn user_roles(config: &Config, user: &UserRow) -> Vec<String> {
    roles_of(&config.roles, user)
}

/// [`user_roles`] with the configured roles given directly.
pub(crate) fn roles_of(configured: &[crate::config::RoleConfig], user: &UserRow) -> Vec<String> {
    let mut roles = vec!["user".to_owned()];
    if user.admin {
        roles.push("admin".to_owned());
    }
    roles.extend(user.roles.iter().cloned());
    roles.extend(user.group_roles.iter().cloned());
    for r in configured {
        if r.users.contains(&user.name) || r.groups.iter().any(|g| user.groups.contains(g)) {
            roles.push(r.name.clone());
        }
    }
    roles.sort();
    roles.dedup();
    roles
}

/// A user's current scopes (the owner side of every token check): their roles' scopes and
/// what shares grant them (loaded with the user, each limited to one server).
pub(crate) fn user_scopes(config: &Config, user: &UserRow) -> ScopeSet {
    let scopes: Vec<String> = user_roles(config, user)
        .iter()
        .flat_map(|r| role_scopes(config, r))
        .chain(user.shared_scopes.iter().cloned())
        .collect();
    ScopeSet::expand(&scopes, Owner::User(&user.name))
}
