//! Server-rendered pages (minimal for now; templates in `hub/templates/`).
//!
//! Routes:
//! - `GET /hub/login`, `POST /hub/login`: the login form; on success sets `jupyterhub-hub-login`
//!   (path `/hub/`), `jupyterhub-session-id` (path `/`) and `_xsrf` (path `/hub/`), all
//!   host-only, `HttpOnly` and `SameSite=Lax` (`Secure` behind https, see `crate::origins`;
//!   pages hand the `_xsrf` token to their scripts in the HTML), then redirects to `next`
//!   (local paths only).
//! - `GET /hub/logout`: ends the login session and revokes everything issued to that browser
//!   session (OAuth tokens and codes, the identity provider's tokens), then redirects to the
//!   provider's end-session endpoint (OIDC) or the login page.
//! - `GET /hub/home`: the user's servers (default and named, with display name and profile):
//!   open, start (through the picker), stop, delete, and a form creating a named server.
//!   `GET /hub/` redirects there.
//! - `picker`: the server-options picker `/hub/spawn[/{user}[/{server}]]`.
//! - `spawn`: the browser flow around servers and the spawn-pending page (with cancel).
//! - `admin`: `/hub/admin`, users and servers for admins.
//! - `user_redirect`: `/hub/user-redirect/PATH`, deep links into the visitor's own server.
//! - `token`: `/hub/token`, the user's API tokens and authorized applications.
//! - `accept_share`: `/hub/accept-share?code=…`, exchanging a share code for a share.
//! - `GET /hub/health` (liveness: 200 while the process runs) and `ready`: `GET /hub/ready`
//!   (readiness: the database answers and its change feed is heard), both without credentials.

mod accept_share;
mod admin;
pub(crate) mod oidc;
pub use self::admin::shared_account_warning;
mod picker;
mod ready;
pub(crate) mod spawn;
mod token;
mod user_redirect;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use minijinja::{Environment, Value, context};

use crate::api::models::server_url;
use crate::auth::oidc::store as oidc_store;
use crate::auth::{LoginForm, login};
use crate::config::Secret;
use crate::db;
use crate::error::ApiError;
use crate::extract::{CurrentUser, LOGIN_COOKIE, SESSION_COOKIE, XSRF_COOKIE, xsrf_token};
use crate::state::AppState;

/// `GET`/`HEAD /hub/health`: 200 with an empty body, no credentials needed (JupyterHub's
/// health check, what Kubernetes probes call).
async fn health() -> StatusCode {
    StatusCode::OK
}

/// The OpenID Connect login routes (`/hub/oauth_login`, `/hub/oauth_callback`).
pub(crate) fn oidc_router() -> Router<AppState> {
    oidc::router()
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/health", get(health))
        .route("/hub/ready", get(ready::ready))
        .route("/hub/login", get(login_page).post(login_submit))
        .route("/hub/logout", get(logout))
        .route("/hub/home", get(home))
        .route("/hub/", get(hub_root))
        .route("/hub", get(hub_root))
        .merge(spawn::router())
        .merge(picker::router())
        .merge(admin::router())
        .merge(user_redirect::router())
        .merge(token::router())
        .merge(accept_share::router())
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("page.html", include_str!("../../templates/page.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("home.html", include_str!("../../templates/home.html")),
            ("consent.html", include_str!("../../templates/consent.html")),
            ("error.html", include_str!("../../templates/error.html")),
            (
                "forbidden.html",
                include_str!("../../templates/forbidden.html"),
            ),
            (
                "not_running.html",
                include_str!("../../templates/not_running.html"),
            ),
            (
                "spawn_pending.html",
                include_str!("../../templates/spawn_pending.html"),
            ),
            ("picker.html", include_str!("../../templates/picker.html")),
            ("admin.html", include_str!("../../templates/admin.html")),
            ("token.html", include_str!("../../templates/token.html")),
            (
                "accept_share.html",
                include_str!("../../templates/accept_share.html"),
            ),
        ] {
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "bad template");
            }
        }
        env
    })
}

