//! Spawner doubles for tests of the layers above (feature `test-util`): [`FakeSpawner`] runs no
//! JupyterLab but a tiny HTTP server per start that answers `GET <prefix>api` as
//! `jupyterhub-singleuser` does, so the hub's real pipeline, database and proxy can be driven.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use tokio::sync::Mutex;

use crate::{
    LaunchSpec, ProgressEvent, ProgressSink, ServerId, SpawnError, SpawnRequest, Spawned, Spawner,
    State, Status,
};

/// Serves `GET <prefix>api` on a fresh loopback port per start, except for the user `mute`
/// (its port accepts connections and never answers) and users whose names start with `slow`
/// (answer 503 until [`FakeSpawner::open_slow`] is set). Records what each start was given.
#[derive(Debug, Default)]
pub struct FakeSpawner {
    /// Once set, the servers of `slow…` users answer.
    pub open_slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The servers running, by port.
    pub running: Mutex<HashMap<u16, tokio::task::AbortHandle>>,
    /// The environment of every start, in order (holds tokens: test use only).
    pub envs: Mutex<Vec<BTreeMap<String, String>>>,
    /// The launch specification of every start, in order.
    pub specs: Mutex<Vec<LaunchSpec>>,
}

fn port_of(server: &ServerId, state: &State) -> Result<u16, SpawnError> {
    state
        .0
        .get("port")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| SpawnError::BadState {
            server: server.clone(),
            reason: "no port".to_owned(),
        })
}

#[async_trait::async_trait]
impl Spawner for FakeSpawner {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn start(
        &self,
        req: SpawnRequest,
        progress: ProgressSink,
    ) -> Result<Spawned, SpawnError> {
        progress.send(ProgressEvent::new(10, "fake launch"));
        self.envs.lock().await.push(req.env.clone());
        self.specs.lock().await.push(req.spec.clone());
        let launch = |e: std::io::Error| SpawnError::Launch {
            server: req.server.clone(),
            reason: "cannot listen on loopback".to_owned(),
            source: Some(e),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(launch)?;
        let port = listener.local_addr().map_err(launch)?.port();
        let task = if req.server.user == "mute" {
            tokio::spawn(async move {
                let _keep = listener;
                std::future::pending::<()>().await;
            })
        } else {
            let open = std::sync::Arc::clone(&self.open_slow);
            let slow = req.server.user.starts_with("slow");
            let app = axum::Router::new().route(
                &format!("{}api", req.prefix),
                axum::routing::get(move || async move {
                    use axum::response::IntoResponse;
                    if slow && !open.load(std::sync::atomic::Ordering::SeqCst) {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        axum::Json(json!({"version": "2.0.0"})).into_response()
                    }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            })
        };
        self.running.lock().await.insert(port, task.abort_handle());
        Ok(Spawned {
            url: format!("http://127.0.0.1:{port}"),
            state: State(json!({"port": port})),
        })
    }

    async fn poll(&self, server: &ServerId, state: &State) -> Result<Status, SpawnError> {
        let port = port_of(server, state)?;
        Ok(if self.running.lock().await.contains_key(&port) {
            Status::Running
        } else {
            Status::Exited(Some(0))
        })
    }

    async fn stop(&self, server: &ServerId, state: &State, _now: bool) -> Result<(), SpawnError> {
        let Ok(port) = port_of(server, state) else {
            return Ok(());
        };
        if let Some(task) = self.running.lock().await.remove(&port) {
            task.abort();
        }
        Ok(())
    }
}
