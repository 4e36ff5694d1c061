use super::*;
use proptest::prelude::*;

#[test]
fn subdomain_host_parses_scheme_domain_and_port() {
    let s = SubdomainHost::parse("https://Hub.Example").unwrap();
    assert_eq!(s.domain(), "hub.example");
    assert_eq!(s.hub_origin(), "https://hub.example");
    assert_eq!(s.user_origin("alice"), "https://alice.hub.example");
    assert!(s.is_https());
    let s = SubdomainHost::parse("http://hub.test:8000/").unwrap();
    assert_eq!(s.user_origin("bob"), "http://bob.hub.test:8000");
    assert!(!s.is_https());
    for bad in [
        "hub.example",
        "ftp://hub.example",
        "https://hub.example/prefix/",
        "https://user:pw@hub.example",
        "https://10.0.0.1",
        "https://[::1]",
        "https://hub",
        "https://hub.example/?q=1",
    ] {
        assert!(SubdomainHost::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn user_hosts_are_below_the_hub_host_and_the_hub_host_is_not() {
    let s = SubdomainHost::parse("https://hub.example").unwrap();
    assert!(s.is_below("alice.hub.example"));
    assert!(s.is_below("Alice.Hub.Example:443"));
    assert!(s.is_below("a.b.hub.example"));
    assert!(!s.is_below("hub.example"));
    assert!(!s.is_below("hub.example:8000"));
    assert!(!s.is_below("evilhub.example"));
    assert!(!s.is_below("127.0.0.1:8000"));
    assert!(!s.is_below(""));
}

#[test]
fn dns_labels_follow_jupyterhub_for_safe_names_and_hash_the_rest() {
    assert_eq!(dns_label("alice"), "alice");
    assert_eq!(dns_label("a-b1"), "a-b1");
    for name in [
        "Alice", "a.b", "a_b", "a--b", "-a", "a-", "123", "a@x.org", "ａlice", "",
    ] {
        let label = dns_label(name);
        assert!(
            label.starts_with("u-") && label.contains("--"),
            "{name}: {label}"
        );
        assert_ne!(label, name);
    }
    assert_eq!(dns_label("a@x.org"), dns_label("a@x.org"));
    assert_ne!(dns_label("a@x.org"), dns_label("a+x.org"));
    // A dotted name must not become a host below another user's host.
    assert!(!dns_label("evil.alice").contains('.'));
}

#[test]
fn cookies_are_hardened_and_kept_host_only() {
    assert_eq!(
        harden_cookie("jupyterhub-hub-login=x; Path=/hub/", false),
        "jupyterhub-hub-login=x; Path=/hub/; HttpOnly; SameSite=Lax"
    );
    assert_eq!(
        harden_cookie(
            "_xsrf=t; Path=/hub/; Domain=.hub.example; SameSite=Strict",
            true
        ),
        "_xsrf=t; Path=/hub/; SameSite=Strict; HttpOnly; Secure"
    );
    assert_eq!(
        harden_cookie("a=b; HttpOnly; Secure; SameSite=Lax", true),
        "a=b; HttpOnly; Secure; SameSite=Lax"
    );
    // A value that merely contains the word is not an attribute.
    assert_eq!(
        harden_cookie("secure=httponly", false),
        "secure=httponly; HttpOnly; SameSite=Lax"
    );
}

#[test]
fn https_is_read_from_the_last_forwarded_proto() {
    let mut h = HeaderMap::new();
    assert!(!request_is_https(&h));
    h.append("x-forwarded-proto", HeaderValue::from_static("https"));
    assert!(request_is_https(&h));
    h.append("x-forwarded-proto", HeaderValue::from_static("http"));
    assert!(!request_is_https(&h));
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
    assert!(request_is_https(&h));
}

proptest! {
    #[test]
    fn every_name_gets_a_valid_label_and_distinct_names_distinct_labels(
        a in "\\PC{0,80}",
        b in "[a-z0-9.@+_-]{1,70}",
    ) {
        for name in [&a, &b] {
            let label = dns_label(name);
            prop_assert!(!label.is_empty() && label.len() <= 63, "{}", label);
            prop_assert!(label.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
            prop_assert!(!label.starts_with('-') && !label.ends_with('-'));
            prop_assert!(!label.bytes().all(|c| c.is_ascii_digit()));
        }
        if a != b {
            prop_assert_ne!(dns_label(&a), dns_label(&b));
        }
    }

    #[test]
    fn hardened_cookies_always_carry_the_flags(
        name in "[a-z_-]{1,12}",
        value in "[A-Za-z0-9=]{0,20}",
        attrs in proptest::collection::vec("(Path=/[a-z]{0,5}|Domain=[a-z.]{1,12}|Max-Age=[0-9]{1,4}|SameSite=(Lax|Strict|None)|HttpOnly|Secure)", 0..5),
        secure in any::<bool>(),
    ) {
        let mut raw = format!("{name}={value}");
        for a in &attrs {
            raw.push_str("; ");
            raw.push_str(a);
        }
        let out = harden_cookie(&raw, secure);
        let lower = out.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split("; ").collect();
        let head = format!("{}={}", name, value).to_ascii_lowercase();
        prop_assert_eq!(parts[0], head.as_str());
        prop_assert!(parts.contains(&"httponly"));
        prop_assert!(parts.iter().any(|p| p.starts_with("samesite=")));
        prop_assert!(!parts.iter().any(|p| p.starts_with("domain=")));
        if secure {
            prop_assert!(parts.contains(&"secure"));
        }
    }
}
