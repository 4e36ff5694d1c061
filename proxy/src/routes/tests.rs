use super::*;
use serde_json::json;

fn data(target: &str) -> Map<String, Value> {
    match json!({ "target": target, "user": "alice" }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn normalize_matches_chp() {
    assert_eq!(normalize(""), "/");
    assert_eq!(normalize("/"), "/");
    assert_eq!(normalize("user/alice"), "/user/alice");
    assert_eq!(normalize("/user/alice/"), "/user/alice");
    assert_eq!(normalize("//user//alice//"), "/user/alice");
}

#[test]
fn longest_prefix_by_whole_segments() {
    let table = RouteTable::new();
    table.add("/", data("http://127.0.0.1:1")).unwrap();
    table
        .add("/user/alice", data("http://127.0.0.1:2"))
        .unwrap();
    table
        .add("/user/alice/gpu", data("http://127.0.0.1:3"))
        .unwrap();

    let hit = |p: &str| table.lookup(p).unwrap().target().as_str().to_owned();
    assert_eq!(hit("/user/alice/lab"), "http://127.0.0.1:2");
    assert_eq!(hit("/user/alice"), "http://127.0.0.1:2");
    assert_eq!(hit("/user/alice/"), "http://127.0.0.1:2");
    assert_eq!(hit("/user/alice/gpu/api/kernels"), "http://127.0.0.1:3");
    assert_eq!(hit("/user/alicex/lab"), "http://127.0.0.1:1");
    assert_eq!(hit("/user/al"), "http://127.0.0.1:1");
    assert_eq!(hit("//user//alice//lab"), "http://127.0.0.1:2");
    assert_eq!(hit("/"), "http://127.0.0.1:1");
}

#[test]
fn no_root_route_means_no_match() {
    let table = RouteTable::new();
    table
        .add("/user/alice", data("http://127.0.0.1:2"))
        .unwrap();
    assert!(table.lookup("/hub/login").is_none());
    assert!(table.lookup("/").is_none());
}

#[test]
fn add_replaces_and_remove_returns_route() {
    let table = RouteTable::new();
    table.add("/a/", data("http://127.0.0.1:1")).unwrap();
    table.add("/a", data("http://127.0.0.1:2")).unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(
        table.get("a").unwrap().target().as_str(),
        "http://127.0.0.1:2"
    );
    assert!(table.remove("/a/").is_some());
    assert!(table.remove("/a").is_none());
    assert!(table.is_empty());
}

#[test]
fn data_kept_verbatim_and_activity_reported() {
    let table = RouteTable::new();
    let mut d = data("http://127.0.0.1:9/prefix/");
    d.insert("nested".into(), json!({"list": [1, 2, {"x": null}]}));
    d.insert("last_activity".into(), json!("1999-01-01T00:00:00.000Z"));
    let route = table.add("/svc", d).unwrap();
    let shown = route.to_json();
    assert_eq!(shown["user"], "alice");
    assert_eq!(shown["nested"], json!({"list": [1, 2, {"x": null}]}));
    let stamp = shown["last_activity"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == 24, "{stamp}");
    assert_ne!(stamp, "1999-01-01T00:00:00.000Z");
}

#[test]
fn data_lookups_by_key() {
    let table = RouteTable::new();
    let mut d = data("http://127.0.0.1:9");
    for key in ["zeta", "alpha", "mid"] {
        d.insert(key.into(), json!(key.len()));
    }
    let route = table.add("/svc", d.clone()).unwrap();
    let data = route.data();
    for (key, value) in &d {
        assert_eq!(data.get(key), Some(value), "{key}");
        assert_eq!(&data[key.as_str()], value);
        assert!(data.contains_key(key));
    }
    assert_eq!(data.get("absent"), None);
    assert_eq!(data["absent"], Value::Null);
    assert!(!data.contains_key("al"), "no prefix match");
    assert_eq!(data.to_map(), d);
}

#[test]
fn target_validation() {
    assert!(matches!(
        RouteTable::new().add("/x", Map::new()),
        Err(RouteError::MissingTarget)
    ));
    for bad in ["", "not a url", "ftp://host", "/relative"] {
        assert!(Target::parse(bad).is_err(), "{bad} accepted");
    }
    let t = Target::parse("http://127.0.0.1:8888/base/").unwrap();
    assert_eq!(
        t.uri_for("/user/a?x=1", true).unwrap().to_string(),
        "http://127.0.0.1:8888/base/user/a?x=1"
    );
    assert_eq!(
        t.uri_for("/user/a", false).unwrap().to_string(),
        "http://127.0.0.1:8888/user/a"
    );
    assert_eq!(t.origin_form("/p", true), "/base/p");
    assert_eq!(t.origin_form("/p", false), "/p");
    assert!(!t.is_tls());
    let t = Target::parse("https://user:secret@gateway.lumi.example/gw?q=1").unwrap();
    assert!(t.is_tls());
    assert_eq!(t.origin(), "https://gateway.lumi.example");
    assert!(Target::parse("wss://127.0.0.1:8443").unwrap().is_tls());
}

#[test]
fn host_keys_are_lower_case_names_without_ports() {
    assert_eq!(
        host_key("Alice.Hub.Test:8000").as_deref(),
        Some("alice.hub.test")
    );
    assert_eq!(host_key("hub.test").as_deref(), Some("hub.test"));
    assert_eq!(host_key("[::1]:8000").as_deref(), Some("[::1]"));
    for bad in [
        "",
        ":80",
        "a/b",
        "alice.hub.test/user/bob",
        "a b",
        "a%2fb",
        "a\\b",
        "u@h",
        "[::1",
    ] {
        assert_eq!(host_key(bad), None, "{bad:?}");
    }
}

#[test]
fn host_routes_keep_one_users_host_off_another_users_server() {
    let table = RouteTable::new();
    table.add("/", data("http://127.0.0.1:1")).unwrap();
    table
        .add("/alice.hub.test/user/alice/", data("http://127.0.0.1:2"))
        .unwrap();
    table
        .add(
            "/mallory.hub.test/user/mallory/",
            data("http://127.0.0.1:3"),
        )
        .unwrap();
    let hit = |host: &str, p: &str| {
        let key = format!("/{}{p}", host_key(host).unwrap());
        table.lookup(&key).unwrap().target().as_str().to_owned()
    };
    assert_eq!(
        hit("alice.hub.test:8000", "/user/alice/lab"),
        "http://127.0.0.1:2"
    );
    assert_eq!(
        hit("ALICE.hub.test", "/user/alice/api"),
        "http://127.0.0.1:2"
    );
    assert_eq!(
        hit("mallory.hub.test", "/user/mallory/x"),
        "http://127.0.0.1:3"
    );
    // Alice's path on mallory's host (or the hub's) is not alice's server: it goes to the hub.
    assert_eq!(
        hit("mallory.hub.test", "/user/alice/lab"),
        "http://127.0.0.1:1"
    );
    assert_eq!(hit("hub.test", "/user/alice/lab"), "http://127.0.0.1:1");
    assert_eq!(hit("hub.test", "/hub/api"), "http://127.0.0.1:1");
}

proptest::proptest! {
    #[test]
    fn a_host_key_never_holds_a_path_and_never_changes_the_route_below_it(
        host in "\\PC{0,40}",
        path in "(/[a-z]{1,6}){0,4}",
    ) {
        if let Some(key) = host_key(&host) {
            proptest::prop_assert!(!key.is_empty());
            proptest::prop_assert!(!key.contains('/') && !key.contains('%'));
            proptest::prop_assert_eq!(key.to_ascii_lowercase(), key.clone());
            let full = format!("/{key}{path}");
            // The host is exactly the first segment of the lookup key.
            proptest::prop_assert_eq!(full.split('/').nth(1), Some(key.as_str()));
        }
    }
}
