#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

/// A ClientHello body with `sni` (if any) among `other` extensions.
fn hello_body(
    sni: Option<&str>,
    session_id: &[u8],
    suites: &[u16],
    other: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&[7u8; 32]);
    b.push(u8::try_from(session_id.len()).unwrap());
    b.extend_from_slice(session_id);
    b.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for s in suites {
        b.extend_from_slice(&s.to_be_bytes());
    }
    b.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let mut push = |t: u16, data: &[u8]| {
        exts.extend_from_slice(&t.to_be_bytes());
        exts.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        exts.extend_from_slice(data);
    };
    for (t, d) in other.iter().take(other.len() / 2) {
        push(*t, d);
    }
    if let Some(name) = sni {
        let mut entry = vec![0u8];
        entry.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        push(0, &data);
    }
    for (t, d) in other.iter().skip(other.len() / 2) {
        push(*t, d);
    }
    b.extend_from_slice(&u16::try_from(exts.len()).unwrap().to_be_bytes());
    b.extend_from_slice(&exts);
    b
}

/// `body` as a handshake message split into records of at most `chunk` bytes.
fn records(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut msg = vec![1u8];
    msg.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    msg.extend_from_slice(body);
    let mut out = Vec::new();
    for part in msg.chunks(chunk.max(1)) {
        out.extend_from_slice(&[HANDSHAKE, 3, 1]);
        out.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn finds_the_sni_of_a_real_rustls_client_hello() {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("daskgateway-0123abcd").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    assert_eq!(
        parse(&wire),
        Hello::ClientHello {
            sni: Some("daskgateway-0123abcd".to_owned())
        }
    );
    for cut in 0..wire.len() {
        assert_eq!(
            parse(&wire[..cut]),
            Hello::Incomplete,
            "prefix of {cut} bytes"
        );
    }
}

#[test]
fn http_is_not_tls() {
    assert_eq!(parse(b"GET /api/version HTTP/1.1\r\n"), Hello::NotTls);
    assert_eq!(parse(b"P"), Hello::NotTls);
    assert_eq!(parse(b""), Hello::Incomplete);
}

#[test]
fn hello_without_sni_or_extensions() {
    let body = hello_body(None, &[], &[0x1301], &[]);
    assert_eq!(
        parse(&records(&body, 1000)),
        Hello::ClientHello { sni: None }
    );
    // No extension block at all (TLS 1.0-style hello).
    let mut bare = body.clone();
    bare.truncate(bare.len() - 2);
    assert_eq!(
        parse(&records(&bare, 1000)),
        Hello::ClientHello { sni: None }
    );
}

#[test]
fn malformed_hellos_are_invalid_not_incomplete() {
    // Not a ClientHello (ServerHello type 2).
    let mut wire = records(&hello_body(Some("a"), &[], &[1], &[]), 1000);
    wire[5] = 2;
    assert!(matches!(parse(&wire), Hello::Invalid(_)));
    // Zero-length record.
    assert!(matches!(parse(&[HANDSHAKE, 3, 1, 0, 0]), Hello::Invalid(_)));
    // Record too long.
    assert!(matches!(
        parse(&[HANDSHAKE, 3, 1, 0x50, 0]),
        Hello::Invalid(_)
    ));
    // Application data in the middle of the hello.
    let mut split = records(&hello_body(Some("a"), &[], &[1], &[]), 10);
    split[15] = 0x17;
    assert!(matches!(parse(&split), Hello::Invalid(_)));
    // Server name with a NUL byte.
    let wire = records(&hello_body(Some("daskgateway-a\0b"), &[], &[1], &[]), 1000);
    assert!(matches!(parse(&wire), Hello::Invalid(_)));
    // Hello body announcing more than the limit.
    assert!(matches!(
        parse(&[HANDSHAKE, 3, 1, 0, 4, 1, 0x7f, 0xff, 0xff]),
        Hello::Invalid(_)
    ));
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{0,60}"
}

fn extensions() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    proptest::collection::vec(
        (1u16..0xffff, proptest::collection::vec(any::<u8>(), 0..64)),
        0..6,
    )
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn never_panics_on_a_mutated_hello(
        name in host_name(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut wire = records(&hello_body(Some(&name), &[1, 2], &[0x1301, 0x1302], &[]), 64);
        for (i, b) in flips {
            let at = i.index(wire.len());
            wire[at] = b;
        }
        let _ = parse(&wire);
    }

    #[test]
    fn finds_the_sni_however_the_hello_is_split(
        name in host_name(),
        session_id in proptest::collection::vec(any::<u8>(), 0..=32),
        suites in proptest::collection::vec(any::<u16>(), 1..20),
        other in extensions(),
        chunk in 1usize..400,
    ) {
        let body = hello_body(Some(&name), &session_id, &suites, &other);
        let wire = records(&body, chunk);
        prop_assert_eq!(parse(&wire), Hello::ClientHello { sni: Some(name.clone()) });
        // Every strict prefix asks for more, never decides early.
        let cut = wire.len() * chunk / 400;
        prop_assert_eq!(parse(&wire[..cut.min(wire.len() - 1)]), Hello::Incomplete);
        // Trailing bytes (the client's next records) do not matter.
        let mut more = wire.clone();
        more.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
        prop_assert_eq!(parse(&more), Hello::ClientHello { sni: Some(name) });
    }
}
