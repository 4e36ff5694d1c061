//! The admin page, `GET /hub/admin` (needs the `admin-ui` scope, which admins hold): users with
//! their servers (status, profile), roles, quota and last activity; start (through the
//! picker) and stop any server. Search (`?q=`, a case-insensitive substring of the name) and
//! pagination (`?offset=`, 50 a page, ordered by name) run in the database, one page at a time:
//! the users query walks the unique index on `users.name`, and servers, roles and quotas are
//! loaded for the page's users only, so a page costs the same at 10,000 users as at 10.
//!
//! `POST /hub/admin/stop` (form: `user`, `server`, `_xsrf`) stops a server and comes back.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::context;

use super::spawn::spawn_path;
use super::{enc, form_xsrf, render, render_error};
use crate::api::models::server_url;
use crate::db::{self, UserSort, UsersQuery};
use crate::error::ApiError;
use crate::extract::{CurrentUser, xsrf_token};
use crate::spawn::ServerRef;
use crate::state::AppState;

/// Users per page.
const PAGE: i64 = 50;

/// The operator warning of a spawner mode that runs every user's server under one Unix
/// account (logged at start and shown on the admin page), if the configured one does.
pub fn shared_account_warning(config: &crate::Config) -> Option<String> {
    (config.spawner.kind == crate::SpawnerKind::Local).then(|| {
        "Unsafe for more than one user: spawner.kind = \"local\" runs every user's server as \
         the hub's own Unix account, so each user can read and change the others' files, \
         tokens and processes. Use spawner.kind = \"kubernetes\" (a pod per user) when more \
         than one user shares this hub."
            .to_owned()
    })
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/admin", get(admin))
        .route("/hub/admin/stop", post(stop))
}

fn may_admin(state: &AppState, me: &CurrentUser) -> bool {
    crate::auth::user_scopes(state.config(), &me.user).holds("admin-ui")
}

async fn admin(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !may_admin(&state, &me) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "The admin page needs the admin-ui scope (held by admins).",
        );
    }
    let search = q
        .get("q")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let offset = q
        .get("offset")
        .and_then(|o| o.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let query = UsersQuery {
        name_filter: search.clone(),
        sort: UserSort::Name,
        offset,
        limit: PAGE,
        ..UsersQuery::default()
    };
    let loaded = async {
        let mut conn = state.db().pool().acquire().await?;
        let (users, total) = db::users::list(&mut conn, &query).await?;
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        let servers = db::servers::for_users(&mut conn, &ids).await?;
        let quotas = crate::quota::for_users(&mut conn, &ids).await?;
        Ok::<_, sqlx::Error>((users, total, servers, quotas))
    }
    .await;
    let (users, total, mut servers, mut quotas) = match loaded {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let profile_name = |s: &crate::db::ServerRow| {
        let p = s.launch.as_ref()?.profile.as_ref()?;
        Some(p.display_name.clone())
    };
    let rows: Vec<minijinja::Value> = users
        .iter()
        .map(|u| {
            let id = state.planner().identity(u);
            let list = servers.remove(&u.id).unwrap_or_default();
            let servers: Vec<minijinja::Value> = list
                .iter()
                .map(|s| {
                    context! {
                        name => s.name,
                        label => s.display_name.clone().unwrap_or_else(|| if s.name.is_empty() { "default".to_owned() } else { s.name.clone() }),
                        status => if s.ready() { "running".to_owned() } else if let Some(p) = &s.pending { format!("{p} pending") } else { "stopped".to_owned() },
                        active => s.active(),
                        ready => s.ready(),
                        profile => profile_name(s),
                        url => server_url(&state, &u.name, &s.name),
                        spawn => spawn_path(&state, &u.name, &s.name),
                    }
                })
                .collect();
            let has_default = list.iter().any(|s| s.name.is_empty());
            context! {
                name => u.name,
                admin => u.admin,
                roles => id.roles,
                groups => u.groups,
                quota => quotas.remove(&u.id).map(|q| q.describe()),
                last_activity => u.last_activity.map(db::iso),
                servers,
                spawn_default => (!has_default).then(|| spawn_path(&state, &u.name, "")),
            }
        })
        .collect();
    let base = state.config().base_url.clone();
    let search_q = search.clone().unwrap_or_default();
    let link = |off: i64| {
        let mut l = format!("{base}hub/admin?offset={off}");
        if !search_q.is_empty() {
            l.push_str(&format!("&q={}", enc(&search_q)));
        }
        l
    };
    let prev = (offset > 0).then(|| link((offset - PAGE).max(0)));
    let next = (offset.saturating_add(PAGE) < total).then(|| link(offset + PAGE));
    let back = link(offset);
    render(
        StatusCode::OK,
        "admin.html",
        context! {
            title => "Admin",
            users => rows,
            total,
            first => if total == 0 { 0 } else { offset.saturating_add(1) },
            last => offset.saturating_add(PAGE).min(total),
            q => search_q,
            prev, next, back,
            xsrf => xsrf_token(state.xsrf_key(), &me.session_id),
            base_url => base,
            unsafe_mode => shared_account_warning(state.config()),
        },
    )
}

async fn stop(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = form_xsrf(&state, &me, &form) {
        return refused;
    }
    if !may_admin(&state, &me) {
        return render_error(
            &state,
            StatusCode::FORBIDDEN,
            "Stopping other users' servers needs the admin-ui scope.",
        );
    }
    let name = form.get("user").cloned().unwrap_or_default();
    let server = form.get("server").cloned().unwrap_or_default();
    let user = match state.db().pool().acquire().await {
        Ok(mut conn) => match db::users::get(&mut conn, &name).await {
            Ok(Some(u)) => u,
            Ok(None) => return render_error(&state, StatusCode::NOT_FOUND, "No such user."),
            Err(e) => return ApiError::from(e).into_response(),
        },
        Err(e) => return ApiError::from(e).into_response(),
    };
    let sref = ServerRef {
        user_id: user.id,
        user: user.name.clone(),
        server: server.clone(),
    };
    if let Err(e) = state.orchestrator().stop(&sref, false).await {
        return render_error(&state, e.status(), &e.to_string());
    }
    tracing::info!(admin = %me.user.name, user = %user.name, server = %server, "admin stopped server");
    let back = form
        .get("back")
        .and_then(|b| super::local_path(b))
        .unwrap_or_else(|| format!("{}hub/admin", state.config().base_url));
    crate::found(&back)
}
