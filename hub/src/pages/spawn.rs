//! The browser flow around servers (compat spec section 2.6):
//! - anything outside `/hub/` that reaches the hub (no proxy route) → 302 to `/hub/<same path>`;
//! - `GET /hub/user/NAME[/SERVER]/...`: running → 302 `/user/NAME/...?redirects=N`; pending →
//!   303 to the spawn-pending page; stopped → 424 (HTML, or JSON for API-like requests);
//! - `GET /hub/spawn-pending/NAME[/SERVER]?next=…`: progress bar fed by the SSE stream, with
//!   readable messages, a cancel button and what to do after a failure;
//! - `POST /hub/spawn-pending/NAME[/SERVER]` (`_xsrf` in the form): cancel the pending spawn.
//!
//! The options picker (`/hub/spawn…`) is in `picker.rs`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{ACCEPT, LOCATION};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use minijinja::context;

use super::{enc, form_xsrf, render, render_error};
use crate::api::models::{progress_url, seg};
use crate::db::{self, ServerRow, UserRow};
use crate::error::{ApiError, json_error};
use crate::extract::{CurrentUser, xsrf_token};
use crate::spawn::ServerRef;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/user/{name}", any(user_redirect))
        .route("/hub/user/{name}/", any(user_redirect))
        .route("/hub/user/{name}/{*rest}", any(user_redirect))
        .route(
            "/hub/spawn-pending/{name}",
            get(pending_default).post(cancel_default),
        )
        .route(
            "/hub/spawn-pending/{name}/{server}",
            get(pending_named).post(cancel_named),
        )
}

/// The fallback: paths outside `<base>hub/` go to the hub's copy; unknown hub paths are 404.
pub(crate) async fn fallback(State(state): State<AppState>, uri: Uri) -> Response {
    let base = &state.config().base_url;
    let path = uri.path();
    let hub_prefix = format!("{base}hub");
    if path == hub_prefix || path.starts_with(&format!("{hub_prefix}/")) {
        return json_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let rest = path
        .strip_prefix(base.as_str())
        .unwrap_or(path.trim_start_matches('/'));
    let mut target = format!("{base}hub/{rest}");
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    crate::found(&target)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// May `me` use `name`'s servers from the browser?
pub(super) fn allowed(me: &CurrentUser, name: &str) -> bool {
    me.user.name == name || me.user.admin
}

pub(super) async fn load(
    state: &AppState,
    name: &str,
) -> Result<Option<(UserRow, Vec<ServerRow>)>, ApiError> {
    let mut conn = state.db().pool().acquire().await?;
    let Some(user) = db::users::get(&mut conn, name).await? else {
        return Ok(None);
    };
    let servers = db::servers::for_users(&mut conn, &[user.id])
        .await?
        .remove(&user.id)
        .unwrap_or_default();
    Ok(Some((user, servers)))
}

pub(super) fn spawn_path(state: &AppState, user: &str, server: &str) -> String {
    let base = &state.config().base_url;
    if server.is_empty() {
        format!("{base}hub/spawn/{}", seg(user))
    } else {
        format!("{base}hub/spawn/{}/{}", seg(user), seg(server))
    }
}

pub(super) fn pending_path(state: &AppState, user: &str, server: &str) -> String {
    let base = &state.config().base_url;
    if server.is_empty() {
        format!("{base}hub/spawn-pending/{}", seg(user))
    } else {
        format!("{base}hub/spawn-pending/{}/{}", seg(user), seg(server))
    }
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(LOCATION, v)]).into_response(),
        Err(_) => json_error(StatusCode::BAD_REQUEST, "Invalid redirect target"),
    }
}

async fn user_redirect(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    me: CurrentUser,
) -> Response {
    let base = state.config().base_url.clone();
    let path = uri.path();
    let Some(after) = path.strip_prefix(&format!("{base}hub/user/")) else {
        return json_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let (raw_name, rest) = after.split_once('/').unwrap_or((after, ""));
    let name = decode(raw_name);
    if !allowed(&me, &name) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "You may not access this server.",
        );
    }
    let (_, servers) = match load(&state, &name).await {
        Ok(Some(found)) => found,
        Ok(None) => return render_error(&state, StatusCode::NOT_FOUND, "No such user."),
        Err(e) => return e.into_response(),
    };
    let first = decode(rest.split('/').next().unwrap_or_default());
    let server = servers
        .iter()
        .find(|s| !s.name.is_empty() && s.name == first)
        .map_or("", |s| s.name.as_str())
        .to_owned();
    let row = servers.iter().find(|s| s.name == server);
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let redirects: u32 = query
        .iter()
        .find(|(k, _)| k == "redirects")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let here = uri.path_and_query().map_or(path, |p| p.as_str());
    match row {
        Some(r) if r.ready() => {
            if redirects >= 4 {
                return render_error(
                    &state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Redirect loop detected.",
                );
            }
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter().filter(|(k, _)| k != "redirects") {
                q.append_pair(k, v);
            }
            q.append_pair("redirects", &(redirects + 1).to_string());
            // With per-user origins the server lives on its user's host.
            let origin = state
                .config()
                .subdomain_host
                .as_ref()
                .map(|sub| sub.user_origin(&name))
                .unwrap_or_default();
            let target = format!(
                "{origin}{base}{}?{}",
                &path[base.len() + "hub/".len()..],
                q.finish()
            );
            crate::found(&target)
        }
        Some(r) if r.pending.is_some() => see_other(&format!(
            "{}?next={}",
            pending_path(&state, &name, &server),
            enc(here)
        )),
        _ => {
            let spawn = format!("{}?next={}", spawn_path(&state, &name, &server), enc(here));
            let message = format!(
                "JupyterHub server no longer running at {}. Restart the server at {spawn}",
                &path[base.len() + "hub/".len() - 1..]
            );
            let api_like = path.contains("api")
                || method != Method::GET
                || headers
                    .get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/json"));
            if api_like {
                return json_error(StatusCode::FAILED_DEPENDENCY, &message);
            }
            let label = if server.is_empty() {
                "Your server is not running.".to_owned()
            } else {
                format!("Your server {server} is not running.")
            };
            render(
                StatusCode::FAILED_DEPENDENCY,
                "not_running.html",
                context! { title => "Server not running", message => label, spawn_url => spawn, base_url => base },
            )
        }
    }
}

