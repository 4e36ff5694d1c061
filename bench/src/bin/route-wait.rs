//! `route-wait`: waits until every one of N user routes answers through a hub's proxy with its
//! own stand-in server (`--want up`), or until none does any more (`--want down`); used by
//! `bench/run scale` to time a fleet's start and stop and a hub restart to all routes restored.
//!
//! `--url 'http://127.0.0.1:8000/user/s{i}/' --start 0 --count 1000`: `{i}` takes every value of
//! `start..start+count`. A route PATH is up when it answers 200 with a body that starts with
//! `stand-in PATH ` (`standin-server` names the prefix it serves, so a hub's own answer or another
//! user's server does not count). Every round checks the routes not yet settled, `--concurrency`
//! requests at a time on keep-alive connections; settled routes are not asked again. Prints one
//! JSON line: `{"want":..,"total":..,"settled":..,"elapsed_ms":..,"since_t0_ms":..,"rounds":..}`
//! (`since_t0_ms`: from `--t0`, a wall-clock time in seconds since the epoch, e.g. when the hub
//! was killed) and exits 1 when `--timeout-s` passed first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Want {
    /// Every route answers with its stand-in server.
    Up,
    /// No route answers with its stand-in server.
    Down,
}

/// Waits until N user routes all answer (or all stopped answering) through a proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// URL template (`http://` only); `{i}` is replaced by each index.
    #[arg(long)]
    url: String,
    /// First index.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Number of routes.
    #[arg(long)]
    count: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// What to wait for.
    #[arg(long, value_enum, default_value_t = Want::Up)]
    want: Want,
    /// Give up after this many seconds (exit status 1).
    #[arg(long, default_value_t = 300.0)]
    timeout_s: f64,
    /// Also report the time since this wall-clock instant (seconds since the epoch).
    #[arg(long)]
    t0: Option<f64>,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pause_ms: u64,
}

#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path_template: String,
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("connecting to {}", t.authority))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Whether route `path` answers with its own stand-in server.
async fn is_up(t: &Target, sender: &mut Option<Sender>, path: &str) -> anyhow::Result<bool> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(t).await?),
    };
    s.ready().await?;
    let req = Request::get(path)
        .header(hyper::header::HOST, &t.authority)
        .body(Empty::new())?;
    let resp = s.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(status == hyper::StatusCode::OK && body.starts_with(format!("stand-in {path} ").as_bytes()))
}

/// One round over `pending`: the indices still not settled.
async fn round(t: &Arc<Target>, pending: Vec<u64>, want: Want, concurrency: usize) -> Vec<u64> {
    let pending = Arc::new(pending);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(pending.len()).max(1) {
        let (t, pending, next) = (Arc::clone(t), Arc::clone(&pending), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut left = Vec::new();
            let mut sender = None;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = pending.get(k) else { break };
                let path = t.path_template.replace("{i}", &i.to_string());
                let up = match tokio::time::timeout(
                    Duration::from_secs(5),
                    is_up(&t, &mut sender, &path),
                )
                .await
                {
                    Ok(Ok(up)) => up,
                    _ => {
                        sender = None;
                        false
                    }
                };
                if up != (want == Want::Up) {
                    left.push(i);
                }
            }
            left
        }));
    }
    let mut left = Vec::new();
    for w in workers {
        left.extend(w.await.unwrap_or_default());
    }
    left.sort_unstable();
    left
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let probe: Uri = args
        .url
        .replace("{i}", "0")
        .parse()
        .context("parsing --url")?;
    if probe.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported, got {}", args.url);
    }
    let authority = probe
        .authority()
        .context("--url has no authority")?
        .to_string();
    let prefix_len = args
        .url
        .find("://")
        .map(|p| p + 3 + authority.len())
        .context("--url has no scheme")?;
    let target = Arc::new(Target {
        host: probe.host().context("--url has no host")?.to_owned(),
        port: probe.port_u16().unwrap_or(80),
        authority,
        path_template: args.url[prefix_len..].to_owned(),
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout_s.max(0.0));
    let mut pending: Vec<u64> = (args.start..args.start + args.count).collect();
    let mut rounds = 0u64;
    while !pending.is_empty() && Instant::now() < deadline {
        pending = round(&target, pending, args.want, args.concurrency).await;
        rounds += 1;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let since_t0_ms = args.t0.map(|t0| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (now - t0) * 1e3
    });
    println!(
        "{}",
        serde_json::json!({
            "want": format!("{:?}", args.want).to_lowercase(),
            "total": args.count,
            "settled": args.count - pending.len() as u64,
            "elapsed_ms": elapsed_ms,
            "since_t0_ms": since_t0_ms,
            "rounds": rounds,
            "unsettled_sample": pending.iter().take(5).collect::<Vec<_>>(),
        })
    );
    if !pending.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
