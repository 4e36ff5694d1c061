//! Forwarding HTTP requests: route lookup, header rewriting and the pooled upstream clients (the
//! proxy's own error answers are in `error_page`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use futures_util::future::BoxFuture;

use crate::body::{ActivityBody, DirectBody, LocalBody, ProxyBody};
use crate::client_tls::UpstreamTls;
use crate::error::{ConfigError, ForwardError};
pub(crate) use crate::error_page::json_response;
use crate::h1;
use crate::net::{Dialer, UpstreamConnector};
use crate::routes::{Route, RouteTable, Target};
use crate::{kernel_route, upgrade};

/// The default of [`ProxyOptions::tunnel_busy_poll`].
pub(crate) const DEFAULT_TUNNEL_BUSY_POLL: Duration = Duration::from_micros(50);
/// The default of [`ProxyOptions::upstream_recv_buffer`]: 1 MiB asked for (the kernel doubles
/// it for its bookkeeping). See `net` for why the buffer is fixed.
pub(crate) const DEFAULT_UPSTREAM_RECV_BUFFER: usize = 1024 * 1024;

/// How requests are forwarded. Defaults match configurable-http-proxy's.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Add `X-Forwarded-{For,Port,Proto,Host}` to upstream requests (`--no-x-forward` turns off).
    pub x_forward: bool,
    /// Forward the full path including the route prefix (`--no-include-prefix` strips it).
    pub include_prefix: bool,
    /// Prepend the target's own path to forwarded requests (`--no-prepend-path` turns off).
    pub prepend_path: bool,
    /// Route on `/<host><path>` instead of `<path>` (`--host-routing`).
    pub host_routing: bool,
    /// Extra headers added to every upstream request (`--custom-header`).
    pub custom_headers: Vec<(HeaderName, HeaderValue)>,
    /// Give up on an upstream that sends no response head within this time (`--timeout`).
    pub timeout: Option<Duration>,
    /// After forwarding a chunk, a WebSocket tunnel keeps polling for the next one this long
    /// before its thread may sleep (`--tunnel-busy-poll-us`; zero turns it off). See `upgrade`.
    pub tunnel_busy_poll: Duration,
    /// Give up connecting to an upstream after this time.
    pub connect_timeout: Duration,
    /// Receive buffer (`SO_RCVBUF`) of upstream sockets (`--upstream-recv-buffer-kib`); `None`,
    /// or a size above `net.core.rmem_max`, leaves it to the kernel's autotuning. See `net`.
    pub upstream_recv_buffer: Option<usize>,
    /// Fetch error pages from `<error_target>/<code>?url=<request url>` (`--error-target`).
    pub error_target: Option<String>,
    /// Idle upstream connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// An upstream served in this process instead of over TCP.
    pub local: Option<LocalTarget>,
    /// TLS toward https upstreams: trusted roots and client certificate (`--client-ssl-*`);
    /// the default trusts the system's roots.
    pub upstream_tls: UpstreamTls,
    /// Authorises kernel WebSockets of remote-kernels servers to go straight to their site's
    /// gateway (see [`crate::KernelChannelAuth`]); `None` relays them through the server.
    pub kernel_auth: Option<Arc<dyn crate::KernelChannelAuth>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            x_forward: true,
            include_prefix: true,
            prepend_path: true,
            host_routing: false,
            custom_headers: Vec::new(),
            timeout: None,
            tunnel_busy_poll: DEFAULT_TUNNEL_BUSY_POLL,
            connect_timeout: Duration::from_secs(10),
            upstream_recv_buffer: Some(DEFAULT_UPSTREAM_RECV_BUFFER),
            error_target: None,
            pool_max_idle_per_host: 1024,
            local: None,
            upstream_tls: UpstreamTls::default(),
            kernel_auth: None,
        }
    }
}

/// An upstream that lives in this process (the hub behind its embedded proxy). Requests routed
/// to its address are handed over as values: no socket, no HTTP encoding and parsing, no hop
/// to another thread. An upgrade request keeps hyper's upgrade handle in its extensions, so an
/// in-process WebSocket works too.
pub trait LocalUpstream: Send + Sync + std::fmt::Debug + 'static {
    /// Answer `req`, already rewritten as it would be sent over the network (origin-form URI,
    /// `X-Forwarded-*` added).
    fn call(&self, req: Request<Incoming>) -> BoxFuture<'static, Response<LocalBody>>;
}

/// Where the in-process upstream is: routes whose target has this authority go to it.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    /// `host:port` of the upstream's own listener (its address in route targets).
    pub authority: String,
    /// The upstream.
    pub upstream: Arc<dyn LocalUpstream>,
}

