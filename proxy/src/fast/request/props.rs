//! Property tests of the fast path's request-head parser: whatever a client sends, it never
//! panics, it decides the same whether the head arrives whole or in pieces, and it serves
//! nothing whose body framing another parser could read differently (request smuggling).

use proptest::prelude::*;

use super::*;

/// What [`parse`] made of a buffer, comparable across runs.
#[derive(Debug, PartialEq)]
enum Outcome {
    Partial,
    Other,
    Simple {
        method: Method,
        version: Version,
        uri: String,
        headers: Vec<(String, Vec<u8>)>,
        keep_alive: bool,
        raw: Vec<u8>,
        rest: Vec<u8>,
    },
}

fn outcome(input: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(input);
    let parsed = parse(&mut buf);
    check_buffer(input, &parsed, &buf);
    match parsed {
        Parsed::Partial => Outcome::Partial,
        Parsed::Other => Outcome::Other,
        Parsed::Simple(head) => Outcome::Simple {
            method: head.method,
            version: head.version,
            uri: head.uri.to_string(),
            headers: head
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            keep_alive: head.keep_alive,
            raw: head.raw.to_vec(),
            rest: buf.to_vec(),
        },
    }
}

/// Nothing is lost or invented: a served head is exactly the start of the input and the rest
/// stays buffered; anything else leaves every byte for hyper.
fn check_buffer(input: &[u8], parsed: &Parsed, buf: &BytesMut) {
    match parsed {
        Parsed::Simple(head) => {
            assert_eq!(&input[..head.raw.len()], &head.raw[..]);
            assert_eq!(&input[head.raw.len()..], &buf[..]);
        }
        Parsed::Partial | Parsed::Other => assert_eq!(input, &buf[..]),
    }
}

/// Feed `input` in pieces cut at `cuts`, parsing after each as the connection loop does; the
/// outcome and how many bytes had arrived when it was decided.
fn outcome_in_pieces(input: &[u8], cuts: &[usize]) -> (Outcome, usize) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    cuts.dedup();
    for &end in &cuts {
        if end == 0 {
            continue;
        }
        let got = outcome(&input[..end]);
        if got != Outcome::Partial {
            return (got, end);
        }
    }
    (Outcome::Partial, input.len())
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("GET".to_owned()),
        2 => Just("HEAD".to_owned()),
        1 => Just("POST".to_owned()),
        1 => Just("get".to_owned()),
        1 => "[A-Z]{1,8}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "/[a-zA-Z0-9/._~%?=&-]{0,24}",
        1 => Just("*".to_owned()),
        1 => Just("http://example.org/x".to_owned()),
        1 => "[ -~]{0,12}",
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("HTTP/1.1".to_owned()),
        2 => Just("HTTP/1.0".to_owned()),
        1 => Just("HTTP/2.0".to_owned()),
        1 => Just("HTTP/1.1 ".to_owned()),
    ]
}

/// Header names, biased towards the ones that decide body framing and connection reuse.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("Host".to_owned()),
        2 => Just("Content-Length".to_owned()),
        1 => Just("content-length".to_owned()),
        1 => Just("CONTENT-LENGTH".to_owned()),
        2 => Just("Transfer-Encoding".to_owned()),
        1 => Just("transfer-encoding".to_owned()),
        1 => Just("Connection".to_owned()),
        1 => Just("Upgrade".to_owned()),
        1 => Just("Expect".to_owned()),
        1 => Just("Content-Length ".to_owned()),
        1 => Just(" Content-Length".to_owned()),
        3 => "[A-Za-z][A-Za-z0-9-]{0,10}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("0".to_owned()),
        1 => Just(" 0 ".to_owned()),
        1 => Just("00".to_owned()),
        1 => Just("0, 0".to_owned()),
        2 => Just("5".to_owned()),
        2 => Just("chunked".to_owned()),
        1 => Just("gzip, chunked".to_owned()),
        1 => Just("close".to_owned()),
        1 => Just("keep-alive".to_owned()),
        1 => Just("Upgrade".to_owned()),
        // A bare CR, a bare LF and an obs-fold continuation inside a value.
        1 => Just("a\rb".to_owned()),
        1 => Just("a\nb".to_owned()),
        1 => Just("0\r\n 5".to_owned()),
        1 => Just("0\r\n\tchunked".to_owned()),
        4 => "[ -~]{0,16}",
    ]
}

