//! Each cluster's Dask dashboard at `/clusters/<name>/...` on the gateway's HTTP port, for the
//! cluster's owner only.
//!
//! The scheduler serves its bokeh dashboard on loopback (or its pod / node) under the same
//! prefix (`dask scheduler --dashboard-prefix /clusters/<name>`, see `launch`), so pages, their
//! absolute links to static assets and the bokeh WebSockets (`.../status/ws`) are forwarded
//! with their path unchanged. With `[dask] dashboard_prefix` (the path something in front, the
//! hub, publishes this gateway's dashboards under) the scheduler's prefix starts with it, and
//! `<dashboard_prefix>/clusters/<name>/...` and `/clusters/<name>/...` both reach it. (Upstream dask-gateway strips the prefix in its proxy instead and
//! leaves the dashboard at the scheduler's root; today's bokeh then links its assets at `/static`,
//! outside the cluster's prefix.)
//!
//! Every request, WebSocket upgrades included, is authenticated as the Dask API is (the
//! `Authorization` forms and the `dask-gateway-*` session cookie, see `session`): none → 401,
//! another user's cluster → 404 (as if it did not exist), a cluster's token (or a caller
//! whose roles give no Dask quota) → 403, a path that could mean another place (`path`) →
//! 400. Only then is it forwarded, without the caller's credentials (`Authorization`,
//! `Cookie`), and nothing the scheduler answers may set a cookie on the gateway's origin. A cluster that is not running answers 409 (pending) or 410 (stopped
//! or failed); a scheduler without a dashboard (no bokeh in its environment) 404. Errors are
//! `{"error": ...}` as on the API.
//!
//! Forwarding is plain hyper: requests through the service's HTTP client (bodies up to
//! [`MAX_BODY`]), upgrades on their own upstream connection, spliced to the client once the
//! scheduler answered 101.

mod path;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use self::path::DashboardPath;
use super::DaskService;
use super::model::{Cluster, Status};

/// The largest request body forwarded (the dashboard's own requests have none).
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Time for the scheduler to connect and answer a request's head.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// `{"error": message}` with `status`.
fn refuse(status: StatusCode, message: String) -> Response {
    tracing::debug!(
        status = status.as_u16(),
        error = message,
        "dashboard request refused"
    );
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The handler of `/clusters/{*rest}`.
pub(super) async fn serve(State(svc): State<Arc<DaskService>>, req: Request) -> Response {
    // Published under `[dask] dashboard_prefix` or not, the scheduler serves the prefixed path.
    let prefix = svc.config.dashboard_prefix.as_str();
    let raw_path = req.uri().path();
    let raw_path = raw_path
        .strip_prefix(prefix)
        .filter(|rest| !prefix.is_empty() && rest.starts_with(path::PREFIX))
        .unwrap_or(raw_path)
        .to_owned();
    let upstream_pq = match req.uri().query() {
        Some(q) => format!("{prefix}{raw_path}?{q}"),
        None => format!("{prefix}{raw_path}"),
    };
    let target = match DashboardPath::parse(&raw_path) {
        Ok(t) => t,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let name = target.name();
    let (caller, _quota, cookie) = match svc.user(req.headers()).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let cluster = match svc.registry.get_for(&caller.user, name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let span = tracing::info_span!("dask_dashboard", user = caller.user, cluster = name);
    let mut response = match target {
        DashboardPath::Root { slash, .. } => {
            // The status page, relative to where the client is (behind any prefix).
            let to = if slash {
                "status".to_owned()
            } else {
                format!("{name}/status")
            };
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, to),
                    (header::CACHE_CONTROL, "no-store".into()),
                ],
            )
                .into_response()
        }
        DashboardPath::Page { .. } => match upstream(&cluster) {
            Err((status, message)) => refuse(status, message),
            Ok(authority) => {
                forward(&svc, req, &authority, &upstream_pq)
                    .instrument(span)
                    .await
            }
        },
    };
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// `host:port` of `cluster`'s dashboard, or why there is none to forward to.
fn upstream(cluster: &Cluster) -> Result<String, (StatusCode, String)> {
    let name = cluster.name();
    let s = cluster.state.lock();
    match s.status {
        Status::Running => {}
        Status::Pending => {
            return Err((
                StatusCode::CONFLICT,
                format!("Cluster {name} is pending; its dashboard opens once it is running"),
            ));
        }
        Status::Stopping | Status::Stopped | Status::Failed => {
            return Err((
                StatusCode::GONE,
                format!("Cluster {name} is stopped; its dashboard is gone"),
            ));
        }
    }
    let dashboard = s.dashboard_address.as_deref().unwrap_or("");
    dashboard_authority(s.scheduler_address.as_deref().unwrap_or(""), dashboard).ok_or_else(|| {
        if !dashboard.is_empty() {
            tracing::warn!(
                cluster = name,
                dashboard,
                "the scheduler reported a dashboard address off its own host; not forwarding"
            );
        }
        (
            StatusCode::NOT_FOUND,
            format!(
                "Cluster {name} has no dashboard (its scheduler serves none: is bokeh installed in its environment?)"
            ),
        )
    })
}

/// `host:port` of a heartbeat's `dashboard_address` (`http://host:port`), taken only on the
/// scheduler's own host: the heartbeat comes from the cluster, whose owner can run code on it.
fn dashboard_authority(scheduler_address: &str, dashboard_address: &str) -> Option<String> {
    let scheduler: Uri = scheduler_address.parse().ok()?;
    let dashboard: Uri = dashboard_address.parse().ok()?;
    let authority = dashboard.authority()?;
    let plain = dashboard.scheme_str() == Some("http")
        && dashboard
            .path_and_query()
            .is_none_or(|pq| pq.as_str() == "/")
        && !authority.as_str().contains('@')
        && authority.port_u16().is_some();
    (plain && scheduler.host().is_some() && scheduler.host() == dashboard.host())
        .then(|| authority.as_str().to_owned())
}

/// Whether the request asks to switch protocols.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        && headers.contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), those `Connection` names included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// What of a client's request headers the scheduler gets: no hop-by-hop headers and none of
/// the caller's credentials.
fn request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::COOKIE);
}

