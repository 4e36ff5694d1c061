//! JWT bearer validation against the identity provider's JWKS (Keycloak-style tokens).
//!
//! A token is accepted when its signature verifies with a key of the JWKS (matched by `kid`), its
//! algorithm is one of `algorithms`, it has not expired (with `leeway_secs`), and it carries an
//! `iss` equal to `issuer` and an `aud` naming one of `audience` (both claims required; a check
//! is skipped only with `accept_any_issuer` / `accept_any_audience`, and a validator with
//! neither the value nor the opt-out refuses every token). The user is the `username_claim`
//! (default `preferred_username`); roles are collected from every `role_claims` path (default
//! `realm_access.roles`; add `groups` for Keycloak group paths). The required role is checked by
//! the caller ([`crate::auth`]).
//!
//! JWKS caching: keys are fetched on first use, refetched when older than `jwks_refresh_secs`, and
//! refetched early when a token names an unknown `kid` (key rotation), but never more often than
//! every `jwks_min_refresh_secs`. When a refetch fails the old keys stay in use.
//!
//! Hazard: `jwks_url` must be `https` (an `http` URL is accepted only for loopback hosts, for
//! tests), since whoever serves the keys decides who gets in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};

use crate::config::JwtConfig;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Time allowed for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a bearer token was refused. Messages never contain the token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// The token's `alg` is not allowed.
    #[error("token algorithm {0} is not allowed")]
    Algorithm(String),
    /// No JWKS key matches the token's `kid`.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this gateway.
    #[error("token has the wrong audience")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("token has the wrong issuer")]
    Issuer,
    /// A required claim is missing or has the wrong type.
    #[error("token claim {0} is missing or invalid")]
    Claim(String),
    /// The identity provider's keys could not be fetched (and none are cached).
    #[error("identity provider keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// Who a valid token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (from `username_claim`).
    pub user: String,
    /// Every role and group found under `role_claims`.
    pub roles: Vec<String>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Default)]
struct KeySet {
    /// Keys by `kid` (`None` for a key without one).
    keys: HashMap<Option<String>, DecodingKey>,
    /// Last successful fetch.
    fetched: Option<Instant>,
    /// Last attempt, successful or not, and its error.
    attempted: Option<(Instant, Option<String>)>,
}

/// Validates bearer tokens with a cached JWKS.
pub(crate) struct JwtValidator {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    client: Option<HttpsClient>,
    keys: RwLock<KeySet>,
    /// Serialises refetches so a burst of unknown-`kid` tokens makes one request.
    refetch: Mutex<()>,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("jwks_url", &self.config.jwks_url)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Installs jsonwebtoken's RustCrypto provider once (a no-op if one is already installed).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
    });
}

fn https_client() -> Option<HttpsClient> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system CA certificates; JWKS only over http://loopback");
            return None;
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Some(Client::builder(TokioExecutor::new()).build(connector))
}

/// Parses a JWKS document, skipping keys we cannot use (encryption keys, unknown types).
fn parse_jwks(body: &[u8]) -> Result<HashMap<Option<String>, DecodingKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc["keys"]
        .as_array()
        .ok_or_else(|| "JWKS has no keys array".to_owned())?;
    let mut out = HashMap::new();
    for key in keys {
        if key["use"].as_str().is_some_and(|u| u != "sig") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else {
            tracing::debug!(kid = ?key["kid"], "skipping JWKS key of an unsupported type");
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(k) => {
                out.insert(jwk.common.key_id.clone(), k);
            }
            Err(e) => tracing::debug!(kid = ?jwk.common.key_id, error = %e, "skipping JWKS key"),
        }
    }
    Ok(out)
}

/// The value at a dotted `path` (`realm_access.roles`) of `claims`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(claims, |v, segment| v.as_object()?.get(segment))
}

impl JwtValidator {
    /// A validator for `config`; no request is made until the first token arrives.
    pub(crate) fn new(config: JwtConfig) -> Self {
        install_crypto_provider();
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .collect();
        JwtValidator {
            config,
            algorithms,
            client: https_client(),
            keys: RwLock::new(KeySet::default()),
            refetch: Mutex::new(()),
        }
    }

