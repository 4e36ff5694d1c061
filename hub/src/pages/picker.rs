//! The server-options picker, `GET/POST /hub/spawn[/{user}[/{server}]]` (compat spec
//! section 5's form transport):
//! - `GET` shows the profiles the server's owner may use, with their quota (servers used / max)
//!   and the options last used for this server selected. A GET never starts a server (a
//!   cross-site `<img>` or link would start it as the visitor): a query naming options
//!   (`?profile=…`, `?opt-…`, `options_from_query`) is checked and shown selected on the form
//!   (403 / 400 with the message if refused); with no choice to make (no profiles, or one
//!   without options) the page is a single Start button. `?new_server=NAME` (the home page's
//!   form) goes to that named server's picker.
//! - `POST` (form or `multipart/form-data`, `_xsrf` in the query, the form or `X-XSRFToken`)
//!   turns the fields into `user_options` (`options_from_form`; a post without `profile`, the
//!   Start button's, starts with the server's saved options), checks them with the same
//!   function as the REST API, creates a new named server (with `display_name`) within the
//!   quota, starts it and redirects to the spawn-pending page. A refusal re-renders the form
//!   with the message next to its field (403 / 400).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;

use super::spawn::{allowed, load, next_or, pending_path, spawn_path};
use super::{enc, render, render_error};
use crate::db::{ServerRow, UserRow};
use crate::error::ApiError;
use crate::extract::{CurrentUser, xsrf_matches, xsrf_token};
use crate::names::ServerName;
use crate::profiles::{self, UserOptions};
use crate::spawn::{Refusal, StartRequest};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/spawn", get(get_me).post(post_me))
        .route("/hub/spawn/{name}", get(get_default).post(post_default))
        .route(
            "/hub/spawn/{name}/{server}",
            get(get_named).post(post_named),
        )
}

type Pairs = Vec<(String, String)>;

/// What the page needs about the owner and the server.
struct Target {
    user: UserRow,
    servers: Vec<ServerRow>,
    server: String,
    next: String,
}

impl Target {
    fn row(&self) -> Option<&ServerRow> {
        self.servers.iter().find(|s| s.name == self.server)
    }
}

/// Check access and load the owner; `Err` is the page to answer with.
async fn target(
    state: &AppState,
    me: &CurrentUser,
    name: &str,
    server: &str,
    q: &HashMap<String, String>,
) -> Result<Target, Response> {
    if !allowed(me, name) {
        return Err(render_error(
            state,
            StatusCode::FORBIDDEN,
            "You may not start this server.",
        ));
    }
    if !server.is_empty() && server.parse::<ServerName>().is_err() {
        return Err(render_error(
            state,
            StatusCode::BAD_REQUEST,
            "Invalid server name: use 1-30 lower-case letters, digits or dashes, starting with a letter.",
        ));
    }
    let (user, servers) = match load(state, name).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(render_error(state, StatusCode::NOT_FOUND, "No such user.")),
        Err(e) => return Err(e.into_response()),
    };
    Ok(Target {
        next: next_or(state, q, name, server),
        user,
        servers,
        server: server.to_owned(),
    })
}

/// Where a server already running or starting sends the browser, if anywhere.
fn already(state: &AppState, t: &Target) -> Option<Response> {
    let row = t.row()?;
    if row.ready() {
        return Some(crate::found(&t.next));
    }
    if row.pending.as_deref() == Some("spawn") {
        return Some(crate::found(&format!(
            "{}?next={}",
            pending_path(state, &t.user.name, &t.server),
            enc(&t.next)
        )));
    }
    None
}

async fn show(
    state: AppState,
    me: CurrentUser,
    name: String,
    server: String,
    q: Pairs,
) -> Response {
    let map: HashMap<String, String> = q.iter().cloned().collect();
    if server.is_empty()
        && let Some(new) = map.get("new_server")
    {
        let new = new.trim().to_ascii_lowercase();
        if new.parse::<ServerName>().is_err() {
            return render_error(
                &state,
                StatusCode::BAD_REQUEST,
                "Invalid server name: use 1-30 lower-case letters, digits or dashes, starting with a letter.",
            );
        }
        let mut to = spawn_path(&state, &name, &new);
        if let Some(d) = map.get("display_name").filter(|d| !d.trim().is_empty()) {
            to.push_str(&format!("?display_name={}", enc(d.trim())));
        }
        return crate::found(&to);
    }
    let t = match target(&state, &me, &name, &server, &map).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if let Some(resp) = already(&state, &t) {
        return resp;
    }
    let display = map.get("display_name").cloned();
    // Options named in the query are checked now and shown selected; starting takes a POST.
    if profiles::has_query_options(&q) {
        let options = profiles::from_query(&q);
        let refusal = state.planner().check(&t.user, &options).err();
        let status = refusal.as_ref().map_or(StatusCode::OK, Refusal::status);
        let page = Page {
            current: &options,
            display: display.as_deref(),
            refusal,
            status,
        };
        return picker(&state, &me, &t, page).await;
    }
    let current = t
        .row()
        .and_then(|r| UserOptions::parse(&r.user_options).ok())
        .unwrap_or_default();
    let page = Page {
        current: &current,
        display: display.as_deref(),
        refusal: None,
        status: StatusCode::OK,
    };
    picker(&state, &me, &t, page).await
}