/// What of the scheduler's response headers the client gets: no cookies on the gateway's
/// origin, and never kept by a shared cache (the response is for its owner only).
fn response_headers(headers: &mut HeaderMap) {
    headers.remove(header::SET_COOKIE);
    let cache = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let value = match cache {
        Some(v) if v.to_ascii_lowercase().contains("private") => None,
        Some(v) => HeaderValue::from_str(&format!("private, {v}")).ok(),
        None => Some(HeaderValue::from_static("private")),
    };
    if let Some(v) = value {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

fn unreachable(authority: &str, why: impl std::fmt::Display) -> Response {
    tracing::warn!(upstream = authority, error = %why, "cannot reach a cluster's dashboard");
    refuse(
        StatusCode::BAD_GATEWAY,
        "the cluster's dashboard did not answer".to_owned(),
    )
}

/// Forwards `req` to the dashboard at `authority`, at `pq` (its path and query as the
/// scheduler serves them).
async fn forward(svc: &DaskService, req: Request, authority: &str, pq: &str) -> Response {
    if is_upgrade(req.headers()) {
        return tunnel(req, authority, pq).await;
    }
    let (mut parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a dashboard request body is limited to {MAX_BODY} bytes"),
            );
        }
    };
    parts.uri = match format!("http://{authority}{pq}").parse() {
        Ok(u) => u,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("unusable request path: {e}"),
            );
        }
    };
    parts.version = Version::HTTP_11;
    request_headers(&mut parts.headers);
    let upstream = axum::http::Request::from_parts(parts, Full::new(body));
    let resp = match tokio::time::timeout(UPSTREAM_TIMEOUT, svc.http.request(upstream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return unreachable(authority, e),
        Err(_) => return unreachable(authority, "timed out"),
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    response_headers(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Forwards an upgrade on a connection of its own; on 101 splices client and scheduler.
async fn tunnel(mut req: Request, authority: &str, pq: &str) -> Response {
    if req.version() != Version::HTTP_11 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1".to_owned(),
        );
    }
    let client_side = hyper::upgrade::on(&mut req);
    let (mut parts, _no_body) = req.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    parts.uri = match pq.parse() {
        Ok(u) => u,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("unusable request path: {e}"),
            );
        }
    };
    request_headers(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        parts.headers.insert(header::UPGRADE, p);
    }
    let upstream_req = axum::http::Request::from_parts(parts, Empty::<Bytes>::new());
    let handshake = async {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "dashboard upstream connection ended");
            }
        });
        sender
            .send_request(upstream_req)
            .await
            .map_err(std::io::Error::other)
    };
    let mut resp = match tokio::time::timeout(UPSTREAM_TIMEOUT, handshake).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return unreachable(authority, e),
        Err(_) => return unreachable(authority, "timed out"),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused by the scheduler (404, 403, ...): its answer as it is.
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        response_headers(&mut parts.headers);
        return Response::from_parts(parts, Body::new(body));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(
        async move {
            let (client, upstream) = match tokio::join!(client_side, upstream_side) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "dashboard upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "dashboard WebSocket ended");
            }
        }
        .in_current_span(),
    );
    let (mut parts, _empty) = resp.into_parts();
    parts.headers.remove(header::SET_COOKIE);
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret-jwt"),
            ("cookie", "dask-gateway-x=secret-session"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("accept", "text/html"),
            ("host", "gateway:8888"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        request_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "host"]);
    }

    #[test]
    fn the_scheduler_sets_no_cookie_and_nothing_is_shared_cached() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("dask-gateway-x=forged; Path=/"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=315360000"),
        );
        response_headers(&mut h);
        assert!(!h.contains_key(header::SET_COOKIE));
        assert_eq!(h[header::CACHE_CONTROL], "private, max-age=315360000");
        let mut h = HeaderMap::new();
        response_headers(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private");
    }

    #[test]
    fn a_dashboard_is_taken_on_its_schedulers_host_only() {
        let sched = "tls://127.0.0.1:40001";
        assert_eq!(
            dashboard_authority(sched, "http://127.0.0.1:40002").as_deref(),
            Some("127.0.0.1:40002")
        );
        assert_eq!(
            dashboard_authority("tls://[::1]:1", "http://[::1]:2").as_deref(),
            Some("[::1]:2")
        );
        for bad in [
            "",
            "http://10.0.0.9:8787",
            "http://169.254.169.254:80",
            "https://127.0.0.1:40002",
            "http://127.0.0.1",
            "http://127.0.0.1:40002/elsewhere",
            "http://user@127.0.0.1:40002",
            "127.0.0.1:40002",
        ] {
            assert_eq!(dashboard_authority(sched, bad), None, "{bad}");
        }
        assert_eq!(dashboard_authority("", "http://127.0.0.1:1"), None);
    }
}
