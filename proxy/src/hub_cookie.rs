//! The hub token inside a single-user server's OAuth cookie.
//!
//! A stock `jupyterhub-singleuser` keeps the access token the hub issued to it (via OAuth) in a
//! cookie named after its OAuth client (`jupyterhub-user-NAME`, `__Host-` prefixed when the
//! host-prefix option is on), as a tornado "signed value" version 2:
//!
//! ```text
//! 2|1:0|10:<timestamp>|<len>:<cookie name>|<len>:<base64 token>|<hex HMAC>
//! ```
//!
//! Python's cookie writer puts the value in double quotes (it contains `=`), escaping `"` and
//! `\` and writing other special bytes as `\ooo`.
//!
//! The value is signed with a secret only that server knows, not encrypted. The proxy does not
//! check the signature: the token itself is the credential, and the hub decides whether it is
//! valid and may use the server. A forged cookie gains nothing that the token inside it would
//! not give its holder anyway.

use base64::Engine as _;

/// The token in the cookie named `name` among `cookie_header` values (`Cookie:` headers), or in
/// its `__Host-` prefixed form; `None` when absent or not a version-2 signed value of that name.
pub(crate) fn token_from_cookies<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<String> {
    let host_name = format!("__Host-{name}");
    cookie_headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name || *k == host_name)
        .find_map(|(_, v)| token_from_signed_value(&unquote(v.trim())?, name))
}

/// The token in a tornado version-2 signed value whose name field is `name`.
fn token_from_signed_value(value: &str, name: &str) -> Option<String> {
    let rest = value.strip_prefix("2|")?;
    let (_key_version, rest) = field(rest)?;
    let (_timestamp, rest) = field(rest)?;
    let (signed_name, rest) = field(rest)?;
    let (encoded, signature) = field(rest)?;
    if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Tornado signs the cookie's own name in; the prefixed name carries the unprefixed one.
    if signed_name != name && signed_name.strip_prefix("__Host-") != Some(name) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let token = String::from_utf8(bytes).ok()?;
    (!token.is_empty() && !token.chars().any(char::is_control)).then_some(token)
}

/// One `<len>:<text>|` field: the text and what follows the `|`.
fn field(s: &str) -> Option<(&str, &str)> {
    let (len, rest) = s.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let text = rest.get(..len)?;
    let after = rest.get(len..)?.strip_prefix('|')?;
    Some((text, after))
}

