//! Legacy WebSocket protocol (no subprotocol offered): JSON text frames, plus a binary frame for
//! messages that carry buffers.
//!
//! Text frame (both directions):
//! ```text
//! {"header": {...}, "parent_header": {...}, "metadata": {...}, "content": {...},
//!  "channel": "shell", "buffers": [], "msg_id": "<header.msg_id>", "msg_type": "<header.msg_type>"}
//! ```
//! (`msg_id`/`msg_type` copies are added on output only.)
//!
//! Binary frame (message with buffers), all integers big-endian:
//! ```text
//! +-----------+---------------------------+--------------------+---------+-----+
//! | u32 nbufs | u32 offset × nbufs        | JSON (no buffers)  | buf 1   | ... |
//! +-----------+---------------------------+--------------------+---------+-----+
//!              offset[0] = 4·(nbufs+1) is the JSON start; offset[i] starts buffer i;
//!              nbufs = 1 + number of buffers; the last part runs to the end of the frame.
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::message::ensure_object;
use super::{Channel, FrameError, RawMessage};

/// The incoming message with its four parts kept as the exact bytes received (as in v1): parsing
/// them into `Value` and printing them again would change them (serde_json reads floats
/// approximately, so a number the client sent could reach the kernel one ulp off).
#[derive(Deserialize)]
struct LegacyIn {
    header: Box<RawValue>,
    #[serde(default)]
    parent_header: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    channel: Option<String>,
}

/// The raw bytes of an object part; a missing or `null` part is `{}`.
fn object_bytes(part: &'static str, v: Option<Box<RawValue>>) -> Result<Bytes, FrameError> {
    let Some(v) = v else {
        return Ok(Bytes::from_static(b"{}"));
    };
    let raw = v.get();
    if raw.trim_start().starts_with('{') {
        Ok(Bytes::copy_from_slice(raw.as_bytes()))
    } else if part == "header" {
        Err(FrameError::Layout("header is not a JSON object"))
    } else {
        Err(FrameError::Layout("message part is not a JSON object"))
    }
}

fn from_json(json: &[u8], buffers: Vec<Bytes>) -> Result<RawMessage, FrameError> {
    let m: LegacyIn = serde_json::from_slice(json).map_err(|source| FrameError::Json {
        part: "message",
        source,
    })?;
    // Missing channel means shell (old clients); iopub/hb/unknown are refused.
    let channel = Channel::client_channel(m.channel.as_deref().unwrap_or("shell"))?;
    Ok(RawMessage {
        channel,
        header: object_bytes("header", Some(m.header))?,
        parent_header: object_bytes("parent_header", m.parent_header)?,
        metadata: object_bytes("metadata", m.metadata)?,
        content: object_bytes("content", m.content)?,
        buffers,
    })
}

/// Decodes a legacy text frame. `buffers` in the frame (a list or `{}`) is ignored.
///
/// # Errors
/// [`FrameError`] for invalid JSON, a non-object part or a channel a client may not use.
pub fn decode_legacy_text(text: &str) -> Result<RawMessage, FrameError> {
    from_json(text.as_bytes(), Vec::new())
}

