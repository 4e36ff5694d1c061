//! `Authorization: jupyterhub <token>`: the stock client's `auth="jupyterhub"` sends the
//! single-user server's hub API token, which the hub vouches for at `GET <hub_api_url>/user`
//! (sent as `Authorization: token <token>`, as upstream's `JupyterHubAuthenticator` does).
//!
//! The hub's answer maps to: a user (`kind` `user`: its `name`; its `groups` and any `roles`
//! shown are the roles the Dask quota table matches); 403 for another kind of owner (a
//! service's token is not a user's) and for a token without `hub_required_scope` (when set);
//! 401 when the hub refuses the token (401, 403, 404); 503 when the hub cannot be asked
//! (unreachable, no answer in 5 s, 5xx, or an answer that is not a user model). Users and
//! refusals are remembered for `hub_auth_cache_secs`, keyed by the token's SHA-256 (the token
//! itself is neither kept nor logged), at most [`MAX_CACHED`] entries. A session cookie opened
//! with a token outlives a revocation by up to its 300 s, as upstream's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::DaskError;

/// Time allowed for the hub to answer.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Most tokens remembered at once.
pub(crate) const MAX_CACHED: usize = 10_000;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What the hub said of a token.
#[derive(Debug, Clone)]
pub(crate) enum HubAnswer {
    /// A user, with the roles and groups the hub shows.
    User {
        /// The user's name.
        name: String,
        /// `groups` and `roles` of the user model.
        roles: Vec<String>,
    },
    /// Refused (401 or 403), with the message.
    Refused(u16, String),
}

/// Checks hub tokens with the hub, remembering answers briefly.
pub(crate) struct HubAuth {
    user_url: String,
    ttl: Duration,
    required_scope: Option<String>,
    client: Result<HttpsClient, String>,
    cache: parking_lot::Mutex<HashMap<[u8; 32], (HubAnswer, Instant)>>,
}

impl std::fmt::Debug for HubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAuth")
            .field("user_url", &self.user_url)
            .finish_non_exhaustive()
    }
}

impl HubAuth {
    /// A checker asking `<hub_api_url>/user`, remembering answers `ttl_secs`, requiring
    /// `required_scope` of tokens if set.
    pub(crate) fn new(hub_api_url: &str, ttl_secs: u64, required_scope: Option<String>) -> Self {
        let client = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|b| {
                Client::builder(TokioExecutor::new())
                    .build(b.https_or_http().enable_http1().build())
            })
            .map_err(|e| format!("no system CA certificates: {e}"));
        HubAuth {
            user_url: format!("{}/user", hub_api_url.trim_end_matches('/')),
            ttl: Duration::from_secs(ttl_secs),
            required_scope,
            client,
            cache: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Who `token` belongs to.
    ///
    /// # Errors
    /// [`DaskError::Unauthorized`] (the hub refuses the token), [`DaskError::Forbidden`] (not
    /// a user's token), [`DaskError::Unavailable`] (the hub cannot be asked).
    pub(crate) async fn check(&self, token: &str) -> Result<(String, Vec<String>), DaskError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .cache
            .lock()
            .get(&key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(a, _)| a.clone());
        let answer = match cached {
            Some(a) => a,
            None => {
                let a = self.ask(token).await?;
                self.remember(key, a.clone());
                a
            }
        };
        match answer {
            HubAnswer::User { name, roles } => Ok((name, roles)),
            HubAnswer::Refused(403, msg) => Err(DaskError::Forbidden(msg)),
            HubAnswer::Refused(_, msg) => Err(DaskError::Unauthorized(msg)),
        }
    }

