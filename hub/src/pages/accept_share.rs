//! `/hub/accept-share?code=…`: a logged-in user exchanges a share code for a share.
//!
//! `GET` shows who shares which server and what accepting grants; `POST` (form: `code`,
//! `_xsrf`, optional `next`) grants the share and redirects to `next` (local paths only) or the
//! server. A code works any number of times, for any number of users, until it expires or is
//! revoked. Unknown, revoked and expired codes get an error page; the code itself is never
//! logged nor repeated in an error.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Serialize;

use super::{form_xsrf, local_path, render, render_error};
use crate::api::models::server_url;
use crate::db::shares::{self, CodeRow, Recipient};
use crate::db::{self, hash_secret, now_micros};
use crate::error::ApiError;
use crate::extract::{CurrentUser, xsrf_token};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/hub/accept-share", get(show).post(accept))
}

/// Why a code cannot be used.
enum Refused {
    Missing,
    Unknown,
    Expired,
    OwnCode,
}

impl Refused {
    fn page(&self, state: &AppState) -> Response {
        let (status, message) = match self {
            Self::Missing => (StatusCode::BAD_REQUEST, "No share code given."),
            Self::Unknown => (
                StatusCode::NOT_FOUND,
                "Share not found: the invitation is unknown or was revoked.",
            ),
            Self::Expired => (
                StatusCode::NOT_FOUND,
                "This sharing invitation has expired: ask for a new one.",
            ),
            Self::OwnCode => (StatusCode::FORBIDDEN, "You can't share with yourself!"),
        };
        render_error(state, status, message)
    }
}

/// The usable code `code` for `me`.
async fn lookup(
    state: &AppState,
    me: &CurrentUser,
    code: Option<&String>,
) -> Result<Result<CodeRow, Refused>, ApiError> {
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return Ok(Err(Refused::Missing));
    };
    let mut conn = state.db().pool().acquire().await?;
    let Some(row) = shares::code_by_hash(&mut conn, &hash_secret(code)).await? else {
        return Ok(Err(Refused::Unknown));
    };
    if row.expires_at <= now_micros() {
        return Ok(Err(Refused::Expired));
    }
    if row.server.owner == me.user.name {
        return Ok(Err(Refused::OwnCode));
    }
    Ok(Ok(row))
}

#[derive(Serialize)]
struct ScopeInfo {
    scope: String,
    description: &'static str,
}

fn describe(scope: &str) -> &'static str {
    match scope.split_once('!').map_or(scope, |(n, _)| n) {
        "access:servers" => "Access the server via API or browser.",
        "read:servers" => "Read the server's model.",
        "start:servers" => "Start the server.",
        "delete:servers" => "Stop the server.",
        "servers" => "Start, stop and read the server.",
        "admin:server_state" => "Read and write the server's state.",
        _ => "A permission on the server.",
    }
}

/// Where to go after accepting: a local `next`, else the server.
fn next_url(state: &AppState, next: Option<&String>, row: &CodeRow) -> String {
    next.filter(|n| !n.is_empty())
        .and_then(|n| local_path(n))
        .unwrap_or_else(|| server_url(state, &row.server.owner, &row.server.name))
}

async fn show(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = q.get("code");
    let row = match lookup(&state, &me, code).await {
        Ok(Ok(row)) => row,
        Ok(Err(refused)) => return refused.page(&state),
        Err(e) => return e.into_response(),
    };
    let scopes: Vec<ScopeInfo> = row
        .scopes
        .iter()
        .map(|s| ScopeInfo {
            scope: s.clone(),
            description: describe(s),
        })
        .collect();
    render(
        StatusCode::OK,
        "accept_share.html",
        context! {
            title => "Accept sharing invitation",
            user => me.user.name,
            owner => row.server.owner,
            server => row.server.name,
            server_url => server_url(&state, &row.server.owner, &row.server.name),
            ready => row.server.ready,
            scopes,
            code,
            next_url => next_url(&state, q.get("next"), &row),
            xsrf => xsrf_token(state.xsrf_key(), &me.session_id),
            base_url => state.config().base_url,
        },
    )
}

async fn accept(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = form_xsrf(&state, &me, &form) {
        return refused;
    }
    let row = match lookup(&state, &me, form.get("code")).await {
        Ok(Ok(row)) => row,
        Ok(Err(Refused::OwnCode)) => {
            return render_error(
                &state,
                StatusCode::BAD_REQUEST,
                "You can't share with yourself!",
            );
        }
        Ok(Err(Refused::Missing | Refused::Unknown)) => {
            return render_error(
                &state,
                StatusCode::BAD_REQUEST,
                "Invalid share code: it is unknown or was revoked.",
            );
        }
        Ok(Err(Refused::Expired)) => {
            return render_error(
                &state,
                StatusCode::BAD_REQUEST,
                "This sharing invitation has expired: ask for a new one.",
            );
        }
        Err(e) => return e.into_response(),
    };
    if let Err(e) = exchange(&state, &me, &row).await {
        return e.into_response();
    }
    tracing::info!(
        user = %me.user.name, owner = %row.server.owner, server = %row.server.name,
        code_id = row.id, "share code accepted"
    );
    crate::found(&next_url(&state, form.get("next"), &row))
}

/// Grant the code's scopes to `me` and count the exchange, in one transaction; the code must
/// still exist then (a revocation in between wins).
async fn exchange(state: &AppState, me: &CurrentUser, row: &CodeRow) -> Result<(), ApiError> {
    let mut tx = state.db().begin().await?;
    let owner = db::users::get(&mut tx, &row.server.owner)
        .await?
        .ok_or_else(ApiError::no_access)?;
    if !shares::record_exchange(&mut tx, row.id, now_micros()).await? {
        tx.rollback().await?;
        return Err(ApiError::BadRequest(
            "Invalid share code: it is unknown or was revoked.".to_owned(),
        ));
    }
    shares::grant(
        &mut tx,
        owner.id,
        row.server_id,
        Recipient::User(me.user.id),
        &row.scopes,
        now_micros(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
