//! The credentials the hub issues for a user at a site: short-lived EdDSA JWTs the site's
//! gateway validates against the hub's JWKS (`GET /hub/api/sites/jwks.json`).
//!
//! A token names the user (`preferred_username`, `sub`), the site (`aud` = the site id), the
//! issuer (`iss` = the hub's `gateway_token_issuer`, else its `public_url`, else
//! [`DEFAULT_ISSUER`]; see [`issuer_of`]) and the user's roles (`realm_access.roles`: the quota role and
//! hub groups), the shape of a Keycloak access token, so a gateway configured for the
//! identity provider's tokens takes the hub's the same way. Lifetime: the site's
//! `gateway_token_lifetime_secs` (an hour by default); single-user servers fetch fresh ones
//! through `POST /hub/api/sites/{id}/token` before theirs runs out.
//!
//! The signing key is derived from `cookie_secret` when set (every hub replica signs alike and
//! a restart keeps the key), otherwise it is a random key kept in `DATA_DIR/gateway-jwt-key`
//! (mode 0600). The key never leaves the process; the JWKS carries the public half only.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `iss` of the tokens of a hub with neither `gateway_token_issuer` nor `public_url`.
pub const DEFAULT_ISSUER: &str = "stackhub";

/// The `iss` a hub configured with `configured` (`gateway_token_issuer`) and `public_url` signs:
/// the first set of the two (without a trailing `/`), else [`DEFAULT_ISSUER`].
pub fn issuer_of(configured: Option<&str>, public_url: Option<&str>) -> String {
    configured
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            public_url
                .map(|u| u.trim().trim_end_matches('/'))
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(DEFAULT_ISSUER)
        .to_owned()
}

/// Why the signing key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    /// Reading or writing the key file failed.
    #[error("cannot {action} the gateway signing key {path}: {source}")]
    Io {
        /// `read` / `write`.
        action: &'static str,
        /// The key file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes.
    #[error(
        "the gateway signing key {0} is corrupt (expected 32 bytes); delete it to make a new one"
    )]
    Corrupt(String),
    /// Encoding the key failed.
    #[error("cannot encode the gateway signing key: {0}")]
    Encode(String),
}

/// Issues gateway tokens. Cheap to share behind an `Arc`.
pub struct GatewayTokens {
    key: EncodingKey,
    kid: String,
    jwk: Value,
    issuer: String,
}

impl std::fmt::Debug for GatewayTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTokens")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A token and when it expires.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The JWT (a credential: never log it).
    pub token: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    preferred_username: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    realm_access: RealmAccess<'a>,
}

#[derive(Serialize)]
struct RealmAccess<'a> {
    roles: &'a [String],
}

impl GatewayTokens {
    /// The issuer for `cookie_secret` (hex bytes) when set, else the key in `data_dir`.
    ///
    /// # Errors
    /// [`JwtKeyError`] naming the key file.
    pub fn load(cookie_secret: Option<&[u8]>, data_dir: &Path) -> Result<Self, JwtKeyError> {
        let seed = match cookie_secret {
            Some(secret) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
                    .map_err(|e| JwtKeyError::Encode(e.to_string()))?;
                mac.update(b"stackhub gateway jwt signing key v1");
                mac.finalize().into_bytes().into()
            }
            None => key_file(&data_dir.join("gateway-jwt-key"))?,
        };
        Self::from_seed(&seed)
    }

    /// The issuer with the Ed25519 key of `seed`.
    ///
    /// # Errors
    /// [`JwtKeyError::Encode`].
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, JwtKeyError> {
        let signing = SigningKey::from_bytes(seed);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| JwtKeyError::Encode(e.to_string()))?;
        let public = signing.verifying_key().to_bytes();
        let kid = hex::encode(&Sha256::digest(public)[..8]);
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(public),
        });
        Ok(Self {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            kid,
            jwk,
            issuer: DEFAULT_ISSUER.to_owned(),
        })
    }

    /// The same keys, signing tokens with `iss` = `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// A token for `user` at `site` holding `roles`, valid for `lifetime_secs`.
    ///
    /// # Errors
    /// Signing failed (not expected with a valid key).
    pub fn issue(
        &self,
        user: &str,
        site: &str,
        roles: &[String],
        lifetime_secs: i64,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let exp = now + lifetime_secs;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: &self.issuer,
            sub: user,
            preferred_username: user,
            aud: site,
            iat: now,
            nbf: now - 5,
            exp,
            realm_access: RealmAccess { roles },
        };
        Ok(IssuedToken {
            token: jsonwebtoken::encode(&header, &claims, &self.key)?,
            expires_at: exp,
        })
    }
}