/// Who sent a request and how it reached us, with the `X-Forwarded-*` values it implies
/// (formatted once per connection, not per request).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// The port the client connected to.
    pub local_port: u16,
    /// Whether the client connection is TLS.
    pub tls: bool,
    forwarded_for: HeaderValue,
    forwarded_port: HeaderValue,
}

impl Peer {
    /// A client at `remote` that connected to our `local_port`, over TLS or not.
    pub fn new(remote: SocketAddr, local_port: u16, tls: bool) -> Self {
        Self {
            remote,
            local_port,
            tls,
            forwarded_for: HeaderValue::from_str(&remote.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            forwarded_port: HeaderValue::from(local_port),
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The reverse proxy: a route table and a pooled upstream client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Proxy {
    routes: Arc<RouteTable>,
    client: Client<UpstreamConnector, ProxyBody>,
    pool: h1::Pool,
    dialer: Dialer,
    options: ProxyOptions,
    error_target: Option<Target>,
}

impl Proxy {
    /// A proxy serving `routes` with `options`.
    ///
    /// # Errors
    /// [`ConfigError::Target`] when the error target is not a usable URL.
    pub fn new(routes: Arc<RouteTable>, options: ProxyOptions) -> Result<Self, ConfigError> {
        let error_target = options
            .error_target
            .as_deref()
            .map(Target::parse)
            .transpose()
            .map_err(|source| ConfigError::Target {
                option: "--error-target",
                source,
            })?;
        let dialer = Dialer::new(
            options.upstream_tls.clone(),
            options.connect_timeout,
            options.upstream_recv_buffer,
        );
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .set_host(false)
            .build(UpstreamConnector::new(dialer.clone()));
        let pool = h1::Pool::new(options.pool_max_idle_per_host, dialer.clone());
        Ok(Self {
            routes,
            client,
            pool,
            dialer,
            options,
            error_target,
        })
    }

    /// The route table this proxy serves.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    pub(crate) fn options(&self) -> &ProxyOptions {
        &self.options
    }

    /// Opens unpooled upstream connections (upgrades, the kernel route).
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub(crate) fn client(&self) -> &Client<UpstreamConnector, ProxyBody> {
        &self.client
    }

    pub(crate) fn error_target(&self) -> Option<&Target> {
        self.error_target.as_ref()
    }

    /// Answer one client request. Never fails: problems become 4xx/5xx responses.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        if self.is_healthz(req.uri()) {
            return json_response(StatusCode::OK, r#"{"status":"OK"}"#);
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        match self.route_for(&req) {
            Ok(route) => {
                let req = match kernel_route::try_direct(self, req, &route, peer).await {
                    kernel_route::Direct::Answered(resp) => return resp,
                    kernel_route::Direct::Relay(req) => req,
                };
                let result = if let Some(local) = self.local_for(&route) {
                    Ok(self.forward_local(local, req, route, peer, &pq).await)
                } else if upgrade::is_upgrade(&req) {
                    upgrade::tunnel(self, req, route, peer, &pq).await
                } else {
                    self.forward(req, route, peer, &pq).await
                };
                match result {
                    Ok(resp) => resp,
                    Err(err) => self.error_response(&err, &pq).await,
                }
            }
            Err(err) => self.error_response(&err, &pq).await,
        }
    }

    fn route_for(&self, req: &Request<Incoming>) -> Result<Arc<Route>, ForwardError> {
        if req.method() == Method::CONNECT {
            return Err(ForwardError::BadRequest("CONNECT is not supported"));
        }
        self.route_for_path(req.uri().path(), request_host(req))
    }

    /// The route for a raw request `path` sent to `host` (used with `--host-routing`).
    pub(crate) fn route_for_path(
        &self,
        path: &str,
        host: Option<&str>,
    ) -> Result<Arc<Route>, ForwardError> {
        let decoded = decode_path(path)?;
        let found = if self.options.host_routing {
            let host = host.ok_or(ForwardError::BadRequest("missing Host header"))?;
            let host =
                crate::routes::host_key(host).ok_or(ForwardError::BadRequest("bad Host header"))?;
            self.routes.lookup(&format!("/{host}{decoded}"))
        } else {
            self.routes.lookup(&decoded)
        };
        found.ok_or(ForwardError::NoRoute)
    }

    /// The path-and-query to send upstream for a request to `route`.
    pub(crate) fn upstream_path<'a>(
        &self,
        route: &Route,
        pq: &'a str,
    ) -> std::borrow::Cow<'a, str> {
        if self.options.include_prefix || route.path() == "/" {
            return pq.into();
        }
        // configurable-http-proxy slices the prefix's length off the raw URL.
        let prefix = route.path();
        match pq.get(..prefix.len()) {
            Some(head) if head == prefix => {
                let rest = &pq[prefix.len()..];
                if rest.starts_with('/') {
                    rest.into()
                } else {
                    format!("/{rest}").into()
                }
            }
            _ => pq.into(),
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        route: Arc<Route>,
        peer: &Peer,
        pq: &str,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let target = route.target();
        let upstream_pq = self.upstream_path(&route, pq);
        if (req.method() == Method::GET || req.method() == Method::HEAD)
            && http_body::Body::is_end_stream(req.body())
        {
            return self.forward_direct(req, route, peer, &upstream_pq).await;
        }
        let uri = target
            .uri_for(&upstream_pq, self.options.prepend_path)
            .map_err(|_| ForwardError::BadRequest("request path cannot be forwarded"))?;

        let (mut parts, body) = req.into_parts();
        host_from_authority(&mut parts);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        self.add_forwarded(&mut parts.headers, peer);

        let upstream_req = Request::from_parts(
            parts,
            ProxyBody::Stream(ActivityBody::new(body, Some(Arc::clone(&route)))),
        );
        let sending = self.client.request(upstream_req);
        let sent = match self.options.timeout {
            Some(limit) => tokio::time::timeout(limit, sending)
                .await
                .map_err(|_| upstream_error(target, "no response before --timeout"))?,
            None => sending.await,
        };
        let resp = sent.map_err(|e| upstream_error(target, &client_error_reason(&e)))?;

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // Only successful answers count as activity: a flood of 404s or 503s must not make a
        // server look busy to the idle culler.
        let active = parts.status.as_u16() < 300;
        if active {
            route.touch();
        }
        let body = ActivityBody::new(body, active.then_some(route));
        Ok(Response::from_parts(parts, ProxyBody::Stream(body)))
    }

    /// A body-less GET or HEAD over a pooled connection read and written in this task (see
    /// `h1`): the same rewriting and answers as [`Self::forward`], without hyper's client tasks.
    async fn forward_direct(
        &self,
        req: Request<Incoming>,
        route: Arc<Route>,
        peer: &Peer,
        upstream_pq: &str,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let (mut parts, _empty) = req.into_parts();
        host_from_authority(&mut parts);
        let answer = self
            .send_direct(&parts.method, &mut parts.headers, &route, peer, upstream_pq)
            .await?;
        let mut resp = Response::new(());
        *resp.status_mut() = answer.status;
        *resp.version_mut() = answer.version;
        *resp.headers_mut() = answer.headers;
        Ok(resp.map(|()| ProxyBody::Direct(DirectBody::new(answer.body))))
    }

    /// Send a body-less GET or HEAD with the client's `headers` (rewritten in place) over a
    /// pooled connection and read the answer's head. Hop-by-hop headers are already removed
    /// from the answer, and the body records activity on `route` when the status is below 300.
    pub(crate) async fn send_direct(
        &self,
        method: &Method,
        headers: &mut HeaderMap,
        route: &Arc<Route>,
        peer: &Peer,
        upstream_pq: &str,
    ) -> Result<h1::Answer, ForwardError> {
        let target = route.target();
        let path = target.origin_form(upstream_pq, self.options.prepend_path);
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ForwardError::BadRequest("request path cannot be forwarded"));
        }
        strip_hop_by_hop(headers);
        self.add_forwarded(headers, peer);
        let head = h1::encode_head(method, &path, headers);
        let sending = self
            .pool
            .send(target.is_tls(), target.authority(), &head, method);
        let mut answer = match self.options.timeout {
            Some(limit) => tokio::time::timeout(limit, sending)
                .await
                .map_err(|_| upstream_error(target, "no response before --timeout"))?,
            None => sending.await,
        }
        .map_err(|reason| upstream_error(target, &format!("client error (direct): {reason}")))?;
        strip_hop_by_hop(&mut answer.headers);
        let active = answer.status.as_u16() < 300;
        if active {
            route.touch();
        }
        answer.body = answer.body.with_activity(active.then(|| Arc::clone(route)));
        Ok(answer)
    }

