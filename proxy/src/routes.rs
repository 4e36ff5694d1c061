//! The route table: path prefix -> target, with per-route activity.
//!
//! Reads happen on every proxied request; writes only when the hub (or another API client) adds or
//! removes a route. The table is therefore an immutable map behind an [`ArcSwap`]: a lookup is a
//! lock-free load plus a few hash probes, and a write copies the map (route tables hold thousands of
//! entries at most). Activity is an atomic inside each shared [`Route`], so traffic never writes the map.
//!
//! Keys follow configurable-http-proxy: percent-decoded, a leading `/`, no trailing `/` (except the
//! root route `/`). Matching is by whole path segments, longest prefix first: `/user/al` does not
//! match `/user/alice/lab`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use http::Uri;
use serde_json::{Map, Value};

use crate::error::RouteError;

/// How finely [`Route::touch`] records activity, in milliseconds.
pub(crate) const TOUCH_GRANULARITY_MS: i64 = 10;

/// One entry of the table.
#[derive(Debug)]
pub struct Route {
    path: Arc<str>,
    target: Target,
    data: RouteData,
    last_activity_ms: AtomicI64,
}

/// The data a route was added with, kept compactly: its entries sorted by key, in one
/// exact-size allocation. (A `serde_json::Map` is a B-tree whose first node alone takes ~630
/// bytes: 0.6 MB for the data of 1,000 servers' routes.)
#[derive(Debug, Clone)]
pub struct RouteData(Box<[(Box<str>, Value)]>);

impl RouteData {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Whether there is a value under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The entries as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

/// `data["key"]`, `null` when absent (as for a `serde_json::Map`).
impl std::ops::Index<&str> for RouteData {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl From<Map<String, Value>> for RouteData {
    fn from(map: Map<String, Value>) -> Self {
        let mut entries: Vec<(Box<str>, Value)> = map
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Self(entries.into_boxed_slice())
    }
}

impl Route {
    /// The normalised prefix this route serves.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where matching requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The data the route was added with (including `target`), kept verbatim.
    pub fn data(&self) -> &RouteData {
        &self.data
    }

    /// Record traffic on this route now. The stored time moves in steps of at least
    /// [`TOUCH_GRANULARITY_MS`]: every request reads the shared value, but only one in that
    /// interval writes it, so the workers do not fight over its cache line on every request.
    pub fn touch(&self) {
        let now = now_ms();
        if now - self.last_activity_ms.load(Ordering::Relaxed) >= TOUCH_GRANULARITY_MS {
            self.last_activity_ms.store(now, Ordering::Relaxed);
        }
    }

    /// When traffic last went through this route (or when it was added).
    pub fn last_activity(&self) -> DateTime<Utc> {
        let ms = self.last_activity_ms.load(Ordering::Relaxed);
        DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The route as configurable-http-proxy's API shows it: the stored data plus `last_activity`
    /// as a JavaScript date string (`2026-08-01T12:00:00.000Z`).
    pub fn to_json(&self) -> Value {
        let mut data = self.data.to_map();
        data.insert(
            "last_activity".to_owned(),
            Value::String(
                self.last_activity()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string(),
            ),
        );
        Value::Object(data)
    }
}

/// A parsed upstream target: `scheme://authority[/path]`.
#[derive(Debug, Clone)]
pub struct Target {
    original: Box<str>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The target's own path with no trailing `/` (empty for a bare host), prepended to requests.
    base_path: Box<str>,
}

impl Target {
    /// Parse a target URL: `http` or `https`; `ws` and `wss` are accepted as their aliases, as
    /// configurable-http-proxy users sometimes register websocket targets that way.
    ///
    /// # Errors
    /// [`RouteError::BadTarget`] when the URL has no host, or a scheme other than http(s)/ws(s).
    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        let bad = |reason: &'static str| RouteError::BadTarget {
            target: raw.to_owned(),
            reason,
        };
        let uri: Uri = raw.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") | Some("ws") => http::uri::Scheme::HTTP,
            Some("https") | Some("wss") => http::uri::Scheme::HTTPS,
            Some(_) => return Err(bad("scheme must be http or https")),
            None => return Err(bad("missing scheme (expected http://host:port)")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("missing host"))?;
        if authority.host().is_empty() {
            return Err(bad("missing host"));
        }
        let base_path = uri.path().trim_end_matches('/');
        Ok(Self {
            original: raw.into(),
            scheme,
            authority,
            base_path: base_path.into(),
        })
    }

