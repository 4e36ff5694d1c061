//! The direct kernel route to an https site gateway (production gateways such as
//! `https://gateway.lumi.example` are https). `stackhub-gateway` serves plain HTTP only (TLS is
//! terminated in front of it), so the real gateway binary runs behind a TLS-terminating
//! stand-in started here, with a certificate from a test CA the proxy is told to trust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::gateway::{
    GW_ALICE, GatewayProc, HUB_ALICE, SITE, SingleUser, TestAuth, add_server_route, channels_url,
    execute, open,
};
use common::pki::Pki;
use common::{TOKEN, TestProxy};
use futures_util::StreamExt;
use proxy::{KernelChannelAuth, ProxyOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

/// TLS in front of `backend`: every accepted connection is decrypted and spliced to it.
/// Returns the address and the number of completed handshakes.
async fn tls_terminator(
    acceptor: TlsAcceptor,
    backend: SocketAddr,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_channels_go_straight_to_an_https_gateway() {
    let pki = Pki::new("kroute");
    let gw = GatewayProc::start().await;
    let (front, handshakes) = tls_terminator(pki.server(), gw.addr).await;
    let (rogue_front, rogue_handshakes) = tls_terminator(pki.rogue_server(), gw.addr).await;
    let single_user = SingleUser::start().await;
    let auth = Arc::new(TestAuth::default());
    let options = ProxyOptions {
        kernel_auth: Some(Arc::clone(&auth) as Arc<dyn KernelChannelAuth>),
        upstream_tls: pki.upstream_tls(false),
        ..ProxyOptions::default()
    };
    let p = TestProxy::start_with(options, Some(TOKEN)).await;
    let kernel = gw.start_kernel(GW_ALICE).await;

    // Through TLS, by name: the kernel answers and the single-user server never sees the socket.
    let gateway_url = format!("https://localhost:{}", front.port());
    add_server_route(&p, "alice", &single_user, &gateway_url, SITE);
    let url = channels_url(&p, "alice", &kernel, "session_id=direct-tls");
    let mut ws = open(&url, Some(&format!("token {HUB_ALICE}")), false)
        .await
        .unwrap();
    assert_eq!(
        execute(&mut ws, "direct-tls", "6*7").await.as_deref(),
        Some("42")
    );
    drop(ws);
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    assert!(single_user.seen().is_empty(), "{:?}", single_user.seen());
    assert_eq!(auth.calls.load().len(), 1);

    // A gateway whose certificate is not trusted is "unavailable": the relay takes over.
    let rogue_url = format!("https://127.0.0.1:{}", rogue_front.port());
    add_server_route(&p, "alice", &single_user, &rogue_url, SITE);
    let url = channels_url(&p, "alice", &kernel, "session_id=untrusted");
    let mut ws = open(&url, Some(&format!("token {HUB_ALICE}")), false)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("greeting")
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::text("relayed"));
    assert_eq!(rogue_handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(single_user.seen().len(), 1);
    assert!(
        !gw.log().contains(HUB_ALICE),
        "the hub token reached the gateway"
    );
}