    async fn fetch(&self) -> Result<HashMap<Option<String>, DecodingKey>, String> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| "no HTTP client (no CA certificates)".to_owned())?;
        let uri: axum::http::Uri = self
            .config
            .jwks_url
            .parse()
            .map_err(|_| "jwks_url is not a URL".to_owned())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(uri))
            .await
            .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))?
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("JWKS answered {}", response.status()));
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
        )
        .await
        .map_err(|_| "JWKS body timed out".to_owned())?
        .map_err(|e| format!("reading JWKS: {e}"))?
        .to_bytes();
        parse_jwks(&body)
    }

    /// Refetches the JWKS unless the last attempt is more recent than `jwks_min_refresh_secs`
    /// (then that attempt's outcome stands). Keeps the old keys on failure.
    async fn refresh(&self) -> Result<(), String> {
        let _guard = self.refetch.lock().await;
        let min_age = Duration::from_secs(self.config.jwks_min_refresh_secs);
        if let Some((at, error)) = &self.keys.read().await.attempted
            && at.elapsed() < min_age
        {
            return error.clone().map_or(Ok(()), Err);
        }
        let result = self.fetch().await;
        let mut set = self.keys.write().await;
        match result {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.config.jwks_url, "fetched JWKS");
                set.keys = keys;
                set.fetched = Some(Instant::now());
                set.attempted = Some((Instant::now(), None));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.config.jwks_url, error = %e, "JWKS fetch failed");
                set.attempted = Some((Instant::now(), Some(e.clone())));
                Err(e)
            }
        }
    }

    async fn key_for(&self, kid: &Option<String>) -> Result<DecodingKey, JwtError> {
        let max_age = Duration::from_secs(self.config.jwks_refresh_secs);
        let (stale, found) = {
            let set = self.keys.read().await;
            (
                set.fetched.is_none_or(|t| t.elapsed() >= max_age),
                set.keys.get(kid).cloned(),
            )
        };
        if let (false, Some(k)) = (stale, &found) {
            return Ok(k.clone());
        }
        // Stale, or perhaps the provider rotated its keys.
        let fetch_error = self.refresh().await.err();
        let set = self.keys.read().await;
        if let Some(k) = set.keys.get(kid) {
            return Ok(k.clone());
        }
        match fetch_error {
            Some(e) if set.keys.is_empty() => Err(JwtError::KeysUnavailable(e)),
            _ => Err(JwtError::UnknownKey),
        }
    }

    /// Validates `token` and returns who it names.
    ///
    /// # Errors
    /// A [`JwtError`] saying why the token is refused (never containing the token).
    pub(crate) async fn validate(&self, token: &str) -> Result<Identity, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let key = self.key_for(&header.kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match self.config.issuer.as_deref().filter(|i| !i.is_empty()) {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None if self.config.accept_any_issuer => {}
            None => return Err(JwtError::Issuer),
        }
        if !self.config.audience.is_empty() {
            validation.set_audience(&self.config.audience);
            required.push("aud");
        } else if self.config.accept_any_audience {
            validation.validate_aud = false;
        } else {
            return Err(JwtError::Audience);
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::Audience,
            ErrorKind::InvalidIssuer => JwtError::Issuer,
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                JwtError::Claim(c.clone())
            }
            ErrorKind::InvalidAlgorithm => JwtError::Algorithm(format!("{:?}", header.alg)),
            _ => JwtError::Malformed,
        })?;
        let claims = data.claims;
        let user = claim(&claims, &self.config.username_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| JwtError::Claim(self.config.username_claim.clone()))?
            .to_owned();
        let mut roles = Vec::new();
        for path in &self.config.role_claims {
            match claim(&claims, path) {
                Some(Value::Array(items)) => {
                    roles.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                Some(Value::String(s)) => roles.extend(
                    s.split([' ', ','])
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
        Ok(Identity { user, roles })
    }
}

/// Every trusted issuer's validator: `[jwt]` first, then `jwt_extra_issuers`. A token goes to
/// the validator whose `issuer` is its `iss` (read before any check, only to choose), else to
/// the first that accepts any issuer; a token naming no trusted issuer is refused as of the
/// wrong issuer, one naming none goes to the first validator (which refuses it unless it
/// accepts any issuer).
#[derive(Debug, Default)]
pub(crate) struct TrustedIssuers {
    validators: Vec<JwtValidator>,
}

impl TrustedIssuers {
    /// Validators for `primary` and `extra`, audiences defaulted to `site_id`.
    pub(crate) fn new(
        primary: Option<&JwtConfig>,
        extra: &[JwtConfig],
        site_id: Option<&str>,
    ) -> Self {
        let validators = primary
            .into_iter()
            .chain(extra)
            .map(|c| JwtValidator::new(c.clone().for_site(site_id)))
            .collect();
        TrustedIssuers { validators }
    }

    /// Whether no issuer is trusted (JWTs are not accepted at all).
    pub(crate) fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Validates `token` with its issuer's validator; returns who it names and the role that
    /// issuer's callers must hold for kernels (`required_role`, empty = none).
    ///
    /// # Errors
    /// A [`JwtError`] (never containing the token); [`JwtError::Issuer`] with no issuer trusted.
    pub(crate) async fn validate(&self, token: &str) -> Result<(Identity, &str), JwtError> {
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
            .ok()
            .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned));
        let chosen = self
            .validators
            .iter()
            .find(|v| iss.is_some() && v.config.issuer == iss)
            .or_else(|| self.validators.iter().find(|v| v.config.accept_any_issuer))
            .or_else(|| self.validators.first().filter(|_| iss.is_none()))
            .ok_or(JwtError::Issuer)?;
        let identity = chosen.validate(token).await?;
        Ok((identity, chosen.config.required_role.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths() {
        let c = serde_json::json!({"realm_access": {"roles": ["a"]}, "groups": ["/x/y"]});
        assert_eq!(
            claim(&c, "realm_access.roles"),
            Some(&serde_json::json!(["a"]))
        );
        assert_eq!(claim(&c, "groups"), Some(&serde_json::json!(["/x/y"])));
        assert_eq!(claim(&c, "realm_access.missing"), None);
        assert_eq!(claim(&c, "groups.0"), None);
    }

    #[test]
    fn jwks_parsing_skips_encryption_and_unknown_keys() {
        let doc = br#"{"keys": [
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP"},
            {"kty": "weird", "kid": "w"},
            {"kty": "RSA", "use": "sig", "kid": "k1", "alg": "RS256",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key(&Some("k1".to_owned())));
        assert!(parse_jwks(b"{}").is_err());
    }
}
