//! Who may call the gateway: per-user tokens (`[[users]]`) and JWTs from an identity provider
//! (`[jwt]`).

use serde::Deserialize;

use super::{ConfigError, Secret};

/// A user that authenticates with its own token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserToken {
    /// The user's name (what kernels are owned by and limits count against).
    pub name: String,
    /// The token in clear (discouraged; prefer `token_sha256`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// Lowercase hex SHA-256 of the token.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Roles of this user (for the quota table).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// JWT bearer authentication against an identity provider's JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Where the signing keys are (`https`; `http` only for loopback hosts).
    pub jwks_url: String,
    /// Expected `iss`. Required: the gateway refuses to start without it unless
    /// `accept_any_issuer` is set. Env `STACKHUB_GATEWAY_JWT_ISSUER`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (a token must name one); empty = `[site_id]`. Without either the
    /// gateway refuses to start unless `accept_any_audience` is set. Env
    /// `STACKHUB_GATEWAY_JWT_AUDIENCE` (comma-separated).
    pub audience: Vec<String>,
    /// Opt-out: accept tokens of any issuer (or none). Unsafe: another issuer's tokens signed
    /// by a key of the same JWKS get in.
    pub accept_any_issuer: bool,
    /// Opt-out: accept tokens for any audience (or none). Unsafe: a token minted for another
    /// site is accepted here.
    pub accept_any_audience: bool,
    /// Accepted signature algorithms (`RS256`, `RS384`, `RS512`, `PS256`, `ES256`, ...).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf`, seconds.
    pub leeway_secs: u64,
    /// Seconds before cached keys are refetched.
    pub jwks_refresh_secs: u64,
    /// Minimum seconds between two fetches (an unknown `kid` triggers one early).
    pub jwks_min_refresh_secs: u64,
    /// Dotted claim paths holding roles or groups (lists or space/comma-separated strings).
    pub role_claims: Vec<String>,
    /// Dotted claim path of the user name.
    pub username_claim: String,
    /// Role every JWT caller must hold (403 otherwise); empty = none.
    pub required_role: String,
}

impl JwtConfig {
    /// This config with `audience` defaulted to `[site_id]` when it names none.
    #[must_use]
    pub fn for_site(mut self, site_id: Option<&str>) -> Self {
        if self.audience.is_empty()
            && let Some(site) = site_id.filter(|s| !s.is_empty())
        {
            self.audience = vec![site.to_owned()];
        }
        self
    }

    /// Checks the whole entry: the JWKS URL, claims, algorithms and the username claim (keys
    /// named `jwt.*`).
    pub(super) fn validate(&self, site_id: Option<&str>) -> Result<(), ConfigError> {
        https_or_loopback("jwt.jwks_url", &self.jwks_url)?;
        self.validate_claims(site_id)?;
        if self.algorithms.is_empty() {
            return Err(ConfigError::Invalid {
                key: "jwt.algorithms",
                reason: "must name at least one algorithm".into(),
            });
        }
        for a in &self.algorithms {
            if a.parse::<jsonwebtoken::Algorithm>().is_err() || a.starts_with("HS") {
                return Err(ConfigError::Invalid {
                    key: "jwt.algorithms",
                    reason: format!("{a:?} is not an asymmetric JWS algorithm"),
                });
            }
        }
        if self.username_claim.is_empty() {
            return Err(ConfigError::Invalid {
                key: "jwt.username_claim",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// Checks that `iss` and `aud` are verified unless explicitly opted out.
    pub(super) fn validate_claims(&self, site_id: Option<&str>) -> Result<(), ConfigError> {
        if self.issuer.as_deref().is_none_or(str::is_empty) && !self.accept_any_issuer {
            return Err(ConfigError::Invalid {
                key: "jwt.issuer",
                reason: "must name the issuer of the tokens this gateway accepts (the hub's \
                         gateway_token_issuer, its public_url, or `stackhub`; or the identity \
                         provider's realm URL); set jwt.accept_any_issuer = true to skip the \
                         check (unsafe)"
                    .into(),
            });
        }
        if self.audience.is_empty()
            && site_id.is_none_or(str::is_empty)
            && !self.accept_any_audience
        {
            return Err(ConfigError::Invalid {
                key: "jwt.audience",
                reason: "must name this gateway (or set site_id, the default audience); set \
                         jwt.accept_any_audience = true to skip the check (unsafe: tokens \
                         minted for another site are then accepted)"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            jwks_url: String::new(),
            issuer: None,
            audience: Vec::new(),
            accept_any_issuer: false,
            accept_any_audience: false,
            algorithms: vec!["RS256".to_owned()],
            leeway_secs: 10,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            role_claims: vec!["realm_access.roles".to_owned()],
            username_claim: "preferred_username".to_owned(),
            required_role: "stack-jupyter".to_owned(),
        }
    }
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Checks that `url` (the value of `key`) is `https`, or `http` to a loopback host: whoever
/// answers there decides who gets in (JWKS), or sees the tokens sent to it (the hub's API).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`.
pub(crate) fn https_or_loopback(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    };
    let uri: axum::http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let host = uri.host().ok_or_else(|| invalid("has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http")
            if host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()) =>
        {
            Ok(())
        }
        _ => Err(invalid("must be https (http only for loopback hosts)")),
    }
}
