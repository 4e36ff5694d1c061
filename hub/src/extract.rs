//! Authentication extractors. Handlers never parse tokens or cookies themselves.
//!
//! - [`ApiCaller`]: `Authorization: token|bearer X` (case-insensitive), or the hub login cookie
//!   plus an `_xsrf` token (header `X-XSRFToken` or query `_xsrf`). Anything else is a 403
//!   "Missing or invalid credentials." (never 401: JupyterHub clients treat only 403 as "not
//!   logged in").
//! - [`CurrentUser`]: pages; no valid login cookie → 302 to `/hub/login?next=<this URL>`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::auth::{ApiCaller, CallerKind};
use crate::cache::CachedCaller;
use crate::db::{self, SessionRow, TokenOwner, TokenRow, UserRow};
use crate::error::ApiError;
use crate::scopes::{Owner, ScopeSet};
use crate::state::AppState;

/// The hub's login cookie (opaque random id, stored hashed).
pub const LOGIN_COOKIE: &str = "jupyterhub-hub-login";
/// The browser session id cookie.
pub const SESSION_COOKIE: &str = "jupyterhub-session-id";
/// The anti-forgery cookie.
pub const XSRF_COOKIE: &str = "_xsrf";

/// Don't write `last_activity` more often than this per token (µs).
const ACTIVITY_RESOLUTION: i64 = 30_000_000;

