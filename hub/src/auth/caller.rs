//! Who is calling: [`ApiCaller`] (a token's or a session's holder, with the scopes it may use).
//! The extractors that build it from a request are in `crate::extract`.

use std::sync::Arc;

use crate::db::UserRow;
use crate::error::ApiError;
use crate::scopes::{Resource, ScopeSet};

/// Who is calling the API.
#[derive(Debug, Clone)]
pub enum CallerKind {
    /// A user (with groups loaded).
    User(UserRow),
    /// A service.
    Service {
        /// Its name.
        name: String,
    },
}

/// An authenticated API caller and what it may do.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    /// The token's or session's owner.
    pub kind: CallerKind,
    pub(crate) token_scopes: Arc<ScopeSet>,
    pub(crate) owner_scopes: Arc<ScopeSet>,
    /// The database generation this caller was read at (answers cached from it must not be
    /// newer).
    pub(crate) generation: u64,
    /// The token's id, when authenticated by token.
    pub token_id: Option<i64>,
    /// The browser session id bound to the token or cookie.
    pub session_id: Option<String>,
    /// Authenticated by cookie (POST bodies must then be JSON).
    pub by_cookie: bool,
}

impl ApiCaller {
    /// The caller's user name, if a user.
    pub fn user_name(&self) -> Option<&str> {
        match &self.kind {
            CallerKind::User(u) => Some(&u.name),
            CallerKind::Service { .. } => None,
        }
    }

    /// Holds `name` for at least some resource (token and owner both).
    pub fn holds(&self, name: &str) -> bool {
        self.token_scopes.holds(name) && self.owner_scopes.holds(name)
    }

    /// May use `name` on `res` (token and owner both).
    pub fn allows(&self, name: &str, res: Resource<'_>) -> bool {
        self.token_scopes.allows(name, res) && self.owner_scopes.allows(name, res)
    }

    /// Require any of `scopes` on `res`: 403 if none is held at all, 404 if the held ones are
    /// filtered away from `res`.
    ///
    /// # Errors
    /// The 403 or 404 [`ApiError`].
    pub fn require(&self, scopes: &[&str], res: Resource<'_>) -> Result<(), ApiError> {
        if !scopes.iter().any(|s| self.holds(s)) {
            return Err(ApiError::requires_any_of(scopes));
        }
        if scopes.iter().any(|s| self.allows(s, res)) {
            Ok(())
        } else {
            Err(ApiError::no_access())
        }
    }

    /// The effective scopes (token ∩ owner).
    pub fn effective(&self) -> ScopeSet {
        self.token_scopes.intersect(&self.owner_scopes)
    }

    /// The filters limiting `name` on the token or the owner side (`None` = unfiltered on
    /// both), used to narrow list queries.
    pub fn filters_for(
        &self,
        name: &str,
    ) -> (
        Option<Vec<crate::scopes::Filter>>,
        Option<Vec<crate::scopes::Filter>>,
    ) {
        (
            self.token_scopes.filters_for(name),
            self.owner_scopes.filters_for(name),
        )
    }
}
