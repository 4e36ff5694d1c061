//! Pipeline tests over the spawner crate's [`FakeSpawner`] (a tiny HTTP server per spawn
//! answering `GET <prefix>api`); the hub's pipeline, database and proxy are real.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use hub::proxy::EmbeddedProxy;
use hub::{HubBuilder, SpawnOrchestrator, SpawnSettings};

use super::{Hub, hub};

pub use spawner::testing::FakeSpawner;

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
        oauth_client_allowed_scopes: Vec::new(),
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
