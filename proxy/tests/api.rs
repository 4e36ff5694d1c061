//! The configurable-http-proxy REST API over a real socket.

mod common;

use common::{TOKEN, TestProxy, api_call};
use http::StatusCode;
use proxy::ProxyOptions;
use serde_json::{Value, json};

#[tokio::test]
async fn bad_or_missing_token_is_403_with_empty_body() {
    let p = TestProxy::start().await;
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = api_call(p.api, "GET", "/api/routes", token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "token {token:?}");
        assert!(body.is_empty());
    }
    // Only the `token` scheme is accepted.
    let req = http::Request::get(format!("http://{}/api/routes", p.api))
        .header("authorization", format!("bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, _) = api_call(p.api, "GET", "/api/routes", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn no_configured_token_means_open_api() {
    let p = TestProxy::start_with(ProxyOptions::default(), None).await;
    let (status, body) = api_call(p.api, "GET", "/api/routes", None, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
}

#[tokio::test]
async fn add_list_get_delete_with_verbatim_data() {
    let p = TestProxy::start().await;
    let data = json!({
        "target": "http://127.0.0.1:8888",
        "jupyterhub": true,
        "user": "alice",
        "server_name": "",
        "nested": {"a": [1, 2.5, null, "x"]}
    });
    let (status, body) = api_call(
        p.api,
        "POST",
        "/api/routes/user/alice/",
        Some(TOKEN),
        Some(data.to_string()),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, ""));

    let (status, body) = api_call(p.api, "GET", "/api/routes", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    let all: Value = serde_json::from_str(&body).unwrap();
    let route = &all["/user/alice"];
    for key in ["target", "jupyterhub", "user", "server_name", "nested"] {
        assert_eq!(route[key], data[key], "{key}");
    }
    let stamp = route["last_activity"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok()
            && stamp.ends_with('Z')
            && stamp.len() == 24,
        "{stamp}"
    );

    // Trailing slash and no slash name the same route.
    let (status, body) = api_call(p.api, "GET", "/api/routes/user/alice/", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["user"],
        "alice"
    );

    let (status, _) = api_call(p.api, "DELETE", "/api/routes/user/alice", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api_call(p.api, "DELETE", "/api/routes/user/alice", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api_call(p.api, "GET", "/api/routes/user/alice", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn repost_replaces_and_root_route_works() {
    let p = TestProxy::start().await;
    p.add_route("", "http://127.0.0.1:1").await;
    p.add_route("/", "http://127.0.0.1:2").await;
    let (_, body) = api_call(p.api, "GET", "/api/routes", Some(TOKEN), None).await;
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all.as_object().unwrap().len(), 1);
    assert_eq!(all["/"]["target"], "http://127.0.0.1:2");
}

#[tokio::test]
async fn percent_encoded_route_paths_are_decoded() {
    let p = TestProxy::start().await;
    p.add_route("/user/a%20b", "http://127.0.0.1:1").await;
    let (_, body) = api_call(p.api, "GET", "/api/routes", Some(TOKEN), None).await;
    assert!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .get("/user/a b")
            .is_some(),
        "{body}"
    );
}

#[tokio::test]
async fn bad_bodies_are_400_and_change_nothing() {
    let p = TestProxy::start().await;
    let cases = [
        ("not json", "Body not valid JSON"),
        ("{}", "Must specify 'target' as string"),
        (r#"{"target": 5}"#, "Must specify 'target' as string"),
        ("[1,2]", "Must specify 'target' as string"),
        (r#"{"target": "ftp://x"}"#, "invalid target"),
        (r#"{"target": "not a url"}"#, "invalid target"),
    ];
    for (body, message) in cases {
        let (status, text) = api_call(
            p.api,
            "POST",
            "/api/routes/x",
            Some(TOKEN),
            Some(body.into()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(text.contains(message), "{body}: {text}");
    }
    assert!(p.routes.is_empty());
}

#[tokio::test]
async fn other_methods_and_paths() {
    let p = TestProxy::start().await;
    let (status, _) = api_call(p.api, "PUT", "/api/routes/x", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = api_call(p.api, "GET", "/api/other", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api_call(p.api, "GET", "/api/routesx", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn inactive_since_filters_routes() {
    let p = TestProxy::start().await;
    p.add_route("/old", "http://127.0.0.1:1").await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    p.add_route("/new", "http://127.0.0.1:2").await;

    for key in ["inactive_since", "inactiveSince"] {
        let (status, body) = api_call(
            p.api,
            "GET",
            &format!("/api/routes?{key}={between}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let routes: Value = serde_json::from_str(&body).unwrap();
        let keys: Vec<_> = routes.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["/old"], "{key}");
    }
    let (status, body) = api_call(
        p.api,
        "GET",
        "/api/routes?inactive_since=yesterday",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Invalid datestamp"), "{body}");
}
