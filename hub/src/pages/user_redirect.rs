//! `GET /hub/user-redirect/PATH` (JupyterHub's deep link, e.g. a notebook's "Launch in
//! JupyterHub" link to `/hub/user-redirect/lab/tree/examples/x.ipynb`): for the logged-in user
//! (login first otherwise, coming back here), on to `/hub/user/NAME/PATH?QUERY`, which sends a
//! running or starting server's visitor on to `/user/NAME/PATH`. With no server running it
//! goes to the options picker first, with that as `next`, so a link works for someone who has
//! never started (or never logged in).
//!
//! `PATH` always lands under the visitor's own `/user/NAME/`: a `.` or `..` segment (also
//! percent-encoded) is refused with 400, so a link cannot lead elsewhere on the hub.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::spawn::{load, spawn_path};
use super::{enc, render_error};
use crate::api::models::seg;
use crate::extract::CurrentUser;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hub/user-redirect", get(user_redirect))
        .route("/hub/user-redirect/", get(user_redirect))
        .route("/hub/user-redirect/{*path}", get(user_redirect))
}

/// The part of the request path after `user-redirect/`, if it stays below it: no empty-named
/// trick, no `.` or `..` segment raw or percent-encoded, no backslash or control character.
fn deep_path<'a>(uri_path: &'a str, prefix: &str) -> Result<&'a str, String> {
    let rest = uri_path
        .strip_prefix(prefix)
        .map_or("", |r| r.strip_prefix('/').unwrap_or(r));
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    let bad_segment = decoded.split(['/', '\\']).any(|s| s == "." || s == "..");
    if bad_segment || decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "user-redirect path {decoded:?} must stay inside your server (no `.` or `..` segments)"
        ));
    }
    Ok(rest)
}

async fn user_redirect(State(state): State<AppState>, me: CurrentUser, uri: Uri) -> Response {
    let base = &state.config().base_url;
    let path = match deep_path(uri.path(), &format!("{base}hub/user-redirect")) {
        Ok(p) => p,
        Err(message) => return render_error(&state, StatusCode::BAD_REQUEST, &message),
    };
    let name = me.user.name.clone();
    let mut target = format!("{base}hub/user/{}/{path}", seg(&name));
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(q);
    }
    let servers = match load(&state, &name).await {
        Ok(Some((_, servers))) => servers,
        Ok(None) => Vec::new(),
        Err(e) => return e.into_response(),
    };
    let default = servers.iter().find(|s| s.name.is_empty());
    if default.is_some_and(|s| s.ready() || s.pending.is_some()) {
        return crate::found(&target);
    }
    // Not running: the picker (or a direct start with one profile) first, then on to the link.
    crate::found(&format!(
        "{}?next={}",
        spawn_path(&state, &name, ""),
        enc(&target)
    ))
}

#[cfg(test)]
mod tests {
    use super::deep_path;

    const P: &str = "/hub/user-redirect";

    #[test]
    fn paths_stay_below_the_users_server() {
        assert_eq!(
            deep_path("/hub/user-redirect/lab/tree/x.ipynb", P),
            Ok("lab/tree/x.ipynb")
        );
        assert_eq!(deep_path("/hub/user-redirect", P), Ok(""));
        assert_eq!(deep_path("/hub/user-redirect/", P), Ok(""));
        for bad in [
            "/hub/user-redirect/../../hub/admin",
            "/hub/user-redirect/lab/%2e%2e/%2E%2E/hub/token",
            "/hub/user-redirect/./x",
            "/hub/user-redirect/a/..%5c..%5chub",
            "/hub/user-redirect/a%0d%0aSet-Cookie:x",
        ] {
            let err = deep_path(bad, P).unwrap_err();
            assert!(err.contains("must stay inside your server"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Whatever the path, what is accepted never climbs out of `/user/NAME/`.
        #[test]
        fn accepted_paths_never_hold_a_dot_dot_segment(rest in "[a-z./%25e2E5c\\\\-]{0,24}") {
            let path = format!("/hub/user-redirect/{rest}");
            if let Ok(p) = deep_path(&path, P) {
                let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
                proptest::prop_assert!(
                    !decoded.split(['/', '\\']).any(|s| s == ".." || s == ".")
                );
            }
        }
    }
}
