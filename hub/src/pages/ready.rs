//! `GET`/`HEAD /hub/ready`: whether this replica should get traffic (the readiness probe, a
//! load balancer's health check). `GET /hub/health` stays the liveness check: it answers 200
//! while the process runs, since restarting a replica helps neither a database outage nor a
//! lost change feed (both heal by themselves).
//!
//! Ready means: a trivial query answers within [`DB_DEADLINE`], and the database's change feed
//! is heard (always on SQLite, whose one replica makes every change itself). A replica that
//! cannot hear the feed still answers correctly (it reads the database for everything), but
//! slower, and it may be the one cut off from the database: the others serve better. The body
//! names every check that failed, with the database's SQLSTATE or the kind of I/O error, never
//! the error's text (it may name the database's user or host): that goes to the log.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::Backend;
use crate::state::AppState;

/// How long the database has to answer the readiness query.
pub(crate) const DB_DEADLINE: Duration = Duration::from_secs(2);

/// 200 `{"ready": true, "database": "ok", "change_feed": "listening"|"local", "leader": bool}`,
/// or 503 `{"ready": false, "message": "..."}` saying what is wrong.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let db = state.db();
    let query = sqlx::query("SELECT 1").execute(db.pool());
    let mut problems = Vec::new();
    // The database's own words, for the log only.
    let mut error = None;
    match tokio::time::timeout(DB_DEADLINE, query).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            problems.push(format!(
                "the database refused the readiness query ({})",
                refusal(&e)
            ));
            error = Some(e.to_string());
        }
        Err(_) => problems.push(format!(
            "the database did not answer the readiness query within {DB_DEADLINE:?}"
        )),
    }
    if !db.feed_status().listening {
        problems.push(
            "not hearing the database's change feed (caches are off; it reconnects by itself)"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        let message = problems.join("; ");
        tracing::warn!(%message, error = error.as_deref().unwrap_or(""), "not ready");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "message": message})),
        )
            .into_response();
    }
    let change_feed = match db.backend() {
        Backend::Sqlite => "local",
        Backend::Postgres => "listening",
    };
    Json(json!({
        "ready": true,
        "database": "ok",
        "change_feed": change_feed,
        "leader": db.is_leader(),
    }))
    .into_response()
}

/// What kind of failure `e` is, for an answer anyone may read: the database's SQLSTATE or the
/// I/O error's kind, never its text (which may name the database's user or host).
fn refusal(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("SQLSTATE {code}"),
            None => "a database error".to_owned(),
        },
        sqlx::Error::Io(io) => format!("connection: {}", io.kind()),
        sqlx::Error::PoolTimedOut => "no connection free".to_owned(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
        _ => "see the hub's log".to_owned(),
    }
}
