//! One port for HTTP and the scheduler proxy.
//!
//! [`split_listener`] accepts every connection and looks at its first byte: not a TLS
//! handshake → handed (untouched, nothing consumed) to the HTTP server through
//! [`SplitListener`]; a TLS handshake → its ClientHello is read ([`super::sni`]) and, when its
//! SNI is `daskgateway-<cluster>` of a running cluster, the bytes read and everything after are
//! piped to that cluster's scheduler (TLS is not terminated: client and scheduler authenticate
//! each other with the cluster's certificate). Any other TLS connection, a malformed hello or
//! an unknown cluster is closed, with a log line; it is never routed elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::DaskService;
use super::model::Status;
use super::sni::{self, HANDSHAKE, Hello};

/// Time a new connection has to send its first byte / its whole ClientHello.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP side of a split listener (an [`axum::serve::Listener`]).
#[derive(Debug)]
pub struct SplitListener {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for SplitListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor is gone (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Splits `listener` into the HTTP side and the acceptor task (abort it when serving ends).
///
/// # Errors
/// The listener has no local address.
pub fn split_listener(
    listener: TcpListener,
    service: Arc<DaskService>,
) -> std::io::Result<(SplitListener, tokio::task::JoinHandle<()>)> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(256);
    let acceptor = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    tokio::spawn(classify(stream, peer, tx.clone(), service.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok((SplitListener { rx, local }, acceptor))
}

async fn classify(
    mut stream: TcpStream,
    peer: SocketAddr,
    http: mpsc::Sender<(TcpStream, SocketAddr)>,
    service: Arc<DaskService>,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] != HANDSHAKE {
        let _ = http.send((stream, peer)).await;
        return;
    }
    let mut buf = Vec::with_capacity(2048);
    let read_hello = async {
        let mut chunk = [0u8; 4096];
        loop {
            match sni::parse(&buf) {
                Hello::Incomplete => {}
                other => return Ok(other),
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let hello: std::io::Result<Hello> = match tokio::time::timeout(HELLO_TIMEOUT, read_hello).await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    let sni = match hello {
        Ok(Hello::ClientHello { sni }) => sni,
        Ok(Hello::Invalid(why)) => {
            tracing::info!(%peer, why, "scheduler proxy: malformed TLS ClientHello; closing");
            return;
        }
        Ok(Hello::NotTls | Hello::Incomplete) => return,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "scheduler proxy: no ClientHello");
            return;
        }
    };
    let target = sni
        .as_deref()
        .and_then(|s| s.strip_prefix("daskgateway-"))
        .and_then(|name| service.registry.get(name))
        .and_then(|c| {
            let s = c.state.lock();
            (s.status == Status::Running)
                .then(|| s.scheduler_address.clone())
                .flatten()
        })
        .and_then(|a| a.strip_prefix("tls://").map(str::to_owned));
    let Some(target) = target else {
        tracing::info!(%peer, sni = sni.as_deref().unwrap_or(""), "scheduler proxy: no running cluster for this TLS server name; closing");
        return;
    };
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, target, error = %e, "scheduler proxy: cannot reach the scheduler; closing");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&buf).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        tracing::debug!(%peer, error = %e, "scheduler proxy connection ended");
    }
}
