//! Prometheus metrics at `GET /hub/metrics` (text format 0.0.4), readable with the
//! `read:metrics` scope (a token, or the admin's browser session with `_xsrf`):
//! - `stackhub_users` (gauge), `stackhub_servers{state,profile}` (gauge; state is `running`,
//!   `spawn_pending`, `stop_pending` or `stopped`), read from the database at scrape time with
//!   one grouped query each;
//! - `stackhub_spawn_duration_seconds{status}` (histogram; `success` or `failure`), recorded by
//!   the spawn pipeline;
//! - `stackhub_spawn_refused_total{reason}` (counter; [`crate::spawn::Refusal::metric_label`]),
//!   starts the planner refused;
//! - `stackhub_request_duration_seconds{method,handler,code}` (histogram of every hub request,
//!   by route pattern so the label set stays small), recorded by [`track`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::Row;
use tokio::sync::Mutex;

use crate::auth::ApiCaller;
use crate::error::ApiError;
use crate::state::AppState;

const SPAWN_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Self {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.buckets.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Request histograms by method and status code, then by route pattern (looked up by `&str`,
/// so recording a request allocates nothing once its labels have been seen).
type RequestMap = HashMap<(Method, u16), HashMap<Box<str>, Histogram>>;

#[derive(Debug, Default)]
struct Registry {
    spawn: Mutex<BTreeMap<String, Histogram>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    requests: Mutex<RequestMap>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn observe(
    map: &Mutex<BTreeMap<String, Histogram>>,
    labels: String,
    buckets: &'static [f64],
    v: f64,
) {
    map.lock()
        .await
        .entry(labels)
        .or_insert_with(|| Histogram::new(buckets))
        .observe(v);
}

/// Record how long a spawn took, from request to ready (or failure).
pub(crate) async fn spawn_finished(seconds: f64, ok: bool) {
    let status = if ok { "success" } else { "failure" };
    observe(
        &registry().spawn,
        format!("status=\"{status}\""),
        SPAWN_BUCKETS,
        seconds,
    )
    .await;
}

/// Count a start the planner refused, by reason.
pub(crate) async fn spawn_refused(reason: &'static str) {
    *registry().refused.lock().await.entry(reason).or_default() += 1;
}

/// Middleware: time every request by route pattern.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let handler = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let handler = handler.as_ref().map_or("unmatched", MatchedPath::as_str);
    let mut requests = registry().requests.lock().await;
    let by_handler = requests
        .entry((method, resp.status().as_u16()))
        .or_default();
    match by_handler.get_mut(handler) {
        Some(h) => h.observe(elapsed),
        None => {
            let mut h = Histogram::new(REQUEST_BUCKETS);
            h.observe(elapsed);
            by_handler.insert(handler.into(), h);
        }
    }
    drop(requests);
    resp
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/hub/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>, caller: ApiCaller) -> Result<Response, ApiError> {
    if !caller.holds("read:metrics") {
        return Err(ApiError::requires_any_of(&["read:metrics"]));
    }
    let mut out = String::new();
    let mut conn = state.db().pool().acquire().await?;
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    out.push_str("# HELP stackhub_users Users known to the hub.\n# TYPE stackhub_users gauge\n");
    let _ = writeln!(out, "stackhub_users {users}");
    let rows = sqlx::query(
        "SELECT pending, CASE WHEN url IS NULL THEN 0 ELSE 1 END AS up, launch, \
         COUNT(*) AS n FROM servers GROUP BY pending, CASE WHEN url IS NULL THEN 0 ELSE 1 END, \
         launch",
    )
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut servers: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in rows {
        let pending: Option<String> = row.try_get("pending")?;
        let up: i64 = row.try_get("up")?;
        let launch: Option<String> = row.try_get("launch")?;
        let n: i64 = row.try_get("n")?;
        let st = match pending.as_deref() {
            Some("spawn") => "spawn_pending",
            Some(_) => "stop_pending",
            None if up == 1 => "running",
            None => "stopped",
        };
        // The profile it was last launched with (empty: never started).
        let profile = launch
            .and_then(|l| serde_json::from_str::<spawner::LaunchSpec>(&l).ok())
            .and_then(|l| l.profile.map(|p| p.slug))
            .unwrap_or_default();
        *servers.entry((st.to_owned(), profile)).or_default() += n;
    }
    out.push_str(
        "# HELP stackhub_servers Servers by state and profile.\n# TYPE stackhub_servers gauge\n",
    );
    for ((st, profile), n) in &servers {
        let _ = writeln!(
            out,
            "stackhub_servers{{state=\"{st}\",profile=\"{}\"}} {n}",
            esc(profile)
        );
    }
    out.push_str("# HELP stackhub_spawn_duration_seconds Time from a start request to the server being ready or failed.\n# TYPE stackhub_spawn_duration_seconds histogram\n");
    for (labels, h) in registry().spawn.lock().await.iter() {
        h.write(&mut out, "stackhub_spawn_duration_seconds", labels);
    }
    out.push_str("# HELP stackhub_spawn_refused_total Starts refused before launch, by reason.\n# TYPE stackhub_spawn_refused_total counter\n");
    for (reason, n) in registry().refused.lock().await.iter() {
        let _ = writeln!(
            out,
            "stackhub_spawn_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out.push_str("# HELP stackhub_request_duration_seconds Hub request latency by route.\n# TYPE stackhub_request_duration_seconds histogram\n");
    let requests = registry().requests.lock().await;
    let mut sorted = BTreeMap::new();
    for ((method, code), by_handler) in requests.iter() {
        for (handler, h) in by_handler {
            let labels = format!(
                "method=\"{}\",handler=\"{}\",code=\"{code}\"",
                esc(method.as_str()),
                esc(handler)
            );
            sorted.insert(labels, h);
        }
    }
    for (labels, h) in &sorted {
        h.write(&mut out, "stackhub_request_duration_seconds", labels);
    }
    drop(sorted);
    drop(requests);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response())
}
