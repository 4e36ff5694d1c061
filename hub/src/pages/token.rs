//! The token page, `/hub/token` (JupyterHub's `TokenPageHandler`): the logged-in user's API
//! tokens (note, scopes, created, last used, expiry) and, separately, the OAuth clients they
//! authorized ("Authorized Applications", with each client's description and its tokens
//! grouped), each revocable; and a form making a token (note, expiry, scopes), whose value is
//! shown once, in the answer to that form, never again.
//!
//! - `GET /hub/token`: the page.
//! - `POST /hub/token` (form: `_xsrf`, `note`, `expires_in` seconds or empty for never,
//!   `scopes` separated by spaces or commas, empty for all the user's permissions): makes the
//!   token as `POST /hub/api/users/{name}/tokens` does for the user themselves (the same scope
//!   checks) and answers the page with the new value (`Cache-Control: no-store`).
//! - `POST /hub/token/revoke` (form: `_xsrf`, `id` = `a<id>`): revokes one of the user's own
//!   tokens (an OAuth token takes its client's other tokens with it), then back to the page.
//!
//! Both POSTs need the session's `_xsrf` token; the user is always the session's, never a
//! form field, so nobody reaches another user's tokens here.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::{Value, context};

use super::{form_xsrf, render};
use crate::api::tokens::{TokenRequest, mint, parse_id, revoke};
use crate::db::{self, TokenRow, iso};
use crate::error::ApiError;
use crate::extract::{CurrentUser, xsrf_token};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/token", get(page).post(create))
        .route("/hub/token/revoke", post(revoke_one))
}

/// The expiry choices (seconds; empty = never), as JupyterHub's page offers them.
const EXPIRY_OPTIONS: [(&str, &str); 6] = [
    ("", "Never"),
    ("3600", "1 Hour"),
    ("86400", "1 Day"),
    ("604800", "1 Week"),
    ("2592000", "1 Month"),
    ("31536000", "1 Year"),
];

/// The note of a token made without one.
const DEFAULT_NOTE: &str = "Requested via token page";

fn when(t: Option<i64>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), iso)
}

/// Newest activity first, then newest creation.
fn recency(t: &TokenRow) -> (i64, i64) {
    (t.last_activity.unwrap_or(i64::MIN), t.created)
}

/// A new token to show once: its value and note.
struct Shown {
    value: String,
    note: String,
}

