//! Property tests of the upstream response parser and the chunked body decoder. A user's
//! server is on the other end of these connections, so its bytes are as hostile as a
//! client's: they never panic the proxy, a head split anywhere parses as the whole, and the
//! framing rules that keep one response from bleeding into the next hold.

use bytes::Buf;
use proptest::prelude::*;

use super::body::{Chunked, Step, step_chunked};
use super::*;

/// What [`parse_head`] made of a buffer, comparable across runs.
#[derive(Debug, PartialEq)]
enum Outcome {
    Partial,
    Informational(usize),
    Head {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        framing: String,
        keep_alive: bool,
        consumed: usize,
    },
    Refused,
}

fn outcome(input: &[u8], is_head: bool) -> Outcome {
    let mut buf = BytesMut::from(input);
    match parse_head(&mut buf, is_head) {
        Ok(Parsed::Partial) => {
            assert_eq!(&buf[..], input, "a partial head consumed bytes");
            Outcome::Partial
        }
        Ok(Parsed::Informational) => Outcome::Informational(input.len() - buf.len()),
        Ok(Parsed::Head(status, _, headers, framing, keep_alive)) => Outcome::Head {
            status: status.as_u16(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            framing: format!("{framing:?}"),
            keep_alive,
            consumed: input.len() - buf.len(),
        },
        Err(_) => Outcome::Refused,
    }
}

fn status_line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")], 100u16..600)
            .prop_map(|(v, code)| format!("{v} {code} Reason")),
        1 => Just("HTTP/1.1 200".to_owned()),
        1 => Just("HTTP/1.1 99 Low".to_owned()),
        1 => Just("HTTP/2 200 OK".to_owned()),
        1 => "[ -~]{0,20}",
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("Content-Length".to_owned()),
        3 => Just("Transfer-Encoding".to_owned()),
        1 => Just("Connection".to_owned()),
        1 => Just("content-length".to_owned()),
        1 => Just("Content-Length ".to_owned()),
        3 => "[A-Za-z][A-Za-z0-9-]{0,10}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("0".to_owned()),
        2 => Just("5".to_owned()),
        1 => Just("5, 5".to_owned()),
        1 => Just("5, 6".to_owned()),
        1 => Just("+5".to_owned()),
        1 => Just("18446744073709551616".to_owned()),
        2 => Just("chunked".to_owned()),
        1 => Just("gzip, chunked".to_owned()),
        1 => Just("chunked, gzip".to_owned()),
        1 => Just("close".to_owned()),
        1 => Just("keep-alive".to_owned()),
        1 => Just("a\rb".to_owned()),
        1 => Just("5\r\n 6".to_owned()),
        1 => Just("x\r\n\tTransfer-Encoding: chunked".to_owned()),
        3 => "[ -~]{0,16}",
    ]
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        status_line(),
        prop::collection::vec((header_name(), header_value()), 0..6),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(line, headers, tail)| {
            let mut out = format!("{line}\r\n");
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            let mut out = out.into_bytes();
            out.extend_from_slice(&tail);
            out
        })
}