/// What the form page shows besides the owner and server.
struct Page<'a> {
    /// The options shown selected.
    current: &'a UserOptions,
    /// The display name of a new named server.
    display: Option<&'a str>,
    /// Why the last attempt was refused.
    refusal: Option<Refusal>,
    /// The page's status.
    status: StatusCode,
}

/// Plan, create (a new named server) and start, as the REST API does; a redirect to the
/// progress page, or the form again with the refusal.
async fn submit(
    state: &AppState,
    me: &CurrentUser,
    t: &Target,
    options: Option<UserOptions>,
    display: Option<String>,
) -> Response {
    let req = StartRequest {
        options: options.as_ref().map(UserOptions::to_value),
        display_name: display.clone(),
    };
    let started = state
        .planner()
        .start(state.orchestrator(), &t.user, &t.server, req)
        .await;
    match started {
        Ok(_) => crate::found(&format!(
            "{}?next={}",
            pending_path(state, &t.user.name, &t.server),
            enc(&t.next)
        )),
        Err(refusal) => {
            if let Refusal::Other(ApiError::Internal(e)) = &refusal {
                tracing::error!(error = %e, "spawn from the picker failed");
            }
            let shown = options.unwrap_or_else(|| {
                t.row()
                    .and_then(|r| UserOptions::parse(&r.user_options).ok())
                    .unwrap_or_default()
            });
            let page = Page {
                current: &shown,
                display: display.as_deref(),
                status: refusal.status(),
                refusal: Some(refusal),
            };
            picker(state, me, t, page).await
        }
    }
}

/// Render the form.
async fn picker(state: &AppState, me: &CurrentUser, t: &Target, page: Page<'_>) -> Response {
    let Page {
        current,
        display,
        refusal,
        status,
    } = page;
    let id = state.planner().identity(&t.user);
    let list = state.planner().profiles();
    let mut view = profiles::view(list, &id, current);
    // No choice to make (no profiles, or one without options): a single Start button, whose
    // post starts with the saved options.
    let offered = view["profiles"].as_array().map_or(&[][..], Vec::as_slice);
    let direct = list.is_empty()
        || (offered.len() == 1
            && offered
                .iter()
                .all(|p| p["options"].as_array().is_none_or(Vec::is_empty)));
    if let Some(sites) = state.sites() {
        sites.annotate(&mut view).await;
    }
    let quota = {
        let mut conn = match state.db().pool().acquire().await {
            Ok(c) => c,
            Err(e) => return ApiError::from(e).into_response(),
        };
        match crate::quota::of_user(&mut conn, t.user.id).await {
            Ok(q) => q,
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let used = t.servers.iter().filter(|s| s.active()).count();
    let max = quota.as_ref().and_then(|q| q.max_servers);
    let (field, error) = match refusal {
        Some(Refusal::Other(ApiError::Internal(_))) => (
            String::new(),
            "The server could not be started because of an error in the hub; try again later."
                .to_owned(),
        ),
        Some(Refusal::Other(e)) => (String::new(), e.to_string()),
        Some(r) => (r.field().to_owned(), r.to_string()),
        None => (String::new(), String::new()),
    };
    let xsrf = xsrf_token(state.xsrf_key(), &me.session_id);
    let action = format!(
        "{}?_xsrf={}&next={}",
        spawn_path(state, &t.user.name, &t.server),
        enc(&xsrf),
        enc(&t.next)
    );
    let is_new = !t.server.is_empty() && t.row().is_none();
    let label = match t.row().and_then(|r| r.display_name.clone()) {
        Some(d) => d,
        None if t.server.is_empty() => "default server".to_owned(),
        None => t.server.clone(),
    };
    render(
        status,
        "picker.html",
        context! {
            title => "Server options",
            owner => t.user.name,
            me => me.user.name,
            server => t.server,
            label,
            is_new,
            display_name => display.unwrap_or_default(),
            profiles => view["profiles"],
            field, error,
            xsrf, action, direct,
            quota => quota.as_ref().map(crate::quota::UserQuota::describe),
            used, max,
            kept => kept_note(state.config()),
            base_url => state.config().base_url,
        },
    )
}

/// What of a JupyterLab server survives its restart, as the picker says it (remote-kernels
/// profiles carry their own warning: no home at all).
fn kept_note(config: &crate::Config) -> String {
    match (config.spawner.kind, &config.spawner.kubernetes) {
        (crate::SpawnerKind::Kubernetes, Some(k)) if k.storage.enabled => format!(
            "JupyterLab servers keep only what is under {} when they stop or restart; \
             everything else in the server starts afresh.",
            k.storage.mount_path
        ),
        (crate::SpawnerKind::Kubernetes, _) => "JupyterLab servers keep nothing when they stop \
             or restart: save your work to S3."
            .to_owned(),
        (crate::SpawnerKind::Local, _) => {
            "JupyterLab servers keep your home directory when they stop or restart.".to_owned()
        }
    }
}

/// The fields of a form post, `multipart/form-data` or URL-encoded (files become
/// `NAME_file` with their content dropped).
async fn form_pairs(state: &AppState, req: Request) -> Result<Pairs, ApiError> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let bad = |status: StatusCode, e: &dyn std::fmt::Display| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("The form is too large: {e}"))
        } else {
            ApiError::BadRequest(format!("Cannot read the form: {e}"))
        }
    };
    if multipart {
        let mut mp = Multipart::from_request(req, state)
            .await
            .map_err(|e| bad(e.status(), &e))?;
        let mut out = Vec::new();
        while let Some(field) = mp.next_field().await.map_err(|e| bad(e.status(), &e))? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                out.push((format!("{name}_file"), String::new()));
                continue;
            }
            let text = field.text().await.map_err(|e| bad(e.status(), &e))?;
            out.push((name, text));
        }
        return Ok(out);
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| bad(e.status(), &e))?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

