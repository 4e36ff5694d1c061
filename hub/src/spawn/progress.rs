//! Spawn progress served by any replica: the events a spawn's owner stores (see `track`) are
//! streamed from the database by a replica that does not run the spawn itself, following new
//! ones as the change feed announces them (and at least once a second).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ProgressStream;
use super::track::is_final;
use crate::db::{self, Db};

/// How often a stored stream looks again when nothing is announced.
const RECHECK: Duration = Duration::from_secs(1);
/// How long a stream waits for the final event of a spawn that is no longer pending before
/// it says how the spawn ended from the server's row.
const FINAL_GRACE: Duration = Duration::from_secs(2);

/// The final event of a spawn that ended ready, the server at `url`.
pub(super) fn ready_event(url: &str) -> Value {
    json!({
        "progress": 100,
        "ready": true,
        "message": format!("Server ready at {url}"),
        "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"),
        "url": url,
    })
}

/// The stored events of server `server_id`'s spawn, then the new ones as they are stored,
/// until the final one. A spawn no longer pending whose final event does not come within
/// [`FINAL_GRACE`] ends with one made from the row (`url`: the server's URL when ready).
pub(super) fn stored_stream(db: Db, server_id: i64, url: String) -> ProgressStream {
    struct S {
        db: Db,
        id: i64,
        url: String,
        next: i64,
        buf: VecDeque<Value>,
        watch: tokio::sync::watch::Receiver<u64>,
        ended_at: Option<Instant>,
        done: bool,
    }
    let watch = db.progress_watch();
    let s = S {
        db,
        id: server_id,
        url,
        next: 0,
        buf: VecDeque::new(),
        watch,
        ended_at: None,
        done: false,
    };
    stream::unfold(s, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(ev) = s.buf.pop_front() {
                s.done = is_final(&ev);
                return Some((ev, s));
            }
            s.watch.borrow_and_update();
            match read(&s.db, s.id, s.next).await {
                Ok((events, pending, ready)) => {
                    if let Some((last, _)) = events.last() {
                        s.next = last + 1;
                    }
                    s.buf.extend(events.into_iter().map(|(_, e)| e));
                    if !s.buf.is_empty() {
                        continue;
                    }
                    if !pending {
                        let since = *s.ended_at.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FINAL_GRACE {
                            s.done = true;
                            let ev = if ready {
                                ready_event(&s.url)
                            } else {
                                json!({"progress": 100, "failed": true, "message": "Spawn ended"})
                            };
                            return Some((ev, s));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(server_id = s.id, error = %e, "cannot read spawn progress");
                }
            }
            let wait = if s.ended_at.is_some() {
                Duration::from_millis(200)
            } else {
                RECHECK
            };
            let _ = tokio::time::timeout(wait, s.watch.changed()).await;
        }
    })
    .boxed()
}

/// Events from `from` on, whether the server is still pending, and whether it is ready.
async fn read(db: &Db, id: i64, from: i64) -> Result<(Vec<(i64, Value)>, bool, bool), sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let events = db::leases::events(&mut conn, id, from).await?;
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT pending, url FROM servers WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let (pending, url) = row.unwrap_or((None, None));
    Ok((
        events,
        pending.as_deref() == Some("spawn"),
        pending.is_none() && url.is_some(),
    ))
}

/// The final message of the last spawn of server `server_id` if it failed (its last stored
/// event), as long as the server is neither pending nor running.
pub(super) async fn stored_failure(db: &Db, server_id: i64) -> Option<String> {
    let mut conn = db.pool().acquire().await.ok()?;
    let last = db::leases::last_event(&mut conn, server_id).await.ok()??;
    last.get("failed")?;
    Some(
        last.get("message")
            .and_then(Value::as_str)
            .unwrap_or("Spawn failed")
            .to_owned(),
    )
}

impl super::SpawnOrchestrator {
    /// The progress of `server`'s spawn: this replica's own track while it runs the spawn (or
    /// its failure), else the stored events of a spawn another replica runs, else the ready
    /// event of a running server.
    pub(super) async fn progress_of(
        &self,
        server: &super::ServerRef,
    ) -> Result<ProgressStream, crate::error::ApiError> {
        use crate::error::ApiError;
        if let Some(track) = self.track(&server.user, &server.server).await
            && (!track.finished() || track.failed())
        {
            return Ok(track.stream());
        }
        let row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .map_err(super::pipeline::db_err)?
            .ok_or_else(ApiError::no_access)?;
        let url = self.names(&server.user, &server.server).url();
        if row.pending.as_deref() == Some("spawn") {
            return Ok(stored_stream(self.inner.db.clone(), row.id, url));
        }
        if row.ready() {
            let ev = ready_event(&url);
            return Ok(stream::once(async move { ev }).boxed());
        }
        if !row.active() && stored_failure(&self.inner.db, row.id).await.is_some() {
            return Ok(stored_stream(self.inner.db.clone(), row.id, url));
        }
        Err(ApiError::BadRequest(format!(
            "Server {}/{} is not running",
            server.user, server.server
        )))
    }

    /// Why `server`'s last spawn failed, from this replica's track or the stored events.
    pub(super) async fn failure_of(&self, server: &super::ServerRef) -> Option<String> {
        if let Some(track) = self.track(&server.user, &server.server).await {
            return track.failure();
        }
        let row = self
            .inner
            .db
            .server(&server.user, &server.server)
            .await
            .ok()??;
        if row.active() {
            return None;
        }
        stored_failure(&self.inner.db, row.id).await
    }
}
