//! `kernel-route-proxy`: the proxy library as the hub embeds it, for the remote-kernel benchmark
//! (`bench/run remote`). It serves one remote-kernels route, `/user/USER/`, whose single-user
//! target is `--relay-target` (by default an address where nothing listens, so a request that is
//! relayed instead of taking the direct route fails loudly) and whose `kernel_gateway` data names
//! `--gateway-url`. A static authoriser accepts `--hub-token` and presents
//! `Authorization: token <--gateway-token>` to the gateway.
//!
//! ```text
//! kernel-route-proxy --port 8000 --gateway-url http://127.0.0.1:8888 --hub-token H --gateway-token G
//! # ws://127.0.0.1:8000/user/bench/api/kernels/ID/channels  (Authorization: token H)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use proxy::{KernelAuthError, KernelChannelAuth, Proxy, ProxyOptions, RouteTable};
use serde_json::{Map, Value, json};

/// The proxy library with one remote-kernels route and a static authoriser.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    ip: IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// The site gateway kernel WebSockets go to.
    #[arg(long)]
    gateway_url: String,
    /// The hub token clients present.
    #[arg(long, env = "BENCH_HUB_TOKEN")]
    hub_token: String,
    /// The token presented to the gateway.
    #[arg(long, env = "BENCH_GATEWAY_TOKEN")]
    gateway_token: String,
    /// The server's user.
    #[arg(long, default_value = "bench")]
    user: String,
    /// The site name passed to the authoriser.
    #[arg(long, default_value = "bench")]
    site: String,
    /// The single-user server of the route (gets whatever is relayed).
    #[arg(long, default_value = "http://127.0.0.1:9")]
    relay_target: String,
}

/// Accepts one hub token for one user and site.
#[derive(Debug)]
struct StaticAuth {
    user: String,
    site: String,
    hub_token: String,
    credential: HeaderValue,
}

impl KernelChannelAuth for StaticAuth {
    fn authorize<'a>(
        &'a self,
        user: &'a str,
        _server: &'a str,
        site: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<HeaderValue>, KernelAuthError>> {
        let ok = user == self.user && site == self.site && token == self.hub_token;
        Box::pin(async move { Ok(ok.then(|| self.credential.clone())) })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut credential = HeaderValue::from_str(&format!("token {}", args.gateway_token))
        .context("--gateway-token is not a valid header value")?;
    credential.set_sensitive(true);
    let auth = StaticAuth {
        user: args.user.clone(),
        site: args.site.clone(),
        hub_token: args.hub_token,
        credential,
    };
    let routes = Arc::new(RouteTable::new());
    let mut data = Map::new();
    data.insert("target".into(), Value::String(args.relay_target));
    data.insert(
        proxy::KERNEL_GATEWAY_KEY.into(),
        json!({"url": args.gateway_url, "site": args.site, "user": args.user}),
    );
    routes
        .add(&format!("/user/{}/", args.user), data)
        .context("cannot add the route")?;
    let options = ProxyOptions {
        kernel_auth: Some(Arc::new(auth)),
        ..ProxyOptions::default()
    };
    let proxy = Arc::new(Proxy::new(routes, options).context("cannot set up the proxy")?);
    let addr = SocketAddr::new(args.ip, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("kernel-route-proxy listening on {addr}");
    proxy::serve(listener, proxy, None, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
