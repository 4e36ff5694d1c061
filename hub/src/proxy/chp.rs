//! [`ChpProxy`]: the [`Proxy`] seam over configurable-http-proxy's REST API (CHP itself or an
//! external `stackhub-proxy`): `GET /api/routes`, `POST /api/routes{path}` with
//! `{"target", ...data}`, `DELETE /api/routes{path}`, authenticated with `Authorization: token
//! <CONFIGPROXY_AUTH_TOKEN>`.
//!
//! The API URL and token can be changed at run time ([`Proxy::relocate`], JupyterHub's `PATCH
//! /hub/api/proxy`): the new location is checked with one listing before it replaces the old
//! one, and the hub's own route is added there. The token is a [`Secret`]: it only ever goes into
//! the `Authorization` header, never into an error, a log line or a `Debug` print.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::StatusCode;
use serde_json::{Map, Value};
use tokio::sync::RwLock;

use super::{Proxy, ProxyError, RelocateError};
use crate::config::Secret;

/// Bytes escaped in a route path put into the API URL (`/` stays: it separates segments).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Where the proxy's API is.
#[derive(Debug, Clone)]
struct Location {
    /// `scheme://host[:port][/prefix]`, no trailing `/`.
    api_url: String,
    token: Option<Secret>,
}

/// A client of configurable-http-proxy's REST API.
#[derive(Debug)]
pub struct ChpProxy {
    http: reqwest::Client,
    location: RwLock<Location>,
    /// The hub's own route (path, target), kept on every proxy the hub is moved to.
    hub_route: Option<(String, String)>,
}

/// Parse an API URL: `http(s)://host[:port][/prefix]`.
fn parse_api_url(raw: &str) -> Result<String, RelocateError> {
    let bad = |why: &str| RelocateError::BadUrl {
        url: raw.to_owned(),
        why: why.to_owned(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials go in auth_token, not in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment allowed"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl ChpProxy {
    /// A client of the API at `api_url` (e.g. `http://127.0.0.1:8001`), sending `token`; the
    /// hub's own route `hub_route` (path, target) is kept there by
    /// [`Proxy::ensure_hub_route`].
    ///
    /// # Errors
    /// [`RelocateError::BadUrl`] for a URL that is not `http(s)://host[:port][/prefix]`.
    pub fn new(
        api_url: &str,
        token: Option<Secret>,
        hub_route: Option<(String, String)>,
    ) -> Result<Self, RelocateError> {
        let api_url = parse_api_url(api_url)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| RelocateError::Unreachable {
                url: api_url.clone(),
                why: e.to_string(),
            })?;
        Ok(Self {
            http,
            location: RwLock::new(Location { api_url, token }),
            hub_route,
        })
    }

    /// The API URL in use (never the token).
    pub async fn api_url(&self) -> String {
        self.location.read().await.api_url.clone()
    }

    fn request(
        &self,
        loc: &Location,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/api/routes{}",
            loc.api_url,
            utf8_percent_encode(path, PATH)
        );
        let req = self.http.request(method, url);
        match &loc.token {
            Some(t) => req.header(
                reqwest::header::AUTHORIZATION,
                format!("token {}", t.expose()),
            ),
            None => req,
        }
    }

    async fn list_at(&self, loc: &Location) -> Result<Vec<(String, Map<String, Value>)>, String> {
        let resp = self
            .request(loc, reqwest::Method::GET, "")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("the proxy API answered {}", resp.status()));
        }
        let table: Map<String, Value> = resp
            .json()
            .await
            .map_err(|e| format!("the proxy API sent no route table: {}", describe(&e)))?;
        Ok(table
            .into_iter()
            .filter_map(|(path, v)| match v {
                Value::Object(mut data) => {
                    data.remove("last_activity");
                    Some((path, data))
                }
                _ => None,
            })
            .collect())
    }
}

/// A reqwest error without its URL's query (there is none) and never a header: the kind and
/// the URL are enough.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{what} ({})", u.as_str()),
        None => what.to_owned(),
    }
}

