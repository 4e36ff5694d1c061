//! A fake spawner for pipeline tests: a tiny HTTP server per spawn answering `GET <prefix>api`
//! (the hub's pipeline, database and proxy are real).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hub::proxy::EmbeddedProxy;
use hub::{HubBuilder, SpawnOrchestrator, SpawnSettings};
use serde_json::json;
use spawner::{ProgressEvent, ProgressSink, ServerId, SpawnError, SpawnRequest, Spawned, State};
use tokio::sync::Mutex;

use super::{Hub, hub};

/// Serves `GET <prefix>api` on a fresh port per spawn, except for user `mute` (never answers).
#[derive(Debug, Default)]
pub struct FakeSpawner {
    pub running: Mutex<HashMap<u16, tokio::task::AbortHandle>>,
    pub envs: Mutex<Vec<BTreeMap<String, String>>>,
}

#[async_trait::async_trait]
impl spawner::Spawner for FakeSpawner {
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = if req.server.user == "mute" {
            tokio::spawn(async move {
                let _keep = listener;
                std::future::pending::<()>().await;
            })
        } else {
            let app = axum::Router::new().route(
                &format!("{}api", req.prefix),
                axum::routing::get(|| async { axum::Json(json!({"version": "2.0.0"})) }),
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

    async fn poll(&self, _: &ServerId, state: &State) -> Result<spawner::Status, SpawnError> {
        let port = state.0["port"].as_u64().unwrap_or(0) as u16;
        Ok(if self.running.lock().await.contains_key(&port) {
            spawner::Status::Running
        } else {
            spawner::Status::Exited(Some(0))
        })
    }

    async fn stop(&self, _: &ServerId, state: &State, _now: bool) -> Result<(), SpawnError> {
        let port = state.0["port"].as_u64().unwrap_or(0) as u16;
        if let Some(task) = self.running.lock().await.remove(&port) {
            task.abort();
        }
        Ok(())
    }
}

pub struct Setup {
    pub hub: Hub,
    pub table: Arc<proxy::RouteTable>,
    pub spawner: Arc<FakeSpawner>,
    pub orchestrator: SpawnOrchestrator,
}

pub fn settings(start_timeout: Duration) -> SpawnSettings {
    SpawnSettings {
        hub_api_url: "http://127.0.0.1:8081/hub/api".to_owned(),
        base_url: "/".to_owned(),
        public_url: None,
        subdomain_host: None,
        start_timeout,
        slow_spawn_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(10),
    }
}

pub async fn setup(spawner: Arc<FakeSpawner>, start_timeout: Duration) -> Setup {
    setup_on(hub().await, spawner, start_timeout)
}

/// [`setup`] over a given hub.
pub fn setup_on(base: Hub, spawner: Arc<FakeSpawner>, start_timeout: Duration) -> Setup {
    setup_with(base, spawner, settings(start_timeout))
}

/// [`setup_on`] with the given pipeline settings, wired by the hub's own builder.
pub fn setup_with(base: Hub, spawner: Arc<FakeSpawner>, settings: SpawnSettings) -> Setup {
    let table = Arc::new(proxy::RouteTable::new());
    let built = HubBuilder::new(base.state.config().clone(), base.state.db().clone())
        .hub_api_url(settings.hub_api_url.clone())
        .spawn_settings(settings)
        .spawner(
            spawner.clone(),
            Arc::new(EmbeddedProxy::new(Arc::clone(&table))),
        )
        .build();
    Setup {
        hub: Hub {
            app: built.app,
            state: built.state,
        },
        table,
        spawner,
        orchestrator: built.orchestrator.expect("built with a spawner"),
    }
}
