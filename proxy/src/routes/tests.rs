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
