//! Who calls the Dask API: the kernel gateway's credentials, Dask Gateway's 401-first
//! handshake and its short-lived session cookie.
//!
//! A request without credentials gets 401 with `WWW-Authenticate` (the stock client then asks
//! its auth object for headers and retries). `Authorization: Bearer <t>` / `token <t>` is
//! checked as for kernels ([`crate::auth`]: shared and per-user tokens, the hub's per-user site
//! JWT, the identity provider's access tokens of `jwt_extra_issuers`), except that a JWT
//! issuer's `required_role` is not required (the Dask quota roles decide);
//! `Authorization: jupyterhub <t>` is checked with the hub (`hub_auth`). On success the
//! response sets a session cookie (`dask-gateway-<instance>`, a random value, `HttpOnly`,
//! 300 s) bound to that caller, so the client's next calls skip the handshake. A cluster's own token (what its scheduler holds) is
//! never a user credential.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use rand::RngCore as _;

use super::error::DaskError;
use crate::auth::Caller;

/// How long a session cookie lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(300);

/// Credentials a request presents in `Authorization`.
#[derive(Debug)]
pub(crate) enum Presented<'a> {
    /// None at all.
    Nothing,
    /// `token <t>` or `Bearer <t>`.
    Token(&'a str),
    /// `jupyterhub <t>`: a hub API token (the stock client's `auth="jupyterhub"`).
    JupyterHub(&'a str),
    /// A scheme this gateway does not take: `Basic`, `Negotiate`, ...
    Other(&'a str),
}

/// The `Authorization` header's credentials.
pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Presented::Nothing;
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let token = token.trim();
    if token.is_empty() {
        return Presented::Nothing;
    }
    if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        Presented::Token(token)
    } else if scheme.eq_ignore_ascii_case("jupyterhub") {
        Presented::JupyterHub(token)
    } else {
        Presented::Other(scheme)
    }
}

/// Live sessions: cookie value → caller.
#[derive(Debug)]
pub(crate) struct Sessions {
    cookie_name: String,
    live: parking_lot::Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            cookie_name: format!("dask-gateway-{}", uuid::Uuid::new_v4().simple()),
            live: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

impl Sessions {
    /// A new session for `caller`: the `Set-Cookie` value.
    pub(crate) fn open(&self, caller: Caller) -> Result<HeaderValue, DaskError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let value = hex::encode(bytes);
        let now = Instant::now();
        {
            let mut live = self.live.lock();
            live.retain(|_, (_, expires)| *expires > now);
            live.insert(value.clone(), (caller, now + SESSION_TTL));
        }
        HeaderValue::from_str(&format!(
            "{}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie_name,
            SESSION_TTL.as_secs()
        ))
        .map_err(|e| DaskError::Internal(format!("cannot make a session cookie: {e}")))
    }

    /// The caller of a live session named by the request's cookies.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let prefix = format!("{}=", self.cookie_name);
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix(prefix.as_str()).map(str::to_owned))?;
        let live = self.live.lock();
        let (caller, expires) = live.get(&value)?;
        (*expires > Instant::now()).then(|| caller.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn caller(user: &str) -> Caller {
        Caller {
            user: user.to_owned(),
            roles: Vec::new(),
            quota: None,
        }
    }

    #[test]
    fn a_session_cookie_names_its_caller_only() {
        let sessions = Sessions::default();
        let set = sessions.open(caller("alice")).unwrap();
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("Max-Age=300"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap();
        assert!(pair.starts_with("dask-gateway-"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {pair}")).unwrap(),
        );
        assert_eq!(sessions.caller(&headers).unwrap().user, "alice");
        // A guessed value of the right name is nobody.
        let (name, _) = pair.split_once('=').unwrap();
        let mut guessed = HeaderMap::new();
        guessed.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{name}={}", "0".repeat(64))).unwrap(),
        );
        assert!(sessions.caller(&guessed).is_none());
        // Another gateway instance's cookie name is not ours.
        assert!(Sessions::default().caller(&headers).is_none());
    }

    #[test]
    fn authorization_schemes() {
        let mut h = HeaderMap::new();
        assert!(matches!(presented(&h), Presented::Nothing));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(matches!(presented(&h), Presented::Token("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("token abc"));
        assert!(matches!(presented(&h), Presented::Token("abc")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("jupyterhub abc"),
        );
        assert!(matches!(presented(&h), Presented::JupyterHub("abc")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(matches!(presented(&h), Presented::Other("Basic")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(matches!(presented(&h), Presented::Nothing));
    }
}