/// Read the 32-byte key at `path`, or create it (mode 0600).
fn key_file(path: &Path) -> Result<[u8; 32], JwtKeyError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| JwtKeyError::Corrupt(shown.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            write_private(path, &seed).map_err(|source| JwtKeyError::Io {
                action: "write",
                path: shown.clone(),
                source,
            })?;
            Ok(seed)
        }
        Err(source) => Err(JwtKeyError::Io {
            action: "read",
            path: shown,
            source,
        }),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    use super::*;

    #[test]
    fn tokens_verify_with_the_published_jwks_only_for_their_site() {
        let t = GatewayTokens::from_seed(&[7; 32]).unwrap();
        let issued = t
            .issue("alice", "lumi", &["stack-jupyter-high".to_owned()], 3600)
            .unwrap();
        let set: JwkSet = serde_json::from_value(t.jwks()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["lumi"]);
        v.set_issuer(&[DEFAULT_ISSUER]);
        let data = jsonwebtoken::decode::<Value>(&issued.token, &key, &v).unwrap();
        assert_eq!(data.claims["preferred_username"], "alice");
        assert_eq!(
            data.claims["realm_access"]["roles"][0],
            "stack-jupyter-high"
        );
        assert_eq!(data.claims["exp"], issued.expires_at);
        v.set_audience(&["leonardo"]);
        assert!(jsonwebtoken::decode::<Value>(&issued.token, &key, &v).is_err());
        let other = GatewayTokens::from_seed(&[8; 32]).unwrap();
        let set: JwkSet = serde_json::from_value(other.jwks()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        v.set_audience(&["lumi"]);
        assert!(jsonwebtoken::decode::<Value>(&issued.token, &key, &v).is_err());
    }

    #[test]
    fn the_issuer_is_the_configured_one_else_the_public_url_else_stackhub() {
        assert_eq!(
            issuer_of(Some("https://iss.example"), Some("https://hub.example/")),
            "https://iss.example"
        );
        assert_eq!(
            issuer_of(None, Some("https://hub.example/")),
            "https://hub.example"
        );
        assert_eq!(issuer_of(Some(" "), None), DEFAULT_ISSUER);
        let t = GatewayTokens::from_seed(&[7; 32])
            .unwrap()
            .with_issuer("https://hub.example");
        let issued = t.issue("alice", "lumi", &[], 60).unwrap();
        let set: JwkSet = serde_json::from_value(t.jwks()).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["lumi"]);
        v.set_issuer(&["https://hub.example"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(&issued.token, &key, &v).unwrap();
        assert_eq!(data.claims["iss"], "https://hub.example");
        assert_eq!(data.claims["aud"], "lumi");
    }

    #[test]
    fn the_key_survives_a_restart_and_follows_the_cookie_secret() {
        let dir = std::env::temp_dir().join(format!("stackhub-jwt-{}", uuid::Uuid::new_v4()));
        let dir = TempDir(dir);
        let a = GatewayTokens::load(None, dir.path()).unwrap();
        let b = GatewayTokens::load(None, dir.path()).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        let mode = std::fs::metadata(dir.path().join("gateway-jwt-key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let c = GatewayTokens::load(Some(&[1; 32]), dir.path()).unwrap();
        let d = GatewayTokens::load(Some(&[1; 32]), dir.path()).unwrap();
        assert_eq!(c.jwks(), d.jwks());
        assert_ne!(a.jwks(), c.jwks());
        std::fs::write(dir.path().join("gateway-jwt-key"), b"short").unwrap();
        let e = GatewayTokens::load(None, dir.path()).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