    /// The URL the route was registered with.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Whether the upstream is reached over TLS (`https`/`wss`).
    pub(crate) fn is_tls(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// `scheme://host[:port]` of the upstream: what error answers may name (no user info, no
    /// path, no query).
    pub(crate) fn origin(&self) -> String {
        let host = self.authority.host();
        match self.authority.port_u16() {
            Some(port) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        }
    }

    /// The upstream URI for a request whose path-and-query is `pq` (still percent-encoded);
    /// `with_base` prepends the target's own path (configurable-http-proxy's `prepend-path`).
    pub(crate) fn uri_for(&self, pq: &str, with_base: bool) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.origin_form(pq, with_base))
            .build()
    }

    /// The origin-form request target (`/base/path?q`), for a request on a connection of its own.
    pub(crate) fn origin_form(&self, pq: &str, with_base: bool) -> String {
        let base = if with_base { &*self.base_path } else { "" };
        let mut full = String::with_capacity(base.len() + pq.len());
        full.push_str(base);
        full.push_str(pq);
        full
    }
}

/// Keys are shared with the routes' copies: a write clones the map, not its keys.
type Map_ = HashMap<Arc<str>, Arc<Route>>;

/// The shared, concurrently readable route table.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: ArcSwap<Map_>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the route at `path` with `data`, which must hold a string `target`.
    /// Every other key is stored verbatim. Adding a route counts as activity.
    ///
    /// # Errors
    /// [`RouteError::MissingTarget`] or [`RouteError::BadTarget`] when `target` is absent or unusable.
    pub fn add(&self, path: &str, data: Map<String, Value>) -> Result<Arc<Route>, RouteError> {
        let target = match data.get("target") {
            Some(Value::String(t)) => Target::parse(t)?,
            _ => return Err(RouteError::MissingTarget),
        };
        let path = normalize(path);
        let mut data = data;
        // `last_activity` is ours to report; a stored copy would shadow the live value.
        data.remove("last_activity");
        let key: Arc<str> = path.into();
        let route = Arc::new(Route {
            path: Arc::clone(&key),
            target,
            data: data.into(),
            last_activity_ms: AtomicI64::new(now_ms()),
        });
        self.routes.rcu(|current| {
            let mut next = Map_::clone(current);
            next.insert(Arc::clone(&key), Arc::clone(&route));
            next
        });
        Ok(route)
    }

    /// Remove the route at `path`; returns it if it existed.
    pub fn remove(&self, path: &str) -> Option<Arc<Route>> {
        let path = normalize(path);
        let mut removed = None;
        self.routes.rcu(|current| {
            let mut next = Map_::clone(current);
            removed = next.remove(path.as_str());
            next
        });
        removed
    }

    /// The route stored at exactly `path` (after normalisation).
    pub fn get(&self, path: &str) -> Option<Arc<Route>> {
        self.routes.load().get(normalize(path).as_str()).cloned()
    }

    /// Every route, sorted by path.
    pub fn all(&self) -> Vec<Arc<Route>> {
        let mut all: Vec<_> = self.routes.load().values().cloned().collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.load().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The longest route whose prefix matches the decoded request path `path`, by whole segments.
    /// `path` must start with `/`.
    pub fn lookup(&self, path: &str) -> Option<Arc<Route>> {
        let routes = self.routes.load();
        if routes.is_empty() {
            return None;
        }
        // Collapse empty segments (`//`) so keys and requests agree; the common case borrows.
        let owned;
        let path = if path.contains("//") {
            owned = collapse_slashes(path);
            owned.as_str()
        } else {
            path
        };
        let mut candidate = path.trim_end_matches('/');
        loop {
            if candidate.is_empty() {
                return routes.get("/").cloned();
            }
            if let Some(route) = routes.get(candidate) {
                return Some(Arc::clone(route));
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return routes.get("/").cloned(),
            }
        }
    }
}

/// The first segment of a host-routed lookup (`--host-routing`, configurable-http-proxy's
/// `/HOST/PATH` keys): the `Host` header's name without its port, lower-cased (host names are
/// case-insensitive; route keys are not). `None` for a value that is no host name: empty, or
/// holding `/`, `\\`, `%`, whitespace or control characters, which could otherwise reach into
/// another host's route.
pub fn host_key(host: &str) -> Option<String> {
    let name = if host.starts_with('[') {
        // An IPv6 literal keeps its brackets.
        &host[..=host.find(']')?]
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let ok = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'/' | b'\\' | b'%' | b'?' | b'#' | b'@')
        });
    ok.then(|| name.to_ascii_lowercase())
}

/// Normalise a route path as configurable-http-proxy does: leading `/`, no trailing `/` (except
/// the root), and empty segments collapsed.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn collapse_slashes(path: &str) -> String {
    let mut out = normalize(path);
    if path.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