/// The page, with `shown` (just made) or `error` (what the last form got wrong).
async fn render_page(
    state: &AppState,
    me: &CurrentUser,
    status: StatusCode,
    shown: Option<Shown>,
    error: Option<String>,
) -> Response {
    let loaded = async {
        let mut conn = state.db().pool().acquire().await?;
        let mut tokens = db::tokens::for_user(&mut conn, me.user.id, db::now_micros()).await?;
        tokens.sort_by_key(|t| std::cmp::Reverse(recency(t)));
        let mut descriptions = HashMap::new();
        for client in tokens.iter().filter_map(|t| t.oauth_client.as_deref()) {
            if !descriptions.contains_key(client) {
                let description = db::oauth::client(&mut conn, client)
                    .await?
                    .map(|c| c.description)
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| client.to_owned());
                descriptions.insert(client.to_owned(), description);
            }
        }
        Ok::<_, sqlx::Error>((tokens, descriptions))
    }
    .await;
    let (tokens, descriptions) = match loaded {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let api_tokens: Vec<Value> = tokens
        .iter()
        .filter(|t| t.oauth_client.is_none())
        .map(|t| {
            context! {
                id => format!("a{}", t.id),
                note => t.note,
                scopes => t.scopes.join(" "),
                created => iso(t.created),
                last_activity => when(t.last_activity, "Never"),
                expires_at => when(t.expires_at, "Never"),
            }
        })
        .collect();
    // One row per client: the earliest creation, the latest use, any token's id (revoking one
    // revokes the client's all).
    let mut clients: BTreeMap<&str, Vec<&TokenRow>> = BTreeMap::new();
    for t in &tokens {
        if let Some(client) = t.oauth_client.as_deref() {
            clients.entry(client).or_default().push(t);
        }
    }
    let mut grouped: Vec<(Option<i64>, i64, Value)> = clients
        .into_iter()
        .map(|(client, ts)| {
            let created = ts.iter().map(|t| t.created).min().unwrap_or_default();
            let last = ts.iter().filter_map(|t| t.last_activity).max();
            let row = context! {
                client_id => client,
                description => descriptions.get(client).cloned().unwrap_or_else(|| client.to_owned()),
                token_count => ts.len(),
                token_id => ts.first().map(|t| format!("a{}", t.id)),
                created => iso(created),
                last_activity => when(last, "Never"),
            };
            (last, created, row)
        })
        .collect();
    grouped
        .sort_by_key(|(last, created, _)| std::cmp::Reverse((last.unwrap_or(i64::MIN), *created)));
    let oauth_clients: Vec<Value> = grouped.into_iter().map(|(_, _, row)| row).collect();
    let expiry_options: Vec<Value> = EXPIRY_OPTIONS
        .iter()
        .map(|(value, label)| context! { value, label })
        .collect();
    let new_token = shown.map(|s| context! { value => s.value, note => s.note });
    let fresh = new_token.is_some();
    let mut resp = render(
        status,
        "token.html",
        context! {
            title => "API Tokens",
            user => me.user.name,
            api_tokens, oauth_clients, expiry_options, new_token, error,
            xsrf => xsrf_token(state.xsrf_key(), &me.session_id),
            base_url => state.config().base_url,
        },
    );
    if fresh {
        // The one page holding the token's value: never stored by the browser or a cache.
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn page(State(state): State<AppState>, me: CurrentUser) -> Response {
    render_page(&state, &me, StatusCode::OK, None, None).await
}

/// The form's scopes: `None` (all the user's permissions) when blank.
fn parse_scopes(raw: &str) -> Option<Vec<String>> {
    let scopes: Vec<String> = raw
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!scopes.is_empty()).then_some(scopes)
}

/// The form's lifetime: `None` (never) when blank; an error naming the value otherwise.
fn parse_expiry(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .map(Some)
        .map_err(|_| format!("Invalid expires_in: {raw:?} is not a number of seconds"))
}

async fn create(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = form_xsrf(&state, &me, &form) {
        return refused;
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let expires_in = match parse_expiry(field("expires_in")) {
        Ok(e) => e,
        Err(message) => {
            return render_page(&state, &me, StatusCode::BAD_REQUEST, None, Some(message)).await;
        }
    };
    let note = match field("note").trim() {
        "" => DEFAULT_NOTE.to_owned(),
        n => n.to_owned(),
    };
    let scopes = parse_scopes(field("scopes"));
    let request = TokenRequest {
        note: &note,
        expires_in,
        scopes: scopes.as_deref(),
        roles: None,
    };
    // The user asks for themselves: they may hand out what they hold.
    let own = crate::auth::user_scopes(state.config(), &me.user);
    match mint(&state, &own, &me.user, &request).await {
        Ok((_, value)) => {
            let shown = Shown { value, note };
            render_page(&state, &me, StatusCode::OK, Some(shown), None).await
        }
        Err(ApiError::Internal(e)) => ApiError::Internal(e).into_response(),
        Err(e) => render_page(&state, &me, e.status(), None, Some(e.to_string())).await,
    }
}

async fn revoke_one(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = form_xsrf(&state, &me, &form) {
        return refused;
    }
    let id = form.get("id").map(String::as_str).unwrap_or_default();
    let done = match parse_id(id) {
        Ok(id) => revoke(&state, &me.user, id).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => crate::found(&format!("{}hub/token", state.config().base_url)),
        Err(ApiError::Internal(e)) => ApiError::Internal(e).into_response(),
        Err(e) => render_page(&state, &me, e.status(), None, Some(e.to_string())).await,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Form fields as a browser (or a forger) sends them: no panic, scopes come out as
        /// non-empty words, an accepted lifetime is exactly the number given.
        #[test]
        fn form_fields_parse_or_are_refused(scopes in "\\PC{0,80}", expiry in "\\PC{0,20}", n in any::<i64>()) {
            if let Some(list) = parse_scopes(&scopes) {
                prop_assert!(!list.is_empty());
                for s in &list {
                    prop_assert!(!s.is_empty() && !s.contains(',') && !s.chars().any(char::is_whitespace));
                }
            } else {
                prop_assert!(scopes.split(|c: char| c.is_whitespace() || c == ',').all(str::is_empty));
            }
            let _ = parse_expiry(&expiry);
            prop_assert_eq!(parse_expiry(&n.to_string()), Ok(Some(n)));
            prop_assert_eq!(parse_expiry("  "), Ok(None));
        }
    }
}
