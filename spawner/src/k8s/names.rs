//! Kubernetes-safe names and label values derived from user and server names.
//!
//! A name that fits is the readable escape of its parts (`jupyter--ada--gpu`), so names of
//! earlier versions stay the same and a user keeps their claim. A name that does not fit is
//! cut and gets [`HASH_MARK`] and the first [`HASH_HEX`] hex digits of the SHA-256 of the whole
//! uncut name: no user can choose a name whose long form equals another's (80 bits of a
//! cryptographic hash), nor one whose short form equals a long form (the mark never occurs in
//! a short form: there every `-` is followed by a hex digit or is part of `--`).

use sha2::{Digest, Sha256};

/// Hex digits of the SHA-256 suffix of a cut name (80 bits).
pub(crate) const HASH_HEX: usize = 20;

/// Between a cut name and its hash. `z` is no hex digit, so `-z` never comes out of
/// [`escape`] and the separator `--` is never followed by it at a cut (trailing `-` are
/// trimmed before the mark).
pub(crate) const HASH_MARK: &str = "-z";

/// Longest Kubernetes DNS-1123 label and label value.
const MAX: usize = 63;

/// Escape `s` into `[a-z0-9-]`: lowercase letters and digits stay, every other byte becomes
/// `-xx` (hex), so distinct names never collide (`Ada` → `-41da`) and a `-` in the output is
/// always followed by a hex digit (which keeps `--` free as a separator).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("-{b:02x}"));
        }
    }
    out
}

/// The first [`HASH_HEX`] hex digits of SHA-256 of `s`.
pub(crate) fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `full` cut to fit [`MAX`] with the mark and the hash of `hashed`; the cut never ends with
/// `-` or `.` (so the mark stays recognisable and the result ends alphanumeric).
fn cut_with_hash(full: &str, hashed: &str) -> String {
    let mut keep = (MAX - HASH_MARK.len() - HASH_HEX).min(full.len());
    while !full.is_char_boundary(keep) {
        keep -= 1;
    }
    let head = full[..keep].trim_end_matches(['-', '.']);
    format!("{head}{HASH_MARK}{}", digest(hashed))
}

/// A DNS-1123 label (≤ 63 characters, `[a-z0-9-]`, alphanumeric at both ends) from `parts`
/// joined with `--`, unique per (`prefix`, `parts`): over-long results (and those that would
/// end with `-`) are cut and get the SHA-256 suffix of the whole.
pub(crate) fn dns_label(prefix: &str, parts: &[&str]) -> String {
    let mut name = prefix.to_owned();
    for p in parts {
        name.push_str("--");
        name.push_str(&escape(p));
    }
    if name.len() > MAX || name.ends_with('-') {
        cut_with_hash(&name, &name)
    } else {
        name
    }
}

