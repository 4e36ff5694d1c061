//! `stackhub-proxy`: the proxy as a process, started like configurable-http-proxy.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use proxy::{Api, Args, RouteTable, Workers};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `EX_USAGE`: bad command line or configuration.
const EX_USAGE: u8 = 64;
/// `EX_UNAVAILABLE`: a listener could not be bound.
const EX_UNAVAILABLE: u8 = 69;

/// jemalloc instead of glibc malloc: fewer cycles per proxied request (its thread caches skip
/// glibc's arena locking and consolidation; `bench/run proxy` measures the difference).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stackhub-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    // Everything is checked before anything binds.
    let setup = || -> Result<_, String> {
        let public = args.public_addr()?;
        let api = args.api_addr()?;
        let options = args.proxy_options().map_err(|e| e.to_string())?;
        let tls = match (&args.ssl_cert, &args.ssl_key) {
            (Some(cert), Some(key)) => {
                let clients = args.public_client_auth();
                let acceptor = proxy::tls_acceptor_with(cert, key, true, &clients);
                Some(acceptor.map_err(|e| format!("--ssl-*: {e}"))?)
            }
            _ => None,
        };
        let api_tls = match (&args.api_ssl_cert, &args.api_ssl_key) {
            (Some(cert), Some(key)) => {
                let clients = args.api_client_auth();
                let acceptor = proxy::tls_acceptor_with(cert, key, false, &clients);
                Some(acceptor.map_err(|e| format!("--api-ssl-*: {e}"))?)
            }
            _ => None,
        };
        let routes = Arc::new(RouteTable::new());
        if let Some(target) = &args.default_target {
            let mut data = Map::new();
            data.insert("target".into(), Value::String(target.clone()));
            routes
                .add("/", data)
                .map_err(|e| format!("--default-target: {e}"))?;
        }
        Ok((public, api, tls, api_tls, routes, options))
    };
    let (public_addr, api_addr, tls, api_tls, routes, options) = match setup() {
        Ok(parts) => parts,
        Err(msg) => {
            eprintln!("stackhub-proxy: {msg}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let token = std::env::var("CONFIGPROXY_AUTH_TOKEN").ok();
    if token.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("REST API is not authenticated: set CONFIGPROXY_AUTH_TOKEN");
    }

    let (public, api) = match (
        std::net::TcpListener::bind(public_addr),
        TcpListener::bind(api_addr).await,
    ) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) => return bind_failed(public_addr, &e),
        (_, Err(e)) => return bind_failed(api_addr, &e),
    };
    tracing::info!(
        "proxying {}://{} ; API at {}://{}/api/routes",
        if tls.is_some() { "https" } else { "http" },
        public.local_addr().unwrap_or(public_addr),
        if api_tls.is_some() { "https" } else { "http" },
        api.local_addr().unwrap_or(api_addr),
    );

    let shutdown = CancellationToken::new();
    let workers = args
        .workers
        .map_or_else(proxy::default_worker_count, usize::from);
    let workers = match Workers::start(
        public,
        Arc::clone(&routes),
        &options,
        tls,
        workers,
        &shutdown,
    ) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("stackhub-proxy: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let api_task = tokio::spawn(proxy::serve_api(
        api,
        Api::new(routes, token),
        api_tls,
        shutdown.clone().cancelled_owned(),
    ));
    // SIGTERM is how JupyterHub and process supervisors stop us; SIGINT is Ctrl-C in a terminal.
    stackhub_common::shutdown_signal().await;
    shutdown.cancel();
    let _ = api_task.await;
    let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    ExitCode::SUCCESS
}

fn bind_failed(addr: std::net::SocketAddr, e: &std::io::Error) -> ExitCode {
    eprintln!("stackhub-proxy: cannot listen on {addr}: {e}");
    ExitCode::from(EX_UNAVAILABLE)
}

fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = match level {
            "debug" | "info" | "warn" | "error" | "trace" => level,
            _ => "info",
        };
        EnvFilter::new(format!("proxy={level},stackhub_proxy={level},warn"))
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
