//! Helpers of the sharing tests: a hub whose users may share (JupyterHub's documented
//! `user` role for the full sharing API), requests with JSON bodies, and the share-code page.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hub::{ClientRow, Config, RoleConfig};
use serde_json::{Value, json};

use super::{Hub, Resp, hub_with, test_db};

/// `c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "shares!user",
/// "read:users:name", "read:groups:name"]}]` (docs/source/reference/sharing.md).
pub fn sharing_roles(config: &mut Config) {
    config.roles.push(RoleConfig {
        name: "user".into(),
        scopes: vec![
            "self".into(),
            "shares!user".into(),
            "read:users:name".into(),
            "read:groups:name".into(),
        ],
        ..RoleConfig::default()
    });
}

/// A sharing hub with users alice, bob and carol; their (inherit) tokens.
pub async fn sharing_hub() -> (Hub, String, String, String) {
    let h = hub_with(test_db().await, sharing_roles).await;
    let alice = h.user_token("alice", None).await;
    let bob = h.user_token("bob", None).await;
    let carol = h.user_token("carol", None).await;
    (h, alice, bob, carol)
}

impl Hub {
    /// `method path` with `token` and a JSON body.
    pub async fn json(&self, method: Method, path: &str, token: &str, body: Value) -> Resp {
        self.call(method, path, Some(token), Some(&body.to_string()))
            .await
    }

    /// The effective scopes `GET /hub/api/user` reports for `token`.
    pub async fn scopes_of(&self, token: &str) -> Vec<String> {
        let r = self
            .call(Method::GET, "/hub/api/user", Some(token), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        serde_json::from_value(r.body["scopes"].clone()).unwrap()
    }

    /// Register the OAuth client of `owner`'s server `server` (as a spawn does).
    pub async fn server_client(&self, owner: &str, server: &str) -> String {
        let id = if server.is_empty() {
            format!("jupyterhub-user-{owner}")
        } else {
            format!("jupyterhub-user-{owner}-{server}")
        };
        let prefix = if server.is_empty() {
            format!("/user/{owner}/")
        } else {
            format!("/user/{owner}/{server}/")
        };
        self.state
            .db()
            .upsert_oauth_client(&ClientRow {
                id: id.clone(),
                secret_hash: Some(hub::hash_secret("client-secret-0123456789")),
                redirect_uri: format!("{prefix}oauth_callback"),
                description: format!("Server at {prefix}"),
                allowed_scopes: vec![format!("access:servers!server={owner}/{server}")],
            })
            .await
            .unwrap();
        id
    }

    /// The status of `GET /hub/api/oauth2/authorize` for `client` with a login cookie: 200
    /// (consent page, someone else's server), 302 (own server) or 403 (no access).
    pub async fn authorize_status(&self, cookie: &str, client: &str) -> StatusCode {
        let (uri,): (String,) =
            sqlx::query_as("SELECT redirect_uri FROM oauth_clients WHERE id = $1")
                .bind(client)
                .fetch_one(self.state.db().pool())
                .await
                .unwrap();
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client)
            .append_pair("redirect_uri", &uri)
            .append_pair("response_type", "code")
            .finish();
        let req = Request::get(format!("/hub/api/oauth2/authorize?{q}"))
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap();
        self.send(req).await.status
    }

    /// `GET /hub/accept-share?code=` as the browser with `cookie`.
    pub async fn accept_page(&self, cookie: &str, code: &str) -> Resp {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", code)
            .finish();
        let req = Request::get(format!("/hub/accept-share?{q}"))
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    /// Submit the accept form with `code` and `xsrf`.
    pub async fn accept_post(&self, cookie: &str, code: &str, xsrf: &str) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", code)
            .append_pair("_xsrf", xsrf)
            .finish();
        let req = Request::post("/hub/accept-share")
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// alice issues a share code for her server `server` (body `extra` merged in).
    pub async fn issue_code(&self, token: &str, path: &str, extra: Value) -> Resp {
        self.json(Method::POST, path, token, extra).await
    }
}

/// The share request body for user `name`.
pub fn to_user(name: &str) -> Value {
    json!({ "user": name })
}