    fn remember(&self, key: [u8; 32], answer: HubAnswer) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(key, (answer, Instant::now()));
        }
    }

    /// Asks the hub (uncached).
    async fn ask(&self, token: &str) -> Result<HubAnswer, DaskError> {
        let unavailable = |why: String| {
            DaskError::Unavailable(format!(
                "cannot check jupyterhub tokens now: the hub at {} {why}",
                self.user_url
            ))
        };
        let client = self.client.as_ref().map_err(|e| unavailable(e.clone()))?;
        let req = axum::http::Request::get(&self.user_url)
            .header("Authorization", format!("token {token}"))
            .header("Accept", "application/json")
            .body(Empty::new())
            .map_err(|e| unavailable(format!("cannot be asked: {e}")))?;
        let resp = tokio::time::timeout(HUB_TIMEOUT, client.request(req))
            .await
            .map_err(|_| unavailable(format!("did not answer within {} s", HUB_TIMEOUT.as_secs())))?
            .map_err(|e| unavailable(format!("is unreachable: {e}")))?;
        let status = resp.status();
        if matches!(status.as_u16(), 401 | 403 | 404) {
            tracing::debug!(
                status = status.as_u16(),
                "the hub refused a jupyterhub token"
            );
            return Ok(HubAnswer::Refused(
                401,
                format!("the hub does not accept this jupyterhub token (it answered {status})"),
            ));
        }
        if !status.is_success() {
            return Err(unavailable(format!("answered {status}")));
        }
        let body = tokio::time::timeout(
            HUB_TIMEOUT,
            Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect(),
        )
        .await
        .map_err(|_| unavailable("sent no complete answer".into()))?
        .map_err(|e| unavailable(format!("sent an unreadable answer: {e}")))?
        .to_bytes();
        let model: Value = serde_json::from_slice(&body)
            .map_err(|_| unavailable("answered with something that is not JSON".into()))?;
        Self::user_of(&model, self.required_scope.as_deref()).map_err(unavailable)
    }

    /// The user a `GET /user` model names, if its token carries `required_scope` (or
    /// `access:services`).
    fn user_of(model: &Value, required_scope: Option<&str>) -> Result<HubAnswer, String> {
        let name = model["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "answered with a model without a name".to_owned())?;
        let kind = model["kind"]
            .as_str()
            .ok_or_else(|| "answered with a model without a kind".to_owned())?;
        if kind != "user" {
            return Ok(HubAnswer::Refused(
                403,
                format!(
                    "this jupyterhub token belongs to the {kind} {name:?}, not to a user; send a user's token"
                ),
            ));
        }
        if let Some(scope) = required_scope {
            let has = model["scopes"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s == scope || s == "access:services"));
            if !has {
                return Ok(HubAnswer::Refused(
                    403,
                    format!(
                        "this jupyterhub token lacks the scope {scope} this site requires \
                         (dask.hub_required_scope); use a token that carries it"
                    ),
                ));
            }
        }
        let roles = ["groups", "roles"]
            .iter()
            .filter_map(|k| model[*k].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok(HubAnswer::User {
            name: name.to_owned(),
            roles,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn user_models_map_to_users_and_services_are_refused() {
        let a = HubAuth::user_of(
            &json!({"kind": "user", "name": "alice",
            "groups": ["services:dask:stack-dask-high"], "roles": ["user"]}),
            None,
        )
        .unwrap();
        assert!(
            matches!(&a, HubAnswer::User { name, roles } if name == "alice" && roles.len() == 2),
            "{a:?}"
        );
        let s = HubAuth::user_of(&json!({"kind": "service", "name": "cull"}), None).unwrap();
        assert!(
            matches!(&s, HubAnswer::Refused(403, m) if m.contains("service")),
            "{s:?}"
        );
        assert!(HubAuth::user_of(&json!({"kind": "user"}), None).is_err());
        assert!(HubAuth::user_of(&json!([1]), None).is_err());
        // A required scope: the named one or access:services, nothing else.
        let scope = Some("access:services!service=dask");
        for (scopes, ok) in [
            (json!(["access:services!service=dask"]), true),
            (json!(["access:services"]), true),
            (
                json!(["access:services!service=other", "read:users:name!user"]),
                false,
            ),
            (json!(null), false),
        ] {
            let a = HubAuth::user_of(
                &json!({"kind": "user", "name": "a", "scopes": scopes}),
                scope,
            )
            .unwrap();
            assert_eq!(matches!(a, HubAnswer::User { .. }), ok, "{scopes}: {a:?}");
        }
    }

    proptest! {
        /// Whatever JSON the hub answers, it is a user with a name, a refusal, or an error;
        /// never a nameless user.
        #[test]
        fn any_answer_is_a_named_user_or_not_a_user(
            name in proptest::option::of("[a-z:]{0,6}"),
            kind in proptest::option::of("(user|service|other)"),
            groups in proptest::collection::vec("[a-z/:-]{0,8}", 0..3),
        ) {
            let mut m = serde_json::Map::new();
            if let Some(n) = &name { m.insert("name".into(), n.clone().into()); }
            if let Some(k) = &kind { m.insert("kind".into(), k.clone().into()); }
            m.insert("groups".into(), json!(groups));
            match HubAuth::user_of(&Value::Object(m), None) {
                Ok(HubAnswer::User { name: n, .. }) => {
                    prop_assert!(!n.is_empty());
                    prop_assert_eq!(kind.as_deref(), Some("user"));
                }
                Ok(HubAnswer::Refused(code, _)) => prop_assert_eq!(code, 403),
                Err(e) => prop_assert!(e.contains("name") || e.contains("kind"), "{}", e),
            }
        }
    }
}