pub(super) fn next_or(
    state: &AppState,
    q: &HashMap<String, String>,
    user: &str,
    server: &str,
) -> String {
    match q.get("next").and_then(|n| super::local_path(n)) {
        Some(n) => n,
        None => {
            let url = crate::api::models::server_path(state, user, server);
            format!(
                "{}hub{}",
                state.config().base_url,
                &url[state.config().base_url.len() - 1..]
            )
        }
    }
}

async fn pending(
    state: AppState,
    me: CurrentUser,
    name: String,
    server: String,
    q: HashMap<String, String>,
) -> Response {
    if !allowed(&me, &name) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "You may not access this server.",
        );
    }
    let next = next_or(&state, &q, &name, &server);
    let (user, servers) = match load(&state, &name).await {
        Ok(Some(found)) => found,
        Ok(None) => return render_error(&state, StatusCode::NOT_FOUND, "No such user."),
        Err(e) => return e.into_response(),
    };
    let row = servers.iter().find(|s| s.name == server);
    if row.is_some_and(ServerRow::ready) {
        return crate::found(&next);
    }
    let spawn_url = format!("{}?next={}", spawn_path(&state, &name, &server), enc(&next));
    let base = state.config().base_url.clone();
    if row.is_none_or(|r| r.pending.as_deref() != Some("spawn")) {
        // A reload after a failed start still says why it failed.
        let sref = ServerRef {
            user_id: user.id,
            user: user.name.clone(),
            server: server.clone(),
        };
        let (title, message, failed) = match state.orchestrator().last_failure(&sref).await {
            Some(why) => ("Server start failed", why, true),
            None => (
                "Server not running",
                "Your server is not running.".to_owned(),
                false,
            ),
        };
        return render(
            StatusCode::OK,
            "not_running.html",
            context! { title, message, failed, spawn_url, base_url => base },
        );
    }
    let progress = format!(
        "{}?_xsrf={}",
        progress_url(&state, &name, &server),
        enc(&xsrf_token(state.xsrf_key(), &me.session_id))
    );
    let xsrf = xsrf_token(state.xsrf_key(), &me.session_id);
    let cancel_url = pending_path(&state, &name, &server);
    let label = if server.is_empty() {
        "Your server".to_owned()
    } else {
        format!("Your server {server}")
    };
    render(
        StatusCode::OK,
        "spawn_pending.html",
        context! { title => "Starting your server", label, progress_url => progress, next, spawn_url, cancel_url, xsrf, base_url => base },
    )
}

async fn pending_default(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    pending(state, me, name, String::new(), q).await
}

async fn pending_named(
    State(state): State<AppState>,
    me: CurrentUser,
    Path((name, server)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    pending(state, me, name, server, q).await
}

async fn cancel(
    state: AppState,
    me: CurrentUser,
    name: String,
    server: String,
    form: HashMap<String, String>,
) -> Response {
    if let Some(refused) = form_xsrf(&state, &me, &form) {
        return refused;
    }
    if !allowed(&me, &name) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "You may not stop this server.",
        );
    }
    let user = match load(&state, &name).await {
        Ok(Some((user, _))) => user,
        Ok(None) => return render_error(&state, StatusCode::NOT_FOUND, "No such user."),
        Err(e) => return e.into_response(),
    };
    let sref = ServerRef {
        user_id: user.id,
        user: user.name.clone(),
        server,
    };
    if let Err(e) = state.orchestrator().stop(&sref, false).await {
        return render_error(&state, e.status(), &e.to_string());
    }
    crate::found(&format!("{}hub/home", state.config().base_url))
}

async fn cancel_default(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    cancel(state, me, name, String::new(), form).await
}

async fn cancel_named(
    State(state): State<AppState>,
    me: CurrentUser,
    Path((name, server)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    cancel(state, me, name, server, form).await
}
