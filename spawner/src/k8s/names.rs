//! Kubernetes-safe names and label values derived from user and server names.

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

/// FNV-1a, for short stable suffixes of names that would be too long.
fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A DNS-1123 label (≤ 63 characters, `[a-z0-9-]`, alphanumeric at both ends) from `parts`
/// joined with `--`; over-long results are cut and get a hash of the whole so they stay unique.
pub(crate) fn dns_label(prefix: &str, parts: &[&str]) -> String {
    let mut name = prefix.to_owned();
    for p in parts {
        name.push_str("--");
        name.push_str(&escape(p));
    }
    let mut name = if name.len() > 63 {
        format!("{}-{:08x}", &name[..54], fnv(&name))
    } else {
        name
    };
    while name.ends_with('-') {
        name.push('x');
    }
    name
}

/// A label value (≤ 63, `[A-Za-z0-9._-]`, alphanumeric at both ends, or empty).
pub(crate) fn label_value(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let v = escape(s);
    let v = if v.len() > 63 {
        format!("{}-{:08x}", &v[..54], fnv(s))
    } else {
        v
    };
    // `.` never comes out of `escape`, so the prefix keeps values distinct.
    if v.starts_with('-') {
        format!("x.{v}")
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
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
            assert!(
                l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'),
                "{l}"
            );
        }
        assert_eq!(dns_label("jupyter", &["ada"]), "jupyter--ada");
        assert_eq!(dns_label("jupyter", &["ada", "gpu"]), "jupyter--ada--gpu");
        assert_ne!(
            dns_label("jupyter", &["a-b"]),
            dns_label("jupyter", &["a", "b"])
        );
        assert_eq!(label_value(""), "");
    }
}
