//! The message the bridge carries between WebSocket and ZeroMQ.

use bytes::Bytes;
use serde::Deserialize;

use super::FrameError;

/// The five Jupyter channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Requests and replies (DEALER ↔ ROUTER).
    Shell,
    /// Broadcast output (SUB ← PUB).
    Iopub,
    /// Kernel asks the client for input.
    Stdin,
    /// Priority requests: interrupt, shutdown, debug.
    Control,
    /// Heartbeat (never carried over the WebSocket).
    Hb,
}

impl Channel {
    /// The wire name of the channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::Iopub => "iopub",
            Channel::Stdin => "stdin",
            Channel::Control => "control",
            Channel::Hb => "hb",
        }
    }

    /// Parses a channel a client may send on (`shell`, `control`, `stdin`).
    ///
    /// # Errors
    /// [`FrameError::Channel`] for `iopub`, `hb` or an unknown name.
    pub fn client_channel(name: &str) -> Result<Self, FrameError> {
        match name {
            "shell" => Ok(Channel::Shell),
            "control" => Ok(Channel::Control),
            "stdin" => Ok(Channel::Stdin),
            other => Err(FrameError::Channel(other.to_owned())),
        }
    }
}

/// One kernel message with its four JSON parts kept as raw bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Channel it travelled on.
    pub channel: Channel,
    /// Serialized header object.
    pub header: Bytes,
    /// Serialized parent header object (`{}` when none).
    pub parent_header: Bytes,
    /// Serialized metadata object.
    pub metadata: Bytes,
    /// Serialized content object.
    pub content: Bytes,
    /// Binary buffers, not covered by the signature.
    pub buffers: Vec<Bytes>,
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Content may carry user data: show only routing fields.
        let info = self.header_info();
        f.debug_struct("RawMessage")
            .field("channel", &self.channel)
            .field(
                "msg_type",
                &info.as_ref().map(|h| h.msg_type.as_str()).unwrap_or("?"),
            )
            .field("content_len", &self.content.len())
            .field("buffers", &self.buffers.len())
            .finish()
    }
}

/// The header fields the bridge routes on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Unique id of this message.
    #[serde(default)]
    pub msg_id: String,
    /// Message type, e.g. `execute_request`.
    #[serde(default)]
    pub msg_type: String,
    /// Session of the sender.
    #[serde(default)]
    pub session: String,
}

#[derive(Deserialize)]
struct ParentInfo {
    #[serde(default)]
    msg_id: Option<String>,
}

impl RawMessage {
    /// Bytes the message occupies: its four JSON parts and its buffers (what a queue holding it
    /// is charged).
    pub fn wire_len(&self) -> usize {
        [
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]
        .into_iter()
        .chain(&self.buffers)
        .map(Bytes::len)
        .fold(0usize, usize::saturating_add)
    }

    /// Parses the routing fields of the header.
    ///
    /// # Errors
    /// The header is not a JSON object.
    pub fn header_info(&self) -> Result<HeaderInfo, FrameError> {
        serde_json::from_slice(&self.header).map_err(|source| FrameError::Json {
            part: "header",
            source,
        })
    }

    /// The parent's `msg_id`, if the message has a parent.
    pub fn parent_msg_id(&self) -> Option<String> {
        serde_json::from_slice::<ParentInfo>(&self.parent_header)
            .ok()
            .and_then(|p| p.msg_id)
    }

    /// Parses `content` as a JSON value.
    ///
    /// # Errors
    /// The content is not JSON.
    pub fn content_json(&self) -> Result<serde_json::Value, FrameError> {
        serde_json::from_slice(&self.content).map_err(|source| FrameError::Json {
            part: "content",
            source,
        })
    }

    /// A message created by the gateway itself (requests it sends, statuses it synthesizes).
    pub fn new_gateway(
        channel: Channel,
        msg_type: &str,
        session: &str,
        parent_header: Option<&[u8]>,
        content: serde_json::Value,
    ) -> Self {
        let header = serde_json::json!({
            "msg_id": uuid::Uuid::new_v4().to_string(),
            "msg_type": msg_type,
            "session": session,
            "username": "stackhub-gateway",
            "date": crate::time::iso_now(),
            "version": "5.4",
        });
        RawMessage {
            channel,
            header: Bytes::from(header.to_string()),
            parent_header: Bytes::copy_from_slice(parent_header.unwrap_or(b"{}")),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from(content.to_string()),
            buffers: Vec::new(),
        }
    }
}

/// Checks that `bytes` holds one JSON object (used before embedding raw parts into JSON text).
pub(crate) fn ensure_object(part: &'static str, bytes: &[u8]) -> Result<(), FrameError> {
    let value: &serde_json::value::RawValue =
        serde_json::from_slice(bytes).map_err(|source| FrameError::Json { part, source })?;
    if value.get().trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(FrameError::Layout("message part is not a JSON object"))
    }
}