/// A body in chunked encoding with chunk sizes from `sizes`, extensions sometimes, trailers
/// sometimes.
fn chunked_wire(body: &[u8], sizes: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (sizes.next().copied().unwrap_or(1) % 64 + 1).min(rest.len());
        let ext = if ext { ";name=value" } else { "" };
        out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-sum: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Decode `wire` arriving in pieces cut at `cuts` (every piece seen by the decoder as the body
/// reader would: step until it needs more). The body and whether it ended, or `Err`.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), io::Error> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut buf = BytesMut::new();
    let mut state = Chunked::Size;
    let mut body = Vec::new();
    let mut fed = 0;
    for end in cuts {
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            match step_chunked(&mut buf, state)? {
                Step::Next(next) => state = next,
                Step::Data(data, next) => {
                    body.extend_from_slice(&data);
                    state = next;
                }
                Step::End(_) => return Ok((body, true)),
                Step::More => break,
            }
        }
    }
    Ok((body, false))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_response_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..512),
        is_head in any::<bool>(),
    ) {
        outcome(&input, is_head);
    }

    #[test]
    fn a_response_head_split_at_any_byte_parses_as_the_whole(input in response(), is_head in any::<bool>()) {
        let whole = outcome(&input, is_head);
        let consumed = match whole {
            Outcome::Head { consumed, .. } | Outcome::Informational(consumed) => consumed,
            Outcome::Partial | Outcome::Refused => return Ok(()),
        };
        for end in 0..consumed {
            let got = outcome(&input[..end], is_head);
            // A prefix may be refused only if the whole head was; here it was accepted.
            prop_assert_eq!(got, Outcome::Partial, "cut at {}", end);
        }
        prop_assert_eq!(outcome(&input[..consumed], is_head), whole);
    }

    #[test]
    fn response_framing_leaves_nothing_to_interpretation(input in response()) {
        let Outcome::Head { status, headers, framing, .. } = outcome(&input, false) else {
            return Ok(());
        };
        let te = headers.iter().any(|(n, _)| n == "transfer-encoding");
        let lengths: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_slice())
            .collect();
        let bodiless = status == 204 || status == 304;
        if te && !bodiless {
            // Transfer-Encoding wins over any Content-Length (RFC 9112 6.3 item 3).
            prop_assert!(!framing.starts_with("Length"), "{} with Transfer-Encoding", framing);
        }
        if !te && !bodiless && !lengths.is_empty() {
            // Every Content-Length agreed, or the head was refused.
            let values: std::collections::BTreeSet<u64> = lengths
                .iter()
                .flat_map(|v| std::str::from_utf8(v).unwrap_or("x").split(','))
                .map(|p| p.trim().parse::<u64>().expect("an accepted Content-Length is a number"))
                .collect();
            prop_assert_eq!(values.len(), 1);
            let n = values.first().copied().unwrap_or_default();
            prop_assert_eq!(framing, format!("Length({n})"));
        }
        let head_end = input.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(input.len());
        let head = &input[..head_end];
        let bare_cr = head
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\r' && head.get(i + 1) != Some(&b'\n'));
        let obs_fold = head.windows(3).any(|w| w[..2] == *b"\r\n" && (w[2] == b' ' || w[2] == b'\t'));
        prop_assert!(!bare_cr && !obs_fold, "accepted {:?}", String::from_utf8_lossy(head));
    }

    #[test]
    fn arbitrary_chunked_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = decode_in_pieces(&input, &cuts);
    }

    #[test]
    fn chunked_bodies_split_anywhere_decode_to_the_body(
        body in prop::collection::vec(any::<u8>(), 0..600),
        sizes in prop::collection::vec(any::<usize>(), 1..8),
        ext in any::<bool>(),
        trailer in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = chunked_wire(&body, &sizes, ext, trailer);
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let (decoded, ended) = decode_in_pieces(&wire, &cuts).unwrap();
        prop_assert!(ended);
        prop_assert_eq!(decoded, body);
    }

    #[test]
    fn chunked_decoding_stops_at_the_end_of_the_body(
        body in prop::collection::vec(any::<u8>(), 0..200),
        sizes in prop::collection::vec(any::<usize>(), 1..4),
        next in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Whatever follows the last chunk stays in the buffer: the next response's bytes
        // are never read as this body.
        let wire = chunked_wire(&body, &sizes, false, false);
        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(&next);
        let mut state = Chunked::Size;
        let mut decoded = Vec::new();
        loop {
            match step_chunked(&mut buf, state).unwrap() {
                Step::Next(s) => state = s,
                Step::Data(d, s) => {
                    decoded.extend_from_slice(&d);
                    state = s;
                }
                Step::End(_) => break,
                Step::More => prop_assert!(false, "stopped short"),
            }
        }
        prop_assert_eq!(decoded, body);
        prop_assert_eq!(buf.chunk(), &next[..]);
    }
}
