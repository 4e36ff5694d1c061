//! Each site's Dask dashboards for the signed-in user, through the hub.
//!
//! `GET <base_url>hub/dask/<site>/clusters/<name>/...` (pages, assets and the bokeh WebSockets)
//! is forwarded, path unchanged, to the site's Dask Gateway, with the site's credential for the
//! signed-in user (the hub's per-user site JWT) instead of the browser's: the gateway then
//! shows a cluster's dashboard to its owner only (another user's cluster is 404 there). The
//! site's `stackhub-gateway` runs with `[dask] dashboard_prefix = "<base_url>hub/dask/<site>"`, so
//! the `dashboard_route` it gives clusters, and the absolute links bokeh writes into the pages,
//! are this path; the Lab's Dask client gets the hub's origin as its `public_address`
//! (`crate::sites::dask`), so `cluster.dashboard_link` and dask-labextension's panes land here,
//! on the Lab's own origin, with the hub's session cookie.
//!
//! Only the hub session (cookie) counts: no session is a redirect to the login page (401 for
//! a WebSocket). Only `GET`/`HEAD`. A path that could mean another place once decoded
//! (`stackhub_common::path`) is 400; a WebSocket upgrade whose `Origin` is not the hub's is 403
//! (a page elsewhere cannot ride the user's cookie into their dashboard). What goes to the
//! gateway is an allow-list of the browser's headers (never its cookies or `Authorization`);
//! what comes back loses `Set-Cookie` and is `private` to caches. Errors are JSON
//! (`{"status", "message"}`).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use crate::error::json_error;
use crate::extract::{CurrentUser, LoginRedirect};
use crate::state::AppState;

/// Time for a gateway to answer a request's head (the upgrade's included).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers a browser's dashboard request keeps on its way to the gateway.
const FORWARDED: [HeaderName; 9] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CACHE_CONTROL,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::RANGE,
    header::USER_AGENT,
    header::PRAGMA,
];

/// What of a WebSocket handshake is forwarded, both ways.
const WEBSOCKET: [HeaderName; 5] = [
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_ACCEPT,
];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/hub/dask/{site}/clusters/{*rest}", any(serve))
}

async fn serve(
    State(state): State<AppState>,
    Path((site_id, _rest)): Path<(String, String)>,
    me: Result<CurrentUser, LoginRedirect>,
    req: Request,
) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Dask dashboards are read with GET",
        );
    }
    let websocket = is_websocket(req.headers());
    let me = match me {
        Ok(me) => me,
        Err(LoginRedirect::Login(_)) if websocket => {
            return json_error(StatusCode::UNAUTHORIZED, "sign in to the hub first");
        }
        Err(e) => return e.into_response(),
    };
    let cluster = match cluster_of(req.uri().path(), &site_id) {
        Ok(name) => name.to_owned(),
        Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
    };
    let user = me.user.name.clone();
    let span = tracing::info_span!("dask_dashboard", user, site = site_id, cluster);
    async move {
        if websocket && !same_origin(&state, req.headers()) {
            tracing::warn!("refused a dashboard WebSocket from another origin");
            return json_error(
                StatusCode::FORBIDDEN,
                "a dashboard WebSocket must come from the hub's own pages",
            );
        }
        let (url, auth) = match upstream(&state, &site_id, me.user.id, &user, req.uri()).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        if websocket {
            tunnel(&state, req, &url, auth).await
        } else {
            forward(&state, req, &url, auth).await
        }
    }
    .instrument(span)
    .await
}

/// The cluster name of a dashboard path `/hub/dask/<site>/clusters/<name>[/<rest>]` (raw, as
/// the browser sent it), or why it is refused.
fn cluster_of<'a>(path: &'a str, site_id: &str) -> Result<&'a str, String> {
    let tail = path
        .strip_prefix("/hub/dask/")
        .and_then(|p| p.strip_prefix(site_id))
        .and_then(|p| p.strip_prefix("/clusters/"))
        .ok_or_else(|| format!("{path:?} is not a dashboard path of site {site_id}"))?;
    let (name, rest) = tail.split_once('/').unwrap_or((tail, ""));
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{name:?} is not a cluster name (letters, digits, - and _ only)"
        ));
    }
    stackhub_common::path::check_segments(rest).map_err(|e| e.to_string())?;
    Ok(name)
}

