//! Routes of the OpenID Connect login:
//! - `GET /hub/oauth_login?next=`: store a pending login (state hash → nonce, PKCE verifier,
//!   next), set the `stackhub-oidc-state` cookie, 302 to the provider.
//! - `GET /hub/oauth_callback?code&state`: the state must equal the cookie's and be a live,
//!   unused pending login; then code exchange, id_token verification, claims → identity, the
//!   allowed-roles check (403 page naming the lacking role and the held ones), the account
//!   binding (`binding`: a user name owned by another provider account is a 403 page saying
//!   so), and in one transaction: user, admin flag, groups, quota, login session and the
//!   encrypted tokens.
//!
//! Every refusal is an error page plus a `warn` log line; nothing is written before the identity
//! is fully checked.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde_json::{Value, json};

use crate::auth::AuthOutcome;
use crate::auth::oidc::binding;
use crate::auth::oidc::claims::{self, ClaimsError, Identity};
use crate::auth::oidc::{LOGIN_TTL_SECS, OidcAuth, OidcError, store};
use crate::db;
use crate::error::ApiError;
use crate::pages;
use crate::state::AppState;

/// The cookie binding a pending login to the browser that started it.
pub(crate) const STATE_COOKIE: &str = "stackhub-oidc-state";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/oauth_login", get(oauth_login))
        .route("/hub/oauth_callback", get(oauth_callback))
}

/// The redirect URI: configured, else `<public_url origin or request origin><base>hub/oauth_callback`.
pub(crate) fn redirect_url(state: &AppState, oidc: &OidcAuth, headers: &HeaderMap) -> String {
    if let Some(r) = &oidc.config().redirect_url {
        return r.clone();
    }
    format!(
        "{}{}hub/oauth_callback",
        origin(state, headers),
        state.config().base_url
    )
}

/// The hub's public origin: from `public_url`, else from the request (`X-Forwarded-Proto`,
/// `Host`).
pub(crate) fn origin(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(Ok(u)) = state.config().public_url.as_deref().map(url::Url::parse) {
        return u.origin().ascii_serialization();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let proto = header("x-forwarded-proto")
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or("127.0.0.1");
    format!("{proto}://{host}")
}

fn state_cookie(state: &AppState, value: String) -> Cookie<'static> {
    let secure = state
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"));
    Cookie::build((STATE_COOKIE, value))
        .path(format!("{}hub/", state.config().base_url))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(LOGIN_TTL_SECS))
        .build()
}

fn refuse(state: &AppState, status: StatusCode, message: &str) -> Response {
    pages::render_error(state, status, message)
}

async fn oauth_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(oidc) = state.oidc() else {
        return refuse(
            &state,
            StatusCode::NOT_FOUND,
            "OpenID Connect login is not configured on this hub.",
        );
    };
    let next = pages::safe_next(&state, q.get("next"));
    let redirect = redirect_url(&state, &oidc, &headers);
    let start = match oidc.begin(&redirect, next).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start an OpenID Connect login");
            return refuse(&state, StatusCode::BAD_GATEWAY, &e.to_string());
        }
    };
    let now = db::now_micros();
    let saved = async {
        let mut tx = state.db().begin().await?;
        store::insert_login(
            &mut tx,
            &db::hash_secret(&start.state),
            &start.pending,
            now,
            now + LOGIN_TTL_SECS * 1_000_000,
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = saved {
        return ApiError::from(e).into_response();
    }
    let jar = jar.add(state_cookie(&state, start.state));
    (jar, crate::found(start.url.as_str())).into_response()
}

async fn oauth_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(oidc) = state.oidc() else {
        return refuse(
            &state,
            StatusCode::NOT_FOUND,
            "OpenID Connect login is not configured on this hub.",
        );
    };
    let clear = Cookie::build(STATE_COOKIE).path(format!("{}hub/", state.config().base_url));
    let jar = jar.remove(clear);
    if let Some(error) = q.get("error") {
        let desc = q.get("error_description").map_or("", String::as_str);
        tracing::warn!(error = %error, description = %desc, "the identity provider returned an error");
        let msg = format!("The identity provider refused the login: {error} {desc}");
        return (jar, refuse(&state, StatusCode::FORBIDDEN, msg.trim())).into_response();
    }
    let (Some(code), Some(given)) = (q.get("code"), q.get("state")) else {
        tracing::warn!("OpenID Connect callback without code or state");
        return (
            jar,
            refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "The login callback lacks `code` or `state`. Sign in again.",
            ),
        )
            .into_response();
    };
    let cookie_state = CookieJar::from_headers(&headers)
        .get(STATE_COOKIE)
        .map(|c| c.value().to_owned());
    if !cookie_state.is_some_and(|c| crate::auth::constant_time_eq(c.as_bytes(), given.as_bytes()))
    {
        tracing::warn!("OpenID Connect callback: state does not match this browser's login");
        return (
            jar,
            refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "Login state mismatch: this login was not started by this browser, or it \
                 expired. Sign in again.",
            ),
        )
            .into_response();
    }
    let now = db::now_micros();
    let pending = async {
        let mut tx = state.db().begin().await?;
        let p = store::take_login(&mut tx, &db::hash_secret(given), now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(p)
    }
    .await;
    let pending = match pending {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::warn!("OpenID Connect callback: unknown, expired or already used state");
            return (
                jar,
                refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "This login request is unknown, expired or was already used. Sign in again.",
                ),
            )
                .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let redirect = redirect_url(&state, &oidc, &headers);
    let (claims_json, tokens) = match oidc.finish(code, &pending, &redirect).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect login refused");
            let status = match e {
                OidcError::Provider(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::FORBIDDEN,
            };
            return (jar, refuse(&state, status, &format!("Login failed: {e}"))).into_response();
        }
    };
    let identity = match claims::identity(oidc.config(), &claims_json) {
        Ok(i) => i,
        Err(ClaimsError::NotAllowed {
            missing,
            roles,
            groups,
        }) => {
            let user = claims::at_path(&claims_json, &oidc.config().username_claim)
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::warn!(
                user,
                ?missing,
                ?roles,
                "login refused: required role missing"
            );
            // The provider's session stays; revoke what it gave us for this refused login.
            oidc.revoke(&tokens).await;
            return (
                jar,
                pages::render_forbidden(&state, user, &missing, &roles, &groups),
            )
                .into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "login refused");
            oidc.revoke(&tokens).await;
            return (jar, refuse(&state, StatusCode::FORBIDDEN, &e.to_string())).into_response();
        }
    };
    match complete(&state, &oidc, &identity, &claims_json, &tokens).await {
        Ok((user_name, cookie_value, session_id)) => {
            tracing::info!(user = %user_name, roles = ?identity.roles, "logged in with OpenID Connect");
            pages::session_response(&state, jar, cookie_value, &session_id, &pending.next_url)
        }
        Err(Refusal::Login(crate::auth::LoginError::Rejected)) => {
            tracing::warn!(user = %identity.name, "login refused by the hub's user rules");
            oidc.revoke(&tokens).await;
            (
                jar,
                refuse(
                    &state,
                    StatusCode::FORBIDDEN,
                    &format!("User {} may not use this hub.", identity.name),
                ),
            )
                .into_response()
        }
        Err(Refusal::Name(e)) => {
            tracing::warn!(user = %identity.name, error = %e, "login refused: user name not allowed");
            oidc.revoke(&tokens).await;
            let msg = format!("Your user name cannot be used on this hub: {e}.");
            (jar, refuse(&state, StatusCode::FORBIDDEN, &msg)).into_response()
        }
        Err(Refusal::Binding(binding::BindingError::Db(e)))
        | Err(Refusal::Login(crate::auth::LoginError::Db(e))) => ApiError::from(e).into_response(),
        Err(Refusal::Binding(e)) => {
            tracing::warn!(user = %identity.name, error = %e, "login refused: identity-provider account does not own the user");
            oidc.revoke(&tokens).await;
            (jar, refuse(&state, StatusCode::FORBIDDEN, &e.to_string())).into_response()
        }
    }
}

