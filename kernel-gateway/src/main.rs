//! `stackhub-gateway`: parses flags and config, binds, serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kernel_gateway::launcher::k8s::KubeLauncher;
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

/// jemalloc instead of glibc malloc: glibc's growing mmap threshold keeps freed multi-MB kernel
/// outputs in the heap (measured: 23.5 MiB after the benchmark's load vs 12 MiB with jemalloc).
/// Its settings (background purging, 1 s decay) are baked in by `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    if let Err(e) = config.load_launcher_settings() {
        eprintln!("stackhub-gateway: {e}");
        std::process::exit(64);
    }
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
    for warning in kernel_gateway::launcher::shared_account_warnings(&config) {
        tracing::warn!("unsafe for more than one user: {warning}");
    }
    let open = config.is_open();
    let jwt = config.jwt.as_ref().map(|j| j.jwks_url.clone());
    let local = LocalLauncher::with_defaults().with_port_range(config.kernel_port_range);
    let mut named: Vec<(&str, Arc<dyn Launcher>)> = Vec::new();
    if let Some(slurm) = &config.slurm {
        let slurm = SlurmLauncher::start(slurm.clone())
            .await
            .context("starting the Slurm launcher")?;
        named.push(("slurm", Arc::new(slurm)));
    }
    if let Some(k8s) = &config.kubernetes {
        let client = kube::Client::try_default().await.context(
            "cannot reach the Kubernetes API (in-cluster service account or KUBECONFIG)",
        )?;
        tracing::info!(namespace = %k8s.namespace, "kernelspecs with launcher \"kubernetes\" run as pods");
        named.push((
            "kubernetes",
            Arc::new(KubeLauncher::new(client, k8s.clone())),
        ));
    }
    let local: Arc<dyn Launcher> = Arc::new(local);
    let default = match config.default_launcher.as_str() {
        "local" => local.clone(),
        name => named
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| l.clone())
            .with_context(|| format!("default_launcher {name:?} is not configured"))?,
    };
    let mut by_spec = ByKernelSpec::new(default).with("local", local);
    for (name, l) in named {
        by_spec = by_spec.with(name, l);
    }
    let launcher: Arc<dyn Launcher> = Arc::new(by_spec);
    let manager = Arc::new(KernelManager::new(config, launcher, |k| {
        std::env::var(k).ok()
    }));
    let recovered = manager.recover().await;
    if recovered > 0 {
        tracing::info!(recovered, "re-attached kernels of the previous run");
    }
    tracing::info!(addr = %listener.local_addr()?, open, jwks = ?jwt, "stackhub-gateway listening");
    // SIGINT (Ctrl-C) and SIGTERM (orchestrators) both start a graceful shutdown that stops
    // kernels.
    kernel_gateway::serve(listener, manager, async {
        stackhub_common::shutdown_signal().await;
    })
    .await?;
    Ok(())
}