fn render(status: StatusCode, name: &str, ctx: Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// An HTML error page.
pub(crate) fn render_error(state: &AppState, status: StatusCode, message: &str) -> Response {
    render(
        status,
        "error.html",
        context! { title => status.canonical_reason().unwrap_or("Error"), message, base_url => state.config().base_url },
    )
}

/// The 403 page of a login lacking a required role: names what is missing and what is held.
pub(crate) fn render_forbidden(
    state: &AppState,
    user: &str,
    missing: &[String],
    roles: &[String],
    groups: &[String],
) -> Response {
    render(
        StatusCode::FORBIDDEN,
        "forbidden.html",
        context! { title => "Access denied", user, missing, roles, groups, base_url => state.config().base_url },
    )
}

/// The OAuth consent page.
pub(crate) fn render_consent(
    state: &AppState,
    user: &str,
    description: &str,
    client_id: &str,
    scopes: &[String],
    params: &[(String, String)],
    xsrf: &str,
) -> Response {
    let params: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "scopes" && k != "scope" && k != "_xsrf")
        .cloned()
        .collect();
    let client = if description.is_empty() {
        client_id
    } else {
        description
    };
    render(
        StatusCode::OK,
        "consent.html",
        context! { title => "Authorize access", user, client, scopes, params, xsrf, base_url => state.config().base_url },
    )
}

fn cookie(state: &AppState, name: &'static str, value: String, path: String) -> Cookie<'static> {
    let secure = state
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"));
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .build()
}

/// The `jupyterhub-session-id` cookie (path = base URL).
pub(crate) fn session_cookie(state: &AppState, session_id: &str) -> Cookie<'static> {
    cookie(
        state,
        SESSION_COOKIE,
        session_id.to_owned(),
        state.config().base_url.clone(),
    )
}

