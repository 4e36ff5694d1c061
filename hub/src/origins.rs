//! Per-user origins (JupyterHub's `subdomain_host`) and the headers every hub response carries.
//!
//! With `subdomain_host = "https://hub.example"` each user's servers are served on a host of
//! their own, `LABEL.hub.example`, where `LABEL` is the user name as a DNS label
//! ([`dns_label`], JupyterHub 5's `idna` subdomain hook without its IDNA step). A page one user's
//! server serves then runs on an origin of its own: it cannot read another user's server or the
//! hub's pages, and the hub's cookies (host-only on `hub.example`) never reach it. The proxy
//! routes by host (configurable-http-proxy's `--host-routing`: route keys `/HOST/PATH`); the
//! hub keeps the catch-all route `/` so that requests for servers that are not running reach
//! it, and never answers its own pages on a user's host ([`guard`]).
//!
//! [`guard`] also gives every response `Content-Security-Policy: frame-ancestors 'self'` (unless
//! the handler set its own), `X-Content-Type-Options: nosniff`, and makes every cookie the hub
//! sets `HttpOnly; SameSite=Lax`, plus `Secure` when the public URL or `subdomain_host` is
//! https or the request came over https.

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, HOST, SET_COOKIE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

pub use crate::config::host::{SubdomainHost, dns_label};
use crate::state::AppState;

/// The hub's default `Content-Security-Policy` (JupyterHub's `frame-ancestors 'self'`).
pub(crate) const CSP: &str = "frame-ancestors 'self'";

/// Marks a request that reached the hub through its public listener (the embedded proxy), as
/// opposed to a single-user server calling the hub's own listener.
#[derive(Debug, Clone, Copy)]
pub struct ViaPublicProxy;

/// Whether the browser reached us over https: the last `X-Forwarded-Proto` (the one our proxy
/// appended) says so.
fn request_is_https(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Whether cookies set in answer to a request with `headers` must be `Secure`.
pub(crate) fn cookies_secure(state: &AppState, headers: &HeaderMap) -> bool {
    let config = state.config();
    config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"))
        || config
            .subdomain_host
            .as_ref()
            .is_some_and(SubdomainHost::is_https)
        || request_is_https(headers)
}

/// Harden one `Set-Cookie` value: add `HttpOnly`, `SameSite=Lax` (unless it names another
/// policy) and `Secure` (when `secure`), and drop any `Domain` attribute so the cookie stays
/// host-only.
fn harden_cookie(value: &str, secure: bool) -> String {
    let mut split = value.split(';').map(str::trim);
    let mut parts: Vec<&str> = split.next().into_iter().collect();
    parts.extend(split.filter(|p| {
        !p.is_empty()
            && !p
                .get(..7)
                .is_some_and(|head| head.eq_ignore_ascii_case("domain="))
    }));
    let has = |parts: &[&str], name: &str| {
        parts.iter().skip(1).any(|p| {
            p.split('=')
                .next()
                .is_some_and(|k| k.trim().eq_ignore_ascii_case(name))
        })
    };
    let mut out = parts.join("; ");
    if !has(&parts, "httponly") {
        out.push_str("; HttpOnly");
    }
    if !has(&parts, "samesite") {
        out.push_str("; SameSite=Lax");
    }
    if secure && !has(&parts, "secure") {
        out.push_str("; Secure");
    }
    out
}

/// The hub's response hardening and, with `subdomain_host`, the hub-host guard: a request that
/// came through the public proxy for a host below the hub's (a user's host) gets no hub page
/// or API answer there: a GET or HEAD is sent to the same path on the hub host, anything else
/// is a 404. (Other hosts, such as the IP address a health probe uses, carry no user content
/// and none of the hub host's cookies.)
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let secure = cookies_secure(&state, req.headers());
    if let Some(sub) = &state.config().subdomain_host
        && req.extensions().get::<ViaPublicProxy>().is_some()
    {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if sub.is_below(host) {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let resp = if matches!(*req.method(), Method::GET | Method::HEAD) {
                crate::found(&format!("{}{pq}", sub.hub_origin()))
            } else {
                crate::error::json_error(
                    StatusCode::NOT_FOUND,
                    &format!("Not Found: the hub answers on {}", sub.hub_origin()),
                )
            };
            return harden(resp, secure);
        }
    }
    harden(next.run(req).await, secure)
}

fn harden(mut resp: Response, secure: bool) -> Response {
    let headers = resp.headers_mut();
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let cookies: Vec<String> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| harden_cookie(v, secure))
        .collect();
    if !cookies.is_empty() {
        headers.remove(SET_COOKIE);
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                headers.append(SET_COOKIE, v);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests;
