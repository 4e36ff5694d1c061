//! Kernel messages without I/O: the raw message type the bridge forwards, ZeroMQ multipart framing
//! with HMAC signing, and the two WebSocket framings (legacy JSON and `v1.kernel.websocket.jupyter.org`).
//!
//! The bridge never round-trips a message through typed structs: the four JSON parts stay the exact
//! bytes received (v1, ZeroMQ) and only the fields we route on are parsed ([`HeaderInfo`]).

mod message;
mod wire;
mod ws_legacy;
mod ws_v1;

pub use self::message::{Channel, HeaderInfo, RawMessage};
pub use self::wire::{Signer, WireError};
pub use self::ws_legacy::{LegacyFrame, decode_legacy_binary, decode_legacy_text, encode_legacy};
pub use self::ws_v1::{V1_SUBPROTOCOL, decode_v1, encode_v1};

use thiserror::Error;

/// A WebSocket frame that could not be turned into a kernel message.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The frame is not valid JSON, or a part is not a JSON object.
    #[error("invalid JSON in {part}: {source}")]
    Json {
        /// Which part failed (`message`, `header`, ...).
        part: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A binary frame whose offset table does not match its length.
    #[error("malformed binary frame: {0}")]
    Layout(&'static str),
    /// The `channel` names no channel a client may send on.
    #[error("unknown or forbidden channel {0:?}")]
    Channel(String),
}
