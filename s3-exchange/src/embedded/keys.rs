//! The embedded store's keys: one root key (the hub's) and stateless temporary keys.
//!
//! A temporary key is `ASIA` + 16 random characters; its secret is derived from the root secret
//! (`HMAC(root, "secret" | id)`), so no table is kept and keys survive a restart of the hub when
//! the root secret is persisted. The session token carries what the key may touch (bucket,
//! prefix, expiry), signed with the root secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Secret;

/// What a temporary key may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Confinement {
    /// The access key id the token belongs to.
    #[serde(rename = "k")]
    pub(crate) access_key_id: String,
    /// The bucket.
    #[serde(rename = "b")]
    pub(crate) bucket: String,
    /// The prefix (`users/NAME/`).
    #[serde(rename = "p")]
    pub(crate) prefix: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub(crate) expires: i64,
}

/// A freshly issued temporary key.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: Secret,
    pub(crate) session_token: Secret,
    pub(crate) expires_at: DateTime<Utc>,
}

/// Why a session token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Missing,
    Invalid,
    Expired,
}

/// The root key and the derivation of temporary keys.
#[derive(Debug, Clone)]
pub(crate) struct KeyRing {
    root_access_key_id: String,
    root_secret: Secret,
}

type HmacSha256 = Hmac<Sha256>;

/// Prefix of temporary access key ids (as AWS does).
const TEMP_PREFIX: &str = "ASIA";

impl KeyRing {
    pub(crate) fn new(root_access_key_id: String, root_secret: Secret) -> Self {
        Self {
            root_access_key_id,
            root_secret,
        }
    }

    pub(crate) fn root_access_key_id(&self) -> &str {
        &self.root_access_key_id
    }

    pub(crate) fn root_secret(&self) -> &Secret {
        &self.root_secret
    }

    pub(crate) fn is_root(&self, access_key_id: &str) -> bool {
        access_key_id == self.root_access_key_id
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        let mut m = HmacSha256::new_from_slice(self.root_secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        m.update(label);
        m.update(b"|");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    fn temp_secret(&self, access_key_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(&self.mac(b"secret", access_key_id.as_bytes())[..30])
    }

    /// Issue a key confined to `bucket/prefix` for `lifetime`.
    pub(crate) fn issue(&self, bucket: &str, prefix: &str, lifetime: chrono::Duration) -> Issued {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut rng = rand::rng();
        let suffix: String = (0..16)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        let access_key_id = format!("{TEMP_PREFIX}{suffix}");
        let expires_at = Utc::now() + lifetime;
        let confinement = Confinement {
            access_key_id: access_key_id.clone(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            expires: expires_at.timestamp(),
        };
        #[allow(clippy::expect_used)]
        let payload = serde_json::to_vec(&confinement).expect("plain struct serialises");
        let sig = self.mac(b"token", &payload);
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(sig)
        );
        Issued {
            secret_access_key: Secret::new(self.temp_secret(&access_key_id)),
            access_key_id,
            session_token: Secret::new(token),
            expires_at,
        }
    }

    /// The confinement `token` grants `access_key_id`, if the token is genuine, belongs to that
    /// key, and has not expired.
    pub(crate) fn verify(
        &self,
        access_key_id: &str,
        token: Option<&str>,
    ) -> Result<Confinement, TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Invalid)?;
        #[allow(clippy::expect_used)]
        let mut m = HmacSha256::new_from_slice(self.root_secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        m.update(b"token|");
        m.update(&payload);
        m.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let c: Confinement = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if c.access_key_id != access_key_id {
            return Err(TokenError::Invalid);
        }
        if c.expires <= Utc::now().timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyRing {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if self.is_root(access_key) {
            return Ok(SecretKey::from(self.root_secret.expose()));
        }
        if access_key.starts_with(TEMP_PREFIX) && access_key.len() == TEMP_PREFIX.len() + 16 {
            return Ok(SecretKey::from(self.temp_secret(access_key).as_str()));
        }
        Err(s3_error!(InvalidAccessKeyId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_key_prefix_and_expiry() {
        let ring = KeyRing::new("ROOT".into(), Secret::new("root-secret"));
        let i = ring.issue("b", "users/alice/", chrono::Duration::hours(1));
        let c = ring
            .verify(&i.access_key_id, Some(i.session_token.expose()))
            .unwrap();
        assert_eq!(c.prefix, "users/alice/");
        let other = ring.issue("b", "users/bob/", chrono::Duration::hours(1));
        assert_eq!(
            ring.verify(&i.access_key_id, Some(other.session_token.expose())),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            ring.verify(&i.access_key_id, None),
            Err(TokenError::Missing)
        );
        let forged = ring.issue("b", "users/alice/", chrono::Duration::hours(1));
        let tampered = format!(
            "{}x",
            forged
                .session_token
                .expose()
                .split('.')
                .next()
                .unwrap_or("")
        );
        assert!(ring.verify(&forged.access_key_id, Some(&tampered)).is_err());
        let old = ring.issue("b", "users/alice/", chrono::Duration::seconds(-1));
        assert_eq!(
            ring.verify(&old.access_key_id, Some(old.session_token.expose())),
            Err(TokenError::Expired)
        );
        let other_ring = KeyRing::new("ROOT".into(), Secret::new("another"));
        assert_eq!(
            other_ring.verify(&i.access_key_id, Some(i.session_token.expose())),
            Err(TokenError::Invalid)
        );
    }
}
