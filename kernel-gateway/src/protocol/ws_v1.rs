//! The `v1.kernel.websocket.jupyter.org` WebSocket subprotocol: every message is one binary frame.
//!
//! All integers are little-endian u64:
//! ```text
//! +------+-----------+-----------+-----+----------+---------+--------+--------+---------+-------+-----+
//! | n    | offset[0] | offset[1] | ... | offset   | channel | header | parent | metadata| content| buf*|
//! |      |           |           |     | [n-1]    | (utf-8) | (json) | (json) | (json)  | (json) |     |
//! +------+-----------+-----------+-----+----------+---------+--------+--------+---------+-------+-----+
//! n = number of parts + 1 (parts = channel, 4 JSON parts, buffers); offset[0] = 8·(n+1);
//! part k spans [offset[k], offset[k+1]); offset[n-1] is the frame length.
//! ```
//! The four JSON parts are forwarded to ZeroMQ as the exact bytes received (only re-signed).

use bytes::{BufMut, Bytes, BytesMut};

use super::message::ensure_object;
use super::{Channel, FrameError, RawMessage};

/// The subprotocol name a client offers in `Sec-WebSocket-Protocol`.
pub const V1_SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Decodes a v1 frame from a client.
///
/// # Errors
/// [`FrameError`] for a bad offset table, a forbidden channel or a JSON part that is not an object.
pub fn decode_v1(frame: &[u8]) -> Result<RawMessage, FrameError> {
    let read_u64 = |at: usize| -> Result<usize, FrameError> {
        let b = frame
            .get(at..at + 8)
            .ok_or(FrameError::Layout("truncated offset table"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| FrameError::Layout("offset overflow"))
    };
    let n = read_u64(0)?;
    // channel + 4 JSON parts need n >= 6.
    if !(6..=4096).contains(&n) {
        return Err(FrameError::Layout("bad offset count"));
    }
    let offsets = (0..n)
        .map(|i| read_u64(8 * (i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if offsets[0] != 8 * (n + 1) || offsets[n - 1] != frame.len() {
        return Err(FrameError::Layout(
            "offset table does not match frame length",
        ));
    }
    // The whole table is checked before any part is cut: a middle offset past the end of the
    // frame (followed by the true length) is out of order, not a slice out of range.
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(FrameError::Layout("offsets out of order"));
    }
    let mut parts = Vec::with_capacity(n - 1);
    for w in offsets.windows(2) {
        let part = frame
            .get(w[0]..w[1])
            .ok_or(FrameError::Layout("offset past the end of the frame"))?;
        parts.push(Bytes::copy_from_slice(part));
    }
    let mut parts = parts.into_iter();
    let mut next = || parts.next().ok_or(FrameError::Layout("missing part"));
    let channel_bytes = next()?;
    let channel = std::str::from_utf8(&channel_bytes)
        .map_err(|_| FrameError::Layout("channel is not UTF-8"))?;
    let channel = Channel::client_channel(channel)?;
    let header = next()?;
    let parent_header = next()?;
    let metadata = next()?;
    let content = next()?;
    ensure_object("header", &header)?;
    ensure_object("parent_header", &parent_header)?;
    ensure_object("metadata", &metadata)?;
    ensure_object("content", &content)?;
    Ok(RawMessage {
        channel,
        header,
        parent_header,
        metadata,
        content,
        buffers: parts.collect(),
    })
}

/// Encodes a message for a v1 client.
pub fn encode_v1(msg: &RawMessage) -> Bytes {
    let channel = msg.channel.as_str().as_bytes();
    let parts: Vec<&[u8]> = [
        channel,
        &msg.header,
        &msg.parent_header,
        &msg.metadata,
        &msg.content,
    ]
    .into_iter()
    .chain(msg.buffers.iter().map(|b| b.as_ref()))
    .collect();
    let n = parts.len() + 1;
    let total = 8 * (n + 1) + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(total);
    out.put_u64_le(n as u64);
    let mut offset = 8 * (n + 1);
    out.put_u64_le(offset as u64);
    for p in &parts {
        offset += p.len();
        out.put_u64_le(offset as u64);
    }
    for p in &parts {
        out.put_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_exact_bytes_and_buffers() {
        let mut m = RawMessage::new_gateway(
            Channel::Control,
            "x",
            "s",
            None,
            serde_json::json!({"k": [1, 2]}),
        );
        m.buffers = vec![
            Bytes::from_static(b"\x00\x01\x02"),
            Bytes::from(vec![7u8; 70_000]),
        ];
        let frame = encode_v1(&m);
        assert_eq!(decode_v1(&frame).unwrap(), m);
    }

    #[test]
    fn garbage_and_iopub_are_refused() {
        assert!(decode_v1(b"").is_err());
        assert!(decode_v1(&[0xff; 64]).is_err());
        let m = RawMessage::new_gateway(Channel::Iopub, "x", "s", None, serde_json::json!({}));
        assert!(matches!(
            decode_v1(&encode_v1(&m)),
            Err(FrameError::Channel(_))
        ));
        let mut frame = encode_v1(&RawMessage::new_gateway(
            Channel::Shell,
            "x",
            "s",
            None,
            serde_json::json!({}),
        ))
        .to_vec();
        frame.push(0);
        assert!(decode_v1(&frame).is_err());
    }

    #[test]
    fn middle_offset_past_the_end_is_an_error_not_a_panic() {
        let m = RawMessage::new_gateway(Channel::Shell, "x", "s", None, serde_json::json!({}));
        let mut frame = encode_v1(&m).to_vec();
        // offset[1] (end of the channel part) points one byte past the frame; the last offset
        // still equals the frame length.
        let past = frame.len() as u64 + 1;
        frame[16..24].copy_from_slice(&past.to_le_bytes());
        assert!(matches!(decode_v1(&frame), Err(FrameError::Layout(_))));
    }
}