/// The gateway URL of the request (same path and query) and the credential to present there,
/// or the error response.
async fn upstream(
    state: &AppState,
    site_id: &str,
    user_id: i64,
    user: &str,
    uri: &axum::http::Uri,
) -> Result<(String, Option<HeaderValue>), Response> {
    let site = state
        .sites()
        .and_then(|r| r.site(site_id))
        .ok_or_else(|| json_error(StatusCode::NOT_FOUND, &format!("no such site: {site_id}")))?;
    let dask = site.dask().ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            &format!("site {site_id} has no Dask Gateway"),
        )
    })?;
    let roles = crate::api::sites::gateway_token_roles(state, user_id)
        .await
        .map_err(IntoResponse::into_response)?;
    let auth = site.gateway_authorization(user, &roles).map_err(|e| {
        tracing::warn!(reason = %e.reason, "no credential for the site's gateway");
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("site {site_id} is unavailable: {}", e.reason),
        )
    })?;
    let auth = match auth {
        Some((value, _)) => Some(HeaderValue::from_str(&value).map_err(|_| {
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the site's credential is not a header value",
            )
        })?),
        None => None,
    };
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Ok((format!("{}{pq}", dask.address), auth))
}

/// Whether the request asks for a WebSocket.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether a WebSocket's `Origin`, if it has one (browsers always send it), is the hub's own:
/// the host the request was sent to, or the origin of `public_url`.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        return false;
    };
    let origin = origin.origin();
    if !origin.is_tuple() {
        return false;
    }
    let public = crate::sites::dask::hub_origin(state.config().public_url.as_deref());
    if public.as_deref() == Some(origin.ascii_serialization().as_str()) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let url = origin.unicode_serialization();
    let authority = url.split_once("://").map_or("", |(_, a)| a);
    host.is_some_and(|h| {
        h.eq_ignore_ascii_case(authority)
            || default_port_of(&url)
                .is_some_and(|p| h.eq_ignore_ascii_case(&format!("{authority}:{p}")))
    })
}

/// The scheme's default port of an origin written without one.
fn default_port_of(origin: &str) -> Option<u16> {
    match origin.split_once("://")?.0 {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The allowed request headers, plus the site's credential.
fn upstream_headers(
    from: &HeaderMap,
    extra: &[HeaderName],
    auth: Option<HeaderValue>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED.iter().chain(extra) {
        for v in from.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    if let Some(auth) = auth {
        out.insert(header::AUTHORIZATION, auth);
    }
    out
}

/// What of the gateway's response headers the browser gets.
fn response_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, v) in from {
        let hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "upgrade"
                | "proxy-authenticate"
                | "set-cookie"
        );
        if !hop {
            out.append(name.clone(), v.clone());
        }
    }
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    out
}

/// Sends `req` to the site's gateway: its answer's head, or the error response (502, 504).
async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, Response> {
    match tokio::time::timeout(UPSTREAM_TIMEOUT, req.send()).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            tracing::warn!(error = %e.without_url(), "the site's Dask Gateway did not answer");
            Err(json_error(
                StatusCode::BAD_GATEWAY,
                "the site's Dask Gateway did not answer",
            ))
        }
        Err(_) => Err(json_error(
            StatusCode::GATEWAY_TIMEOUT,
            "the site's Dask Gateway did not answer in time",
        )),
    }
}

async fn forward(state: &AppState, req: Request, url: &str, auth: Option<HeaderValue>) -> Response {
    let Some(http) = state.sites().map(|r| r.dashboards_http()) else {
        return json_error(StatusCode::NOT_FOUND, "no sites are configured");
    };
    let headers = upstream_headers(req.headers(), &[], auth);
    match send(http.request(req.method().clone(), url).headers(headers)).await {
        Ok(resp) => relayed(resp),
        Err(refused) => refused,
    }
}

