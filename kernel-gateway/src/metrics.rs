//! The gateway's Prometheus metrics (`GET /metrics`, text format 0.0.4, no auth), written by
//! the Prometheus client crate (`prometheus-client`):
//!
//! | name | type | what |
//! |---|---|---|
//! | `stackhub_gateway_kernels{state}` | gauge | kernels by execution state, read at scrape time |
//! | `stackhub_gateway_kernel_starts_total` | counter | kernels started |
//! | `stackhub_gateway_kernel_start_failures_total` | counter | starts that failed |
//! | `stackhub_gateway_kernel_start_seconds` | histogram | start-to-ready time of the kernels started (`_sum`, `_count`, `_bucket`) |
//! | `stackhub_gateway_buffered_bytes` | gauge | bytes of kernel output held for clients, read at scrape time |
//! | `stackhub_gateway_slow_clients_closed_total` | counter | WebSockets closed because their client read too slowly |
//! | `stackhub_gateway_sessions_reaped_total` | counter | detached sessions dropped after `detached_session_timeout` |
//! | `stackhub_gateway_kernels_culled_total` | counter | idle kernels culled |

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::kernel::BufferGauges;

/// Start-to-ready buckets, in seconds: local kernels take about a second, Slurm jobs and pods
/// can take minutes.
const START_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// The `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What the gateway records as kernels start, fail and are culled (the client-buffering
/// counters are registered from [`BufferGauges`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Kernels started.
    pub(crate) starts: Counter,
    /// Starts that failed.
    pub(crate) start_failures: Counter,
    /// Start-to-ready time of the kernels started, in seconds.
    pub(crate) start_seconds: Histogram,
    /// Idle kernels culled.
    pub(crate) culled: Counter,
}

impl Metrics {
    /// The metrics of a gateway whose client buffering is counted in `buffers`.
    pub(crate) fn new(buffers: &BufferGauges) -> Self {
        let starts = Counter::default();
        let start_failures = Counter::default();
        let start_seconds = Histogram::new(START_BUCKETS.iter().copied());
        let culled = Counter::default();
        let mut registry = Registry::default();
        registry.register(
            "stackhub_gateway_kernel_starts",
            "Kernels started",
            starts.clone(),
        );
        registry.register(
            "stackhub_gateway_kernel_start_failures",
            "Kernel starts that failed",
            start_failures.clone(),
        );
        registry.register(
            "stackhub_gateway_kernel_start_seconds",
            "Start-to-ready time of the kernels started",
            start_seconds.clone(),
        );
        registry.register(
            "stackhub_gateway_slow_clients_closed",
            "WebSockets closed because their client read too slowly",
            buffers.slow_clients_closed.clone(),
        );
        registry.register(
            "stackhub_gateway_sessions_reaped",
            "Detached sessions dropped after detached_session_timeout",
            buffers.sessions_reaped.clone(),
        );
        registry.register(
            "stackhub_gateway_kernels_culled",
            "Idle kernels culled",
            culled.clone(),
        );
        Self {
            registry,
            starts,
            start_failures,
            start_seconds,
            culled,
        }
    }

    /// The text exposition: the gauges read at scrape time (`kernels` by execution state,
    /// `buffered` bytes), then everything recorded.
    ///
    /// # Errors
    /// Writing to the string failed (not expected).
    pub(crate) fn encode(
        &self,
        kernels: BTreeMap<String, usize>,
        buffered: usize,
    ) -> Result<String, fmt::Error> {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
        struct State {
            state: String,
        }
        let by_state: Family<State, Gauge> = Family::default();
        for (state, n) in kernels {
            by_state
                .get_or_create(&State { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let buffered_bytes: Gauge = Gauge::default();
        buffered_bytes.set(i64::try_from(buffered).unwrap_or(i64::MAX));
        let mut scraped = Registry::default();
        scraped.register(
            "stackhub_gateway_kernels",
            "Kernels by execution state",
            by_state,
        );
        scraped.register(
            "stackhub_gateway_buffered_bytes",
            "Bytes of kernel output held for clients (WebSocket queues and offline buffers)",
            buffered_bytes,
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &scraped)?;
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of `text` (lines that are not comments) as name → value.
    fn samples(text: &str) -> BTreeMap<&str, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(name, v)| (name, v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn every_name_type_and_label_dashboards_read() {
        let buffers = BufferGauges::default();
        let m = Metrics::new(&buffers);
        m.starts.inc();
        m.starts.inc();
        m.start_seconds.observe(1.25);
        m.start_seconds.observe(0.25);
        m.start_failures.inc();
        m.culled.inc();
        buffers.slow_clients_closed.inc();
        buffers.sessions_reaped.inc_by(3);
        let kernels = BTreeMap::from([("idle".to_owned(), 2), ("busy".to_owned(), 1)]);
        let text = m.encode(kernels, 4096).unwrap();
        let s = samples(&text);
        let want = [
            ("stackhub_gateway_kernels{state=\"idle\"}", 2.0),
            ("stackhub_gateway_kernels{state=\"busy\"}", 1.0),
            ("stackhub_gateway_kernel_starts_total", 2.0),
            ("stackhub_gateway_kernel_start_failures_total", 1.0),
            ("stackhub_gateway_kernel_start_seconds_sum", 1.5),
            ("stackhub_gateway_kernel_start_seconds_count", 2.0),
            (
                "stackhub_gateway_kernel_start_seconds_bucket{le=\"0.5\"}",
                1.0,
            ),
            (
                "stackhub_gateway_kernel_start_seconds_bucket{le=\"+Inf\"}",
                2.0,
            ),
            ("stackhub_gateway_buffered_bytes", 4096.0),
            ("stackhub_gateway_slow_clients_closed_total", 1.0),
            ("stackhub_gateway_sessions_reaped_total", 3.0),
            ("stackhub_gateway_kernels_culled_total", 1.0),
        ];
        for (name, value) in want {
            assert_eq!(s.get(name), Some(&value), "{name} in\n{text}");
        }
        for (name, ty) in [
            ("stackhub_gateway_kernels", "gauge"),
            ("stackhub_gateway_kernel_starts_total", "counter"),
            ("stackhub_gateway_kernel_start_failures_total", "counter"),
            ("stackhub_gateway_kernel_start_seconds", "histogram"),
            ("stackhub_gateway_buffered_bytes", "gauge"),
            ("stackhub_gateway_slow_clients_closed_total", "counter"),
            ("stackhub_gateway_sessions_reaped_total", "counter"),
            ("stackhub_gateway_kernels_culled_total", "counter"),
        ] {
            let line = format!("# TYPE {name} {ty}\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }
}
