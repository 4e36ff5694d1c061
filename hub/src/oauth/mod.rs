//! The OAuth2 provider single-user servers log users in through (compat spec section 2.2).
//!
//! Routes:
//! - `GET /hub/api/oauth2/authorize`: cookie-authenticated page. Checks the client and its exact
//!   redirect URI (relative URIs allowed) and the user's `access:servers` on the client's
//!   server (or `access:services` on the client's service), then redirects with a code (300 s, single use, bound to the browser session, with
//!   an optional PKCE challenge), or shows a consent form for someone else's server.
//! - `POST /hub/api/oauth2/authorize`: the consent form's submission (`_xsrf` checked).
//! - `POST /hub/api/oauth2/token`: code → access token (`client_secret_post` only), stored as an
//!   API token of the user tied to the client and session.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, PRAGMA};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::{constant_time_eq, role_scopes};
use crate::db::{self, ClientRow, CodeRow, NewCode, NewToken};
use crate::error::ApiError;
use crate::extract::{CurrentUser, SESSION_COOKIE, xsrf_matches, xsrf_token};
use crate::pages::{render_error, session_cookie};
use crate::scopes::{Owner, Resource, ScopeSet, validate_scope};
use crate::state::AppState;

/// Lifetime of an authorization code, seconds.
pub(crate) const CODE_LIFETIME_SECS: i64 = 300;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/hub/api/oauth2/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route("/hub/api/oauth2/token", post(token))
}

fn pairs(s: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s).into_owned().collect()
}

fn param<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A checked authorization request.
#[derive(Debug)]
struct Checked {
    client: ClientRow,
    redirect_uri: String,
    scopes: Vec<String>,
    owner: Option<String>,
    /// The service the client belongs to, if any.
    service: Option<String>,
}

/// The service a client belongs to, from its allowed `access:services!service=NAME` scope.
fn client_service(client: &ClientRow) -> Option<String> {
    client.allowed_scopes.iter().find_map(|s| {
        s.strip_prefix("access:services!service=")
            .map(str::to_owned)
    })
}

/// The server a client belongs to, from its allowed `access:servers!server=U/S` scope.
fn client_target(client: &ClientRow) -> Option<(String, String)> {
    client.allowed_scopes.iter().find_map(|s| {
        let rest = s.strip_prefix("access:servers!")?;
        if let Some(v) = rest.strip_prefix("server=") {
            let (u, srv) = v.split_once('/')?;
            Some((u.to_owned(), srv.to_owned()))
        } else {
            None
        }
    })
}