    /// Whether `uri` is configurable-http-proxy's health check, answered by the proxy itself.
    pub(crate) fn is_healthz(&self, uri: &http::Uri) -> bool {
        uri.path() == "/_chp_healthz"
    }

    /// Whether requests to `route` go to the in-process upstream.
    pub(crate) fn is_local(&self, route: &Route) -> bool {
        self.local_for(route).is_some()
    }

    fn local_for(&self, route: &Route) -> Option<&LocalTarget> {
        self.options
            .local
            .as_ref()
            .filter(|l| route.target().authority().as_str() == l.authority)
    }

    /// Hand a request to the in-process upstream: the same rewriting as [`Self::forward`], but
    /// hop-by-hop headers stay on upgrade requests (the upstream answers the upgrade itself).
    async fn forward_local(
        &self,
        local: &LocalTarget,
        req: Request<Incoming>,
        route: Arc<Route>,
        peer: &Peer,
        pq: &str,
    ) -> Response<ProxyBody> {
        let upgrading = upgrade::is_upgrade(&req);
        let upstream_pq = self.upstream_path(&route, pq);
        let (mut parts, body) = req.into_parts();
        match route
            .target()
            .origin_form(&upstream_pq, self.options.prepend_path)
            .parse()
        {
            Ok(uri) => parts.uri = uri,
            Err(_) => {
                let err = ForwardError::BadRequest("request path cannot be forwarded");
                return self.error_response(&err, pq).await;
            }
        }
        if !upgrading {
            strip_hop_by_hop(&mut parts.headers);
        }
        self.add_forwarded(&mut parts.headers, peer);
        let resp = local.upstream.call(Request::from_parts(parts, body)).await;
        if resp.status().as_u16() < 300 {
            route.touch();
        }
        resp.map(ProxyBody::Local)
    }