/// Decodes a legacy binary frame (JSON message followed by its buffers).
///
/// # Errors
/// [`FrameError::Layout`] when the offset table is inconsistent, else as [`decode_legacy_text`].
pub fn decode_legacy_binary(frame: &[u8]) -> Result<RawMessage, FrameError> {
    let read_u32 = |at: usize| -> Result<usize, FrameError> {
        let b = frame
            .get(at..at + 4)
            .ok_or(FrameError::Layout("truncated offset table"))?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let nbufs = read_u32(0)?;
    if nbufs == 0 || nbufs > 1 + 4096 {
        return Err(FrameError::Layout("bad part count"));
    }
    let mut offsets = Vec::with_capacity(nbufs + 1);
    for i in 0..nbufs {
        offsets.push(read_u32(4 * (i + 1))?);
    }
    offsets.push(frame.len());
    let mut parts = Vec::with_capacity(nbufs);
    for w in offsets.windows(2) {
        if w[0] > w[1] || w[1] > frame.len() || w[0] < 4 * (nbufs + 1) {
            return Err(FrameError::Layout("offsets out of order or out of range"));
        }
        parts.push(Bytes::copy_from_slice(&frame[w[0]..w[1]]));
    }
    let json = parts.remove(0);
    from_json(&json, parts)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The JSON object for output, built from the raw parts without re-serializing them.
fn output_json(msg: &RawMessage, with_buffers_key: bool) -> Result<String, FrameError> {
    ensure_object("header", &msg.header)?;
    ensure_object("parent_header", &msg.parent_header)?;
    ensure_object("metadata", &msg.metadata)?;
    ensure_object("content", &msg.content)?;
    let info = msg.header_info()?;
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let mut out = String::with_capacity(
        msg.header.len() + msg.parent_header.len() + msg.metadata.len() + msg.content.len() + 160,
    );
    out.push_str("{\"header\":");
    out.push_str(&text(&msg.header));
    out.push_str(",\"parent_header\":");
    out.push_str(&text(&msg.parent_header));
    out.push_str(",\"metadata\":");
    out.push_str(&text(&msg.metadata));
    out.push_str(",\"content\":");
    out.push_str(&text(&msg.content));
    if with_buffers_key {
        out.push_str(",\"buffers\":[]");
    }
    out.push_str(",\"channel\":");
    out.push_str(&json_str(msg.channel.as_str()));
    out.push_str(",\"msg_id\":");
    out.push_str(&json_str(&info.msg_id));
    out.push_str(",\"msg_type\":");
    out.push_str(&json_str(&info.msg_type));
    out.push('}');
    Ok(out)
}

/// A frame to send to a legacy client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyFrame {
    /// No buffers: one JSON text frame.
    Text(String),
    /// With buffers: the binary layout above.
    Binary(Bytes),
}

/// Encodes a kernel message for a legacy client.
///
/// # Errors
/// [`FrameError`] when a part is not a JSON object (the message is dropped).
pub fn encode_legacy(msg: &RawMessage) -> Result<LegacyFrame, FrameError> {
    if msg.buffers.is_empty() {
        return Ok(LegacyFrame::Text(output_json(msg, true)?));
    }
    let json = output_json(msg, false)?;
    let nbufs = 1 + msg.buffers.len();
    let header_len = 4 * (nbufs + 1);
    let total = header_len + json.len() + msg.buffers.iter().map(Bytes::len).sum::<usize>();
    let to_u32 =
        |n: usize| u32::try_from(n).map_err(|_| FrameError::Layout("frame larger than 4 GiB"));
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(to_u32(nbufs)?);
    let mut offset = header_len;
    out.put_u32(to_u32(offset)?);
    offset += json.len();
    for b in &msg.buffers {
        out.put_u32(to_u32(offset)?);
        offset += b.len();
    }
    out.put_slice(json.as_bytes());
    for b in &msg.buffers {
        out.put_slice(b);
    }
    Ok(LegacyFrame::Binary(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn text_in_tolerates_missing_parts_and_object_buffers() {
        let m = decode_legacy_text(
            r#"{"header":{"msg_id":"a","msg_type":"execute_request"},"buffers":{},"msg_id":"a"}"#,
        )
        .unwrap();
        assert_eq!(m.channel, Channel::Shell);
        assert_eq!(&m.parent_header[..], b"{}");
        assert!(decode_legacy_text(r#"{"header":{},"channel":"iopub"}"#).is_err());
        assert!(decode_legacy_text("not json").is_err());
        assert!(decode_legacy_text(r#"{"header":[]}"#).is_err());
    }

    #[test]
    fn binary_round_trip_keeps_buffers() {
        let mut m = RawMessage::new_gateway(
            Channel::Shell,
            "comm_msg",
            "s",
            None,
            serde_json::json!({"a": 1}),
        );
        m.buffers = vec![Bytes::from_static(b"\x00\xff"), Bytes::from_static(b"")];
        let LegacyFrame::Binary(frame) = encode_legacy(&m).unwrap() else {
            panic!("expected binary")
        };
        let back = decode_legacy_binary(&frame).unwrap();
        assert_eq!(back.buffers, m.buffers);
        assert_eq!(back.header_info().unwrap(), m.header_info().unwrap());
        assert!(decode_legacy_binary(&frame[..6]).is_err());
    }

    #[test]
    fn text_in_keeps_the_exact_bytes_of_every_part() {
        // serde_json (without `float_roundtrip`) reads this number one ulp off; printing the
        // parsed value gave ...384e+226.
        let content = r#"{"x": [8.086104253645383e+226, 1.0, "\u00e9"]}"#;
        let m = decode_legacy_text(&format!(
            r#"{{"header": {{"msg_id": "a"}}, "parent_header": null, "content": {content}}}"#
        ))
        .unwrap();
        assert_eq!(&m.content[..], content.as_bytes());
        assert_eq!(&m.header[..], br#"{"msg_id": "a"}"#);
        assert_eq!(&m.parent_header[..], b"{}");
        assert_eq!(&m.metadata[..], b"{}");
        assert!(decode_legacy_text(r#"{"header":{},"content":[]}"#).is_err());
        assert!(decode_legacy_text(r#"{"header":null}"#).is_err());
    }

    #[test]
    fn text_out_has_top_level_copies() {
        let m = RawMessage::new_gateway(Channel::Iopub, "status", "s", None, serde_json::json!({}));
        let LegacyFrame::Text(t) = encode_legacy(&m).unwrap() else {
            panic!("expected text")
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["msg_type"], "status");
        assert_eq!(v["channel"], "iopub");
        assert_eq!(v["msg_id"], v["header"]["msg_id"]);
        assert_eq!(v["buffers"], serde_json::json!([]));
    }
}