async fn check(
    state: &AppState,
    me: &CurrentUser,
    p: &[(String, String)],
) -> Result<Checked, Response> {
    let client_id = param(p, "client_id")
        .ok_or_else(|| render_error(state, StatusCode::BAD_REQUEST, "Missing client_id"))?;
    let internal = |e: sqlx::Error| ApiError::from(e).into_response();
    let mut conn = state.db().pool().acquire().await.map_err(internal)?;
    let client = db::oauth::client(&mut conn, client_id)
        .await
        .map_err(internal)?
        .filter(|c| c.secret_hash.is_some())
        .ok_or_else(|| render_error(state, StatusCode::BAD_REQUEST, "Invalid client_id"))?;
    let redirect_uri = param(p, "redirect_uri").unwrap_or(&client.redirect_uri);
    if redirect_uri != client.redirect_uri {
        return Err(render_error(
            state,
            StatusCode::BAD_REQUEST,
            "Mismatching redirect URI",
        ));
    }
    if param(p, "response_type") != Some("code") {
        return Err(render_error(
            state,
            StatusCode::BAD_REQUEST,
            "Unsupported response_type (only `code`)",
        ));
    }
    if let Some(method) = param(p, "code_challenge_method")
        && !matches!(method, "S256" | "plain")
    {
        return Err(render_error(
            state,
            StatusCode::BAD_REQUEST,
            "Unsupported code_challenge_method",
        ));
    }
    let user_scopes = crate::auth::user_scopes(state.config(), &me.user);
    let target = client_target(&client);
    if let Some((owner, server)) = &target {
        let groups = match db::users::get(&mut conn, owner).await.map_err(internal)? {
            Some(u) => u.groups,
            None => Vec::new(),
        };
        let res = Resource::Server {
            user: owner,
            server,
            groups: &groups,
        };
        if !user_scopes.allows("access:servers", res) {
            return Err(render_error(
                state,
                StatusCode::FORBIDDEN,
                &format!(
                    "You do not have permission to access {}",
                    if client.description.is_empty() {
                        &client.id
                    } else {
                        &client.description
                    }
                ),
            ));
        }
    }
    let service = client_service(&client);
    if let Some(name) = &service
        && !user_scopes.allows("access:services", Resource::Service { name })
    {
        return Err(render_error(
            state,
            StatusCode::FORBIDDEN,
            &format!(
                "You do not have permission to access {}",
                client.description
            ),
        ));
    }
    // Requested scopes (none → the client's), role names expanded, `identify` ignored, cut
    // down to what the client may ask for and what the user holds.
    let requested: Vec<String> = match param(p, "scope") {
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
        None => p
            .iter()
            .filter(|(k, _)| k == "scopes")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let requested = if requested.is_empty() {
        client.allowed_scopes.clone()
    } else {
        requested
    };
    let me_owner = Owner::User(&me.user.name);
    // `inherit` (also through the `token` role) is everything the user holds: granted only
    // when the client may ask for all of it, as JupyterHub does.
    let allowed = ScopeSet::expand(&client.allowed_scopes, me_owner).resolve_inherit(&user_scopes);
    let mut scopes = Vec::new();
    for s in requested.iter().filter(|s| *s != "identify") {
        let expanded = if validate_scope(s).is_ok() {
            vec![s.clone()]
        } else {
            role_scopes(state.config(), s)
        };
        for e in expanded {
            let one = ScopeSet::expand(&[e.as_str()], me_owner).resolve_inherit(&user_scopes);
            if allowed.covers(&one) && user_scopes.covers(&one) {
                scopes.push(e);
            }
        }
    }
    scopes.push("read:users:name!user".to_owned());
    scopes.push("read:users:groups!user".to_owned());
    if let Some((owner, server)) = &target {
        scopes.push(format!("access:servers!server={owner}/{server}"));
    }
    if let Some(name) = &service {
        scopes.push(format!("access:services!service={name}"));
    }
    scopes.sort();
    scopes.dedup();
    Ok(Checked {
        redirect_uri: redirect_uri.to_owned(),
        client,
        scopes,
        owner: target.map(|(u, _)| u),
        service,
    })
}

/// Store a code and redirect to the client with it.
async fn issue_code(
    state: &AppState,
    me: &CurrentUser,
    jar: CookieJar,
    p: &[(String, String)],
    c: Checked,
) -> Response {
    let code = db::new_secret();
    let now = db::now_micros();
    let challenge = param(p, "code_challenge").map(str::to_owned);
    let method = challenge.as_ref().map(|_| {
        param(p, "code_challenge_method")
            .unwrap_or("plain")
            .to_owned()
    });
    let new = NewCode {
        code_hash: &db::hash_secret(&code),
        code: CodeRow {
            client_id: c.client.id.clone(),
            user_id: me.user.id,
            redirect_uri: c.redirect_uri.clone(),
            scopes: c.scopes,
            session_id: Some(me.session_id.clone()),
            code_challenge: challenge,
            code_challenge_method: method,
            expires_at: now + CODE_LIFETIME_SECS * 1_000_000,
        },
        created: now,
    };
    let stored = async {
        let mut tx = state.db().begin().await?;
        db::oauth::purge_codes(&mut tx, now).await?;
        db::oauth::insert_code(&mut tx, &new).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = stored {
        return ApiError::from(e).into_response();
    }
    let mut location = c.redirect_uri;
    location.push(if location.contains('?') { '&' } else { '?' });
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("code", &code);
    if let Some(s) = param(p, "state") {
        q.append_pair("state", s);
    }
    location.push_str(&q.finish());
    tracing::info!(user = %me.user.name, client = %c.client.id, "issued oauth code");
    // Make sure the browser carries the session id the code is bound to.
    let jar = if jar.get(SESSION_COOKIE).map(|c| c.value()) == Some(me.session_id.as_str()) {
        jar
    } else {
        jar.add(session_cookie(state, &me.session_id))
    };
    (jar, crate::found(&location)).into_response()
}

async fn authorize_get(
    State(state): State<AppState>,
    me: CurrentUser,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let p = pairs(query.unwrap_or_default().as_bytes());
    let checked = match check(&state, &me, &p).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // No confirmation for the user's own server or a service configured with
    // `oauth_no_confirm` (JupyterHub's `needs_oauth_confirm`).
    let no_confirm = checked.service.as_deref().is_some_and(|name| {
        state
            .services()
            .get(name)
            .and_then(|s| s.oauth.as_ref())
            .is_some_and(|o| o.no_confirm && o.client_id == checked.client.id)
    });
    if no_confirm || checked.owner.as_deref() == Some(me.user.name.as_str()) {
        return issue_code(&state, &me, jar, &p, checked).await;
    }
    let xsrf = xsrf_token(state.xsrf_key(), &me.session_id);
    crate::pages::render_consent(
        &state,
        &me.user.name,
        &checked.client.description,
        &checked.client.id,
        &checked.scopes,
        &p,
        &xsrf,
    )
}

async fn authorize_post(
    State(state): State<AppState>,
    me: CurrentUser,
    jar: CookieJar,
    body: Bytes,
) -> Response {
    let p = pairs(&body);
    if !xsrf_matches(state.xsrf_key(), &me.session_id, param(&p, "_xsrf")) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "'_xsrf' argument missing or incorrect",
        );
    }
    match check(&state, &me, &p).await {
        Ok(c) => issue_code(&state, &me, jar, &p, c).await,
        Err(resp) => resp,
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn pkce_ok(code: &CodeRow, verifier: Option<&str>) -> bool {
    let Some(challenge) = &code.code_challenge else {
        return true;
    };
    let Some(verifier) = verifier else {
        return false;
    };
    let computed = match code.code_challenge_method.as_deref() {
        Some("S256") => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        _ => verifier.to_owned(),
    };
    constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

async fn token(State(state): State<AppState>, body: Bytes) -> Response {
    match exchange(&state, &pairs(&body)).await {
        Ok(resp) => resp,
        Err(Exchange::OAuth(status, error, description)) => oauth_error(status, error, description),
        Err(Exchange::Db(e)) => ApiError::from(e).into_response(),
    }
}

enum Exchange {
    OAuth(StatusCode, &'static str, &'static str),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Exchange {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

const INVALID_GRANT: Exchange = Exchange::OAuth(
    StatusCode::BAD_REQUEST,
    "invalid_grant",
    "The authorization code is invalid, expired or already used, or the redirect URI or code verifier does not match",
);

async fn exchange(state: &AppState, p: &[(String, String)]) -> Result<Response, Exchange> {
    if param(p, "grant_type") != Some("authorization_code") {
        return Err(Exchange::OAuth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only grant_type=authorization_code is supported",
        ));
    }
    let bad_client = Exchange::OAuth(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed",
    );
    let (Some(client_id), Some(secret)) = (param(p, "client_id"), param(p, "client_secret")) else {
        return Err(bad_client);
    };
    let code = param(p, "code").ok_or(Exchange::OAuth(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Missing code",
    ))?;
    let mut tx = state.db().begin().await?;
    let client = db::oauth::client(&mut tx, client_id).await?;
    let secret_ok = client
        .as_ref()
        .and_then(|c| c.secret_hash.as_deref())
        .is_some_and(|h| constant_time_eq(h.as_bytes(), db::hash_secret(secret).as_bytes()));
    let (Some(client), true) = (client, secret_ok) else {
        return Err(bad_client);
    };
    // Taking the code deletes it; an error below drops the transaction, which rolls back.
    let now = db::now_micros();
    let stored = db::oauth::take_code(&mut tx, &db::hash_secret(code), &client.id)
        .await?
        .ok_or(INVALID_GRANT)?;
    let redirect_ok =
        param(p, "redirect_uri").unwrap_or(&client.redirect_uri) == stored.redirect_uri;
    if stored.expires_at <= now {
        // Expired codes are useless: keep them deleted.
        tx.commit().await?;
        return Err(INVALID_GRANT);
    }
    if !redirect_ok || !pkce_ok(&stored, param(p, "code_verifier")) {
        return Err(INVALID_GRANT);
    }
    let access = db::new_secret();
    let expires_in = state.config().cookie_max_age_secs();
    let note = format!(
        "oauth: {}",
        if client.description.is_empty() {
            &client.id
        } else {
            &client.description
        }
    );
    db::tokens::insert(
        &mut tx,
        &NewToken {
            hash: &db::hash_secret(&access),
            prefix: &access[..4],
            user_id: Some(stored.user_id),
            service_id: None,
            scopes: &stored.scopes,
            note: &note,
            created: now,
            expires_at: Some(now + expires_in * 1_000_000),
            session_id: stored.session_id.as_deref(),
            oauth_client: Some(&client.id),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(client = %client.id, user_id = stored.user_id, "issued oauth access token");
    Ok((
        [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
        axum::Json(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": stored.scopes.join(" "),
        })),
    )
        .into_response())
}