/// A cookie value as Python writes it: bare, or in double quotes with `\"`, `\\` and `\ooo`
/// escapes. `None` for a malformed quoted value.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Some(v.to_owned());
    };
    let mut out = Vec::with_capacity(inner.len());
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3');
        match (octal, bytes.get(i + 1)) {
            (Some(d), _) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (None, Some(&c)) => {
                out.push(c);
                i += 2;
            }
            (None, None) => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by tornado 6.6.1: create_signed_value(secret, 'jupyterhub-user-alice',
    // 'tok_abc123XYZ+/=', version=2), as Python's SimpleCookie writes it.
    const ALICE: &str = "\"2|1:0|10:1795307516|21:jupyterhub-user-alice|24:dG9rX2FiYzEyM1hZWisvPQ==|54cd05e4485eaf05559d417ac5bf7847b2251a78bfcf2b06944f24584d0f9e9f\"";

    #[test]
    fn reads_the_token_from_a_quoted_signed_cookie() {
        let header = format!("_xsrf=2|aa|bb|1; jupyterhub-user-alice={ALICE}; other=1");
        assert_eq!(
            token_from_cookies([header.as_str()], "jupyterhub-user-alice").as_deref(),
            Some("tok_abc123XYZ+/=")
        );
        // Also bare and across several Cookie headers.
        let bare = format!("jupyterhub-user-alice={}", ALICE.trim_matches('"'));
        assert_eq!(
            token_from_cookies(["a=b", bare.as_str()], "jupyterhub-user-alice").as_deref(),
            Some("tok_abc123XYZ+/=")
        );
    }

    #[test]
    fn another_servers_cookie_or_a_mangled_one_gives_nothing() {
        let header = format!("jupyterhub-user-alice={ALICE}");
        // Asked for bob's server: alice's cookie is not it.
        assert_eq!(
            token_from_cookies([header.as_str()], "jupyterhub-user-bob"),
            None
        );
        // A cookie under bob's name whose signed name is alice's is refused too.
        let renamed = format!("jupyterhub-user-bob={ALICE}");
        assert_eq!(
            token_from_cookies([renamed.as_str()], "jupyterhub-user-bob"),
            None
        );
        for bad in [
            "jupyterhub-user-alice=",
            "jupyterhub-user-alice=\"2|1:0\"",
            "jupyterhub-user-alice=1|1:0|10:1795307516|21:jupyterhub-user-alice|4:dG9r|ab",
            "jupyterhub-user-alice=2|1:0|10:1795307516|21:jupyterhub-user-alice|4:dG9r|",
            "jupyterhub-user-alice=2|1:0|10:1795307516|21:jupyterhub-user-alice|99:dG9r|ab",
            "jupyterhub-user-alice=2|1:0|10:1795307516|21:jupyterhub-user-alice|4:!!!!|ab",
            "jupyterhub-user-alice=\"2|1:0|10:1795307516|21:jupyterhub-user-alice|4:dG9r|ab\\\"",
        ] {
            assert_eq!(
                token_from_cookies([bad], "jupyterhub-user-alice"),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn host_prefixed_cookie_is_read() {
        let v = "2|1:0|10:1795307516|28:__Host-jupyterhub-user-alice|4:dG9r|ab12";
        let header = format!("__Host-jupyterhub-user-alice={v}");
        assert_eq!(
            token_from_cookies([header.as_str()], "jupyterhub-user-alice").as_deref(),
            Some("tok")
        );
    }

    #[test]
    fn python_escapes_are_undone() {
        assert_eq!(
            unquote("\"a\\\"b\\\\c\\073d\"").as_deref(),
            Some("a\"b\\c;d")
        );
        assert_eq!(unquote("plain").as_deref(), Some("plain"));
        assert_eq!(unquote("\"dangling\\\""), None);
    }

    mod props {
        use base64::Engine as _;
        use proptest::prelude::*;

        use super::super::*;

        /// A signed value as tornado writes it, with a made-up signature (not checked here).
        fn signed(name: &str, token: &str, timestamp: u64, sig: &str) -> String {
            let encoded = base64::engine::general_purpose::STANDARD.encode(token);
            let ts = timestamp.to_string();
            format!(
                "2|1:0|{}:{ts}|{}:{name}|{}:{encoded}|{sig}",
                ts.len(),
                name.len(),
                encoded.len()
            )
        }

        /// Python's cookie quoting: `\"`, `\\`, and `\ooo` for some other bytes (`escape`
        /// picks which printable bytes are written as octal too).
        fn python_quote(v: &str, escape: &[bool]) -> String {
            let mut out = String::from("\"");
            for (i, b) in v.bytes().enumerate() {
                match b {
                    b'"' | b'\\' => {
                        out.push('\\');
                        out.push(char::from(b));
                    }
                    _ if escape
                        .get(i % escape.len().max(1))
                        .copied()
                        .unwrap_or(false) =>
                    {
                        out.push_str(&format!("\\{b:03o}"));
                    }
                    _ => out.push(char::from(b)),
                }
            }
            out.push('"');
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_cookie_headers_never_panic(
                headers in prop::collection::vec(any::<String>(), 0..4),
                name in "[a-z-]{0,24}",
            ) {
                let _ = token_from_cookies(headers.iter().map(String::as_str), &name);
                for h in &headers {
                    let _ = unquote(h);
                    let _ = token_from_signed_value(h, &name);
                }
            }

            #[test]
            fn mangled_signed_values_never_panic(
                fields in prop::collection::vec(("[0-9]{0,3}", "[ -~]{0,12}"), 0..7),
                tail in "[ -~]{0,8}",
            ) {
                let mut v = String::from("2|");
                for (len, text) in &fields {
                    v.push_str(&format!("{len}:{text}|"));
                }
                v.push_str(&tail);
                let _ = token_from_signed_value(&v, "jupyterhub-user-alice");
                let _ = token_from_cookies([format!("jupyterhub-user-alice={v}").as_str()], "jupyterhub-user-alice");
            }

            #[test]
            fn the_token_of_the_named_cookie_is_read_back_whatever_the_quoting(
                user in "[a-z0-9._-]{1,20}",
                token in "[!-~]{1,48}",
                timestamp in any::<u32>(),
                sig in "[0-9a-f]{1,64}",
                quoted in any::<bool>(),
                host_prefix in any::<bool>(),
                escape in prop::collection::vec(any::<bool>(), 1..8),
                before in prop::collection::vec("[a-z_]{1,8}=[a-z0-9|]{0,8}", 0..3),
            ) {
                let name = format!("jupyterhub-user-{user}");
                let cookie_name = if host_prefix { format!("__Host-{name}") } else { name.clone() };
                let value = signed(&cookie_name, &token, u64::from(timestamp), &sig);
                let value = if quoted { python_quote(&value, &escape) } else { value };
                let mut pairs = before.clone();
                pairs.push(format!("{cookie_name}={value}"));
                let header = pairs.join("; ");
                prop_assert_eq!(token_from_cookies([header.as_str()], &name), Some(token.clone()));
                // Another user's server never gets it, under its own name or a renamed cookie.
                let other = format!("jupyterhub-user-{user}x");
                prop_assert_eq!(token_from_cookies([header.as_str()], &other), None);
                let renamed = format!("{other}={value}");
                prop_assert_eq!(token_from_cookies([renamed.as_str()], &other), None);
            }
        }
    }
}
