//! Property tests of every decoder the gateway runs on network input: the v1 WebSocket framing,
//! the legacy JSON (text and binary) framing, and the Jupyter wire (ZeroMQ multipart) framing.
//! Arbitrary input never panics (a forged length that made a decoder allocate what it claims
//! would abort the test binary); valid messages survive encode-then-decode; offsets and lengths out of range are errors.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use kernel_gateway::protocol::{
    Channel, FrameError, LegacyFrame, RawMessage, Signer, WireError, decode_legacy_binary,
    decode_legacy_text, decode_v1, encode_legacy, encode_v1,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Integers a forged offset table is made of: edges, small values, and everything.
fn offset_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(1u64 << 40),
        0u64..64,
        0u64..4200,
        any::<u64>(),
    ]
}

fn client_channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Shell),
        Just(Channel::Control),
        Just(Channel::Stdin)
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(".*", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A valid client message: channel, header with routing fields, JSON object parts, buffers.
fn message() -> impl Strategy<Value = RawMessage> {
    (
        client_channel(),
        ".*",
        ".*",
        json_object(),
        json_object(),
        json_object(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
    )
        .prop_map(
            |(channel, msg_id, msg_type, parent, metadata, content, buffers)| {
                let header = json!({"msg_id": msg_id, "msg_type": msg_type, "session": "s"});
                RawMessage {
                    channel,
                    header: Bytes::from(header.to_string()),
                    parent_header: Bytes::from(parent.to_string()),
                    metadata: Bytes::from(metadata.to_string()),
                    content: Bytes::from(content.to_string()),
                    buffers: buffers.into_iter().map(Bytes::from).collect(),
                }
            },
        )
}

fn json_of(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

/// A v1 frame whose count and offsets are forged, followed by `tail`.
fn forged_v1(n: u64, offsets: &[u64], tail: &[u8]) -> Vec<u8> {
    let mut frame = n.to_le_bytes().to_vec();
    for o in offsets {
        frame.extend_from_slice(&o.to_le_bytes());
    }
    frame.extend_from_slice(tail);
    frame
}

/// A legacy binary frame whose count and offsets are forged, followed by `tail`.
fn forged_legacy(n: u32, offsets: &[u32], tail: &[u8]) -> Vec<u8> {
    let mut frame = n.to_be_bytes().to_vec();
    for o in offsets {
        frame.extend_from_slice(&o.to_be_bytes());
    }
    frame.extend_from_slice(tail);
    frame
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn v1_decoder_never_panics_on_arbitrary_bytes(frame in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_v1(&frame);
    }

    #[test]
    fn v1_forged_offsets_never_panic_and_decode_only_when_consistent(
        n in offset_value(),
        offsets in prop::collection::vec(offset_value(), 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let frame = forged_v1(n, &offsets, &tail);
        let result = decode_v1(&frame);
        // A forged table only decodes if it describes this very frame.
        if let Ok(m) = result {
            prop_assert_eq!(encode_v1(&m).len(), frame.len());
        }
    }

    #[test]
    fn v1_encode_then_decode_is_the_same_message(m in message()) {
        prop_assert_eq!(decode_v1(&encode_v1(&m)).unwrap(), m);
    }

    #[test]
    fn v1_any_changed_offset_is_an_error_or_still_consistent(
        m in message(),
        slot in 0usize..16,
        value in offset_value(),
    ) {
        let mut frame = encode_v1(&m).to_vec();
        let at = 8 * (slot % (frame.len() / 8).min(12));
        frame[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let result = decode_v1(&frame);
        if let Ok(back) = result {
            prop_assert_eq!(encode_v1(&back).len(), frame.len());
        }
    }

    #[test]
    fn legacy_text_decoder_never_panics(text in ".*") {
        let _ = decode_legacy_text(&text);
    }

    #[test]
    fn legacy_text_decoder_never_panics_on_json_shaped_input(
        header in json_value(),
        rest in json_object(),
        channel in prop_oneof![Just(Value::from("shell")), Just(Value::from("iopub")), json_value()],
    ) {
        let mut msg = rest;
        msg["header"] = header;
        msg["channel"] = channel;
        let text = msg.to_string();
        if let Ok(m) = decode_legacy_text(&text) {
            prop_assert!(json_of(&m.header).is_object());
            prop_assert!(json_of(&m.content).is_object());
        }
    }

    #[test]
    fn legacy_binary_decoder_never_panics_on_arbitrary_bytes(
        frame in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let _ = decode_legacy_binary(&frame);
    }

    #[test]
    fn legacy_binary_forged_offsets_never_panic(
        n in prop_oneof![Just(0u32), Just(1u32), Just(4097u32), Just(4098u32), Just(u32::MAX), 0u32..16, any::<u32>()],
        offsets in prop::collection::vec(prop_oneof![Just(0u32), Just(u32::MAX), 0u32..300, any::<u32>()], 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let frame = forged_legacy(n, &offsets, &tail);
        let _ = decode_legacy_binary(&frame);
    }

    #[test]
    fn legacy_encode_then_decode_keeps_the_message(m in message()) {
        let back = match encode_legacy(&m).unwrap() {
            LegacyFrame::Text(t) => {
                prop_assert!(m.buffers.is_empty());
                decode_legacy_text(&t).unwrap()
            }
            LegacyFrame::Binary(b) => {
                prop_assert!(!m.buffers.is_empty());
                decode_legacy_binary(&b).unwrap()
            }
        };
        // The JSON parts come back as the exact bytes sent, not merely equal JSON: serde_json
        // reads floats approximately, so a decoder that re-serialized them would change numbers.
        prop_assert_eq!(back.channel, m.channel);
        prop_assert_eq!(&back.header, &m.header);
        prop_assert_eq!(&back.parent_header, &m.parent_header);
        prop_assert_eq!(&back.metadata, &m.metadata);
        prop_assert_eq!(&back.content, &m.content);
        prop_assert_eq!(back.buffers, m.buffers);
    }

    #[test]
    fn wire_decoder_never_panics_on_arbitrary_frames(
        frames in prop::collection::vec(
            prop_oneof![
                Just(b"<IDS|MSG>".to_vec()),
                Just(b"{}".to_vec()),
                prop::collection::vec(any::<u8>(), 0..80),
            ],
            0..10,
        ),
        key in prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 1..40)],
    ) {
        let signer = Signer::new(&key, "hmac-sha256").unwrap();
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let result = signer.from_frames(Channel::Iopub, frames);
        if !key.is_empty() {
            // With a key, nothing decodes without a valid signature; forging one is hopeless.
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn wire_sign_then_verify_is_the_same_message(
        m in message(),
        key in prop::collection::vec(any::<u8>(), 0..40),
        routing in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..3),
    ) {
        let signer = Signer::new(&key, "hmac-sha256").unwrap();
        let mut frames = signer.to_frames(&m);
        for (i, id) in routing.into_iter().enumerate() {
            // A routing id that equals the delimiter would be one; real ids never are.
            prop_assume!(id != b"<IDS|MSG>");
            frames.insert(i, Bytes::from(id));
        }
        prop_assert_eq!(signer.from_frames(m.channel, frames).unwrap(), m);
    }

    #[test]
    fn wire_any_changed_signed_byte_is_rejected(
        m in message(),
        key in prop::collection::vec(any::<u8>(), 1..40),
        part in 1usize..6,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let signer = Signer::new(&key, "hmac-sha256").unwrap();
        let mut frames = signer.to_frames(&m);
        let mut bytes = frames[part].to_vec();
        prop_assume!(!bytes.is_empty());
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        frames[part] = Bytes::from(bytes);
        let result = signer.from_frames(m.channel, frames);
        prop_assert!(matches!(result, Err(WireError::BadSignature)), "{result:?}");
    }
}

#[test]
fn v1_count_claiming_4096_parts_in_a_short_frame_is_an_error() {
    let frame = forged_v1(4096, &[8 * 4097], b"shell");
    let result = decode_v1(&frame);
    assert!(matches!(result, Err(FrameError::Layout(_))), "{result:?}");
}

/// Regression (proptest seed 0a0daa3d…): a middle offset past the end of the frame, followed by
/// the true frame length, made `decode_v1` slice out of range and panic — a crash any client
/// could trigger with one WebSocket frame.
#[test]
fn v1_middle_offset_past_the_end_is_an_error_not_a_panic() {
    // channel "shell" + four "{}" parts: n = 6, table of 7 u64s, frame of 56 + 5 + 8 = 69 bytes.
    let tail = b"shell{}{}{}{}";
    let good = forged_v1(6, &[56, 61, 63, 65, 67, 69], tail);
    assert!(decode_v1(&good).is_ok());
    let past = forged_v1(6, &[56, 70, 63, 65, 67, 69], tail);
    let result = decode_v1(&past);
    assert!(matches!(result, Err(FrameError::Layout(_))), "{result:?}");
    let past_then_short = forged_v1(6, &[56, 61, 63, 65, 1000, 69], tail);
    let result = decode_v1(&past_then_short);
    assert!(matches!(result, Err(FrameError::Layout(_))), "{result:?}");
}

/// Regression (proptest seed 1b10ea0c…): a legacy client's float reached the kernel one ulp off,
/// because the decoder parsed the parts into `serde_json::Value` and printed them again.
#[test]
fn legacy_decoder_forwards_numbers_exactly_as_sent() {
    let content = r#"{"":[8.086104253645383e+226]}"#;
    let text = format!(r#"{{"header":{{"msg_id":"a","msg_type":"t"}},"content":{content}}}"#);
    let m = decode_legacy_text(&text).unwrap();
    assert_eq!(&m.content[..], content.as_bytes());
    let mut frame = 2u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&12u32.to_be_bytes());
    frame.extend_from_slice(&(12 + text.len() as u32).to_be_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame.extend_from_slice(b"buf");
    let m = decode_legacy_binary(&frame).unwrap();
    assert_eq!(&m.content[..], content.as_bytes());
    assert_eq!(m.buffers, vec![Bytes::from_static(b"buf")]);
}

/// Regression (proptest seed ce0406d8…): flipping the case of a signature's hex digit (`a` to
/// `A`) left the message accepted, so one signed message had many valid signature frames.
#[test]
fn wire_signature_in_uppercase_hex_is_rejected() {
    let signer = Signer::new(b"key", "hmac-sha256").unwrap();
    let m = RawMessage {
        channel: Channel::Shell,
        header: Bytes::from_static(br#"{"msg_id":"a","msg_type":"t","session":"s"}"#),
        parent_header: Bytes::from_static(b"{}"),
        metadata: Bytes::from_static(b"{}"),
        content: Bytes::from_static(b"{}"),
        buffers: Vec::new(),
    };
    let mut frames = signer.to_frames(&m);
    assert!(frames[1].iter().any(u8::is_ascii_lowercase));
    frames[1] = Bytes::from(frames[1].to_ascii_uppercase());
    let result = signer.from_frames(Channel::Shell, frames);
    assert!(matches!(result, Err(WireError::BadSignature)), "{result:?}");
}

#[test]
fn legacy_offsets_past_the_end_or_backwards_are_errors() {
    let json = br#"{"header":{}}"#;
    let start = 8u32;
    let past = forged_legacy(1, &[start + 1000], json);
    assert!(matches!(
        decode_legacy_binary(&past),
        Err(FrameError::Layout(_))
    ));
    let backwards = forged_legacy(2, &[12, 10], json);
    assert!(matches!(
        decode_legacy_binary(&backwards),
        Err(FrameError::Layout(_))
    ));
    let fine = forged_legacy(1, &[start], json);
    assert!(decode_legacy_binary(&fine).is_ok());
}
