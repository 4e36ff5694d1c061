//! Benchmark client for `bench/slurm.sh`: the kernel start overhead the Slurm launcher adds.
//!
//! Against one stackhub-gateway serving a local kernelspec and a Slurm one (same ipykernel),
//! alternately, `--rounds` times:
//! - local start-to-ready: `POST /api/kernels` until its 201 (the gateway answers once the
//!   kernel replied to `kernel_info`);
//! - Slurm submit-to-ready: the same for the Slurm kernelspec (sbatch, scheduling, the job, the
//!   kernel-side launcher, the call-back, the kernel, the handshake);
//! - Slurm job-running-to-ready: from the moment the job script began (`STACKHUB_JOB_STARTED_NS`,
//!   read from inside the kernel; same host clock) until that 201;
//! - launcher overhead = job-running-to-ready - local start-to-ready (medians).
//!
//! Prints one JSON object.
//!
//! ```text
//! slurm_bench --url http://127.0.0.1:8888 --token T --local python3 --slurm slurm --rounds 10
//! ```
// A bench tool: failing loudly is the right behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long)]
    url: String,
    #[arg(long)]
    token: String,
    #[arg(long, default_value = "python3")]
    local: String,
    #[arg(long, default_value = "slurm")]
    slurm: String,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
}

async fn call(cli: &Cli, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", cli.url))
        .header("Authorization", format!("token {}", cli.token))
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Runs `code` on kernel `id` and returns its stdout.
async fn run(cli: &Cli, id: &str, code: &str) -> Result<String> {
    let ws_url = format!(
        "{}/api/kernels/{id}/channels?session_id=bench",
        cli.url.replacen("http", "ws", 1)
    );
    let mut req = ws_url.into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("token {}", cli.token).parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let msg_id = uuid::Uuid::new_v4().to_string();
    let msg = json!({"header": {"msg_id": msg_id, "msg_type": "execute_request", "session": "bench",
        "username": "bench", "version": "5.3"}, "parent_header": {}, "metadata": {},
        "content": {"code": code, "silent": false}, "channel": "shell"});
    ws.send(Message::text(msg.to_string())).await?;
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("no reply")?
            .context("socket closed")??;
        let Message::Text(t) = frame else { continue };
        let m: Value = serde_json::from_str(t.as_str())?;
        if m["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        match m["msg_type"].as_str() {
            Some("stream") => out.push_str(m["content"]["text"].as_str().unwrap_or_default()),
            Some("status") if m["content"]["execution_state"] == "idle" => return Ok(out),
            _ => {}
        }
    }
}

/// Starts a kernel of `name`; returns its id, the time until 201, and the wall clock then (ns).
async fn start(cli: &Cli, name: &str) -> Result<(String, f64, u128)> {
    let t0 = Instant::now();
    let (status, body) = call(cli, "POST", "/api/kernels", Some(json!({"name": name}))).await?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let wall = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    if status != 201 {
        bail!("starting {name}: {status} {body}");
    }
    Ok((body["id"].as_str().unwrap_or_default().to_owned(), ms, wall))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        return f64::NAN;
    }
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let (mut local, mut submit, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..cli.rounds {
        let (id, ms, _) = start(&cli, &cli.local).await?;
        local.push(ms);
        call(&cli, "DELETE", &format!("/api/kernels/{id}"), None).await?;

        let (id, ms, ready_wall) = start(&cli, &cli.slurm).await?;
        let started: u128 = run(
            &cli,
            &id,
            "import os; print(os.environ['STACKHUB_JOB_STARTED_NS'])",
        )
        .await?
        .trim()
        .parse()
        .context("STACKHUB_JOB_STARTED_NS")?;
        let job_ms = (ready_wall.saturating_sub(started)) as f64 / 1e6;
        submit.push(ms);
        running.push(job_ms);
        eprintln!(
            "round {round}: local {ms_l:.0} ms, slurm submit-to-ready {ms:.0} ms, job-running-to-ready {job_ms:.0} ms",
            ms_l = local[round]
        );
        call(&cli, "DELETE", &format!("/api/kernels/{id}"), None).await?;
    }
    let (l, s, r) = (median(local), median(submit), median(running));
    println!(
        "{}",
        json!({"rounds": cli.rounds, "local_start_to_ready_ms": l, "slurm_submit_to_ready_ms": s,
               "slurm_job_running_to_ready_ms": r, "launcher_overhead_ms": r - l})
    );
    Ok(())
}