async fn post(
    state: AppState,
    me: CurrentUser,
    name: String,
    server: String,
    q: Pairs,
    req: Request,
) -> Response {
    let header = req
        .headers()
        .get("x-xsrftoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let pairs = match form_pairs(&state, req).await {
        Ok(p) => p,
        Err(e) => return render_error(&state, e.status(), &e.to_string()),
    };
    let given = q
        .iter()
        .chain(pairs.iter())
        .find(|(k, _)| k == "_xsrf")
        .map(|(_, v)| v.clone())
        .or(header);
    if !xsrf_matches(state.xsrf_key(), &me.session_id, given.as_deref()) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "'_xsrf' argument missing or incorrect: reload the page and submit the form again.",
        );
    }
    let map: HashMap<String, String> = q.into_iter().collect();
    let t = match target(&state, &me, &name, &server, &map).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if let Some(resp) = already(&state, &t) {
        return resp;
    }
    let display = pairs
        .iter()
        .find(|(k, _)| k == "display_name")
        .map(|(_, v)| v.clone())
        .or_else(|| map.get("display_name").cloned());
    // The Start button (no choice to make) posts no profile: start with the saved options.
    let options = pairs
        .iter()
        .any(|(k, _)| k == "profile")
        .then(|| profiles::from_form(&pairs));
    submit(&state, &me, &t, options, display).await
}

async fn get_me(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<Pairs>,
) -> Response {
    let name = me.user.name.clone();
    show(state, me, name, String::new(), q).await
}

async fn get_default(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    show(state, me, name, String::new(), q).await
}

async fn get_named(
    State(state): State<AppState>,
    me: CurrentUser,
    Path((name, server)): Path<(String, String)>,
    Query(q): Query<Pairs>,
) -> Response {
    show(state, me, name, server, q).await
}

async fn post_me(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<Pairs>,
    req: Request,
) -> Response {
    let name = me.user.name.clone();
    post(state, me, name, String::new(), q, req).await
}

async fn post_default(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    req: Request,
) -> Response {
    post(state, me, name, String::new(), q, req).await
}

async fn post_named(
    State(state): State<AppState>,
    me: CurrentUser,
    Path((name, server)): Path<(String, String)>,
    Query(q): Query<Pairs>,
    req: Request,
) -> Response {
    post(state, me, name, server, q, req).await
}

#[cfg(test)]
mod tests {
    use super::kept_note;

    #[test]
    fn the_picker_says_what_survives_a_restart_on_each_spawner() {
        let mut c = crate::Config::default();
        assert!(kept_note(&c).contains("keep your home directory"));
        c.spawner.kind = crate::SpawnerKind::Kubernetes;
        let mut k = spawner::k8s::KubeSpawnerConfig::default();
        k.storage.enabled = true;
        k.storage.mount_path = "/home/jovyan/user_data".to_owned();
        c.spawner.kubernetes = Some(k.clone());
        assert!(
            kept_note(&c).contains("only what is under /home/jovyan/user_data"),
            "{}",
            kept_note(&c)
        );
        k.storage.enabled = false;
        c.spawner.kubernetes = Some(k);
        assert!(kept_note(&c).contains("keep nothing"), "{}", kept_note(&c));
    }
}
