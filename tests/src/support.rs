//! Helpers every end-to-end test uses, kept once: where the workspace and the project's venv
//! are, free ports outside the ephemeral range, and the end of a log for failure messages.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root: the parent of this crate's directory as the test runner gives it
/// (`cargo test` and nextest set `CARGO_MANIFEST_DIR` when they run a test), else as it was at
/// build time. The run-time value matters when one build directory serves several clones
/// (`CARGO_TARGET_DIR` outside the clone): cargo may reuse this library built from another clone.
///
/// # Panics
/// Never in practice: this crate lives one level below the root.
pub fn workspace() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// The project's Python venv (`STACKHUB_VENV`, else `<workspace>/.venv`).
///
/// # Panics
/// When it holds no `jupyterhub-singleuser`: the tests that need it fail, never skip.
pub fn venv() -> PathBuf {
    let venv =
        std::env::var_os("STACKHUB_VENV").map_or_else(|| workspace().join(".venv"), PathBuf::from);
    assert!(
        venv.join("bin/jupyterhub-singleuser").exists(),
        "no jupyterhub-singleuser in {}: run scripts/test (it creates the venv) or set STACKHUB_VENV",
        venv.display()
    );
    venv
}

/// A port in 10000..20000 that is free on every address: outside the ephemeral range
/// (32768 and up), where every `bind(0)` of the tests running beside this one lands, and below
/// the gateway's kernel port range (20000..32000). Each call starts the search elsewhere, so
/// two calls before either port is bound rarely collide.
///
/// # Panics
/// When no port in the range is free.
pub fn free_port() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let seed = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16))
    .wrapping_add(call.wrapping_mul(104_729));
    (0..10_000u32)
        .filter_map(|i| u16::try_from(seed.wrapping_add(i.wrapping_mul(7919)) % 10_000).ok())
        .map(|p| 10_000 + p)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free port in 10000..20000"))
}

/// `n` distinct free ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(n);
    while out.len() < n {
        let p = free_port();
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The last 40 lines of a log file, for failure messages (the test's directory is removed
/// afterwards).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Opens the bokeh WebSocket at `url` (`ws://HOST/.../ws`) of a dashboard page whose session
/// token is `token`, with `headers` added: the bokeh server's first message (its ACK), or the
/// HTTP status the upgrade was answered with instead.
///
/// # Panics
/// When the connection fails otherwise, the server picks another subprotocol, or nothing
/// arrives within 10 s.
pub async fn bokeh_ws(url: &str, token: &str, headers: &[(&str, &str)]) -> Result<String, u16> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::{self, Message};

    let mut req = url.into_client_request().expect("a WebSocket URL");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bokeh, {token}").parse().expect("a header value"),
    );
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
            v.parse().expect("a header value"),
        );
    }
    let (mut ws, resp) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(resp)) => return Err(resp.status().as_u16()),
        Err(e) => panic!("{url}: {e}"),
    };
    assert_eq!(resp.headers()["sec-websocket-protocol"], "bokeh");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("no message from the bokeh server within 10 s")
        .expect("the WebSocket ended")
        .expect("a WebSocket message");
    match first {
        Message::Text(text) => Ok(text.to_string()),
        other => panic!("{url}: {other:?}"),
    }
}

/// The start of every Python script that drives the stock `dask-gateway` client in a test:
/// `json`, `os`, `sys`, `time`, `Gateway` and `GatewayAuth` imported; `EnvAuth`, which sends
/// `Authorization: $GATEWAY_AUTHORIZATION` (a site JWT, an IdP token or a hub token, with its
/// scheme); `say(**kw)`, one JSON line on stdout; and `gateway(auth=None)`, the gateway at
/// `$GATEWAY_ADDRESS` with its scheduler proxy on the same address, through `EnvAuth` unless
/// told otherwise. Any release of the client since 2023.1.1 runs it.
const DASK_CLIENT_PRELUDE: &str = r#"
import json, os, sys, time
from dask_gateway import Gateway
from dask_gateway.auth import GatewayAuth


class EnvAuth(GatewayAuth):
    def pre_request(self, resp):
        return {"Authorization": os.environ["GATEWAY_AUTHORIZATION"]}, None


def say(**kw):
    print(json.dumps(kw), flush=True)


def gateway(auth=None):
    addr = os.environ["GATEWAY_ADDRESS"]
    return Gateway(address=addr, proxy_address="gateway://" + addr.split("://", 1)[1],
                   auth=auth or EnvAuth())
"#;

/// A stock `dask-gateway` client script: `DASK_CLIENT_PRELUDE`'s helpers, then `body`.
pub fn dask_client_script(body: &str) -> String {
    format!("{DASK_CLIENT_PRELUDE}\n{body}")
}
