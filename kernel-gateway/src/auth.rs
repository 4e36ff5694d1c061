//! Who is calling: the `Caller` extractor.
//!
//! Credentials are `Authorization: token <t>` (or `Bearer <t>`) or `?token=<t>`; an empty token
//! counts as none (jupyter_server's GatewayClient sends `token ` when unconfigured). In order:
//! 1. the shared token maps to `shared_token_user` (roles `shared_token_roles`);
//! 2. a per-user token maps to its user (roles from its `[[users]]` entry);
//! 3. with `[jwt]` (or `jwt_extra_issuers`) configured, anything else is validated as a JWT
//!    bearer ([`crate::jwt`]) by the trusted issuer it names: the user comes from the token's
//!    `username_claim`, and for kernels that issuer's `required_role` must be held (403 naming
//!    the role otherwise; the Dask service decides by its own quota roles instead). Invalid, expired, wrongly signed, wrong- or no-issuer and wrong- or
//!    no-audience tokens get 401 (a token minted for another site names another audience).
//!
//! With nothing configured the server is open: every caller is `shared_token_user`, and a kernel
//! start's `KERNEL_USERNAME` names the kernel's user, as in Enterprise Gateway (see
//! `KernelManager::start`). With authentication `KERNEL_USERNAME` is never used for identity. The
//! caller's quota ([`crate::quota`]) is resolved from its roles here, once per request.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::manager::KernelManager;
use crate::quota::{self, Quota};

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name (owner of the kernels it starts).
    pub user: String,
    /// Roles and groups the caller holds.
    pub roles: Vec<String>,
    /// The quota that applies to the caller's kernels, if any.
    pub quota: Option<Quota>,
}

fn presented_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = value.trim().splitn(2, ' ');
        let scheme = it.next().unwrap_or_default();
        let token = it.next().unwrap_or_default().trim();
        if (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            && !token.is_empty()
        {
            return Some(token.to_owned());
        }
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Constant-time equality of two digests.
fn digest_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the credentials are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Kernels: a JWT caller must hold its issuer's `required_role`.
    Kernels,
    /// Dask clusters: the `[dask]` quota roles decide who may (`crate::dask`).
    Dask,
}

/// A caller named `user` with `roles`, its quota resolved from the config's table.
pub(crate) fn caller(manager: &KernelManager, user: String, roles: Vec<String>) -> Caller {
    let config = &manager.config;
    let quota = quota::resolve(
        &config.quota_roles,
        &roles,
        config.default_quota_role.as_deref(),
    );
    Caller { user, roles, quota }
}

/// Matches `token` against the shared and per-user tokens.
fn static_token(manager: &KernelManager, token: &str) -> Option<Caller> {
    let config = &manager.config;
    let presented = Sha256::digest(token.as_bytes());
    if let Some(shared) = &config.auth_token
        && digest_eq(&presented, &Sha256::digest(shared.expose().as_bytes()))
    {
        return Some(caller(
            manager,
            config.shared_token_user.clone(),
            config.shared_token_roles.clone(),
        ));
    }
    for u in &config.users {
        let expected = match (&u.token_sha256, &u.token) {
            (Some(hex_digest), _) => hex::decode(hex_digest.trim()).unwrap_or_default(),
            (None, Some(t)) => Sha256::digest(t.expose().as_bytes()).to_vec(),
            (None, None) => continue,
        };
        if digest_eq(&presented, &expected) {
            return Some(caller(manager, u.name.clone(), u.roles.clone()));
        }
    }
    None
}

/// Resolves a token to a caller with the manager's config.
///
/// # Errors
/// [`GatewayError::Unauthenticated`] / [`GatewayError::InvalidToken`] (401),
/// [`GatewayError::MissingRole`] (403), [`GatewayError::IdentityProviderUnavailable`] (503).
pub(crate) async fn authenticate(
    manager: &KernelManager,
    token: Option<&str>,
) -> Result<Caller, GatewayError> {
    authenticate_for(manager, token, Purpose::Kernels).await
}

/// [`authenticate`] for `purpose`.
///
/// # Errors
/// As [`authenticate`].
pub(crate) async fn authenticate_for(
    manager: &KernelManager,
    token: Option<&str>,
    purpose: Purpose,
) -> Result<Caller, GatewayError> {
    let config = &manager.config;
    if config.is_open() {
        return Ok(caller(
            manager,
            config.shared_token_user.clone(),
            config.shared_token_roles.clone(),
        ));
    }
    let token = token.ok_or(GatewayError::Unauthenticated)?;
    if let Some(c) = static_token(manager, token) {
        return Ok(c);
    }
    if manager.jwt.is_empty() {
        return Err(GatewayError::Unauthenticated);
    }
    let (identity, required) = manager.jwt.validate(token).await.map_err(|e| match e {
        crate::jwt::JwtError::KeysUnavailable(_) => GatewayError::IdentityProviderUnavailable,
        e => GatewayError::InvalidToken(e),
    })?;
    if purpose == Purpose::Kernels
        && !required.is_empty()
        && !identity.roles.iter().any(|r| r == required)
    {
        return Err(GatewayError::MissingRole {
            user: identity.user,
            role: required.to_owned(),
        });
    }
    Ok(caller(manager, identity.user, identity.roles))
}

impl FromRequestParts<Arc<KernelManager>> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<KernelManager>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, presented_token(parts).as_deref()).await
    }
}
