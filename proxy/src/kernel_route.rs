//! The short way for kernel traffic: a remote-kernels server's kernel WebSocket goes straight to
//! its site's gateway instead of through the single-user server's Python relay.
//!
//! # Contract with the hub
//! The hub registers the server's route (`/user/NAME/`, target = the single-user server) with
//! extra data, kept verbatim as configurable-http-proxy keeps it:
//!
//! ```json
//! "kernel_gateway": {"url": "http://127.0.0.3:8888", "site": "lumi", "user": "NAME",
//!                    "server": "", "cookie": "jupyterhub-user-NAME"}
//! ```
//!
//! (`server`, the server's name, empty for the default one, and `cookie`, the name of the
//! single-user server's OAuth cookie, are optional)
//! and gives the proxy a [`KernelChannelAuth`] ([`crate::ProxyOptions::kernel_auth`]). A request
//! on such a route takes the direct way when all of these hold: it is an HTTP/1.1 WebSocket
//! upgrade; the rest of its path is exactly `api/kernels/{kernel_id}/channels` (`kernel_id`
//! uuid-like); it carries a hub token (`Authorization: token X` / `Bearer X`, or `?token=X`); an
//! `Origin`, if sent, names the host the request was sent to. The authoriser then decides:
//! - `Some(auth)`: the upgrade goes to `{url}/api/kernels/{kernel_id}/channels` with the query
//!   minus `token`, `Authorization: auth` instead of the client's, no cookies, no `Origin`, and
//!   `Host` the gateway's. A `101` is spliced like any tunnel (prompt ACKs, route activity);
//!   a 4xx (unknown kernel, a kernel of another user, ...) is the answer the client gets.
//! - `None`: 403 JSON `{"status":403,"message":...}`.
//!
//! Everything else, and a gateway that cannot be reached, does not answer in time or answers
//! 5xx, or an authoriser that fails, goes the normal way (the single-user server relays). Tokens
//! and credentials are never logged.
//!
//! An `https` gateway URL is reached over TLS with the proxy's upstream trust
//! ([`crate::ProxyOptions::upstream_tls`]: the system roots plus configured CA files); a
//! certificate that does not verify makes the gateway unavailable, so the relay takes over.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::Instrument;

use crate::body::{ActivityBody, ProxyBody};
use crate::forward::{Peer, Proxy, decode_path, json_response, strip_hop_by_hop};
use crate::hub_cookie;
use crate::net::UpstreamStream;
use crate::routes::{Route, Target};
use crate::upgrade::{is_upgrade, splice};

/// The route data key naming a server's site gateway.
pub const KERNEL_GATEWAY_KEY: &str = "kernel_gateway";

/// The authoriser could not decide (the hub's database or credential issuer is unavailable).
/// The request is then relayed through the single-user server. Must not carry secrets.
#[derive(Debug, thiserror::Error)]
#[error("kernel channel authorisation unavailable: {reason}")]
pub struct KernelAuthError {
    /// What failed, without secrets.
    pub reason: String,
}

impl KernelAuthError {
    /// An error saying what failed.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Decides whether a hub token may use a user's kernels at a site, and with which credentials
/// the proxy then talks to that site's gateway.
pub trait KernelChannelAuth: Send + Sync + std::fmt::Debug + 'static {
    /// May `token` (a hub token, as the client presented it) use `user`'s server named `server`
    /// (empty: the default one) at `site`? `Some(value)`: yes, and `value` is the `Authorization` header to present to the site's
    /// gateway (e.g. `Bearer <hub-issued JWT>`); `None`: no (the client gets 403).
    fn authorize<'a>(
        &'a self,
        user: &'a str,
        server: &'a str,
        site: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<HeaderValue>, KernelAuthError>>;
}

/// What [`try_direct`] did with a request.
pub(crate) enum Direct {
    /// Answered on the direct route (101 tunnel, 403, or the gateway's 4xx).
    Answered(Response<ProxyBody>),
    /// Not for the direct route, or the route is unavailable: forward it normally.
    Relay(Request<Incoming>),
}

/// The site gateway of a route, from its `kernel_gateway` data.
#[derive(Debug)]
struct SiteGateway {
    target: Target,
    site: String,
    user: String,
    server: String,
    cookie: Option<String>,
}

