//! The [`Exchange`] seam: provision a user's space at a site and issue credentials confined to it.

use async_trait::async_trait;

use crate::grant::{Grant, Space};
use crate::policy::PolicyError;

/// Provisioning or checking an exchange failed. Messages name what failed and where, never a
/// credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The user name cannot be a prefix component.
    #[error("user name {0:?} cannot name an S3 prefix (empty, `/` or control characters)")]
    BadUser(String),
    /// The store did not answer.
    #[error("S3 endpoint {endpoint} is not reachable: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The store answered with an error.
    #[error("S3 {operation} at {endpoint} failed: {reason}")]
    Store {
        /// The operation (`CreateBucket`, `AssumeRole`, ...).
        operation: &'static str,
        /// The endpoint.
        endpoint: String,
        /// The store's error code and message.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("S3 exchange configuration: {0}")]
    Config(String),
    /// A name cannot be written into the store's IAM policy as itself (`*`, `?`, `$`).
    #[error("S3 exchange: {0}")]
    Policy(#[from] PolicyError),
}

/// A site's S3 exchange.
#[async_trait]
pub trait Exchange: Send + Sync + std::fmt::Debug {
    /// Where `user`'s data lives (no network).
    ///
    /// # Errors
    /// [`ExchangeError::BadUser`].
    fn space(&self, user: &str) -> Result<Space, ExchangeError>;

    /// Make sure `user`'s space exists and issue credentials confined to it.
    ///
    /// # Errors
    /// The store is unreachable, refuses, or the user name is unusable.
    async fn provision(&self, user: &str) -> Result<Grant, ExchangeError>;

    /// Is the store reachable (and the hub's own credentials accepted, where it has some)?
    ///
    /// # Errors
    /// What is wrong, for the site's health report.
    async fn check(&self) -> Result<(), ExchangeError>;
}

/// `users/NAME/`, or [`ExchangeError::BadUser`].
///
/// # Errors
/// The name is empty, `.`/`..`, or contains `/` or control characters.
pub fn user_prefix(user: &str) -> Result<String, ExchangeError> {
    if user.is_empty()
        || user == "."
        || user == ".."
        || user.contains('/')
        || user.chars().any(char::is_control)
    {
        return Err(ExchangeError::BadUser(user.to_owned()));
    }
    Ok(format!("users/{user}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(user_prefix("alice").unwrap(), "users/alice/");
        for bad in ["", "..", "a/b", "a\nb"] {
            assert!(user_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
