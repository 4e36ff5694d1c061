//! Who is calling: the `Caller` extractor. Credentials are `Authorization: token <t>` (or
//! `Bearer <t>`) or `?token=<t>`; an empty token counts as none (jupyter_server's GatewayClient sends
//! `token ` when unconfigured). The shared token maps to `shared_token_user`, per-user tokens to
//! their user. With no token configured at all the server is open. `KERNEL_USERNAME` is never used.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::manager::KernelManager;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name (owner of the kernels it starts).
    pub user: String,
}

fn presented_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = value.trim().splitn(2, ' ');
        let scheme = it.next().unwrap_or_default();
        let token = it.next().unwrap_or_default().trim();
        if (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            && !token.is_empty()
        {
            return Some(token.to_owned());
        }
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Constant-time equality of two digests.
fn digest_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Resolves a token to a user with the manager's config.
pub(crate) fn authenticate(
    manager: &KernelManager,
    token: Option<&str>,
) -> Result<Caller, GatewayError> {
    let config = &manager.config;
    if config.auth_token.is_none() && config.users.is_empty() {
        return Ok(Caller {
            user: config.shared_token_user.clone(),
        });
    }
    let token = token.ok_or(GatewayError::Unauthenticated)?;
    let presented = Sha256::digest(token.as_bytes());
    if let Some(shared) = &config.auth_token
        && digest_eq(&presented, &Sha256::digest(shared.as_bytes()))
    {
        return Ok(Caller {
            user: config.shared_token_user.clone(),
        });
    }
    for u in &config.users {
        let expected = match (&u.token_sha256, &u.token) {
            (Some(hex_digest), _) => hex::decode(hex_digest.trim()).unwrap_or_default(),
            (None, Some(t)) => Sha256::digest(t.as_bytes()).to_vec(),
            (None, None) => continue,
        };
        if digest_eq(&presented, &expected) {
            return Ok(Caller {
                user: u.name.clone(),
            });
        }
    }
    Err(GatewayError::Unauthenticated)
}

impl FromRequestParts<Arc<KernelManager>> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<KernelManager>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, presented_token(parts).as_deref())
    }
}
