//! stackhub's HTTP and WebSocket reverse proxy: a drop-in for configurable-http-proxy.
//!
//! # Layout
//! - `routes`: the route table (longest whole-segment prefix, per-route activity).
//! - `forward`: forwarding one request, header rewriting, error answers.
//! - `h1`: body-less requests over pooled upstream connections without hyper's client tasks.
//! - `fast`: the server side of plain client connections for those requests (splice for big
//!   bodies); hyper serves everything else.
//! - `upgrade`: WebSocket (and other upgrade) tunnels.
//! - `kernel_route`: kernel WebSockets of remote-kernels servers straight to the site gateway.
//! - `net`: upstream connections (TCP with `TCP_NODELAY` and prompt ACKs, TLS over it).
//! - `client_tls`: trust and client certificate for https upstreams (`--client-ssl-*`).
//! - `error_page`: the proxy's own 404/400/503 answers.
//! - `body`: streaming bodies that record activity.
//! - `api`: configurable-http-proxy's REST API.
//! - `server`: accept loops for the public and API listeners.
//! - `workers`: thread-per-core serving of the public listener; `balance` evens connections out.
//! - `tls`, `config`: rustls acceptors and the command line.
//!
//! The hub embeds this crate: it builds a [`Proxy`] over a shared [`RouteTable`], runs [`serve`]
//! on its public listener, and edits the table directly; `stackhub-proxy` runs the same pieces
//! as a process with the REST API ([`serve_api`]) on a second listener.

mod api;
mod balance;
mod body;
mod client_tls;
mod config;
mod error;
mod error_page;
mod fast;
mod forward;
mod h1;
mod hub_cookie;
mod kernel_route;
mod net;
mod routes;
mod server;
mod tls;
mod upgrade;
mod workers;

pub use self::api::Api;
pub use self::body::{ActivityBody, BoxError, DirectBody, LocalBody, ProxyBody};
pub use self::client_tls::{UpstreamTls, UpstreamTlsFiles};
pub use self::config::Args;
pub use self::error::{ConfigError, RouteError};
pub use self::forward::{LocalTarget, LocalUpstream, Peer, Proxy, ProxyOptions};
pub use self::kernel_route::{KERNEL_GATEWAY_KEY, KernelAuthError, KernelChannelAuth};
pub use self::net::QuickAckStream;
pub use self::routes::{Route, RouteData, RouteTable, Target, host_key, normalize};
pub use self::server::{SHUTDOWN_GRACE, serve, serve_api};
pub use self::tls::{ClientAuth, acceptor as tls_acceptor, acceptor_with as tls_acceptor_with};
pub use self::workers::{Workers, default_worker_count};
