//! Benchmark client for `bench/gateway.sh`: drives a kernel gateway (ours or Enterprise Gateway)
//! over REST + the legacy WebSocket protocol, or a kernel directly over ZeroMQ (the floor), and
//! prints one JSON line of raw numbers. `report` turns the collected lines into the table.
//!
//! ```text
//! gateway_bench direct  --argv-json '["python3","-m","ipykernel_launcher","-f","{connection_file}"]'
//! gateway_bench gateway --url http://127.0.0.1:8888 --token T --kernel python3
//! gateway_bench concurrent --url http://127.0.0.1:8888 --token T --kernel python3 --n 50
//! gateway_bench report results.jsonl out.json
//! ```
//!
//! Definitions (the same for every target):
//! - start-to-ready: from the start request (POST, or spawning the process) until the kernel's
//!   `kernel_info_reply` arrives (over a fresh WebSocket for gateways);
//! - round trip: `execute_request` of `1+1` until both its `execute_reply` and its `status: idle`
//!   have arrived;
//! - big output: `print` of N MB until all of it and `status: idle` have arrived.
// A bench tool: failing loudly is the right behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kernel_gateway::protocol::{Channel, RawMessage, Signer};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Sequential kernel starts measured.
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// `1+1` round trips measured (after 20 warm-up ones).
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Size of the big output in MB.
    #[arg(long, default_value_t = 10)]
    big_mb: usize,
    /// Big outputs measured.
    #[arg(long, default_value_t = 3)]
    big_rounds: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A kernel spawned here, driven over ZeroMQ.
    Direct {
        /// The kernelspec argv as JSON, with `{connection_file}`.
        #[arg(long)]
        argv_json: String,
        #[command(flatten)]
        common: Common,
    },
    /// A gateway over REST + WebSocket.
    Gateway {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        token: String,
        #[arg(long, default_value = "python3")]
        kernel: String,
        /// Acknowledge every read at once (`TCP_QUICKACK` re-armed), as our proxy does: measures a
        /// server that leaves Nagle on without the ~40 ms delayed-ACK stall a plain client adds.
        #[arg(long)]
        quickack: bool,
        /// Open kernel WebSockets here instead of at `--url` (REST stays at `--url`): a proxy's
        /// server prefix such as `http://127.0.0.1:8000/user/bench` for its direct kernel route.
        #[arg(long)]
        ws_url: Option<String>,
        /// The token for `--ws-url` (default `--token`).
        #[arg(long)]
        ws_token: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// N kernels started at once on a gateway; time until all are ready, failures.
    Concurrent {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        token: String,
        #[arg(long, default_value = "python3")]
        kernel: String,
        #[arg(long, default_value_t = 50)]
        n: usize,
    },
    /// Summarises result lines into a table and a JSON file.
    Report {
        results: String,
        out: String,
        /// Exit 1 when a target is missed.
        #[arg(long)]
        strict: bool,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats_us(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    json!({
        "n": xs.len(),
        "p50_us": percentile(&xs, 0.5),
        "p99_us": percentile(&xs, 0.99),
        "mean_us": xs.iter().sum::<f64>() / xs.len().max(1) as f64,
    })
}

fn request(session: &str, msg_type: &str, content: Value) -> Value {
    json!({
        "header": {"msg_id": uuid::Uuid::new_v4().to_string(), "msg_type": msg_type,
                   "session": session, "username": "bench", "version": "5.3",
                   "date": chrono::Utc::now().to_rfc3339()},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
    })
}

// ------------------------------------------------------------------------------------------
// The two transports behind one small trait.

/// A kernel connection that sends requests and yields (msg_type, parent msg_id, content) tuples.
trait Conn {
    async fn send(&mut self, msg: Value) -> Result<()>;
    async fn next(&mut self) -> Result<(String, String, Value)>;
}

/// Sends `code` and waits for its reply and idle; returns bytes of stream output.
async fn execute(c: &mut impl Conn, session: &str, code: &str) -> Result<usize> {
    let msg = request(
        session,
        "execute_request",
        json!({"code": code, "silent": false, "store_history": false}),
    );
    let id = msg["header"]["msg_id"].as_str().unwrap().to_owned();
    c.send(msg).await?;
    let (mut replied, mut idle, mut out) = (false, false, 0usize);
    while !(replied && idle) {
        let (t, parent, content) = c.next().await?;
        if parent != id {
            continue;
        }
        match t.as_str() {
            "execute_reply" => {
                if content["status"] != "ok" {
                    bail!("execute failed: {content}");
                }
                replied = true;
            }
            "status" => idle |= content["execution_state"] == "idle",
            "stream" => out += content["text"].as_str().map_or(0, str::len),
            _ => {}
        }
    }
    Ok(out)
}

async fn kernel_info(c: &mut impl Conn, session: &str) -> Result<()> {
    let msg = request(session, "kernel_info_request", json!({}));
    let id = msg["header"]["msg_id"].as_str().unwrap().to_owned();
    c.send(msg).await?;
    loop {
        let (t, parent, _) = c.next().await?;
        if t == "kernel_info_reply" && parent == id {
            return Ok(());
        }
    }
}

/// Round trips and big outputs on an open, ready connection.
async fn measure(c: &mut impl Conn, session: &str, common: &Common) -> Result<Value> {
    for _ in 0..20 {
        execute(c, session, "1+1").await?;
    }
    let mut rtt = Vec::with_capacity(common.iterations);
    for _ in 0..common.iterations {
        let t = Instant::now();
        execute(c, session, "1+1").await?;
        rtt.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let n = common.big_mb * 1_000_000;
    let code = format!("import sys; sys.stdout.write('x' * {n}); sys.stdout.flush()");
    execute(c, session, &code).await?; // warm-up
    let mut big = Vec::new();
    for _ in 0..common.big_rounds {
        let t = Instant::now();
        let got = execute(c, session, &code).await?;
        if got != n {
            bail!("big output: got {got} bytes, expected {n}");
        }
        big.push(t.elapsed().as_secs_f64() * 1e3);
    }
    big.sort_by(f64::total_cmp);
    Ok(json!({"rtt": stats_us(rtt), "big_ms": percentile(&big, 0.5), "big_ms_all": big}))
}

// ------------------------------------------------------------------------------------------
// Direct ZeroMQ.

struct Zmq {
    shell: DealerSocket,
    iopub: SubSocket,
    signer: Signer,
}

impl Conn for Zmq {
    async fn send(&mut self, msg: Value) -> Result<()> {
        let raw = RawMessage {
            channel: Channel::Shell,
            header: Bytes::from(msg["header"].to_string()),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from(msg["content"].to_string()),
            buffers: Vec::new(),
        };
        let frames = self.signer.to_frames(&raw);
        let zmsg = ZmqMessage::try_from(frames).map_err(|e| anyhow!("{e:?}"))?;
        self.shell.send(zmsg).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<(String, String, Value)> {
        let (channel, m) = tokio::select! {
            m = self.shell.recv() => (Channel::Shell, m?),
            m = self.iopub.recv() => (Channel::Iopub, m?),
        };
        let frames: Vec<Bytes> = m.into_vec();
        let raw = self
            .signer
            .from_frames(channel, frames)
            .map_err(|e| anyhow!("{e}"))?;
        let info = raw.header_info()?;
        Ok((
            info.msg_type,
            raw.parent_msg_id().unwrap_or_default(),
            raw.content_json()?,
        ))
    }
}

fn free_ports() -> Result<Vec<u16>> {
    let ls: Vec<_> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(ls.iter().map(|l| l.local_addr().unwrap().port()).collect())
}

async fn connect_retry<S: Socket>(s: &mut S, endpoint: &str, deadline: Instant) -> Result<()> {
    loop {
        if let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(300), s.connect(endpoint)).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("connect {endpoint} timed out");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns a kernel, returns it and its ready connection plus the time to ready.
async fn spawn_direct(
    argv: &[String],
    dir: &std::path::Path,
) -> Result<(tokio::process::Child, Zmq, f64)> {
    let ports = free_ports()?;
    let key = uuid::Uuid::new_v4().to_string();
    let info = json!({"ip": "127.0.0.1", "transport": "tcp", "shell_port": ports[0],
        "iopub_port": ports[1], "stdin_port": ports[2], "control_port": ports[3], "hb_port": ports[4],
        "key": key, "signature_scheme": "hmac-sha256", "kernel_name": "python3"});
    let file = dir.join(format!("kernel-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, info.to_string())?;
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{connection_file}", &file.to_string_lossy()))
        .collect();
    let started = Instant::now();
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the kernel")?;
    let deadline = started + Duration::from_secs(60);
    let session = uuid::Uuid::new_v4().to_string();
    let mut shell = DealerSocket::new();
    connect_retry(
        &mut shell,
        &format!("tcp://127.0.0.1:{}", ports[0]),
        deadline,
    )
    .await?;
    let mut iopub = SubSocket::new();
    iopub.subscribe("").await?;
    connect_retry(
        &mut iopub,
        &format!("tcp://127.0.0.1:{}", ports[1]),
        deadline,
    )
    .await?;
    let mut z = Zmq {
        shell,
        iopub,
        signer: Signer::new(key.as_bytes(), "hmac-sha256")?,
    };
    // The kernel may not answer a request sent before it bound: ask until it does.
    loop {
        let msg = request(&session, "kernel_info_request", json!({}));
        let id = msg["header"]["msg_id"].as_str().unwrap().to_owned();
        if z.send(msg).await.is_ok() {
            let got = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    let (t, parent, _) = z.next().await?;
                    if t == "kernel_info_reply" && parent == id {
                        return anyhow::Ok(());
                    }
                }
            })
            .await;
            if matches!(got, Ok(Ok(()))) {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("kernel did not answer kernel_info");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_file(&file);
    // Let iopub's subscription settle before measuring (no message must be missed).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((child, z, ready))
}

async fn direct(argv_json: &str, common: &Common) -> Result<Value> {
    let argv: Vec<String> = serde_json::from_str(argv_json)?;
    let dir = std::env::temp_dir().join(format!("gw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut starts = Vec::new();
    for _ in 0..common.starts {
        let (mut child, z, ms) = spawn_direct(&argv, &dir).await?;
        starts.push(ms);
        drop(z);
        let _ = child.kill().await;
    }
    let (mut child, mut z, _) = spawn_direct(&argv, &dir).await?;
    let session = uuid::Uuid::new_v4().to_string();
    let m = measure(&mut z, &session, common).await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    starts.sort_by(f64::total_cmp);
    let mut m = m?;
    m["start_ms"] = json!(percentile(&starts, 0.5));
    m["start_ms_all"] = json!(starts);
    Ok(m)
}

// ------------------------------------------------------------------------------------------
// Gateways.

type Ws = tokio_tungstenite::WebSocketStream<AckingTcp>;

/// A client socket with `TCP_NODELAY`, optionally re-arming `TCP_QUICKACK` after every read.
struct AckingTcp {
    inner: tokio::net::TcpStream,
    quickack: bool,
}

impl AckingTcp {
    fn rearm(&self) {
        if self.quickack {
            let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
        }
    }
}

impl tokio::io::AsyncRead for AckingTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.rearm();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for AckingTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

struct WsConn(Ws);

impl Conn for WsConn {
    async fn send(&mut self, msg: Value) -> Result<()> {
        self.0.send(Message::text(msg.to_string())).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<(String, String, Value)> {
        loop {
            let frame = self
                .0
                .next()
                .await
                .ok_or_else(|| anyhow!("WebSocket closed"))??;
            if let Message::Text(t) = frame {
                let mut v: Value = serde_json::from_str(t.as_str())?;
                let t = v["header"]["msg_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let p = v["parent_header"]["msg_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                return Ok((t, p, v["content"].take()));
            }
        }
    }
}

struct Gw {
    url: String,
    token: String,
    ws_url: String,
    ws_token: String,
    quickack: bool,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Gw {
    fn new(url: &str, token: &str, quickack: bool) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        Gw {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            ws_url: url.trim_end_matches('/').to_owned(),
            ws_token: token.to_owned(),
            quickack,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Authorization", format!("token {}", self.token))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let resp = self.client.request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn ws(&self, kernel_id: &str, session: &str) -> Result<WsConn> {
        let url = format!(
            "{}/api/kernels/{kernel_id}/channels?session_id={session}",
            self.ws_url.replacen("http", "ws", 1)
        );
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("token {}", self.ws_token).parse()?);
        // TCP_NODELAY on the client, so only the gateway's own Nagle behaviour is measured.
        let uri = req.uri();
        let host = uri.host().ok_or_else(|| anyhow!("no host in {uri}"))?;
        let port = uri.port_u16().unwrap_or(80);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        tcp.set_nodelay(true)?;
        let tcp = AckingTcp {
            inner: tcp,
            quickack: self.quickack,
        };
        tcp.rearm();
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, None).await?;
        Ok(WsConn(ws))
    }

    /// POST, WebSocket, kernel_info: returns id, ready connection, session and ms to ready.
    async fn start_ready(&self, kernel: &str) -> Result<(String, WsConn, String, f64)> {
        let t = Instant::now();
        let (status, model) = self
            .call(
                hyper::Method::POST,
                "/api/kernels",
                Some(json!({"name": kernel, "env": {
                    "KERNEL_LAUNCH_TIMEOUT": "300", "KERNEL_USERNAME": "bench"}})),
            )
            .await?;
        if status != 201 {
            bail!("start answered {status}: {model}");
        }
        let id = model["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id"))?
            .to_owned();
        let session = uuid::Uuid::new_v4().to_string();
        let mut ws = self.ws(&id, &session).await?;
        kernel_info(&mut ws, &session).await?;
        Ok((id, ws, session, t.elapsed().as_secs_f64() * 1e3))
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let (status, body) = self
            .call(hyper::Method::DELETE, &format!("/api/kernels/{id}"), None)
            .await?;
        if status != 204 {
            bail!("delete answered {status}: {body}");
        }
        Ok(())
    }
}

async fn gateway(gw: Gw, kernel: &str, common: &Common) -> Result<Value> {
    let mut starts = Vec::new();
    for _ in 0..common.starts {
        let (id, ws, _, ms) = gw.start_ready(kernel).await?;
        starts.push(ms);
        drop(ws);
        gw.delete(&id).await?;
    }
    let (id, mut ws, session, _) = gw.start_ready(kernel).await?;
    let m = measure(&mut ws, &session, common).await;
    drop(ws);
    gw.delete(&id).await?;
    starts.sort_by(f64::total_cmp);
    let mut m = m?;
    m["start_ms"] = json!(percentile(&starts, 0.5));
    m["start_ms_all"] = json!(starts);
    Ok(m)
}

async fn concurrent(url: &str, token: &str, kernel: &str, n: usize) -> Result<Value> {
    let gw = std::sync::Arc::new(Gw::new(url, token, false));
    let t = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gw = gw.clone();
            let kernel = kernel.to_owned();
            tokio::spawn(async move {
                let r =
                    tokio::time::timeout(Duration::from_secs(240), gw.start_ready(&kernel)).await;
                match r {
                    Ok(Ok((id, ws, _, ms))) => Ok((id, ws, ms)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out after 240 s".to_owned()),
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut ready_ms = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        match task.await? {
            Ok((id, ws, ms)) => {
                ids.push((id, ws));
                ready_ms.push(ms);
            }
            Err(e) => *errors.entry(e.chars().take(160).collect()).or_default() += 1,
        }
    }
    let wall = t.elapsed().as_secs_f64() * 1e3;
    let mut delete_failures = 0;
    let deletes: Vec<_> = ids
        .into_iter()
        .map(|(id, ws)| {
            let gw = gw.clone();
            tokio::spawn(async move {
                drop(ws);
                gw.delete(&id).await
            })
        })
        .collect();
    for d in deletes {
        if !matches!(d.await, Ok(Ok(()))) {
            delete_failures += 1;
        }
    }
    ready_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "n": n, "ok": ready_ms.len(), "failures": n - ready_ms.len(), "errors": errors,
        "wall_ms": wall, "ready_p50_ms": percentile(&ready_ms, 0.5),
        "ready_max_ms": ready_ms.last().copied().unwrap_or(f64::NAN),
        "delete_failures": delete_failures,
    }))
}

// ------------------------------------------------------------------------------------------
// Report.

fn median(xs: &mut [f64]) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    (!xs.is_empty()).then(|| percentile(xs, 0.5))
}

fn report(results: &str, out: &str, strict: bool) -> Result<()> {
    let rows: Vec<Value> = std::fs::read_to_string(results)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let of = |kind: &str, target: &str| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["target"] == target)
            .collect()
    };
    let med = |kind: &str, target: &str, f: &dyn Fn(&Value) -> Option<f64>| {
        median(
            &mut of(kind, target)
                .iter()
                .filter_map(|r| f(&r["result"]))
                .collect::<Vec<_>>(),
        )
    };
    let meta = rows
        .iter()
        .find(|r| r["kind"] == "meta")
        .cloned()
        .unwrap_or(Value::Null);
    let targets = ["direct", "ours", "eg"];
    let mut summary = json!({"meta": meta});
    for t in targets {
        summary[t] = json!({
            "start_ms": med("latency", t, &|r| r["start_ms"].as_f64()),
            "rtt_p50_us": med("latency", t, &|r| r["rtt"]["p50_us"].as_f64()),
            "rtt_p99_us": med("latency", t, &|r| r["rtt"]["p99_us"].as_f64()),
            "big_ms": med("latency", t, &|r| r["big_ms"].as_f64()),
            "concurrent_wall_ms": med("concurrent", t, &|r| r["wall_ms"].as_f64()),
            "concurrent_failures": of("concurrent", t).iter()
                .map(|r| r["result"]["failures"].as_u64().unwrap_or(u64::MAX)).max(),
            "concurrent_n": of("concurrent", t).first().map(|r| r["result"]["n"].clone()),
            "rss_idle_kib": of("rss", t).iter().find(|r| r["phase"] == "idle").map(|r| r["vmrss_kib"].clone()),
            "rss_loaded_kib": of("rss", t).iter().find(|r| r["phase"] == "loaded").map(|r| r["vmrss_kib"].clone()),
            "rss_peak_kib": of("rss", t).iter().find(|r| r["phase"] == "loaded").map(|r| r["vmhwm_kib"].clone()),
        });
    }
    let f = |t: &str, k: &str| summary[t][k].as_f64();
    let fmt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let rounds = rows
        .iter()
        .filter(|r| r["kind"] == "latency" && r["target"] == "ours")
        .count();
    println!();
    println!(
        "Kernel gateway benchmark  ({} rounds; {}; load average {})",
        rounds,
        meta["versions"].as_str().unwrap_or(""),
        meta["loadavg"].as_str().unwrap_or("?")
    );
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>10}",
        "median", "direct-ZMQ", "ours", "EG", "EG/ours"
    );
    let line = |name: &str, k: &str, unit: &str| {
        println!(
            "{:<34} {:>12} {:>12} {:>12} {:>10}",
            name,
            fmt(f("direct", k), unit),
            fmt(f("ours", k), unit),
            fmt(f("eg", k), unit),
            ratio(f("eg", k), f("ours", k)).map_or("-".into(), |r| format!("{r:.2}x"))
        )
    };
    line("kernel start-to-ready", "start_ms", " ms");
    line("1+1 round trip p50", "rtt_p50_us", " us");
    line("1+1 round trip p99", "rtt_p99_us", " us");
    line("10 MB output", "big_ms", " ms");
    line(
        "50 concurrent starts: all ready",
        "concurrent_wall_ms",
        " ms",
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "50 concurrent starts: failures",
        "-",
        summary["ours"]["concurrent_failures"].to_string(),
        summary["eg"]["concurrent_failures"].to_string()
    );
    let kib = |t: &str, k: &str| f(t, k).map(|v| v / 1024.0);
    for (name, k) in [
        ("gateway RSS idle", "rss_idle_kib"),
        ("gateway RSS after load", "rss_loaded_kib"),
        ("gateway RSS peak (VmHWM)", "rss_peak_kib"),
    ] {
        println!(
            "{:<34} {:>12} {:>12} {:>12} {:>10}",
            name,
            "-",
            fmt(kib("ours", k), " MiB"),
            fmt(kib("eg", k), " MiB"),
            ratio(f("eg", k), f("ours", k)).map_or("-".into(), |r| format!("{r:.1}x"))
        );
    }
    println!();
    let mut missed = 0;
    let mut check = |ok: Option<bool>, what: String| {
        let mark = match ok {
            Some(true) => "PASS",
            Some(false) => {
                missed += 1;
                "FAIL"
            }
            None => {
                missed += 1;
                "n/a "
            }
        };
        println!("  [{mark}] {what}");
    };
    let rtt_ratio = ratio(f("ours", "rtt_p50_us"), f("direct", "rtt_p50_us"));
    check(
        rtt_ratio.map(|r| r <= 1.1),
        format!(
            "round trip p50 ours / direct ZeroMQ = {} (target <= 1.10x; EG: {})",
            rtt_ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            ratio(f("eg", "rtt_p50_us"), f("direct", "rtt_p50_us"))
                .map_or("-".into(), |r| format!("{r:.2}x"))
        ),
    );
    let over = match (f("ours", "start_ms"), f("direct", "start_ms")) {
        (Some(o), Some(d)) => Some(o - d),
        _ => None,
    };
    check(
        over.map(|o| o <= 50.0),
        format!(
            "start-to-ready ours - kernel's own start = {} (target <= +50 ms; EG: {})",
            over.map_or("-".into(), |o| format!("{o:+.1} ms")),
            match (f("eg", "start_ms"), f("direct", "start_ms")) {
                (Some(e), Some(d)) => format!("{:+.1} ms", e - d),
                _ => "-".into(),
            }
        ),
    );
    let failures = summary["ours"]["concurrent_failures"].as_u64();
    check(
        failures.map(|x| x == 0),
        format!(
            "{} concurrent starts through ours: {} failures (target 0; EG: {})",
            summary["ours"]["concurrent_n"],
            failures.map_or("-".into(), |x| x.to_string()),
            summary["eg"]["concurrent_failures"]
        ),
    );
    let rss = ratio(f("eg", "rss_loaded_kib"), f("ours", "rss_loaded_kib"));
    check(
        rss.map(|r| r >= 5.0),
        format!(
            "gateway RSS after load: EG / ours = {} (target >= 5x)",
            rss.map_or("-".into(), |r| format!("{r:.1}x"))
        ),
    );
    println!();
    std::fs::write(
        out,
        serde_json::to_vec_pretty(&json!({"summary": summary, "rows": rows}))?,
    )?;
    if missed > 0 && strict {
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Direct { argv_json, common } => direct(&argv_json, &common).await?,
        Cmd::Gateway {
            url,
            token,
            kernel,
            quickack,
            ws_url,
            ws_token,
            common,
        } => {
            let mut gw = Gw::new(&url, &token, quickack);
            if let Some(ws_url) = ws_url {
                gw.ws_url = ws_url.trim_end_matches('/').to_owned();
            }
            if let Some(ws_token) = ws_token {
                gw.ws_token = ws_token;
            }
            gateway(gw, &kernel, &common).await?
        }
        Cmd::Concurrent {
            url,
            token,
            kernel,
            n,
        } => concurrent(&url, &token, &kernel, n).await?,
        Cmd::Report {
            results,
            out,
            strict,
        } => return report(&results, &out, strict),
    };
    println!("{result}");
    Ok(())
}