/// A request head (sometimes malformed), then whatever follows it on the connection.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        prop::collection::vec((header_name(), header_value()), 0..6),
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(method, target, version, headers, eol, tail)| {
            let mut out = format!("{method} {target} {version}{eol}");
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}{eol}"));
            }
            out.push_str(eol);
            let mut out = out.into_bytes();
            out.extend_from_slice(&tail);
            out
        })
}

/// Whether `head` holds a CR that does not start a CRLF, or a header line that starts with
/// whitespace (obs-fold, RFC 9112 5.2).
fn has_bare_cr_or_obs_fold(head: &[u8]) -> bool {
    let bare_cr = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && head.get(i + 1) != Some(&b'\n'));
    let obs_fold = head
        .windows(2)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'));
    bare_cr || obs_fold
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_lose_nothing(input in prop::collection::vec(any::<u8>(), 0..512)) {
        outcome(&input);
    }

    #[test]
    fn arbitrary_text_after_a_request_line_never_panics(
        line in "(GET|HEAD) /[ -~]{0,16} HTTP/1\\.[01]\r\n",
        rest in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut input = line.into_bytes();
        input.extend_from_slice(&rest);
        outcome(&input);
    }

    #[test]
    fn a_head_split_at_any_byte_parses_as_the_whole(
        input in request(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let whole = outcome(&input);
        if let Outcome::Simple { raw, .. } = &whole {
            // Every proper prefix of a complete head waits for more.
            for end in 0..raw.len() {
                prop_assert_eq!(outcome(&input[..end]), Outcome::Partial, "cut at {}", end);
            }
        }
        let (pieces, seen) = outcome_in_pieces(&input, &cuts);
        match (&whole, &pieces) {
            // Handed to hyper after a prefix: hyper then reads the same bytes the whole
            // parse would have given it. A served head must never be refused in pieces.
            (Outcome::Other, Outcome::Other) => {}
            (Outcome::Simple { raw, .. }, Outcome::Simple { .. }) => {
                // Decided once the head was complete, whatever followed it then.
                prop_assert!(seen >= raw.len());
                let again = outcome(&input[..seen]);
                prop_assert_eq!(&again, &pieces);
                let (Outcome::Simple { rest, .. }, Outcome::Simple { rest: all_rest, .. }) =
                    (&pieces, &whole)
                else {
                    unreachable!()
                };
                prop_assert_eq!(&input[raw.len()..seen], &rest[..]);
                prop_assert!(all_rest.starts_with(rest));
                let strip = |o: &Outcome| match o {
                    Outcome::Simple { method, version, uri, headers, keep_alive, raw, .. } => {
                        (method.clone(), *version, uri.clone(), headers.clone(), *keep_alive, raw.clone())
                    }
                    _ => unreachable!(),
                };
                prop_assert_eq!(strip(&pieces), strip(&whole));
            }
            (Outcome::Partial, Outcome::Partial) => {}
            _ => prop_assert!(false, "whole: {:?}, in pieces: {:?}", whole, pieces),
        }
    }

    #[test]
    fn a_served_head_has_no_body_framing_to_disagree_on(input in request()) {
        if let Outcome::Simple { headers, raw, .. } = outcome(&input) {
            for (name, value) in &headers {
                prop_assert_ne!(name.as_str(), "transfer-encoding");
                prop_assert_ne!(name.as_str(), "upgrade");
                prop_assert_ne!(name.as_str(), "expect");
                if name == "content-length" {
                    prop_assert_eq!(value.trim_ascii(), b"0", "Content-Length {:?}", value);
                }
                prop_assert!(!value.contains(&b'\r') && !value.contains(&b'\n'));
            }
            prop_assert!(!has_bare_cr_or_obs_fold(&raw), "served {:?}", String::from_utf8_lossy(&raw));
        }
    }
}

/// The request-smuggling shapes RFC 9112 6.3 and 5.2 warn about, spelled out: none is served
/// here (hyper answers them, see `proxy/tests/smuggling.rs`).
#[test]
fn smuggling_shapes_are_never_served_by_the_fast_path() {
    for wire in [
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nContent-Length: 0, 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\n 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nX-A: 1\r\n\tContent-Length: 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nX-A: 1\rContent-Length: 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nabcde",
    ] {
        let got = outcome(wire.as_bytes());
        assert_eq!(got, Outcome::Other, "{wire:?}");
    }
}
