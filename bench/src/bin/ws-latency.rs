//! `ws-latency`: the WebSocket round-trip client used by the proxy benchmarks (`bench/run proxy`).
//!
//! It connects to a `ws://` URL, then, one at a time, sends a small text message and waits for
//! `--expect-frames` data frames in reply. After `--warmup` untimed round trips it times
//! `--iterations` of them and prints one JSON line:
//! `{"p50_us":..,"p99_us":..,"mean_us":..,"min_us":..,"max_us":..,"n":..}`.
//!
//! The client keeps itself out of the measurement: its socket has TCP_NODELAY, and on Linux it
//! re-arms TCP_QUICKACK after every read, so it never holds back an ACK. Any delayed-ACK stall
//! that shows up is therefore caused by what sits between it and the server (the proxy).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;

/// Measures WebSocket request/reply round trips.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Server to measure, e.g. `ws://127.0.0.1:8000/ws/echo`.
    url: String,
    /// Timed round trips.
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// Untimed round trips before measuring.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Data frames the server sends back per message.
    #[arg(long, default_value_t = 1)]
    expect_frames: usize,
    /// Text sent each round trip.
    #[arg(long, default_value = r#"{"msg_type":"execute_request"}"#)]
    message: String,
    /// Give up if one round trip takes longer than this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let uri: Uri = args.url.parse().context("parsing the URL")?;
    if uri.scheme_str() != Some("ws") {
        bail!("only ws:// URLs are supported, got {}", args.url);
    }
    let host = uri.host().context("URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let stream = QuickAck::new(tcp)?;
    let (mut ws, _) = tokio_tungstenite::client_async(args.url.as_str(), stream)
        .await
        .with_context(|| format!("WebSocket handshake with {}", args.url))?;

    let limit = Duration::from_millis(args.timeout_ms);
    let mut samples = Vec::with_capacity(args.iterations);
    for i in 0..args.warmup + args.iterations {
        let start = Instant::now();
        tokio::time::timeout(limit, async {
            ws.send(Message::text(args.message.as_str())).await?;
            let mut got = 0;
            while got < args.expect_frames {
                match ws.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => got += 1,
                    Some(Ok(Message::Close(frame))) => {
                        bail!("server closed the connection: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("connection ended"),
                }
            }
            anyhow::Ok(())
        })
        .await
        .with_context(|| format!("round trip {i} took longer than {limit:?}"))??;
        if i >= args.warmup {
            samples.push(start.elapsed());
        }
    }
    // Best effort: the numbers are in already.
    let _ = ws.close(None).await;

    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let total: Duration = samples.iter().sum();
    let report = serde_json::json!({
        "p50_us": us(percentile(&samples, 0.50)).round(),
        "p99_us": us(percentile(&samples, 0.99)).round(),
        "mean_us": (us(total) / samples.len() as f64).round(),
        "min_us": us(samples[0]).round(),
        "max_us": us(samples[samples.len() - 1]).round(),
        "n": samples.len(),
    });
    println!("{report}");
    Ok(())
}

/// Nearest-rank percentile of sorted, non-empty `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A TCP stream that re-arms TCP_QUICKACK after every read.
///
/// Linux leaves quick-ACK mode on its own, so one `setsockopt` at connect time is not enough;
/// setting it again after each read keeps the next incoming segment ACKed at once.
#[derive(Debug)]
struct QuickAck {
    inner: TcpStream,
}

impl QuickAck {
    fn new(inner: TcpStream) -> io::Result<Self> {
        let this = Self { inner };
        this.rearm()?;
        Ok(this)
    }

    #[cfg(target_os = "linux")]
    fn rearm(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.inner).set_tcp_quickack(true)
    }

    #[cfg(not(target_os = "linux"))]
    fn rearm(&self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.rearm()?;
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
