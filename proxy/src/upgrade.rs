//! Upgraded connections (WebSocket): the handshake is forwarded on a fresh upstream connection;
//! after a `101 Switching Protocols` both sides become one byte tunnel.
//!
//! The upstream side is a [`QuickAckStream`](crate::net::QuickAckStream): it acknowledges promptly
//! (see `net.rs` for the Nagle/delayed-ACK stall this removes) and marks the route active on every
//! chunk in either direction.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use crate::body::{ActivityBody, ProxyBody};
use crate::error::ForwardError;
use crate::forward::{Peer, Proxy, strip_hop_by_hop, upstream_error};
use crate::net::connect_tunnel;
use crate::routes::Route;

/// Whether `req` asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Forward an upgrade request and, on 101, splice client and upstream together.
pub(crate) async fn tunnel(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    route: Arc<Route>,
    peer: Peer,
    pq: &str,
) -> Result<Response<ProxyBody>, ForwardError> {
    let protocol = req
        .headers()
        .get(header::UPGRADE)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or(ForwardError::BadRequest(
            "Connection: upgrade without an Upgrade header",
        ))?;
    if req.version() != Version::HTTP_11 {
        return Err(ForwardError::BadRequest("upgrade requires HTTP/1.1"));
    }
    let target = route.target();
    let upstream_pq = proxy.upstream_path(&route, pq);
    let path = if proxy.options().prepend_path {
        target.origin_form(&upstream_pq)
    } else {
        upstream_pq.into_owned()
    };
    let uri: http::Uri = path
        .parse()
        .map_err(|_| ForwardError::BadRequest("request path cannot be forwarded"))?;

    let stream = connect_tunnel(target.authority(), proxy.options().connect_timeout)
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?
        .with_activity(Arc::clone(&route));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection ended");
        }
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _no_body) = req.into_parts();
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    proxy.add_forwarded(&mut parts.headers, peer);
    let upstream_req = Request::from_parts(parts, ProxyBody::empty());

    let mut resp = sender
        .send_request(upstream_req)
        .await
        .map_err(|e| upstream_error(target, &e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade (403, 404, ...): pass its answer through.
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            ProxyBody::Stream(ActivityBody::new(body, None)),
        ));
    }

    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let span = tracing::debug_span!("tunnel", route = %route.path());
    let splice = async move {
        let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "tunnel closed");
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    };
    tokio::spawn(splice.instrument(span));

    let (parts, _empty) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}