/// A label value (≤ 63, `[A-Za-z0-9._-]`, alphanumeric at both ends, or empty), unique per
/// `s` (the SHA-256 suffix for long values).
pub(crate) fn label_value(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let v = escape(s);
    // `.` never comes out of `escape`, so the prefix keeps values distinct.
    let v = if v.starts_with('-') {
        format!("x.{v}")
    } else {
        v
    };
    if v.len() > MAX {
        cut_with_hash(&v, s)
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    fn is_label_value(s: &str) -> bool {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && !s.starts_with(['-', '.', '_'])
            && !s.ends_with(['-', '.', '_'])
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let users = [
            "ada",
            "Ada",
            "a.b@x.org",
            "a-b",
            "a_b",
            "ü",
            &"x".repeat(80),
            "-",
        ];
        let mut seen = std::collections::HashSet::new();
        for u in users {
            let n = dns_label("jupyter", &[u]);
            assert!(is_dns_label(&n), "{u:?} -> {n:?}");
            assert!(seen.insert(n.clone()), "{u:?} collides: {n}");
            let l = label_value(u);
            assert!(is_label_value(&l), "{l}");
        }
        assert_eq!(dns_label("jupyter", &["ada"]), "jupyter--ada");
        assert_eq!(dns_label("jupyter", &["ada", "gpu"]), "jupyter--ada--gpu");
        assert_ne!(
            dns_label("jupyter", &["a-b"]),
            dns_label("jupyter", &["a", "b"])
        );
        assert_eq!(label_value(""), "");
        // An empty last part would end with `-`: hashed, never equal to a part `x`.
        let empty_last = dns_label("jupyter", &["ada", ""]);
        assert!(is_dns_label(&empty_last), "{empty_last}");
        assert_ne!(empty_last, dns_label("jupyter", &["ada", "x"]));
        // A label value of 62 escaped characters that starts with `-` still fits.
        let l = label_value(&format!("A{}", "a".repeat(59)));
        assert!(is_label_value(&l), "{l}");
    }

    /// The attack on the 32-bit FNV suffix: two long names that share their first 54
    /// escaped characters and whose FNV-1a hashes are equal got the same pod, Secret and
    /// claim name. FNV-1a's last step is `(h ^ b) * p` with `p` odd, so names differing only
    /// in their last character collide when the states before it differ as the characters
    /// do; such pairs are found below by search, as an attacker would.
    #[test]
    fn crafted_names_that_collided_under_fnv_get_distinct_names() {
        fn fnv(s: &str) -> u32 {
            let mut h: u32 = 0x811c_9dc5;
            for b in s.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            h
        }
        fn old_dns_label(name: &str) -> String {
            format!("{}-{:08x}", &name[..54], fnv(name))
        }
        // Find two long user names with equal FNV of their joined names: birthday search
        // over 2^17 suffixes of a shared 60-character stem.
        let stem = "a".repeat(60);
        let mut by_hash = std::collections::HashMap::new();
        let mut pair = None;
        for i in 0u32..(1 << 20) {
            let user = format!("{stem}{i:x}");
            let joined = format!("jupyter--{user}");
            if let Some(other) = by_hash.insert(fnv(&joined), user.clone()) {
                pair = Some((other, user));
                break;
            }
        }
        let (victim, attacker) = pair.expect("a 32-bit hash collides within 2^20 names");
        assert_ne!(victim, attacker);
        assert_eq!(
            old_dns_label(&format!("jupyter--{victim}")),
            old_dns_label(&format!("jupyter--{attacker}")),
            "the old scheme gave both users one name"
        );
        let (v, a) = (
            dns_label("jupyter", &[&victim]),
            dns_label("jupyter", &[&attacker]),
        );
        assert!(is_dns_label(&v) && is_dns_label(&a), "{v} {a}");
        assert_ne!(v, a, "crafted names still collide");
        assert_ne!(
            dns_label("claim", &[&victim]),
            dns_label("claim", &[&attacker])
        );
        assert_ne!(label_value(&victim), label_value(&attacker));
    }

    /// A short name can not be chosen to equal a long name's cut-and-hash form: the old
    /// scheme's suffix `-xxxxxxxx` was also a valid escape (`-41` is `A`), so a user could
    /// pick the literal name a long name was cut to.
    #[test]
    fn a_short_name_cannot_spell_a_long_names_hashed_form() {
        let victim = "v".repeat(70);
        let long = dns_label("jupyter", &[&victim]);
        assert!(long.contains(HASH_MARK), "{long}");
        // Every way of reading `long` back as an escape fails: `-z` is no escape.
        let unescape = |s: &str| -> Option<String> {
            let mut out = Vec::new();
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'-' {
                    let hex = s.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).ok()
        };
        let tail = long.strip_prefix("jupyter--").unwrap();
        assert_eq!(unescape(tail), None, "{long} reads back as a user name");
    }

    proptest! {
        #[test]
        fn distinct_parts_give_distinct_valid_names(
            a in proptest::collection::vec(".{0,90}", 1..3),
            b in proptest::collection::vec(".{0,90}", 1..3),
        ) {
            let ra: Vec<&str> = a.iter().map(String::as_str).collect();
            let rb: Vec<&str> = b.iter().map(String::as_str).collect();
            let (na, nb) = (dns_label("jupyter", &ra), dns_label("jupyter", &rb));
            prop_assert!(is_dns_label(&na), "{:?} -> {}", a, na);
            prop_assert_eq!(a == b, na == nb, "{:?} {:?} -> {} {}", a, b, na, nb);
            let (la, lb) = (label_value(&a[0]), label_value(&b[0]));
            prop_assert!(is_label_value(&la), "{:?} -> {}", a[0], la);
            prop_assert_eq!(a[0] == b[0], la == lb);
        }
    }
}
