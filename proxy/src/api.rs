//! The configurable-http-proxy REST API, on its own listener.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/routes[?inactive_since=ISO]` | 200, object path -> data + `last_activity`; 400 on a bad date |
//! | GET | `/api/routes/{path}` | 200 route, 404 |
//! | POST | `/api/routes/{path}` | JSON with string `target` -> 201 (re-POST replaces); 400 otherwise |
//! | DELETE | `/api/routes/{path}` | 204, or 404 when missing |
//! | other | `/api/routes...` | 405 |
//!
//! Authentication: `Authorization: token <CONFIGPROXY_AUTH_TOKEN>`; anything else is 403 with an
//! empty body. With no token configured the API is open, as in configurable-http-proxy.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use crate::body::ProxyBody;
use crate::forward::json_response;
use crate::routes::RouteTable;

/// Largest accepted API request body.
const MAX_BODY: usize = 1 << 20;

/// The API's shared state: the table and the secret.
#[derive(Clone)]
pub struct Api {
    routes: Arc<RouteTable>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("routes", &self.routes.len())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Api {
    /// An API over `routes`, guarded by `token` when one is given (an empty token means none).
    pub fn new(routes: Arc<RouteTable>, token: Option<String>) -> Self {
        Self {
            routes,
            token: token.filter(|t| !t.is_empty()).map(Into::into),
        }
    }

    /// Answer one API request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if !self.authorized(&req) {
            tracing::debug!(method = %req.method(), "rejected API request with a missing or wrong token");
            return status_only(StatusCode::FORBIDDEN);
        }
        let Some(rest) = req.uri().path().strip_prefix("/api/routes") else {
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return text(StatusCode::NOT_FOUND, "Not Found");
        }
        let path = match percent_encoding::percent_decode_str(rest).decode_utf8() {
            Ok(p) => p.into_owned(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "Route path is not valid UTF-8"),
        };
        let method = req.method().clone();
        let resp = match method {
            Method::GET if path.is_empty() || path == "/" => self.list(req.uri().query()),
            Method::GET => self.get(&path),
            Method::POST => self.post(&path, req).await,
            Method::DELETE => self.delete(&path),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "Method not supported"),
        };
        tracing::info!(status = resp.status().as_u16(), %method, route = %if path.is_empty() { "/" } else { &path }, "api");
        resp
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_header);
        given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
    }

    fn list(&self, query: Option<&str>) -> Response<ProxyBody> {
        let mut since = None;
        for (key, value) in url_pairs(query.unwrap_or("")) {
            if (key == "inactiveSince" || key == "inactive_since") && !value.is_empty() {
                match parse_date(&value) {
                    Some(t) => since = Some(t),
                    None => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("Invalid datestamp '{value}' must be ISO8601."),
                        );
                    }
                }
            }
        }
        let mut out = Map::new();
        for route in self.routes.all() {
            if since.is_none_or(|t| route.last_activity() < t) {
                out.insert(route.path().to_owned(), route.to_json());
            }
        }
        json_response(StatusCode::OK, Value::Object(out).to_string())
    }

    fn get(&self, path: &str) -> Response<ProxyBody> {
        match self.routes.get(path) {
            Some(route) => json_response(StatusCode::OK, route.to_json().to_string()),
            None => status_only(StatusCode::NOT_FOUND),
        }
    }

    async fn post(&self, path: &str, req: Request<Incoming>) -> Response<ProxyBody> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "Body too large"),
        };
        let data = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(_) => return text(StatusCode::BAD_REQUEST, "Must specify 'target' as string"),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("Body not valid JSON: {e}")),
        };
        let path = if path.is_empty() { "/" } else { path };
        match self.routes.add(path, data) {
            Ok(route) => {
                tracing::info!(route = %route.path(), target = %route.target().as_str(), "route added");
                status_only(StatusCode::CREATED)
            }
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    fn delete(&self, path: &str) -> Response<ProxyBody> {
        let path = if path.is_empty() { "/" } else { path };
        match self.routes.remove(path) {
            Some(route) => {
                tracing::info!(route = %route.path(), "route removed");
                status_only(StatusCode::NO_CONTENT)
            }
            None => status_only(StatusCode::NOT_FOUND),
        }
    }
}

/// `token <secret>` anywhere in the header, as configurable-http-proxy's `/token\s+(\S+)/`.
fn token_from_header(value: &str) -> Option<&str> {
    let at = value.find("token")?;
    let rest = &value[at + "token".len()..];
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        return None;
    }
    trimmed.split_whitespace().next()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

/// ISO-8601 as JavaScript's `Date.parse` reads it: with an offset, naive (taken as UTC), or a date.
fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn status_only(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_parsing() {
        assert_eq!(token_from_header("token abc"), Some("abc"));
        assert_eq!(token_from_header("token   abc  def"), Some("abc"));
        assert_eq!(token_from_header("bearer abc"), None);
        assert_eq!(token_from_header("tokenabc"), None);
        assert_eq!(token_from_header("token"), None);
    }

    #[test]
    fn dates_parse_like_javascript() {
        assert!(parse_date("2026-08-01T12:00:00.000Z").is_some());
        assert!(parse_date("2026-08-01T12:00:00+02:00").is_some());
        assert!(parse_date("2026-08-01T12:00:00.123456").is_some());
        assert!(parse_date("2026-08-01").is_some());
        assert!(parse_date("yesterday").is_none());
        assert!(parse_date("2026-13-01").is_none());
    }
}
