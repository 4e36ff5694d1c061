//! `ws-echo`: the WebSocket upstream used by the proxy benchmarks (`bench/run proxy`).
//!
//! It listens on `--ip`:`--port` (127.0.0.1 by default) and accepts WebSocket upgrades on any
//! path. Two modes:
//!
//! * `--mode echo` sends every text or binary message straight back. TCP_NODELAY is set, so
//!   the only extra latency a proxy in front of it shows is the proxy's own.
//! * `--mode nagle-burst` leaves Nagle's algorithm ON (no TCP_NODELAY) and answers every
//!   message with `--frames` separate small text frames, each written and flushed on its own,
//!   the way jupyter_server relays a kernel reply (status busy, execute_result, status idle).
//!   The second frame is held back by Nagle until the first is ACKed, so a proxy that delays
//!   its ACKs to the upstream adds a delayed-ACK timeout (~40 ms on Linux) to the round trip.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Echo each message back; TCP_NODELAY on.
    Echo,
    /// Reply to each message with `--frames` separately flushed frames; Nagle left on.
    NagleBurst,
}

/// WebSocket upstream for the proxy benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    ip: IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// What to do with each received message.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Frames sent per received message in `nagle-burst` mode.
    #[arg(long, default_value_t = 3)]
    frames: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = SocketAddr::new(args.ip, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("ws-echo: listening on {addr}, mode {:?}", args.mode);
    loop {
        let (stream, peer) = listener.accept().await.context("accepting a connection")?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream, args.mode, args.frames).await {
                eprintln!("ws-echo: connection from {peer}: {e:#}");
            }
        });
    }
}

/// Runs one WebSocket connection until the peer closes it.
async fn serve(stream: TcpStream, mode: Mode, frames: usize) -> anyhow::Result<()> {
    // Nagle stays on in nagle-burst mode: that is the point of the mode.
    stream.set_nodelay(mode == Mode::Echo)?;
    let mut ws = tokio_tungstenite::accept_async(stream)
        .await
        .context("WebSocket handshake")?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        match msg {
            Message::Text(_) | Message::Binary(_) => match mode {
                Mode::Echo => ws.send(msg).await?,
                Mode::NagleBurst => {
                    for i in 0..frames {
                        let state = match i {
                            0 => "busy",
                            i if i + 1 == frames => "idle",
                            _ => "result",
                        };
                        // `send` writes and flushes: one small segment per frame.
                        let frame =
                            format!(r#"{{"msg_type":"status","seq":{i},"state":"{state}"}}"#);
                        ws.send(Message::text(frame)).await?;
                    }
                }
            },
            Message::Close(_) => break,
            // Pings are answered by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    Ok(())
}
