//! `stackhub`: parse the command line and config, connect the database, bind, serve.
//!
//! Exit codes: 64 (`EX_USAGE`) for bad configuration, 1 for run-time failures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hub::{AppState, Config, Db, ProcessEnv};
use tokio::net::TcpListener;

/// The stackhub hub.
#[derive(Debug, Parser)]
#[command(name = "stackhub", version)]
struct Cli {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (overrides config and environment).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Listen port (overrides config and environment).
    #[arg(long)]
    port: Option<u16>,
}

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
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
    if config.auth.dev_password.is_none() {
        tracing::warn!("no auth.dev_password configured: nobody can log in with a password");
    }
    let addr = SocketAddr::new(config.ip, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "stackhub listening");
    let state = AppState::new(config, db);
    hub::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stackhub stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C, interactive use) or SIGTERM (service managers, Kubernetes).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