/// A page form's `_xsrf` field checked against the session: the 403 page to answer when it
/// is missing or wrong.
fn form_xsrf(
    state: &AppState,
    me: &CurrentUser,
    form: &HashMap<String, String>,
) -> Option<Response> {
    if crate::extract::xsrf_matches(
        state.xsrf_key(),
        &me.session_id,
        form.get("_xsrf").map(String::as_str),
    ) {
        None
    } else {
        Some(render_error(
            state,
            StatusCode::FORBIDDEN,
            "'_xsrf' argument missing or incorrect: reload the page and try again.",
        ))
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Only same-origin absolute paths ([`local_path`]) are allowed as `next`; anything else goes
/// home.
pub(crate) fn safe_next(state: &AppState, next: Option<&String>) -> String {
    next.and_then(|n| local_path(n))
        .unwrap_or_else(|| format!("{}hub/home", state.config().base_url))
}

/// `next` if [`is_local_path`], with non-ASCII characters percent-encoded as a browser sends
/// them (a `Location` header carries ASCII only).
pub(crate) fn local_path(next: &str) -> Option<String> {
    is_local_path(next).then(|| {
        percent_encoding::utf8_percent_encode(next, percent_encoding::CONTROLS).to_string()
    })
}

/// Whether a browser resolves `next` to a path on the hub's own origin. Browsers drop tab, CR
/// and LF anywhere in a URL and read `\` as `/`, so `/\t/evil.example`, `/\n/evil.example` and
/// `/\\evil.example` all become `//evil.example`, another host. Accepted: one leading `/`, and
/// neither the value nor its percent-decoded form (which a server or proxy on the way may
/// produce) holds whitespace, a control character or a backslash, or starts with `//`.
fn is_local_path(next: &str) -> bool {
    fn plain(s: &str) -> bool {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    }
    plain(next) && plain(&percent_encoding::percent_decode_str(next).decode_utf8_lossy())
}

async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(&state, q.get("next"));
    render(
        StatusCode::OK,
        "login.html",
        context! { title => "Sign in", next_q => enc(&next), dev => state.authenticator().kind() == "dev", oidc => state.oidc().is_some(), base_url => state.config().base_url },
    )
}

async fn login_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
    Form(mut form): Form<HashMap<String, String>>,
) -> Response {
    let next = safe_next(&state, q.get("next").or(form.get("next")));
    let login_form = LoginForm {
        username: form.remove("username").unwrap_or_default(),
        password: Secret::new(form.remove("password").unwrap_or_default()),
        extra: form,
    };
    let user = match login(
        state.authenticator(),
        state.db(),
        state.config(),
        &login_form,
    )
    .await
    {
        Ok(user) => user,
        Err(crate::auth::LoginError::Rejected) => {
            tracing::info!(user = %login_form.username, "login rejected");
            return render(
                StatusCode::FORBIDDEN,
                "login.html",
                context! { title => "Sign in", next_q => enc(&next), error => "Invalid username or password", dev => state.authenticator().kind() == "dev", base_url => state.config().base_url },
            );
        }
        Err(crate::auth::LoginError::Db(e)) => return ApiError::from(e).into_response(),
    };
    let opened = async {
        let mut tx = state.db().begin().await?;
        let opened = new_session(&mut tx, &state, user.id).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(opened)
    }
    .await;
    let (cookie_value, session_id) = match opened {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    tracing::info!(user = %user.name, "logged in");
    session_response(&state, jar, cookie_value, &session_id, &next)
}

/// Store a new login session for `user_id` in the caller's transaction; returns the login
/// cookie's value and the browser session id.
pub(crate) async fn new_session(
    tx: &mut sqlx::AnyConnection,
    state: &AppState,
    user_id: i64,
) -> Result<(String, String), sqlx::Error> {
    let cookie_value = db::new_secret();
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let now = db::now_micros();
    let max_age = state.config().cookie_max_age_secs();
    db::sessions::insert(
        tx,
        &db::hash_secret(&cookie_value),
        user_id,
        &session_id,
        now,
        now + max_age * 1_000_000,
    )
    .await?;
    Ok((cookie_value, session_id))
}

/// Set the login, session and `_xsrf` cookies and redirect to `next`.
pub(crate) fn session_response(
    state: &AppState,
    jar: CookieJar,
    cookie_value: String,
    session_id: &str,
    next: &str,
) -> Response {
    let max_age = state.config().cookie_max_age_secs();
    let hub_path = format!("{}hub/", state.config().base_url);
    let mut login_cookie = cookie(state, LOGIN_COOKIE, cookie_value, hub_path.clone());
    login_cookie.set_max_age(Some(cookie::time::Duration::seconds(max_age)));
    let xsrf = cookie(
        state,
        XSRF_COOKIE,
        xsrf_token(state.xsrf_key(), session_id),
        hub_path,
    );
    let jar = jar
        .add(login_cookie)
        .add(session_cookie(state, session_id))
        .add(xsrf);
    (jar, crate::found(next)).into_response()
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, jar: CookieJar) -> Response {
    let mut idp_tokens = Vec::new();
    if let Ok(Some((session, user))) = crate::extract::session_from_jar(&state, &jar).await {
        let done = async {
            let mut tx = state.db().begin().await?;
            let n = db::tokens::delete_for_session(&mut tx, user.id, &session.session_id).await?;
            db::oauth::delete_codes_for_session(&mut tx, user.id, &session.session_id).await?;
            db::sessions::delete(&mut tx, session.id).await?;
            let rows = oidc_store::for_session(&mut tx, user.id, &session.session_id).await?;
            for row in &rows {
                oidc_store::delete_tokens(&mut tx, row.id).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>((n, rows))
        }
        .await;
        match done {
            Ok((n, rows)) => {
                tracing::info!(user = %user.name, tokens = n, "logged out");
                idp_tokens = rows;
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let base = state.config().base_url.clone();
    let hub_path = format!("{base}hub/");
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path(hub_path.clone()))
        .remove(Cookie::build(XSRF_COOKIE).path(hub_path))
        .remove(Cookie::build(SESSION_COOKIE).path(base.clone()));
    let mut target = format!("{base}hub/login");
    if let Some(oidc) = state.oidc() {
        for row in &idp_tokens {
            if let Some(set) = oidc.open(row) {
                oidc.revoke(&set).await;
            }
        }
        let back = format!("{}{base}hub/login", oidc::origin(&state, &headers));
        if let Some(url) = oidc.end_session_url(&back).await {
            target = url;
        }
    }
    (jar, crate::found(&target)).into_response()
}

async fn home(State(state): State<AppState>, me: CurrentUser) -> Response {
    let loaded = async {
        let mut conn = state.db().pool().acquire().await?;
        let servers = db::servers::for_users(&mut conn, &[me.user.id]).await?;
        let quota = crate::quota::of_user(&mut conn, me.user.id).await?;
        Ok::<_, sqlx::Error>((servers, quota))
    }
    .await;
    let (servers, quota) = match loaded {
        Ok((mut s, q)) => (s.remove(&me.user.id).unwrap_or_default(), q),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let used = servers.iter().filter(|s| s.active()).count();
    let max = quota.as_ref().and_then(|q| q.max_servers);
    let quota = quota.map(|q| q.describe());
    let base = state.config().base_url.clone();
    let user = me.user.name.clone();
    let model = |name: &str, row: Option<&db::ServerRow>| {
        let api = if name.is_empty() {
            format!("{base}hub/api/users/{}/server", crate::names::seg(&user))
        } else {
            format!(
                "{base}hub/api/users/{}/servers/{}",
                crate::names::seg(&user),
                crate::names::seg(name)
            )
        };
        let spawn = if name.is_empty() {
            format!("{base}hub/spawn/{}", crate::names::seg(&user))
        } else {
            format!(
                "{base}hub/spawn/{}/{}",
                crate::names::seg(&user),
                crate::names::seg(name)
            )
        };
        let pending_url = spawn.replacen("hub/spawn/", "hub/spawn-pending/", 1);
        let profile = row
            .and_then(|r| r.launch.as_ref())
            .and_then(|l| l.profile.as_ref())
            .map(|p| p.display_name.clone());
        context! {
            name,
            display_name => row.and_then(|r| r.display_name.clone()),
            profile,
            ready => row.is_some_and(db::ServerRow::ready),
            pending => row.and_then(|r| r.pending.clone()),
            url => server_url(&state, &user, name),
            api, spawn, pending_url,
        }
    };
    let default = model("", servers.iter().find(|s| s.name.is_empty()));
    let named: Vec<Value> = servers
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| model(&s.name, Some(s)))
        .collect();
    let xsrf = xsrf_token(state.xsrf_key(), &me.session_id);
    let services = services_menu(&state, &me);
    render(
        StatusCode::OK,
        "home.html",
        context! { title => "Home", user_q => crate::names::seg(&user), user, admin => me.user.admin, default, named, xsrf, quota, used, max, services, base_url => base },
    )
}

/// The services menu (JupyterHub's): services with a `url` and `display` that the user may
/// access, each linking to its prefix.
fn services_menu(state: &AppState, me: &CurrentUser) -> Vec<Value> {
    let scopes = crate::auth::user_scopes(state.config(), &me.user);
    state
        .services()
        .iter()
        .filter(|s| s.config.url.is_some() && s.config.display)
        .filter(|s| {
            scopes.allows(
                "access:services",
                crate::scopes::Resource::Service { name: s.name() },
            )
        })
        .map(|s| {
            let description = s.config.info.get("description").and_then(|d| d.as_str());
            context! { name => s.name(), url => s.prefix.clone(), description }
        })
        .collect()
}

async fn hub_root(State(state): State<AppState>) -> Response {
    crate::found(&format!("{}hub/home", state.config().base_url))
}
