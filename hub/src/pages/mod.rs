//! Server-rendered pages (minimal for now; templates in `hub/templates/`).
//!
//! Routes:
//! - `GET /hub/login`, `POST /hub/login`: the login form; on success sets `jupyterhub-hub-login`
//!   (path `/hub/`), `jupyterhub-session-id` (path `/`) and `_xsrf` (path `/hub/`), then
//!   redirects to `next` (local paths only).
//! - `GET /hub/logout`: ends the login session and deletes the session's OAuth tokens.
//! - `GET /hub/home`: the user's servers. `GET /hub/` redirects there.

pub(crate) mod spawn;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use minijinja::{Environment, Value, context};

use crate::api::models::server_url;
use crate::auth::{
    CurrentUser, LOGIN_COOKIE, LoginForm, SESSION_COOKIE, XSRF_COOKIE, login, xsrf_token,
};
use crate::config::Secret;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/login", get(login_page).post(login_submit))
        .route("/hub/logout", get(logout))
        .route("/hub/home", get(home))
        .route("/hub/", get(hub_root))
        .route("/hub", get(hub_root))
        .merge(spawn::router())
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
                "not_running.html",
                include_str!("../../templates/not_running.html"),
            ),
            (
                "spawn_pending.html",
                include_str!("../../templates/spawn_pending.html"),
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

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Only local paths are allowed as `next`; anything else goes home.
fn safe_next(state: &AppState, next: Option<&String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.clone(),
        _ => format!("{}hub/home", state.config().base_url),
    }
}

async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(&state, q.get("next"));
    render(
        StatusCode::OK,
        "login.html",
        context! { title => "Sign in", next_q => enc(&next), dev => state.authenticator().kind() == "dev", base_url => state.config().base_url },
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
    let user = match login(&state, &login_form).await {
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
    let cookie_value = db::new_secret();
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let now = db::now_micros();
    let max_age = state.config().cookie_max_age_secs();
    let saved = async {
        let mut tx = state.db().begin().await?;
        db::sessions::insert(
            &mut tx,
            &db::hash_secret(&cookie_value),
            user.id,
            &session_id,
            now,
            now + max_age * 1_000_000,
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = saved {
        return ApiError::from(e).into_response();
    }
    tracing::info!(user = %user.name, "logged in");
    let hub_path = format!("{}hub/", state.config().base_url);
    let mut login_cookie = cookie(&state, LOGIN_COOKIE, cookie_value, hub_path.clone());
    login_cookie.set_max_age(Some(cookie::time::Duration::seconds(max_age)));
    let mut xsrf = cookie(
        &state,
        XSRF_COOKIE,
        xsrf_token(state.xsrf_key(), &session_id),
        hub_path,
    );
    xsrf.set_http_only(false);
    let jar = jar
        .add(login_cookie)
        .add(session_cookie(&state, &session_id))
        .add(xsrf);
    (jar, crate::found(&next)).into_response()
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    if let Ok(Some((session, user))) = crate::auth::session_from_jar(&state, &jar).await {
        let done = async {
            let mut tx = state.db().begin().await?;
            let n = db::tokens::delete_for_session(&mut tx, user.id, &session.session_id).await?;
            db::sessions::delete(&mut tx, session.id).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await;
        match done {
            Ok(n) => tracing::info!(user = %user.name, tokens = n, "logged out"),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let hub_path = format!("{}hub/", state.config().base_url);
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path(hub_path.clone()))
        .remove(Cookie::build(XSRF_COOKIE).path(hub_path))
        .remove(Cookie::build(SESSION_COOKIE).path(state.config().base_url.clone()));
    (
        jar,
        crate::found(&format!("{}hub/login", state.config().base_url)),
    )
        .into_response()
}

async fn home(State(state): State<AppState>, me: CurrentUser) -> Response {
    let servers = async {
        let mut conn = state.db().pool().acquire().await?;
        db::servers::for_users(&mut conn, &[me.user.id]).await
    }
    .await;
    let servers = match servers {
        Ok(mut s) => s.remove(&me.user.id).unwrap_or_default(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let base = state.config().base_url.clone();
    let user = me.user.name.clone();
    let model = |name: &str, row: Option<&db::ServerRow>| {
        let api = if name.is_empty() {
            format!(
                "{base}hub/api/users/{}/server",
                crate::api::models::seg(&user)
            )
        } else {
            format!(
                "{base}hub/api/users/{}/servers/{}",
                crate::api::models::seg(&user),
                crate::api::models::seg(name)
            )
        };
        let spawn = if name.is_empty() {
            format!("{base}hub/spawn/{}", crate::api::models::seg(&user))
        } else {
            format!(
                "{base}hub/spawn/{}/{}",
                crate::api::models::seg(&user),
                crate::api::models::seg(name)
            )
        };
        let pending_url = spawn.replacen("hub/spawn/", "hub/spawn-pending/", 1);
        context! {
            name,
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
    render(
        StatusCode::OK,
        "home.html",
        context! { title => "Home", user, default, named, xsrf, base_url => base },
    )
}

async fn hub_root(State(state): State<AppState>) -> Response {
    crate::found(&format!("{}hub/home", state.config().base_url))
}
