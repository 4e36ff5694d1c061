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

use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, HOST, SET_COOKIE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// The hub's default `Content-Security-Policy` (JupyterHub's `frame-ancestors 'self'`).
pub(crate) const CSP: &str = "frame-ancestors 'self'";

/// A parsed `subdomain_host`: `scheme://domain[:port]`, no path, query or user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubdomainHost {
    https: bool,
    domain: String,
    port: Option<u16>,
}

impl SubdomainHost {
    /// Parse `https://hub.example[:port][/]`.
    ///
    /// # Errors
    /// Why the value is unusable (the caller names the key).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|_| format!("`{raw}` is not a URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme must be http or https, not `{other}`")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold user info".to_owned());
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(
                "must be scheme://host[:port] with no path (base_url sets the path)".to_owned(),
            );
        }
        let domain = match url.host() {
            Some(url::Host::Domain(d)) if d.contains('.') || d == "localhost" => d.to_owned(),
            Some(url::Host::Domain(_)) | None => {
                return Err("must name a domain with subdomains (hub.example)".to_owned());
            }
            Some(_) => return Err("must be a domain name, not an IP address".to_owned()),
        };
        Ok(Self {
            https,
            domain: domain.to_ascii_lowercase(),
            port: url.port(),
        })
    }

    /// The hub's own host name (`hub.example`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    fn origin_of(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{}://{host}:{p}", self.scheme()),
            None => format!("{}://{host}", self.scheme()),
        }
    }

    /// Whether the hub is served over https.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The hub's origin: `https://hub.example[:port]`.
    pub fn hub_origin(&self) -> String {
        self.origin_of(&self.domain)
    }

    /// The host name of `user`'s servers: `LABEL.hub.example`.
    pub fn user_domain(&self, user: &str) -> String {
        format!("{}.{}", dns_label(user), self.domain)
    }

    /// The origin of `user`'s servers: `https://LABEL.hub.example[:port]`.
    pub fn user_origin(&self, user: &str) -> String {
        self.origin_of(&self.user_domain(user))
    }

    /// Whether a `Host` header value names a host below the hub's (`*.hub.example`, any
    /// port): where users' servers live and the hub's pages must not.
    pub fn is_below(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.len() > self.domain.len() + 1
            && name.ends_with(&self.domain)
            && name.as_bytes()[name.len() - self.domain.len() - 1] == b'.'
    }
}

impl fmt::Display for SubdomainHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hub_origin())
    }
}

impl<'de> Deserialize<'de> for SubdomainHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("subdomain_host: {e}")))
    }
}

/// The host name of a `Host` header value, without its port (IPv6 brackets kept).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// A user name as one DNS label, always `[a-z0-9-]{1,63}` and distinct per name: a name that
/// already is such a label (lower case, not all digits, no leading or trailing `-`, no `--`) is
/// kept; any other becomes `u-STUB--HASH` (`STUB`: up to 8 of its safe characters, `HASH`: 32
/// hex digits of its SHA-256), which contains `--` and so never equals a kept name. JupyterHub's
/// `idna` hook does the same with a 7-digit hash and tries IDNA first; a longer hash keeps a
/// chosen name from landing on another user's host, and skipping IDNA keeps names that IDNA
/// maps onto each other (`ａlice`, `alice`) apart.
pub fn dns_label(name: &str) -> String {
    let safe = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.bytes().all(|b| b.is_ascii_digit())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if safe {
        return name.to_owned();
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..16]);
    let stub: String = name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(8)
        .collect();
    let stub = if stub.is_empty() {
        "x".to_owned()
    } else {
        stub
    };
    format!("u-{stub}--{hash}")
}

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
