//! `stackhub`: parse the command line and config, connect the database, bind, serve.
//!
//! Exit codes: 64 (`EX_USAGE`) for bad configuration, 1 for run-time failures.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hub::SpawnerKind;
use hub::proxy::{ChpProxy, EmbeddedProxy, InProcessHub, Proxy};
use hub::{Backend, BuiltHub, Config, Db, HubBuilder, OidcAuth, ProcessEnv};
use spawner::k8s::KubeSpawner;
use spawner::{LocalProcessConfig, LocalProcessSpawner, Spawner};
use tokio::net::TcpListener;
use tracing::Instrument;

/// The stackhub hub.
#[derive(Debug, Parser)]
#[command(name = "stackhub", version)]
struct Cli {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Public listen address (overrides config and environment).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Listen port (overrides config and environment).
    #[arg(long)]
    port: Option<u16>,
}

const EX_USAGE: u8 = 64;

/// `RUST_LOG` (default `info`), with the embedded S3 server (s3s) capped at `info`: at debug
/// level it logs whole requests, credential headers included, and secrets never go to the log.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match "s3s=info".parse() {
        Ok(capped) => filter.add_directive(capped),
        Err(_) => filter,
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .init();
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stackhub: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(ip) = cli.ip {
        config.ip = ip;
    }
    if let Some(port) = cli.port {
        config.port = port;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stackhub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.db_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    }
    let db = Db::connect(&config.database_url()).await?;
    hub::bootstrap_admin_token(&db, &config.admin_service_name, config.admin_token.as_ref())
        .await?;
    let oidc = match &config.auth.oidc {
        Some(oidc_config) => {
            let secret = config
                .cookie_secret
                .as_ref()
                .and_then(|s| hex::decode(s.expose()).ok());
            let oidc = OidcAuth::new(oidc_config.clone(), secret.as_deref())
                .context("cannot set up the OpenID Connect client")?;
            tracing::info!(issuer = %oidc_config.issuer, "logins go through OpenID Connect");
            Some(Arc::new(oidc))
        }
        None => None,
    };
    if oidc.is_none() && config.auth.dev_password.is_none() {
        tracing::warn!("no auth.dev_password configured: nobody can log in with a password");
    }
    let hub_addr = SocketAddr::new(config.hub_ip, config.hub_port);
    let hub_listener = TcpListener::bind(hub_addr)
        .await
        .with_context(|| format!("cannot listen on {hub_addr} (hub_ip/hub_port)"))?;
    let hub_addr = hub_listener.local_addr()?;
    // With `[proxy] api_url` an external proxy serves the public port.
    let listener = match &config.proxy.api_url {
        Some(_) => None,
        None => {
            let addr = SocketAddr::new(config.ip, config.port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            Some(listener)
        }
    };

    // The embedded proxy: the hub is the default route, servers get `/user/NAME[/SERVER]`.
    let routes = Arc::new(proxy::RouteTable::new());
    let connect_ip = if hub_addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        hub_addr.ip()
    };
    let hub_url = format!("http://{}", SocketAddr::new(connect_ip, hub_addr.port()));
    // With per-user origins the proxy routes by host and the hub's route is the catch-all `/`
    // (JupyterHub's `hub_routespec`): requests for servers that are not running reach it.
    let hub_route = if config.subdomain_host.is_some() {
        "/"
    } else {
        config.base_url.as_str()
    };
    let route_proxy: Arc<dyn Proxy> = match &config.proxy.api_url {
        Some(api_url) => {
            let external = ChpProxy::new(
                api_url,
                config.proxy.auth_token.clone(),
                Some((hub_route.to_owned(), hub_url.clone())),
            )
            .context("cannot use the proxy API ([proxy] api_url)")?;
            external
                .ensure_hub_route()
                .await
                .context("cannot add the hub's route on the external proxy")?;
            tracing::info!(api_url = %api_url, "routing through an external proxy");
            Arc::new(external)
        }
        None => {
            let mut data = serde_json::Map::new();
            data.insert("hub".to_owned(), serde_json::Value::Bool(true));
            data.insert(
                "target".to_owned(),
                serde_json::Value::String(hub_url.clone()),
            );
            routes
                .add(hub_route, data)
                .context("cannot add the hub's default route")?;
            Arc::new(EmbeddedProxy::new(Arc::clone(&routes)))
        }
    };

    let spawner = build_spawner(&config).await?;
    if let Some(warning) = hub::shared_account_warning(&config) {
        tracing::warn!(mode = "spawner.kind = local", "{warning}");
    }
    let connect_url = config
        .hub_connect_url
        .clone()
        .unwrap_or_else(|| hub_url.clone());
    let hub_api_url = format!(
        "{}{}hub/api",
        connect_url.trim_end_matches('/'),
        config.base_url
    );
    // Sites for remote kernels (and the embedded S3 store they exchange data through).
    let sites = hub::sites::SiteRegistry::start(&config, &ProcessEnv)
        .await
        .context("cannot start the site registry")?;
    let server_config_dir = server_config_dir(&config)?;
    let mut builder = HubBuilder::new(config, db)
        .hub_api_url(hub_api_url)
        .spawner(spawner, Arc::clone(&route_proxy))
        .sites(Arc::clone(&sites))
        .server_config_dir(server_config_dir);
    if let Some(oidc) = oidc {
        builder = builder.oidc(oidc);
    }
    let BuiltHub {
        state,
        orchestrator,
        app,
    } = builder.build();
    let orchestrator = orchestrator.context("the hub was built without its spawner")?;
    let db = state.db().clone();
    let replica_span = tracing::info_span!("replica", replica = %db.replica());
    // Start-up reconciliation runs on the leader only. On PostgreSQL pending spawns and stops
    // are left to their leases (another replica's, in flight, or taken over by the leader when
    // their replica died); a SQLite hub is alone and stops those it finds.
    if db.is_leader() {
        if db.backend() == Backend::Postgres {
            tracing::info!(parent: &replica_span, others = db.other_replicas().await?,
                "reconciling; pending spawns and stops are left to their leases");
            orchestrator
                .reconcile_beside_replicas()
                .instrument(replica_span.clone())
                .await?;
        } else {
            orchestrator
                .reconcile()
                .instrument(replica_span.clone())
                .await?;
        }
    } else {
        tracing::info!(parent: &replica_span,
            "another replica leads: no start-up reconciliation (routes follow the database)");
    }
    // Services: registered (tokens, roles, OAuth clients) by the leader, routed by every
    // replica, and the managed ones started by the leader (see `lead`).
    let services = Arc::clone(state.services());
    let leadership = db.leadership();
    let registered = db.is_leader();
    if registered {
        services
            .register(state.db(), &state.config().admin_service_name)
            .await?;
    }
    services.add_routes(route_proxy.as_ref()).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Managed services run beside the hub (same host, same pod): they call its API over
    // loopback, not through `hub_connect_url` (a Service name single-user pods resolve).
    let local_api_url = format!("{hub_url}{}hub/api", state.config().base_url);
    let lead_task = tokio::spawn(
        lead(
            state.clone(),
            local_api_url,
            stop_rx.clone(),
            (leadership, registered),
        )
        .instrument(replica_span),
    );
    // Sites' health: checked by the leader, read from the database by the other replicas.
    let health_task = sites.spawn_health_checks(db.clone(), stopped(stop_rx.clone()));
    // Replicas: the routes follow servers started and stopped through any of them.
    let route_task = (state.db().backend() == Backend::Postgres)
        .then(|| orchestrator.follow_routes(Arc::clone(&services), stopped(stop_rx.clone())));
    // Replicas: leases on pending spawns and stops, taken over from replicas that die.
    let lease_task = (state.db().backend() == Backend::Postgres)
        .then(|| orchestrator.keep_leases(stopped(stop_rx.clone())));
    let proxy_task = match listener {
        Some(listener) => {
            // Requests for the hub's own route never leave the process (see `InProcessHub`).
            let addr = listener.local_addr()?;
            let options = proxy::ProxyOptions {
                local: Some(proxy::LocalTarget {
                    authority: SocketAddr::new(connect_ip, hub_addr.port()).to_string(),
                    upstream: Arc::new(InProcessHub::new(app)),
                }),
                kernel_auth: Some(Arc::new(hub::HubKernelAuth::new(state.clone()))),
                upstream_tls: upstream_tls(&sites)
                    .context("cannot set up TLS toward site gateways")?,
                host_routing: state.config().subdomain_host.is_some(),
                ..proxy::ProxyOptions::default()
            };
            let public = Arc::new(
                proxy::Proxy::new(Arc::clone(&routes), options)
                    .context("cannot set up the proxy")?,
            );
            tracing::info!(%addr, hub = %hub_addr, "stackhub listening");
            Some(tokio::spawn(
                proxy::serve(listener, public, None, stopped(stop_rx.clone()))
                    .instrument(tracing::info_span!("proxy")),
            ))
        }
        None => {
            tracing::info!(hub = %hub_addr, "stackhub listening behind the external proxy");
            None
        }
    };
    tokio::spawn(async move {
        stackhub_common::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    hub::serve(hub_listener, state, stopped(stop_rx)).await?;
    for task in [route_task, lease_task].into_iter().flatten() {
        let _ = task.await;
    }
    let _ = lead_task.await;
    orchestrator.shutdown().await;
    if let Some(task) = proxy_task {
        let _ = task.await;
    }
    let _ = health_task.await;
    sites.shutdown().await;
    db.close().await;
    tracing::info!("stackhub stopped");
    Ok(())
}

/// What only the leader does, for as long as it leads: run the managed services. A replica
/// that starts leading later (the leader died) registers the services first: a managed
/// service's token made at start-up is the leader's (`registered`: done at start-up already,
/// as the leader, and still valid unless the leadership changed since `leading` was taken).
async fn lead(
    state: hub::AppState,
    local_api_url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    (mut leading, mut registered): (tokio::sync::watch::Receiver<bool>, bool),
) {
    let db = state.db().clone();
    if leading.has_changed().unwrap_or(true) {
        registered = false;
    }
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            gone = async { leading.wait_for(|v| *v).await.is_err() } => if gone { return },
        }
        if !registered {
            let services = state.services();
            if let Err(e) = services
                .register(&db, &state.config().admin_service_name)
                .await
            {
                tracing::error!(error = %e, "leading, but cannot register the services; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        registered = false;
        tracing::info!("leading: starting the managed services");
        let supervisor = hub::Supervisor::start(state.services(), state.config(), &local_api_url);
        let stopping = tokio::select! {
            _ = stop.wait_for(|v| *v) => true,
            _ = leading.wait_for(|v| !*v) => false,
        };
        if !stopping {
            tracing::warn!("no longer leading: stopping the managed services");
        }
        supervisor.shutdown().await;
        if stopping {
            return;
        }
    }
}

/// The proxy's trust for https upstreams: the system roots plus every site's private CA.
fn upstream_tls(
    sites: &hub::sites::SiteRegistry,
) -> Result<proxy::UpstreamTls, proxy::ConfigError> {
    let files = proxy::UpstreamTlsFiles {
        ca: sites
            .sites()
            .iter()
            .filter_map(|s| s.ca_file.clone())
            .collect(),
        ..proxy::UpstreamTlsFiles::default()
    };
    if files.is_empty() {
        Ok(proxy::UpstreamTls::system())
    } else {
        proxy::UpstreamTls::from_files(&files)
    }
}

/// Where single-user servers find the hub's jupyter_server config: `spawner.server_config_dir`
/// when set (a path inside the server's image), else written under the data directory (local
/// servers share the hub's file system).
fn server_config_dir(config: &Config) -> anyhow::Result<String> {
    if let Some(dir) = &config.spawner.server_config_dir {
        return Ok(dir.clone());
    }
    let dir = std::path::absolute(config.data_dir.join("server-config"))
        .context("cannot resolve the data directory")?;
    let dir = hub::write_server_config(&dir)
        .with_context(|| format!("cannot write the servers' config in {}", dir.display()))?;
    Ok(dir.display().to_string())
}

/// The spawner `spawner.kind` asks for.
async fn build_spawner(config: &Config) -> anyhow::Result<Arc<dyn Spawner>> {
    match config.spawner.kind {
        SpawnerKind::Local => {
            let mut spawn_config = LocalProcessConfig::new(
                std::path::absolute(&config.spawner.venv)?,
                std::path::absolute(&config.data_dir)?,
            );
            if !config.spawner.cmd.is_empty() {
                spawn_config.cmd.clone_from(&config.spawner.cmd);
            }
            spawn_config.args.clone_from(&config.spawner.args);
            spawn_config
                .environment
                .clone_from(&config.spawner.environment);
            spawn_config.stop_grace = Duration::from_secs(config.spawner.stop_grace);
            Ok(Arc::new(LocalProcessSpawner::new(spawn_config)))
        }
        SpawnerKind::Kubernetes => {
            let settings = config
                .spawner
                .kubernetes
                .clone()
                .context("spawner.kind = \"kubernetes\" without its settings")?;
            let spawner = KubeSpawner::from_environment(settings).await.context(
                "cannot reach the Kubernetes API (in-cluster service account or KUBECONFIG)",
            )?;
            tracing::info!(hub_id = %spawner.config().hub_id, "servers run as Kubernetes pods");
            Ok(Arc::new(spawner))
        }
    }
}