impl SiteGateway {
    fn of(route: &Route) -> Option<Self> {
        let data = route.data().get(KERNEL_GATEWAY_KEY)?;
        let field = |name: &str| {
            data.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (Some(url), Some(site), Some(user)) = (field("url"), field("site"), field("user"))
        else {
            tracing::debug!(route = %route.path(), "kernel_gateway route data lacks url, site or user; relaying");
            return None;
        };
        match Target::parse(url) {
            Ok(target) => Some(Self {
                target,
                site: site.to_owned(),
                user: user.to_owned(),
                server: field("server").unwrap_or_default().to_owned(),
                cookie: field("cookie").map(str::to_owned),
            }),
            Err(e) => {
                tracing::debug!(route = %route.path(), error = %e, "unusable kernel_gateway url; relaying");
                None
            }
        }
    }
}

/// Take the direct route for `req` if it is a kernel channel request of a remote-kernels server
/// (see the module docs); otherwise hand it back for the normal relay.
pub(crate) async fn try_direct(
    proxy: &Proxy,
    req: Request<Incoming>,
    route: &Arc<Route>,
    peer: &Peer,
) -> Direct {
    let Some(auth) = proxy.options().kernel_auth.as_ref() else {
        return Direct::Relay(req);
    };
    if !route.data().contains_key(KERNEL_GATEWAY_KEY) || !is_upgrade(&req) {
        return Direct::Relay(req);
    }
    let Some(gateway) = SiteGateway::of(route) else {
        return Direct::Relay(req);
    };
    let Some(kernel_id) = channel_kernel_id(proxy, &req, route) else {
        return Direct::Relay(req);
    };
    let span = tracing::debug_span!("kernel_channels", user = %gateway.user, site = %gateway.site, kernel_id = %kernel_id);
    direct(proxy, auth.as_ref(), req, route, peer, gateway, kernel_id)
        .instrument(span)
        .await
}

async fn direct(
    proxy: &Proxy,
    auth: &dyn KernelChannelAuth,
    req: Request<Incoming>,
    route: &Arc<Route>,
    peer: &Peer,
    gateway: SiteGateway,
    kernel_id: String,
) -> Direct {
    if req.version() != Version::HTTP_11 {
        return Direct::Relay(req);
    }
    if !same_origin(&req) {
        tracing::debug!("cross-origin kernel WebSocket; relaying (the server applies its policy)");
        return Direct::Relay(req);
    }
    let token = hub_token(&req).or_else(|| {
        let name = gateway.cookie.as_deref()?;
        let headers = req.headers().get_all(header::COOKIE).iter();
        hub_cookie::token_from_cookies(headers.filter_map(|v| v.to_str().ok()), name)
    });
    let Some(token) = token else {
        tracing::debug!("kernel WebSocket without a hub token or the server's cookie; relaying");
        return Direct::Relay(req);
    };
    let decision = auth.authorize(&gateway.user, &gateway.server, &gateway.site, &token);
    let credential = match decision.await {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            tracing::info!("token refused for this server's kernels");
            let body = serde_json::json!({
                "status": 403,
                "message": format!("this token may not use the kernels of {}'s server", gateway.user),
            });
            return Direct::Answered(json_response(StatusCode::FORBIDDEN, body.to_string()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "relaying kernel WebSocket through the server");
            return Direct::Relay(req);
        }
    };
    drop(token);
    match upgrade_at_gateway(proxy, req, route, peer, &gateway, &kernel_id, credential).await {
        Ok(resp) => Direct::Answered(resp),
        Err((req, why)) => {
            tracing::debug!(gateway = %gateway.target.as_str(), "site gateway unavailable ({why}); relaying");
            Direct::Relay(req)
        }
    }
}

type Fallback = (Request<Incoming>, String);

/// Send the upgrade to the gateway; on 101 splice it to the client. `Err` hands the untouched
/// request back with the reason the gateway could not take it.
async fn upgrade_at_gateway(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    route: &Arc<Route>,
    peer: &Peer,
    gateway: &SiteGateway,
    kernel_id: &str,
    mut credential: HeaderValue,
) -> Result<Response<ProxyBody>, Fallback> {
    let target = &gateway.target;
    let mut pq = format!("/api/kernels/{kernel_id}/channels");
    if let Some(query) = query_without_token(req.uri().query()) {
        pq.push('?');
        pq.push_str(&query);
    }
    let Ok(uri) = target.origin_form(&pq, true).parse::<http::Uri>() else {
        return Err((req, "cannot build the gateway URL".to_owned()));
    };
    let Some(protocol) = req.headers().get(header::UPGRADE).cloned() else {
        return Err((req, "no Upgrade header".to_owned()));
    };
    let Ok(host) = HeaderValue::from_str(target.authority().as_str()) else {
        return Err((req, "gateway authority is not a header value".to_owned()));
    };

    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    for name in [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::ORIGIN,
    ] {
        headers.remove(name);
    }
    proxy.add_forwarded(&mut headers, peer);
    headers.insert(header::HOST, host);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    credential.set_sensitive(true);
    headers.insert(header::AUTHORIZATION, credential);
    let mut upstream_req = Request::new(ProxyBody::empty());
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;

    let limit = proxy.options().connect_timeout;
    let stream = match proxy
        .dialer()
        .connect(target.is_tls(), target.authority())
        .await
    {
        Ok(s) => s.with_activity(Arc::clone(route)),
        Err(e) => return Err((req, format!("connect: {e}"))),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return Err((req, format!("handshake: {e}"))),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "gateway upgrade connection ended");
        }
    });
    let mut resp = match tokio::time::timeout(limit, sender.send_request(upstream_req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err((req, format!("request: {e}"))),
        Err(_) => return Err((req, format!("no answer within {limit:?}"))),
    };
    let status = resp.status();
    if status.is_client_error() {
        // The gateway's own refusal (unknown kernel, another user's kernel, ...) is the answer.
        tracing::debug!(%status, "site gateway refused the kernel WebSocket");
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            ProxyBody::Stream(ActivityBody::new(body, None)),
        ));
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err((req, format!("answered {status}")));
    }

    route.touch();
    let client_upgrade = hyper::upgrade::on(&mut req);
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let busy_poll = proxy.options().tunnel_busy_poll;
    let tunnel = async move {
        let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "kernel WebSocket upgrade did not complete");
                return;
            }
        };
        tracing::debug!("kernel WebSocket connected to the site gateway");
        if let Err(e) = splice_upgraded(client, upstream, busy_poll).await {
            tracing::debug!(error = %e, "kernel WebSocket closed");
        }
    };
    tokio::spawn(tunnel.in_current_span());
    let (parts, _empty) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}