/// Why [`complete`] refused a login.
#[derive(Debug)]
enum Refusal {
    /// The hub's user rules or the database.
    Login(crate::auth::LoginError),
    /// The name the claims give is not a legal new user name.
    Name(crate::names::BadName),
    /// The account does not own the user (or the database failed checking).
    Binding(binding::BindingError),
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Self::Login(e.into())
    }
}

impl From<crate::auth::LoginError> for Refusal {
    fn from(e: crate::auth::LoginError) -> Self {
        Self::Login(e)
    }
}

impl From<binding::BindingError> for Refusal {
    fn from(e: binding::BindingError) -> Self {
        Self::Binding(e)
    }
}

/// In one transaction: the user, admin flag, groups, quota, auth state, login session and the
/// encrypted tokens. Returns (user name, login cookie value, browser session id).
async fn complete(
    state: &AppState,
    oidc: &OidcAuth,
    identity: &Identity,
    claims_json: &Value,
    tokens: &crate::auth::oidc::TokenSet,
) -> Result<(String, String, String), Refusal> {
    let config = oidc.config();
    let account = binding::account(config, claims_json)?;
    let name = crate::names::UserName::normalized(&identity.name).map_err(Refusal::Name)?;
    let outcome = AuthOutcome {
        name: identity.name.clone(),
        admin: Some(identity.admin),
        groups: config.manage_groups.then(|| {
            let mut g: Vec<String> = identity
                .groups
                .iter()
                .filter_map(|g| claims::hub_group_name(g))
                .collect();
            g.sort();
            g.dedup();
            g
        }),
        roles: None,
    };
    let mut tx = state.db().begin().await?;
    binding::check(&mut tx, name.as_str(), &account).await?;
    let user = crate::auth::apply_outcome(
        state.config(),
        &mut tx,
        &outcome,
        &identity.roles,
        &identity.groups,
    )
    .await?;
    binding::bind(&mut tx, user.id, &account).await?;
    let auth_state = json!({
        "oidc": {
            "sub": claims_json.get("sub"),
            "roles": identity.roles,
            "groups": identity.groups,
        }
    });
    db::users::set_auth_state(&mut tx, user.id, Some(auth_state.to_string())).await?;
    let (cookie_value, session_id) = pages::new_session(&mut tx, state, user.id).await?;
    let (access, refresh, id_token) = oidc.seal(tokens);
    store::insert_tokens(
        &mut tx,
        &store::NewTokens {
            user_id: user.id,
            session_id: &session_id,
            access_token: &access,
            refresh_token: refresh.as_deref(),
            id_token: id_token.as_deref(),
            expires_at: tokens.expires_at,
        },
        db::now_micros(),
    )
    .await?;
    tx.commit().await?;
    Ok((user.name, cookie_value, session_id))
}
