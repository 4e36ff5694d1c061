//! JupyterHub 6.0 server names and display names: names are safe slugs (`[a-z][a-z0-9-]`, at
//! most 30, no `--`, not ending in `-`), the display name is separate, NFC-normalized and
//! checked (`jupyterhub.slugs.is_valid_display_name`), stored with the server and returned in
//! its model.

// Helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{hub, validate_component};
use serde_json::json;

#[tokio::test]
async fn display_names_are_stored_normalized_and_returned() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let create = |server: &'static str, body: serde_json::Value| {
        let h = &h;
        let alice = alice.clone();
        async move {
            h.call(
                Method::PUT,
                &format!("/hub/api/users/alice/servers/{server}"),
                Some(&alice),
                Some(&body.to_string()),
            )
            .await
        }
    };
    let r = create("lab", json!({"display_name": "Caf\u{65}\u{301} ☕ (GPU)"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    validate_component("Server", &r.body);
    assert_eq!(r.body["name"], "lab");
    assert_eq!(r.body["display_name"], "Caf\u{e9} ☕ (GPU)");
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/servers/lab",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["display_name"], "Caf\u{e9} ☕ (GPU)");
    // None given (or empty): the name.
    for (server, body) in [("plain", json!({})), ("empty", json!({"display_name": ""}))] {
        let r = create(server, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["display_name"], server);
    }
    let long = "x".repeat(256);
    for bad in [
        json!(" lead"),
        json!("trail "),
        json!("two  spaces"),
        json!("tab\there"),
        json!("zero\u{200b}width"),
        json!(long),
        json!(7),
    ] {
        let r = create("bad", json!({"display_name": bad})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert_eq!(r.body["status"], 400);
        assert!(
            r.body["message"].as_str().unwrap().contains("display"),
            "{}",
            r.text
        );
    }
    // Nothing half-created by the refusals.
    let r = h
        .call(
            Method::GET,
            "/hub/api/users/alice/servers/bad",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

#[tokio::test]
async fn server_names_are_jupyterhub_6_slugs() {
    let h = hub().await;
    let alice = h.user_token("alice", None).await;
    let thirty = format!("a{}", "b".repeat(29));
    for good in ["a", "lab-2", "x9", thirty.as_str()] {
        let r = h
            .call(
                Method::PUT,
                &format!("/hub/api/users/alice/servers/{good}"),
                Some(&alice),
                Some("{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{good}: {}", r.text);
    }
    let thirty_one = format!("a{}", "b".repeat(30));
    for bad in [
        "Lab",
        "1lab",
        "lab-",
        "a--b",
        "lab_2",
        "lab.2",
        "%C3%A9t%C3%A9",
        thirty_one.as_str(),
    ] {
        let r = h
            .call(
                Method::PUT,
                &format!("/hub/api/users/alice/servers/{bad}"),
                Some(&alice),
                Some("{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(
            r.body["message"].as_str().unwrap().contains("server name"),
            "{}",
            r.text
        );
    }
}
