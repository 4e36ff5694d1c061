//! CORS headers and the WebSocket `Origin` check, as Enterprise Gateway's `allow_origin` family
//! (`EG_ALLOW_ORIGIN`, `EG_ALLOW_HEADERS`, `EG_ALLOW_METHODS`, `EG_ALLOW_CREDENTIALS`,
//! `EG_EXPOSE_HEADERS`, `EG_MAX_AGE`) does:
//!
//! - `allow_origin` empty (default): no `Access-Control-*` headers; a WebSocket upgrade with an
//!   `Origin` must come from the same host (`Origin` host:port = `Host`);
//! - `allow_origin = "*"`: every origin, `Access-Control-Allow-Origin: *`;
//! - otherwise a comma-separated list of exact origins, echoed back when matched (with `Vary:
//!   Origin`); a WebSocket upgrade from any other origin gets 403.
//!
//! Requests without `Origin` (non-browser clients such as jupyter_server's GatewayClient) are
//! never refused here. `OPTIONS` preflights are answered 200 without authentication.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::GatewayError;
use crate::manager::KernelManager;

/// The value of `Access-Control-Allow-Origin` for a request from `origin`, if allowed by CORS.
fn cors_origin(config: &Config, origin: Option<&str>) -> Option<String> {
    if config.allow_origin.trim() == "*" {
        return Some("*".to_owned());
    }
    let origin = origin?;
    config
        .allowed_origins()
        .any(|o| o == origin)
        .then(|| origin.to_owned())
}

/// Whether `origin` is the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    authority.eq_ignore_ascii_case(host)
}

/// Whether a WebSocket upgrade with these headers may proceed.
pub(crate) fn websocket_origin_allowed(config: &Config, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => cors_origin(config, Some(origin)).is_some() || same_origin(origin, headers),
    }
}

fn add_cors_headers(config: &Config, allow: &str, headers: &mut HeaderMap) {
    let mut put = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if allow != "*" {
        put(header::VARY, "Origin");
    }
    if !config.allow_headers.is_empty() {
        put(header::ACCESS_CONTROL_ALLOW_HEADERS, &config.allow_headers);
    }
    if !config.allow_methods.is_empty() {
        put(header::ACCESS_CONTROL_ALLOW_METHODS, &config.allow_methods);
    }
    if config.allow_credentials {
        put(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    if !config.expose_headers.is_empty() {
        put(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &config.expose_headers,
        );
    }
    if !config.max_age.is_empty() {
        put(header::ACCESS_CONTROL_MAX_AGE, &config.max_age);
    }
}

/// The middleware: preflights, the WebSocket `Origin` check and CORS headers on every answer.
pub(crate) async fn layer(
    State(m): State<Arc<KernelManager>>,
    req: Request,
    next: Next,
) -> Response {
    let config = &m.config;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let allow = cors_origin(config, origin.as_deref());
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let mut response = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else if is_upgrade && !websocket_origin_allowed(config, req.headers()) {
        tracing::warn!(origin = ?origin, "refusing WebSocket from a foreign origin");
        GatewayError::OriginNotAllowed {
            origin: origin.unwrap_or_default(),
        }
        .into_response()
    } else {
        next.run(req).await
    };
    if let Some(allow) = allow {
        add_cors_headers(config, &allow, response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn default_is_same_origin_only_for_websockets() {
        let c = Config::default();
        assert!(websocket_origin_allowed(&c, &headers(None, "gw:8888")));
        assert!(websocket_origin_allowed(
            &c,
            &headers(Some("http://gw:8888"), "gw:8888")
        ));
        assert!(!websocket_origin_allowed(
            &c,
            &headers(Some("https://evil.example"), "gw:8888")
        ));
        assert_eq!(cors_origin(&c, Some("http://gw:8888")), None);
    }

    #[test]
    fn star_and_lists() {
        let star = Config {
            allow_origin: "*".into(),
            ..Config::default()
        };
        assert!(websocket_origin_allowed(
            &star,
            &headers(Some("https://x.example"), "gw")
        ));
        assert_eq!(cors_origin(&star, None).as_deref(), Some("*"));
        let list = Config {
            allow_origin: "https://a.example, https://b.example".into(),
            ..Config::default()
        };
        assert_eq!(
            cors_origin(&list, Some("https://b.example")).as_deref(),
            Some("https://b.example")
        );
        assert_eq!(cors_origin(&list, Some("https://c.example")), None);
        assert!(!websocket_origin_allowed(
            &list,
            &headers(Some("https://c.example"), "gw")
        ));
    }
}
