//! The metrics the hub records as things happen (served with the database gauges by
//! `crate::api::metrics` at `GET /hub/metrics`):
//! - `stackhub_spawn_duration_seconds{status}` (histogram; `success` or `failure`), recorded by
//!   the spawn pipeline;
//! - `stackhub_spawn_refused{reason}` (counter, `_total` in the text; reasons from
//!   [`crate::spawn::Refusal::metric_label`]): starts the planner refused;
//! - `stackhub_request_duration_seconds{method,handler,code}` (histogram of every hub request,
//!   by route pattern so the label set stays small), recorded by [`track`].
//!
//! Written by the Prometheus client crate (`prometheus-client`): the recorded histograms live in
//! a process-wide registry, the database gauges in a registry built for each scrape.

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const SPAWN_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpawnLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// The request method as a label (no allocation for the standard ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MethodLabel(Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.0.as_str())
    }
}

/// The route pattern as a label (`MatchedPath` is shared, so cloning it allocates nothing).
#[derive(Debug, Clone)]
struct HandlerLabel(Option<MatchedPath>);

impl HandlerLabel {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for HandlerLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HandlerLabel {}

impl std::hash::Hash for HandlerLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for HandlerLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    handler: HandlerLabel,
    code: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics recorded as things happen (the process's; the database ones are read per scrape).
#[derive(Debug)]
struct Recorded {
    registry: Registry,
    spawn: HistogramFamily<SpawnLabels>,
    refused: Family<RefusalLabels, Counter>,
    requests: HistogramFamily<RequestLabels>,
}

fn recorded() -> &'static Recorded {
    static R: OnceLock<Recorded> = OnceLock::new();
    R.get_or_init(|| {
        let spawn: HistogramFamily<SpawnLabels> =
            Family::new_with_constructor(|| Histogram::new(SPAWN_BUCKETS.iter().copied()));
        let requests: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS.iter().copied()));
        let mut registry = Registry::default();
        registry.register(
            "stackhub_spawn_duration_seconds",
            "Time from a start request to the server being ready or failed",
            spawn.clone(),
        );
        let refused: Family<RefusalLabels, Counter> = Family::default();
        registry.register(
            "stackhub_spawn_refused",
            "Starts refused before launch, by reason",
            refused.clone(),
        );
        registry.register(
            "stackhub_request_duration_seconds",
            "Hub request latency by route",
            requests.clone(),
        );
        Recorded {
            registry,
            spawn,
            refused,
            requests,
        }
    })
}

/// Record how long a spawn took, from request to ready (or failure).
pub(crate) async fn spawn_finished(seconds: f64, ok: bool) {
    let status = if ok { "success" } else { "failure" };
    recorded()
        .spawn
        .get_or_create(&SpawnLabels { status })
        .observe(seconds);
}

/// Count a start the planner refused, by reason.
pub(crate) async fn spawn_refused(reason: &'static str) {
    recorded()
        .refused
        .get_or_create(&RefusalLabels { reason })
        .inc();
}

/// Middleware: time every request by route pattern.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = MethodLabel(req.method().clone());
    let handler = HandlerLabel(req.extensions().get::<MatchedPath>().cloned());
    let resp = next.run(req).await;
    let labels = RequestLabels {
        method,
        handler,
        code: resp.status().as_u16(),
    };
    recorded()
        .requests
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Write the recorded metrics (histograms and counters) in the text format after `out`.
///
/// # Errors
/// When encoding fails.
pub(crate) fn encode_recorded(out: &mut String) -> fmt::Result {
    prometheus_text::encode(out, &recorded().registry)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// The value of the sample named exactly `name` (with its labels) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn recorded_histograms_keep_their_names_types_and_labels() {
        spawn_finished(1.5, true).await;
        spawn_finished(400.0, false).await;
        let app = Router::new()
            .route("/hub/api/users/{name}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(track));
        let req = axum::http::Request::builder()
            .uri("/hub/api/users/alice")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &recorded().registry).unwrap();
        for ty in [
            "# TYPE stackhub_spawn_duration_seconds histogram\n",
            "# TYPE stackhub_request_duration_seconds histogram\n",
        ] {
            assert!(text.contains(ty), "{ty} in\n{text}");
        }
        // Other tests of this process may record too: at least ours.
        let at_least_one = |name: &str| {
            assert!(
                sample(&text, name).is_some_and(|n| n >= 1.0),
                "{name} in\n{text}"
            );
        };
        at_least_one("stackhub_spawn_duration_seconds_bucket{status=\"success\",le=\"2.5\"}");
        at_least_one("stackhub_spawn_duration_seconds_bucket{status=\"failure\",le=\"+Inf\"}");
        at_least_one("stackhub_spawn_duration_seconds_count{status=\"failure\"}");
        at_least_one(
            "stackhub_request_duration_seconds_count{method=\"GET\",handler=\"/hub/api/users/{name}\",code=\"200\"}",
        );
        // 400 s is above the last bucket: counted in +Inf only.
        let failures = |le: &str| {
            let name =
                format!("stackhub_spawn_duration_seconds_bucket{{status=\"failure\",le=\"{le}\"}}");
            sample(&text, &name).unwrap_or_else(|| panic!("{name} in\n{text}"))
        };
        assert!(failures("+Inf") >= failures("300") + 1.0, "{text}");
    }
}
