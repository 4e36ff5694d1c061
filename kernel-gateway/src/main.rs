//! `stackhub-gateway`: parses flags and config, binds, serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kernel_gateway::launcher::slurm::SlurmLauncher;
use kernel_gateway::{ByKernelSpec, Config, KernelManager, Launcher, LocalLauncher};

/// Enterprise Gateway-compatible kernel gateway.
#[derive(Debug, Parser)]
#[command(name = "stackhub-gateway", version)]
struct Cli {
    /// Address to listen on (overrides the config file).
    #[arg(long, env = "STACKHUB_GATEWAY_IP")]
    ip: Option<String>,
    /// Port to listen on (overrides the config file).
    #[arg(long, env = "STACKHUB_GATEWAY_PORT")]
    port: Option<u16>,
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kernel_gateway=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok());
    if let Some(ip) = cli.ip {
        config.ip = ip;
    }
    if let Some(port) = cli.port {
        config.port = port;
    }
    if let Err(e) = config.validate() {
        eprintln!("stackhub-gateway: {e}");
        std::process::exit(64);
    }
    let addr: SocketAddr = format!("{}:{}", config.ip, config.port)
        .parse()
        .with_context(|| format!("invalid listen address {}:{}", config.ip, config.port))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let open = config.is_open();
    let jwt = config.jwt.as_ref().map(|j| j.jwks_url.clone());
    let local = LocalLauncher::with_defaults().with_port_range(config.kernel_port_range);
    let launcher: Arc<dyn Launcher> = match &config.slurm {
        Some(slurm) => {
            let slurm = SlurmLauncher::start(slurm.clone())
                .await
                .context("starting the Slurm launcher")?;
            Arc::new(ByKernelSpec::new(Arc::new(local)).with("slurm", Arc::new(slurm)))
        }
        None => Arc::new(local),
    };
    let manager = Arc::new(KernelManager::new(config, launcher, |k| {
        std::env::var(k).ok()
    }));
    let recovered = manager.recover().await;
    if recovered > 0 {
        tracing::info!(recovered, "re-attached kernels of the previous run");
    }
    tracing::info!(addr = %listener.local_addr()?, open, jwks = ?jwt, "stackhub-gateway listening");
    kernel_gateway::serve(listener, manager, shutdown_signal()).await?;
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM (orchestrators) both start a graceful shutdown that stops kernels.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