/// The `_xsrf` token of a browser session: an HMAC of the session id under the hub's key.
pub(crate) fn xsrf_token(key: &[u8], session_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot run.
        <Hmac<Sha256> as Mac>::new_from_slice(b"stackhub").unwrap_or_else(|_| unreachable!())
    });
    mac.update(b"xsrf:");
    mac.update(session_id.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Whether `given` is the `_xsrf` token of `session_id` (compared in constant time).
pub(crate) fn xsrf_matches(key: &[u8], session_id: &str, given: Option<&str>) -> bool {
    let expected = xsrf_token(key, session_id);
    given.is_some_and(|g| crate::auth::constant_time_eq(g.as_bytes(), expected.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| token.trim())
}

fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Resolve a token to a caller; `None` if unknown or expired. Cached per database generation
/// ([`crate::cache`]); a hit still checks expiry, and a token due for its `last_activity`
/// write goes to the database.
pub(crate) async fn caller_for_token(
    state: &AppState,
    secret: &str,
) -> Result<Option<ApiCaller>, ApiError> {
    let now = db::now_micros();
    let hash = db::hash_secret(secret);
    let read_at = state.db().generation();
    if let Some(hit) = state.caches().caller(read_at, &hash).await
        && hit.expires_at.is_none_or(|e| e > now)
        && hit
            .last_activity
            .is_some_and(|t| now - t <= ACTIVITY_RESOLUTION)
    {
        return Ok(Some(hit.caller));
    }
    let mut conn = state.db().pool().acquire().await?;
    let Some((token, user)) = db::tokens::by_hash_with_user(&mut conn, &hash, now).await? else {
        return Ok(None);
    };
    let caller = match (&token.owner, user) {
        (TokenOwner::User { .. }, Some(user)) => {
            let owner_scopes = crate::auth::user_scopes(state.config(), &user);
            let token_scopes = token_scopes(&token, &owner_scopes, Owner::User(&user.name));
            ApiCaller {
                kind: CallerKind::User(user),
                token_scopes: Arc::new(token_scopes),
                owner_scopes: Arc::new(owner_scopes),
                generation: read_at,
                token_id: Some(token.id),
                session_id: token.session_id.clone(),
                by_cookie: false,
            }
        }
        (TokenOwner::User { .. }, None) => return Ok(None),
        (TokenOwner::Service { name, scopes, .. }, _) => {
            let owner_scopes = ScopeSet::expand(scopes, Owner::Service(name));
            let token_scopes = token_scopes(&token, &owner_scopes, Owner::Service(name));
            ApiCaller {
                kind: CallerKind::Service { name: name.clone() },
                token_scopes: Arc::new(token_scopes),
                owner_scopes: Arc::new(owner_scopes),
                generation: read_at,
                token_id: Some(token.id),
                session_id: token.session_id.clone(),
                by_cookie: false,
            }
        }
    };
    if !record_token_use(state, &mut conn, &token, now).await? {
        let cached = CachedCaller {
            caller: caller.clone(),
            expires_at: token.expires_at,
            last_activity: token.last_activity,
        };
        state
            .caches()
            .put_caller(read_at, state.db().generation(), hash, cached)
            .await;
    }
    Ok(Some(caller))
}

/// A token's own scopes, `inherit` resolved to its owner's (the effective scopes are these
/// intersected with the owner's, so `inherit` gives exactly the owner's rights).
/// Record a use of `token` at `now`, at most once per [`ACTIVITY_RESOLUTION`]: its last
/// activity, and its user's unless it is a server's token (servers report their activity
/// themselves). Whether anything was written (the caches then follow the change).
pub(crate) async fn record_token_use(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    token: &TokenRow,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if token
        .last_activity
        .is_some_and(|t| now - t <= ACTIVITY_RESOLUTION)
    {
        return Ok(false);
    }
    db::tokens::touch(conn, token.id, now).await?;
    if let TokenOwner::User { id, .. } = &token.owner
        && !token.note.starts_with("Server at ")
    {
        db::users::bump_activity(conn, *id, now).await?;
    }
    state.db().changed();
    Ok(true)
}

fn token_scopes(token: &TokenRow, owner: &ScopeSet, who: Owner<'_>) -> ScopeSet {
    ScopeSet::expand(&token.scopes, who).resolve_inherit(owner)
}

/// The login session of the request's cookie, with its user.
pub(crate) async fn session_from_jar(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<(SessionRow, UserRow)>, ApiError> {
    let Some(cookie) = jar.get(LOGIN_COOKIE) else {
        return Ok(None);
    };
    let now = db::now_micros();
    let mut conn = state.db().pool().acquire().await?;
    let Some(session) =
        db::sessions::by_cookie(&mut conn, &db::hash_secret(cookie.value()), now).await?
    else {
        return Ok(None);
    };
    let Some(user) = db::users::get_by_id(&mut conn, session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some((session, user)))
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(secret) = bearer(&parts.headers) {
            let caller = caller_for_token(state, secret).await?;
            return caller.ok_or_else(ApiError::no_credentials);
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let read_at = state.db().generation();
        let Some((session, user)) = session_from_jar(state, &jar).await? else {
            return Err(ApiError::no_credentials());
        };
        let given = parts
            .headers
            .get("x-xsrftoken")
            .and_then(|v| v.to_str().ok())
            .map(std::borrow::Cow::Borrowed)
            .or_else(|| query_param(parts, "_xsrf"));
        if !xsrf_matches(state.xsrf_key(), &session.session_id, given.as_deref()) {
            return Err(ApiError::Forbidden(
                "'_xsrf' argument missing or incorrect".to_owned(),
            ));
        }
        let owner_scopes = Arc::new(crate::auth::user_scopes(state.config(), &user));
        Ok(Self {
            kind: CallerKind::User(user),
            token_scopes: Arc::clone(&owner_scopes),
            owner_scopes,
            generation: read_at,
            token_id: None,
            session_id: Some(session.session_id),
            by_cookie: true,
        })
    }
}

/// The logged-in user of a page request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: UserRow,
    /// The browser session id.
    pub session_id: String,
    /// The login session's database id.
    pub login_id: i64,
}

/// Rejection of [`CurrentUser`]: a redirect to the login page (or a 500 if the DB failed).
#[derive(Debug)]
pub enum LoginRedirect {
    /// Not logged in.
    Login(String),
    /// Lookup failed.
    Error(ApiError),
}

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        match self {
            Self::Login(next) => crate::found(&next),
            Self::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = LoginRedirect;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRedirect> {
        let jar = CookieJar::from_headers(&parts.headers);
        match session_from_jar(state, &jar).await {
            Ok(Some((session, user))) => Ok(Self {
                user,
                session_id: session.session_id,
                login_id: session.id,
            }),
            Ok(None) => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
                Err(LoginRedirect::Login(format!(
                    "{}hub/login?next={next}",
                    state.config().base_url
                )))
            }
            Err(e) => Err(LoginRedirect::Error(e)),
        }
    }
}
