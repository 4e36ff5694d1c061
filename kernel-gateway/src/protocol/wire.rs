//! ZeroMQ framing of Jupyter messages and their HMAC signature.
//!
//! ```text
//! [routing id | topic]*  "<IDS|MSG>"  signature  header  parent_header  metadata  content  buffer*
//! ```
//!
//! `signature` is the lowercase hex HMAC-SHA256 of `header ‖ parent_header ‖ metadata ‖ content`
//! (the exact bytes on the wire, buffers excluded), keyed by the UTF-8 bytes of the connection
//! file's `key`. An empty key disables signing (empty signature frame). Kernels remember digests
//! and reject replays, so every message we send must have fresh bytes (a fresh `msg_id`).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use super::{Channel, RawMessage};

const DELIMITER: &[u8] = b"<IDS|MSG>";

type HmacSha256 = Hmac<Sha256>;

/// A ZeroMQ multipart message that is not a valid, authentic Jupyter message.
#[derive(Debug, Error)]
pub enum WireError {
    /// No `<IDS|MSG>` delimiter or fewer than four parts after it.
    #[error("malformed multipart message: {0}")]
    Malformed(&'static str),
    /// The signature does not match the parts (or is missing while a key is set).
    #[error("bad message signature")]
    BadSignature,
    /// The connection file asks for a scheme we do not implement.
    #[error("unsupported signature scheme {0:?} (only hmac-sha256)")]
    UnsupportedScheme(String),
}

/// Signs and verifies messages for one kernel. The key never appears in `Debug` output.
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("enabled", &self.mac.is_some())
            .finish()
    }
}

impl Signer {
    /// A signer for `key` under `scheme` (`hmac-sha256`); an empty key disables signing.
    ///
    /// # Errors
    /// [`WireError::UnsupportedScheme`] for any other scheme.
    pub fn new(key: &[u8], scheme: &str) -> Result<Self, WireError> {
        if key.is_empty() {
            return Ok(Signer { mac: None });
        }
        if scheme != "hmac-sha256" {
            return Err(WireError::UnsupportedScheme(scheme.to_owned()));
        }
        let mac = HmacSha256::new_from_slice(key).map_err(|_| WireError::Malformed("hmac key"))?;
        Ok(Signer { mac: Some(mac) })
    }

    fn mac_over(&self, parts: [&[u8]; 4]) -> Option<HmacSha256> {
        let mut mac = self.mac.clone()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac)
    }

    /// Hex signature of the four parts (empty when signing is disabled).
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        self.mac_over(parts)
            .map(|mac| hex::encode(mac.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Constant-time check of `signature` against the parts.
    ///
    /// The signature must be the exact lowercase hex digest, as Jupyter compares it
    /// (`compare_digest` of the hex strings): `hex::decode` alone also accepts uppercase digits,
    /// which would let a signed message be accepted under 2^k different signature frames.
    ///
    /// # Errors
    /// [`WireError::BadSignature`] on mismatch or a missing signature while a key is set.
    pub fn verify(&self, signature: &[u8], parts: [&[u8]; 4]) -> Result<(), WireError> {
        let Some(mac) = self.mac_over(parts) else {
            return Ok(());
        };
        // Depends only on the received bytes, not on the key: no timing leak.
        if !signature
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(WireError::BadSignature);
        }
        let expected = hex::decode(signature).map_err(|_| WireError::BadSignature)?;
        mac.verify_slice(&expected)
            .map_err(|_| WireError::BadSignature)
    }

    /// Frames `msg` for ZeroMQ: delimiter, signature, the four parts, then buffers.
    /// Routing ids are added by the DEALER socket itself.
    pub fn to_frames(&self, msg: &RawMessage) -> Vec<Bytes> {
        let signature = self.sign([&msg.header, &msg.parent_header, &msg.metadata, &msg.content]);
        let mut frames = Vec::with_capacity(6 + msg.buffers.len());
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(signature));
        frames.push(msg.header.clone());
        frames.push(msg.parent_header.clone());
        frames.push(msg.metadata.clone());
        frames.push(msg.content.clone());
        frames.extend(msg.buffers.iter().cloned());
        frames
    }

    /// Parses and verifies frames received on `channel`.
    ///
    /// # Errors
    /// [`WireError`] when the delimiter or parts are missing or the signature is wrong.
    pub fn from_frames(
        &self,
        channel: Channel,
        frames: Vec<Bytes>,
    ) -> Result<RawMessage, WireError> {
        let delim = frames
            .iter()
            .position(|f| f.as_ref() == DELIMITER)
            .ok_or(WireError::Malformed("no <IDS|MSG> delimiter"))?;
        let mut rest = frames.into_iter().skip(delim + 1);
        let mut next = || {
            rest.next().ok_or(WireError::Malformed(
                "fewer than five frames after delimiter",
            ))
        };
        let signature = next()?;
        let header = next()?;
        let parent_header = next()?;
        let metadata = next()?;
        let content = next()?;
        self.verify(&signature, [&header, &parent_header, &metadata, &content])?;
        Ok(RawMessage {
            channel,
            header,
            parent_header,
            metadata,
            content,
            buffers: rest.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> RawMessage {
        RawMessage::new_gateway(
            Channel::Shell,
            "kernel_info_request",
            "s",
            None,
            serde_json::json!({}),
        )
    }

    #[test]
    fn sign_then_verify_round_trips_with_buffers() {
        let signer = Signer::new(b"secret", "hmac-sha256").unwrap();
        let mut m = msg();
        m.buffers = vec![Bytes::from_static(b"\x00\x01")];
        let mut frames = signer.to_frames(&m);
        frames.insert(0, Bytes::from_static(b"routing-id"));
        let back = signer.from_frames(Channel::Shell, frames).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn tampered_content_or_wrong_key_is_rejected() {
        let signer = Signer::new(b"secret", "hmac-sha256").unwrap();
        let mut frames = signer.to_frames(&msg());
        frames[5] = Bytes::from_static(b"{\"x\":1}");
        assert!(matches!(
            signer.from_frames(Channel::Shell, frames),
            Err(WireError::BadSignature)
        ));
        let other = Signer::new(b"other", "hmac-sha256").unwrap();
        let frames = other.to_frames(&msg());
        assert!(signer.from_frames(Channel::Shell, frames).is_err());
    }

    #[test]
    fn signature_with_uppercase_hex_digits_is_rejected() {
        let signer = Signer::new(b"secret", "hmac-sha256").unwrap();
        let mut frames = signer.to_frames(&msg());
        assert!(signer.from_frames(Channel::Shell, frames.clone()).is_ok());
        frames[1] = Bytes::from(frames[1].to_ascii_uppercase());
        assert!(matches!(
            signer.from_frames(Channel::Shell, frames),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn empty_key_disables_signing_and_bad_scheme_is_refused() {
        let signer = Signer::new(b"", "hmac-sha256").unwrap();
        let frames = signer.to_frames(&msg());
        assert!(frames[1].is_empty());
        assert!(signer.from_frames(Channel::Shell, frames).is_ok());
        assert!(matches!(
            Signer::new(b"k", "hmac-md5"),
            Err(WireError::UnsupportedScheme(_))
        ));
    }
}