/// The gateway's answer as the browser gets it.
fn relayed(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let headers = response_headers(resp.headers());
    let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A WebSocket: the gateway's handshake first; on its 101 the two connections are spliced.
async fn tunnel(
    state: &AppState,
    mut req: Request,
    url: &str,
    auth: Option<HeaderValue>,
) -> Response {
    let Some(http) = state.sites().map(|r| r.dashboards_http()) else {
        return json_error(StatusCode::NOT_FOUND, "no sites are configured");
    };
    let client_side = hyper::upgrade::on(&mut req);
    let mut headers = upstream_headers(req.headers(), &WEBSOCKET, auth);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let resp = match send(http.get(url).headers(headers)).await {
        Ok(resp) => resp,
        Err(refused) => return refused,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused there (401, 404 for another user's cluster, 410 ...): its answer as it is.
        return relayed(resp);
    }
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in &WEBSOCKET {
        if let Some(v) = resp.headers().get(name) {
            out.headers_mut().insert(name.clone(), v.clone());
        }
    }
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    tokio::spawn(
        async move {
            let (client, upstream) = match tokio::join!(client_side, resp.upgrade()) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(e), _) => {
                    tracing::debug!(error = %e, "the browser's side of a dashboard WebSocket did not upgrade");
                    return;
                }
                (_, Err(e)) => {
                    tracing::debug!(error = %e.without_url(), "the gateway's side of a dashboard WebSocket did not upgrade");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = upstream;
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "dashboard WebSocket ended");
            }
        }
        .in_current_span(),
    );
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dashboard_paths_of_a_site() {
        let n = "0123456789abcdef0123456789abcdef";
        for (path, ok) in [
            (format!("/hub/dask/lumi/clusters/{n}/status"), true),
            (
                format!("/hub/dask/lumi/clusters/{n}/static/js/bokeh.min.js"),
                true,
            ),
            (format!("/hub/dask/lumi/clusters/{n}"), true),
            (format!("/hub/dask/lumi/clusters/{n}/status/ws"), true),
            (format!("/hub/dask/lumi/clusters/{n}/../x/status"), false),
            (
                format!("/hub/dask/lumi/clusters/{n}/%2e%2e/x/status"),
                false,
            ),
            (format!("/hub/dask/lumi/clusters/{n}/%252e%252e/x"), false),
            (format!("/hub/dask/lumi/clusters/{n}/..%2f..%2fapi"), false),
            (
                format!("/hub/dask/lumi/clusters/{n}%2f..%2fx/status"),
                false,
            ),
            (
                "/hub/dask/lumi/clusters/../api/v1/clusters/".to_owned(),
                false,
            ),
            ("/hub/dask/lumi/clusters/%2e%2e/api".to_owned(), false),
            (format!("/hub/dask/central/clusters/{n}/status"), false),
            (format!("/hub/dask/lumix/clusters/{n}/status"), false),
        ] {
            assert_eq!(cluster_of(&path, "lumi").is_ok(), ok, "{path}");
        }
        assert_eq!(
            cluster_of(&format!("/hub/dask/lumi/clusters/{n}/x"), "lumi"),
            Ok(n)
        );
    }

    #[test]
    fn browser_credentials_never_reach_the_gateway() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("stackhub-session=s"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("token hub"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://x"));
        h.insert(header::HOST, HeaderValue::from_static("hub.example"));
        let out = upstream_headers(&h, &[], Some(HeaderValue::from_static("Bearer site")));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[header::ACCEPT], "text/html");
        assert_eq!(out[header::AUTHORIZATION], "Bearer site");
        let mut r = HeaderMap::new();
        r.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("dask-gateway-x=1"),
        );
        r.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let out = response_headers(&r);
        assert!(!out.contains_key(header::SET_COOKIE));
        assert_eq!(out[header::CACHE_CONTROL], "private, no-store");
    }

    proptest! {
        /// Whatever follows a site's prefix, an accepted path names a plain cluster and
        /// stays under `/hub/dask/<site>/clusters/<name>` once decoded and resolved.
        #[test]
        fn accepted_paths_stay_under_their_cluster(tail in "[a-zA-Z0-9._%/\\\\-]{0,40}") {
            let path = format!("/hub/dask/lumi/clusters/{tail}");
            if let Ok(name) = cluster_of(&path, "lumi") {
                prop_assert!(!name.is_empty() && !name.contains(['/', '%', '.']));
                let mut decoded = path.clone();
                for _ in 0..3 {
                    decoded = percent_encoding::percent_decode_str(&decoded)
                        .decode_utf8_lossy()
                        .into_owned();
                }
                let mut out: Vec<&str> = Vec::new();
                let slashed = decoded.replace('\\', "/");
                for s in slashed.split('/').skip(1) {
                    match s {
                        "." => {}
                        ".." => { out.pop(); }
                        s => out.push(s),
                    }
                }
                let resolved = format!("/{}", out.join("/"));
                let prefix = format!("/hub/dask/lumi/clusters/{name}");
                prop_assert!(resolved == prefix || resolved.starts_with(&format!("{prefix}/")), "{} -> {}", path, resolved);
            }
        }
    }
}
