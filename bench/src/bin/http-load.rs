//! `http-load`: a small closed-loop HTTP/1.1 load generator used by the hub benchmark
//! (`bench/run hub`).
//!
//! `--concurrency C` workers each hold one keep-alive connection and send one request at a
//! time. Every request takes the next value of a shared counter `i`; `{i}` in `--url` and
//! `--body` is replaced by `i` (or `i % M` with `--modulo M`), so
//! `--url 'http://127.0.0.1:8000/hub/api/users/u{i}' --method POST --count 300` creates
//! `u0`..`u299`. It stops after `--count N` requests or after `--duration SECS`, then prints
//! one JSON line:
//! `{"requests":..,"rps":..,"p50_us":..,"p99_us":..,"mean_us":..,"max_us":..,"elapsed_s":..,
//! "statuses":{"200":..}}`. Transport failures count as status `"error"` (the worker then
//! reconnects); latencies cover every request that got a response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends HTTP requests over keep-alive connections and reports throughput and latency.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// URL template (`http://` only); `{i}` is replaced by the request counter.
    #[arg(long)]
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body; `{i}` is replaced like in the URL.
    #[arg(long)]
    body: Option<String>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(
        long,
        conflicts_with = "duration",
        required_unless_present = "duration"
    )]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Replace `{i}` by the counter modulo this.
    #[arg(long)]
    modulo: Option<u64>,
    /// Counter start value.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Runtime worker threads (1: a single-threaded client, least CPU taken from the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Give up on one request after this many milliseconds (counted as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// What the request loop needs, shared by all workers.
#[derive(Debug)]
struct Plan {
    host: String,
    port: u16,
    authority: String,
    path_template: String,
    method: Method,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Option<String>,
    count: Option<u64>,
    deadline: Option<Instant>,
    modulo: Option<u64>,
    start: u64,
    timeout: Duration,
    next: AtomicU64,
}

impl Plan {
    /// The next counter value, or `None` when the run is over.
    fn next_index(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.count.is_some_and(|c| n >= c) {
            return None;
        }
        let i = self.start + n;
        Some(self.modulo.map_or(i, |m| i % m))
    }

    fn request(&self, i: u64) -> anyhow::Result<Request<Full<Bytes>>> {
        let n = i.to_string();
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.path_template.replace("{i}", &n))
            .header(hyper::header::HOST, &self.authority);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let body = match &self.body {
            Some(b) => Bytes::from(b.replace("{i}", &n)),
            None => Bytes::new(),
        };
        Ok(req.body(Full::new(body))?)
    }
}

/// One worker's tallies.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(plan: &Plan) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect((plan.host.as_str(), plan.port))
        .await
        .with_context(|| format!("connecting to {}", plan.authority))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the server closes it.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    while let Some(i) = plan.next_index() {
        let started = Instant::now();
        let outcome = tokio::time::timeout(plan.timeout, one(&plan, &mut sender, i)).await;
        match outcome {
            Ok(Ok(status)) => {
                tally
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
                *tally.statuses.entry(status.to_string()).or_default() += 1;
            }
            Ok(Err(e)) => {
                eprintln!("http-load: request {i}: {e:#}");
                sender = None;
                *tally.statuses.entry("error".to_owned()).or_default() += 1;
            }
            Err(_) => {
                eprintln!("http-load: request {i}: timed out");
                sender = None;
                *tally.statuses.entry("error".to_owned()).or_default() += 1;
            }
        }
    }
    tally
}

/// Sends request `i` on the worker's connection (opening one if needed); returns the status.
async fn one(plan: &Plan, sender: &mut Option<Sender>, i: u64) -> anyhow::Result<u16> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(plan).await?),
    };
    s.ready().await?;
    let resp = s.send_request(plan.request(i)?).await?;
    let status = resp.status().as_u16();
    // Read the whole body so the connection can be reused.
    resp.into_body().collect().await?;
    Ok(status)
}

/// Nearest-rank percentile of sorted, non-empty `samples`.
fn percentile(samples: &[u64], p: f64) -> u64 {
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.modulo == Some(0) {
        bail!("--modulo must be at least 1");
    }
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // `{i}` is not valid in a URI, so parse the template with a placeholder digit.
    let probe: Uri = args
        .url
        .replace("{i}", "0")
        .parse()
        .context("parsing --url")?;
    if probe.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported, got {}", args.url);
    }
    let host = probe.host().context("--url has no host")?.to_owned();
    let port = probe.port_u16().unwrap_or(80);
    let authority = probe
        .authority()
        .context("--url has no authority")?
        .to_string();
    let prefix_len = args
        .url
        .find("://")
        .map(|p| p + 3 + authority.len())
        .context("--url has no scheme")?;
    let mut path_template = args.url[prefix_len..].to_owned();
    if path_template.is_empty() {
        path_template = "/".to_owned();
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
        headers.push((
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            hyper::header::HeaderValue::from_str(v.trim())?,
        ));
    }
    let started = Instant::now();
    let plan = Arc::new(Plan {
        host,
        port,
        authority,
        path_template,
        method: Method::from_bytes(args.method.as_bytes()).context("parsing --method")?,
        headers,
        body: args.body,
        count: args.count,
        deadline: args
            .duration
            .map(|d| started + Duration::from_secs_f64(d.max(0.0))),
        modulo: args.modulo,
        start: args.start,
        timeout: Duration::from_millis(args.timeout_ms),
        next: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&plan))))
        .collect();
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        let t = w.await.context("worker panicked")?;
        latencies.extend(t.latencies_us);
        for (k, v) in t.statuses {
            *statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests: u64 = statuses.values().sum();
    latencies.sort_unstable();
    let (p50, p99, mean, max) = if latencies.is_empty() {
        (0, 0, 0.0, 0)
    } else {
        (
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.iter().sum::<u64>() as f64 / latencies.len() as f64,
            latencies[latencies.len() - 1],
        )
    };
    let out = serde_json::json!({
        "requests": requests,
        "rps": (requests as f64 / elapsed * 10.0).round() / 10.0,
        "p50_us": p50,
        "p99_us": p99,
        "mean_us": mean.round(),
        "max_us": max,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "concurrency": args.concurrency,
        "statuses": statuses,
    });
    println!("{out}");
    Ok(())
}