fn route_error(path: &str, reason: String) -> ProxyError {
    ProxyError {
        path: path.to_owned(),
        reason,
    }
}

#[async_trait::async_trait]
impl Proxy for ChpProxy {
    async fn add_route(
        &self,
        path: &str,
        target: &str,
        mut data: Map<String, Value>,
    ) -> Result<(), ProxyError> {
        data.insert("target".to_owned(), Value::String(target.to_owned()));
        let loc = self.location.read().await.clone();
        let resp = self
            .request(&loc, reqwest::Method::POST, path)
            .json(&data)
            .send()
            .await
            .map_err(|e| route_error(path, describe(&e)))?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            s => Err(route_error(path, format!("the proxy API answered {s}"))),
        }
    }

    async fn delete_route(&self, path: &str) -> Result<(), ProxyError> {
        let loc = self.location.read().await.clone();
        let resp = self
            .request(&loc, reqwest::Method::DELETE, path)
            .send()
            .await
            .map_err(|e| route_error(path, describe(&e)))?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            s => Err(route_error(path, format!("the proxy API answered {s}"))),
        }
    }

    async fn routes(&self) -> Result<Vec<(String, Map<String, Value>)>, ProxyError> {
        let loc = self.location.read().await.clone();
        self.list_at(&loc).await.map_err(|r| route_error("", r))
    }

    async fn relocate(
        &self,
        api_url: Option<&str>,
        token: Option<Secret>,
    ) -> Result<(), RelocateError> {
        let mut next = self.location.read().await.clone();
        if let Some(url) = api_url {
            next.api_url = parse_api_url(url)?;
        }
        if let Some(t) = token {
            next.token = Some(t);
        }
        // Reach the new place before switching: a wrong URL or token keeps the old proxy.
        self.list_at(&next)
            .await
            .map_err(|why| RelocateError::Unreachable {
                url: next.api_url.clone(),
                why,
            })?;
        tracing::info!(api_url = %next.api_url, "proxy moved");
        *self.location.write().await = next;
        Ok(())
    }

    async fn ensure_hub_route(&self) -> Result<(), ProxyError> {
        let Some((path, target)) = &self.hub_route else {
            return Ok(());
        };
        let routes = self.routes().await?;
        let key = ::proxy::normalize(path);
        let present = routes.iter().any(|(p, d)| {
            ::proxy::normalize(p) == key && d.get("target").and_then(Value::as_str) == Some(target)
        });
        if !present {
            tracing::info!(route = %path, "adding the hub's route");
            let mut data = Map::new();
            data.insert("hub".to_owned(), Value::Bool(true));
            self.add_route(path, target, data).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever arrives in a PATCH body: no panic, and an accepted URL is a plain
        /// `http(s)://host…` without credentials, query or trailing `/`.
        #[test]
        fn any_api_url_is_refused_or_plain(raw in "\\PC{0,60}", host in "[a-z0-9.-]{1,20}", tail in "[ -~]{0,20}") {
            for candidate in [raw.clone(), format!("http://{host}{tail}"), format!("https://{host}:8001/{tail}")] {
                if let Ok(url) = parse_api_url(&candidate) {
                    prop_assert!(url.starts_with("http://") || url.starts_with("https://"), "{}", url);
                    let parsed = url::Url::parse(&url).unwrap();
                    prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                    prop_assert!(parsed.query().is_none() && parsed.fragment().is_none());
                    prop_assert!(!url.ends_with('/'));
                }
            }
        }
    }

    #[test]
    fn api_urls_are_checked_and_never_carry_credentials() {
        assert_eq!(
            parse_api_url("http://127.0.0.1:8001/").unwrap(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(
            parse_api_url("https://proxy.example/chp/").unwrap(),
            "https://proxy.example/chp"
        );
        for bad in [
            "not a url",
            "ftp://proxy.example",
            "http://user:pw@proxy.example",
            "http://proxy.example/?token=x",
            "unix:/run/chp.sock",
        ] {
            let e = parse_api_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
