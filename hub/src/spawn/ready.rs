//! Readiness: poll `GET {url}{prefix}api` on the hub's HTTP client until the server answers
//! with any status below 500 (as JupyterHub's `wait_up`), the process exits, the deadline
//! passes or the start is cancelled.

use std::time::Duration;

use spawner::{ServerId, Spawner, State, Status};
use tokio::time::Instant;

use super::track::Track;

/// How long one readiness request may take (JupyterHub's `http_timeout`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a wait for readiness ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ready {
    /// The server answered.
    Yes,
    /// The server's process ended, with its exit code when known.
    Exited(Option<i32>),
    /// The deadline passed.
    Timeout,
    /// The start was cancelled.
    Cancelled,
}

/// The client readiness checks use: no proxy from the environment (servers are reached
/// directly), no redirects (any answer counts), bounded requests.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub(super) fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(HTTP_TIMEOUT)
        .timeout(HTTP_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
}

/// Readiness polls one millisecond apart before backing off.
const FAST_POLLS: u32 = 50;

/// What waiting needs.
pub(super) struct Probe<'a> {
    pub http: &'a reqwest::Client,
    pub spawner: &'a dyn Spawner,
    pub server: &'a ServerId,
    pub state: &'a State,
    pub interval: Duration,
}

impl Probe<'_> {
    /// Poll `target` until ready, exited, `deadline` or cancelled through `track`.
    pub(super) async fn wait(&self, target: &str, deadline: Instant, track: &Track) -> Ready {
        let mut tick = 0u32;
        loop {
            let until = deadline.min(Instant::now() + HTTP_TIMEOUT);
            let answer = tokio::select! {
                r = tokio::time::timeout_at(until, self.http.get(target).send()) => r,
                () = track.cancelled() => return Ready::Cancelled,
            };
            if let Ok(Ok(resp)) = answer
                && resp.status().as_u16() < 500
            {
                tracing::info!(server = %self.server, status = resp.status().as_u16(), "readiness: server answered");
                return Ready::Yes;
            }
            tick += 1;
            if tick.is_multiple_of(20)
                && let Ok(Status::Exited(code)) = self.spawner.poll(self.server, self.state).await
            {
                return Ready::Exited(code);
            }
            if Instant::now() >= deadline {
                return Ready::Timeout;
            }
            if track.is_cancelled() {
                return Ready::Cancelled;
            }
            // A local server answers within milliseconds of its launch: poll every millisecond
            // for its first FAST_POLLS ms (a refused connection costs microseconds), then at 2,
            // 4, 8... ms up to every `interval`.
            let early = Duration::from_millis(1u64 << tick.saturating_sub(FAST_POLLS).min(10));
            tokio::time::sleep(early.min(self.interval)).await;
        }
    }
}
