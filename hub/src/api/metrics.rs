//! Prometheus metrics at `GET /hub/metrics` (text format 0.0.4), readable with the
//! `read:metrics` scope (a token, or the admin's browser session with `_xsrf`): the gauges read
//! from the database at scrape time (`stackhub_users`, `stackhub_servers{state,profile}`;
//! state is `running`, `spawn_pending`, `stop_pending` or `stopped`), the change feed's state
//! (`stackhub_change_feed_listening`, `_heard`, `_losses`), whether this replica leads
//! (`stackhub_leader`), then what [`crate::metrics`]
//! recorded.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::Row;

use crate::error::ApiError;
use crate::extract::ApiCaller;
use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabels {
    state: &'static str,
    profile: String,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/hub/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>, caller: ApiCaller) -> Result<Response, ApiError> {
    if !caller.holds("read:metrics") {
        return Err(ApiError::requires_any_of(&["read:metrics"]));
    }
    let mut conn = state.db().pool().acquire().await?;
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    let rows = sqlx::query(
        "SELECT pending, CASE WHEN url IS NULL THEN 0 ELSE 1 END AS up, launch, \
         COUNT(*) AS n FROM servers GROUP BY pending, CASE WHEN url IS NULL THEN 0 ELSE 1 END, \
         launch",
    )
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let servers: Family<ServerLabels, Gauge> = Family::default();
    for row in rows {
        let pending: Option<String> = row.try_get("pending")?;
        let up: i64 = row.try_get("up")?;
        let launch: Option<String> = row.try_get("launch")?;
        let n: i64 = row.try_get("n")?;
        let state_label = match pending.as_deref() {
            Some("spawn") => "spawn_pending",
            Some(_) => "stop_pending",
            None if up == 1 => "running",
            None => "stopped",
        };
        let labels = ServerLabels {
            state: state_label,
            profile: profile_of(launch.as_deref()),
        };
        servers.get_or_create(&labels).inc_by(n);
    }
    // Read at scrape time: a registry of their own, encoded before the recorded ones.
    let mut scraped = Registry::default();
    let users_gauge: Gauge = Gauge::default();
    users_gauge.set(users);
    scraped.register("stackhub_users", "Users known to the hub", users_gauge);
    scraped.register("stackhub_servers", "Servers by state and profile", servers);
    let feed = state.db().feed_status();
    let listening: Gauge = Gauge::default();
    listening.set(i64::from(feed.listening));
    scraped.register(
        "stackhub_change_feed_listening",
        "Whether this replica hears the database's change feed (1; its caches are in use) or not \
         (0; every request reads the database). Always 1 on SQLite",
        listening,
    );
    let counter = |n: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(n).unwrap_or(i64::MAX));
        g
    };
    scraped.register(
        "stackhub_change_feed_heard",
        "Change notifications this replica heard from the database",
        counter(feed.heard),
    );
    scraped.register(
        "stackhub_change_feed_losses",
        "Times this replica lost the database's change feed",
        counter(feed.losses),
    );
    let leader: Gauge = Gauge::default();
    leader.set(i64::from(state.db().is_leader()));
    scraped.register(
        "stackhub_leader",
        "Whether this replica leads (1: it runs the managed services and the start-up \
         reconciliation) or follows (0). Always 1 on SQLite",
        leader,
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &scraped)
        .and_then(|()| crate::metrics::encode_recorded(&mut out))
        .map_err(|e| {
            ApiError::internal(std::io::Error::other(format!(
                "cannot encode the metrics: {e}"
            )))
        })?;
    Ok(([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response())
}

/// The `profile` label of a server: the profile of the launch specification it was last
/// started with (resolved by the planner), empty before its first start.
fn profile_of(launch: Option<&str>) -> String {
    launch
        .and_then(|l| serde_json::from_str::<spawner::LaunchSpec>(l).ok())
        .and_then(|l| l.profile.map(|p| p.slug))
        .unwrap_or_default()
}