    pub(crate) fn add_forwarded(&self, headers: &mut HeaderMap, peer: &Peer) {
        for (name, value) in &self.options.custom_headers {
            headers.insert(name.clone(), value.clone());
        }
        if !self.options.x_forward {
            return;
        }
        let host = headers.get(header::HOST).cloned();
        append_header(headers, X_FORWARDED_FOR, &peer.forwarded_for);
        append_header(headers, X_FORWARDED_PORT, &peer.forwarded_port);
        append_header(
            headers,
            X_FORWARDED_PROTO,
            &HeaderValue::from_static(if peer.tls { "https" } else { "http" }),
        );
        if let Some(host) = host
            && host.to_str().is_ok()
        {
            append_header(headers, X_FORWARDED_HOST, &host);
        }
    }
}

/// The host a request was sent to: `Host`, or the authority of an HTTP/2 or absolute-form request.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Percent-decode a request path strictly: bad escapes or non-UTF-8 results are a 400.
pub(crate) fn decode_path(raw: &str) -> Result<std::borrow::Cow<'_, str>, ForwardError> {
    if !raw.starts_with('/') {
        return Err(ForwardError::BadRequest("path must start with '/'"));
    }
    if !raw.contains('%') {
        return Ok(raw.into());
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(ForwardError::BadRequest("bad percent-encoding in path"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ForwardError::BadRequest("path is not UTF-8 after percent-decoding"))
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// HTTP/2 requests carry the host in the URI's authority; HTTP/1.1 upstreams need `Host`.
fn host_from_authority(parts: &mut http::request::Parts) {
    if parts.version == Version::HTTP_2
        && !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
}

/// Remove hop-by-hop headers (RFC 9110 7.6.1), including those named in `Connection`, and `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of seven hashed removals.
    if !headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Set `name` to `value`, or append `,value` to a non-empty existing value.
fn append_header(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    let joined = match headers.get(&name).map(|v| v.to_str()) {
        None => {
            headers.insert(name, value.clone());
            return;
        }
        Some(Ok(existing)) if !existing.is_empty() => {
            let Ok(value) = value.to_str() else { return };
            HeaderValue::from_str(&format!("{existing},{value}"))
        }
        Some(_) => Ok(value.clone()),
    };
    if let Ok(v) = joined {
        headers.insert(name, v);
    }
}

pub(crate) fn upstream_error(target: &Target, reason: &str) -> ForwardError {
    ForwardError::Upstream {
        upstream: target.origin(),
        reason: reason.to_owned(),
    }
}

/// A short reason for a client error: hyper's top-level message plus its innermost cause.
pub(crate) fn client_error_reason(err: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    if std::ptr::addr_eq(source, err) {
        err.to_string()
    } else {
        format!("{err}: {source}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_path_is_strict() {
        assert_eq!(decode_path("/user/a%20b").unwrap(), "/user/a b");
        assert_eq!(decode_path("/plain").unwrap(), "/plain");
        assert!(decode_path("/bad%zz").is_err());
        assert!(decode_path("/bad%2").is_err());
        assert!(decode_path("/bad%ff%fe").is_err());
        assert!(decode_path("relative").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_headers_append() {
        let proxy = Proxy::new(Arc::new(RouteTable::new()), ProxyOptions::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        h.insert(header::HOST, HeaderValue::from_static("hub.example.org"));
        let peer = Peer::new("127.0.0.7:5000".parse().unwrap(), 8000, true);
        proxy.add_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "10.9.9.9,127.0.0.7");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "hub.example.org");
    }
}
