//! The identity provider's tokens are encrypted at rest: XChaCha20-Poly1305 with a random
//! 192-bit nonce per value, stored as base64url(`nonce || ciphertext`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Encrypts and decrypts stored tokens (key never printed).
#[derive(Clone)]
pub(crate) struct TokenCipher {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(***)")
    }
}

/// A stored value could not be decrypted (wrong key, e.g. after a restart with a random key, or
/// tampering).
#[derive(Debug, thiserror::Error)]
#[error("a stored token cannot be decrypted (key changed or data tampered with)")]
pub(crate) struct DecryptError;

impl TokenCipher {
    /// From a 32-byte key.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A key derived from the cookie secret (HMAC with a fixed label), so the two never coincide.
    pub(crate) fn derived(secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"stackhub oidc token key v1");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self::new(&key)
    }

    /// Encrypt `plain`.
    pub(crate) fn seal(&self, plain: &str) -> String {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ct = self
            .cipher
            .encrypt(nonce, plain.as_bytes())
            .unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend(ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypt a value from [`Self::seal`].
    ///
    /// # Errors
    /// [`DecryptError`] for a wrong key or tampered data.
    pub(crate) fn open(&self, sealed: &str) -> Result<String, DecryptError> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| DecryptError)?;
        if raw.len() < 24 + 16 {
            return Err(DecryptError);
        }
        let (nonce, ct) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let c = TokenCipher::new(&[7; 32]);
        let sealed = c.seal("refresh-token-value");
        assert!(!sealed.contains("refresh"));
        assert_ne!(
            sealed,
            c.seal("refresh-token-value"),
            "random nonce per value"
        );
        assert_eq!(c.open(&sealed).unwrap(), "refresh-token-value");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(c.open(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
        assert!(TokenCipher::new(&[8; 32]).open(&sealed).is_err());
        assert_eq!(format!("{c:?}"), "TokenCipher(***)");
    }
}
