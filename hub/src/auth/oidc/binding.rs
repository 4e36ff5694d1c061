//! Users bound to their identity-provider account. The issuer and `sub` of the account that
//! created a user (or first logged in as a user created otherwise) are stored with the user and
//! compared at every login, so a different account whose name normalizes to the same hub user
//! (`a@x.org`, `a+x.org` and `a-x.org` all become `a-x.org`) is refused instead of logging in as
//! that user. Users from before the binding are bound at their next login, unless the `sub`
//! their auth state recorded says the account is another one.

use serde_json::Value;
use sqlx::AnyConnection;

use super::config::OidcConfig;
use crate::db;

/// An identity-provider account: who issued it and its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    /// The provider's issuer (the verified `iss` claim).
    pub issuer: String,
    /// The account's `sub` at that provider.
    pub subject: String,
}

/// Why an account may not log in as a user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindingError {
    /// The claims hold no subject.
    #[error("the identity provider sent no `sub` claim")]
    NoSubject,
    /// The user exists and belongs to another account. Names nothing of that account.
    #[error(
        "The user name {name} is already taken by another account. Sign in with the account \
         that owns it, or ask an administrator."
    )]
    Taken {
        /// The hub user name.
        name: String,
    },
    /// This account is bound to another hub user (its name at the provider changed).
    #[error(
        "Your account at the identity provider belongs to the hub user {bound}, not {name}. \
         Ask an administrator to rename that user."
    )]
    Elsewhere {
        /// The name the claims gave.
        name: String,
        /// The user the account is bound to.
        bound: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The account verified claims come from: `iss` (already checked against the configured
/// issuer), else the configured issuer; and `sub`.
///
/// # Errors
/// [`BindingError::NoSubject`] without a non-empty `sub`.
pub(crate) fn account(config: &OidcConfig, claims: &Value) -> Result<Account, BindingError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(BindingError::NoSubject)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or(&config.issuer);
    Ok(Account {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    })
}

/// Whether `account` may log in as the user `name` (which may not exist yet). Run in the login's
/// transaction before the user is created or updated.
///
/// # Errors
/// [`BindingError::Taken`], [`BindingError::Elsewhere`], [`BindingError::Db`].
pub(crate) async fn check(
    conn: &mut AnyConnection,
    name: &str,
    account: &Account,
) -> Result<(), BindingError> {
    if let Some(bound) = db::users::bound_to(conn, &account.issuer, &account.subject).await?
        && bound != name
    {
        return Err(BindingError::Elsewhere {
            name: name.to_owned(),
            bound,
        });
    }
    let Some(user) = db::users::get(conn, name).await? else {
        return Ok(());
    };
    let same = match db::users::idp_account(conn, user.id).await? {
        Some((issuer, subject)) => issuer == account.issuer && subject == account.subject,
        // Not bound yet: a user created by an admin, or by a login before the binding existed,
        // whose auth state may still name the account that logged in.
        None => recorded_subject(user.auth_state.as_deref())
            .is_none_or(|subject| subject == account.subject),
    };
    if same {
        Ok(())
    } else {
        Err(BindingError::Taken {
            name: name.to_owned(),
        })
    }
}

/// Bind user `user_id` to `account` if it is not bound yet (after [`check`] passed).
///
/// # Errors
/// The database failed.
pub(crate) async fn bind(
    conn: &mut AnyConnection,
    user_id: i64,
    account: &Account,
) -> Result<(), sqlx::Error> {
    if db::users::idp_account(conn, user_id).await?.is_none() {
        db::users::bind_idp_account(conn, user_id, &account.issuer, &account.subject).await?;
        tracing::info!(user_id, issuer = %account.issuer, "user bound to their identity-provider account");
    }
    Ok(())
}

/// The `sub` an earlier OpenID Connect login stored in the auth state (`{"oidc":{"sub":…}}`).
fn recorded_subject(auth_state: Option<&str>) -> Option<String> {
    let state: Value = serde_json::from_str(auth_state?).ok()?;
    state.get("oidc")?.get("sub")?.as_str().map(str::to_owned)
}
