//! Property tests of route matching: a request path goes to the longest route that is a
//! whole-segment prefix of it, never to a route that merely shares its first characters
//! (`/user/al` must not serve `/user/alice/...`), and no path makes the table panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proxy::{RouteTable, normalize};
use serde_json::{Map, Value, json};

fn data(n: usize) -> Map<String, Value> {
    match json!({ "target": format!("http://127.0.0.1:{}", 1000 + n) }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Segments that share prefixes with each other, so near-misses are common.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("user".to_owned()),
        Just("al".to_owned()),
        Just("alice".to_owned()),
        Just("alice2".to_owned()),
        Just("a".to_owned()),
        Just("".to_owned()),
        Just("..".to_owned()),
        Just("é".to_owned()),
        "[a-z]{1,3}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..5).prop_map(|segs| format!("/{}", segs.join("/")))
}

/// The route the model picks: the longest key that equals the normalised path or is
/// followed in it by `/`; the root route last.
fn model<'a>(keys: &'a [String], path: &str) -> Option<&'a str> {
    let path = normalize(path);
    keys.iter()
        .map(String::as_str)
        .filter(|k| {
            *k == "/"
                || path == *k
                || path
                    .strip_prefix(*k)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|k| if *k == "/" { 0 } else { k.len() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_request_goes_to_the_longest_whole_segment_prefix(
        routes in prop::collection::vec(path(), 0..8),
        requests in prop::collection::vec(path(), 1..8),
    ) {
        let table = RouteTable::new();
        let mut keys: Vec<String> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let route = table.add(route, data(i)).unwrap();
            keys.retain(|k| k != route.path());
            keys.push(route.path().to_owned());
        }
        for request in &requests {
            for request in [request.clone(), format!("{request}/"), format!("{request}//x")] {
                let got = table.lookup(&request).map(|r| r.path().to_owned());
                prop_assert_eq!(got.as_deref(), model(&keys, &request), "request {:?}", request);
            }
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(
        routes in prop::collection::vec(any::<String>(), 0..4),
        request in any::<String>(),
    ) {
        let table = RouteTable::new();
        for (i, route) in routes.iter().enumerate() {
            table.add(route, data(i)).unwrap();
            prop_assert!(table.get(route).is_some());
        }
        let _ = table.lookup(&format!("/{request}"));
        let _ = normalize(&request);
        for route in &routes {
            table.remove(route);
        }
        prop_assert!(table.is_empty());
    }
}

/// A route never answers for a sibling whose name it starts with.
#[test]
fn a_route_never_serves_a_user_whose_name_extends_it() {
    let table = RouteTable::new();
    table.add("/user/al", data(1)).unwrap();
    for path in [
        "/user/alice",
        "/user/alice/lab",
        "/user/al.ice",
        "/user/al-x/api",
    ] {
        assert!(table.lookup(path).is_none(), "{path}");
    }
    assert_eq!(table.lookup("/user/al/lab").unwrap().path(), "/user/al");
}