async fn splice_upgraded(
    client: Upgraded,
    upstream: Upgraded,
    busy_poll: std::time::Duration,
) -> std::io::Result<()> {
    match upstream.downcast::<TokioIo<UpstreamStream>>() {
        Ok(parts) => splice(client, parts.io.into_inner(), parts.read_buf, busy_poll).await,
        Err(upstream) => {
            let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::io::copy_bidirectional(&mut c, &mut u)
                .await
                .map(|_| ())
        }
    }
}

/// The kernel id when the request's path below `route` is exactly `/api/kernels/{id}/channels`.
fn channel_kernel_id(proxy: &Proxy, req: &Request<Incoming>, route: &Route) -> Option<String> {
    let path = decode_path(req.uri().path()).ok()?;
    // A host-routed key is `/HOST/PATH`: the request's path is below `/PATH`.
    let prefix = if proxy.options().host_routing {
        let (_, below_host) = route.path().strip_prefix('/')?.split_once('/')?;
        &route.path()[route.path().len() - below_host.len() - 1..]
    } else {
        route.path()
    };
    let rest = match prefix {
        "/" => path.as_ref(),
        prefix => path.strip_prefix(prefix)?,
    };
    let id = rest
        .strip_prefix("/api/kernels/")?
        .strip_suffix("/channels")?;
    uuid_like(id).then(|| id.to_owned())
}

/// Hex digits and dashes, 32 to 36 of them (a UUID with or without dashes).
fn uuid_like(id: &str) -> bool {
    (32..=36).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && id.bytes().filter(u8::is_ascii_hexdigit).count() == 32
}

/// The hub token the client presented: `Authorization: token X` / `Bearer X`, or `?token=X`.
fn hub_token<B>(req: &Request<B>) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            && !token.is_empty()
        {
            return Some(token.to_owned());
        }
    }
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(Cow::into_owned)
        })
        .filter(|v| !v.is_empty())
}

/// The query with every `token` parameter removed (`None` when nothing is left).
fn query_without_token(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("token"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// No `Origin`, or one whose host (and port) is the `Host` the request was sent to.
fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn kernel_ids_are_uuid_like() {
        assert!(uuid_like("0b7a3f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(uuid_like("0b7a3f3e1c2d4e5f8a9b0c1d2e3f4a5b"));
        assert!(!uuid_like("0b7a3f3e-1c2d-4e5f-8a9b"));
        assert!(!uuid_like("../../../../api/kernels/xxxxxxxxxxxxxxxxxxxx"));
        assert!(!uuid_like("0b7a3f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5g"));
        assert!(!uuid_like("------------------------------------"));
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let r = req("/x?token=abc", &[("authorization", "token hdr")]);
        assert_eq!(hub_token(&r).as_deref(), Some("hdr"));
        let r = req("/x", &[("authorization", "Bearer  jwt ")]);
        assert_eq!(hub_token(&r).as_deref(), Some("jwt"));
        let r = req(
            "/x?session_id=s&token=a%2Fb",
            &[("authorization", "token ")],
        );
        assert_eq!(hub_token(&r).as_deref(), Some("a/b"));
        assert_eq!(hub_token(&req("/x?token=", &[])), None);
        assert_eq!(
            hub_token(&req("/x", &[("authorization", "Basic Zm9v")])),
            None
        );
        assert_eq!(hub_token(&req("/x?tokens=1", &[])), None);
    }

    #[test]
    fn token_is_dropped_from_the_query() {
        assert_eq!(
            query_without_token(Some("session_id=s1&token=t&x=1")).as_deref(),
            Some("session_id=s1&x=1")
        );
        assert_eq!(query_without_token(Some("token=t")), None);
        assert_eq!(query_without_token(Some("token")), None);
        assert_eq!(query_without_token(None), None);
    }

    #[test]
    fn origin_must_match_host() {
        assert!(same_origin(&req("/", &[("host", "hub.example")])));
        assert!(same_origin(&req(
            "/",
            &[
                ("host", "hub.example:8000"),
                ("origin", "https://Hub.example:8000")
            ]
        )));
        assert!(!same_origin(&req(
            "/",
            &[("host", "hub.example"), ("origin", "https://evil.example")]
        )));
        assert!(!same_origin(&req(
            "/",
            &[("host", "hub.example"), ("origin", "null")]
        )));
    }
}
