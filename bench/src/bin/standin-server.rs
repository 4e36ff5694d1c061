//! `standin-server`: a minimal single-user server for the hub benchmarks (`bench/run scale`,
//! `bench/run ha`), started by either hub's local-process spawner in place of
//! `jupyterhub-singleuser` (`spawner.cmd` / `c.Spawner.cmd`).
//!
//! It listens where the spawner says (`JUPYTERHUB_SERVICE_URL`, which both stackhub's and
//! JupyterHub's local-process spawners set: `http://IP:PORT/PREFIX/`) and answers every request
//! with 200 and the body `stand-in PREFIX PATH` (PREFIX: the URL's path, e.g. `/user/NAME/`; PATH:
//! the request's), closing the connection. That
//! satisfies both hubs' readiness checks (any answer below 500 to `GET {url}api` / `GET {url}`)
//! and lets a client tell the server's answer from a hub's, a proxy's or another user's server's.
//! Plain `std`, one thread, one connection at a time (each read bounded by a timeout): ~2 MiB of
//! RSS, most of it shared, so a thousand of them fit. Arguments are ignored (the hubs add `--allow-root` and the like).
//! `STANDIN_SLOW_PREFIX` (a user-name prefix, matched against `JUPYTERHUB_USER`) and
//! `STANDIN_SLOW_MS` in the environment make the servers of matching users wait that long before
//! they listen: a spawn kept in flight (`bench/run ha` kills a replica during one).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let url = std::env::var("JUPYTERHUB_SERVICE_URL")
        .context("JUPYTERHUB_SERVICE_URL is not set (the spawner says where to listen)")?;
    let (addr, prefix) = bind_address(&url)?;
    if let (Ok(slow), Ok(ms)) = (
        std::env::var("STANDIN_SLOW_PREFIX"),
        std::env::var("STANDIN_SLOW_MS"),
    ) {
        let user = std::env::var("JUPYTERHUB_USER").unwrap_or_default();
        if !slow.is_empty() && user.starts_with(&slow) {
            let ms: u64 = ms
                .parse()
                .with_context(|| format!("STANDIN_SLOW_MS is not a number: {ms:?}"))?;
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    let listener = TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("stand-in server for {prefix} listening on {addr}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let _ = answer(stream, &prefix);
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// `http://IP:PORT/PREFIX` → (`IP:PORT`, `/PREFIX`); an empty host means 127.0.0.1.
fn bind_address(url: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("JUPYTERHUB_SERVICE_URL is not an http:// URL: {url:?}");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((host, port)) = authority.rsplit_once(':') else {
        bail!("JUPYTERHUB_SERVICE_URL has no port: {url:?}");
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("JUPYTERHUB_SERVICE_URL has a bad port: {url:?}"))?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((format!("{host}:{port}"), path.to_owned()))
}

/// Read the request head (bounded in size and time), answer 200 `stand-in PREFIX PATH`, close.
fn answer(mut stream: TcpStream, prefix: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let path = line
        .split(|&b| b == b' ')
        .nth(1)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let body = format!("stand-in {prefix} {path}\n");
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bind_address;

    #[test]
    fn bind_address_splits_the_service_url() {
        assert_eq!(
            bind_address("http://127.0.0.1:8123/user/a/").unwrap(),
            ("127.0.0.1:8123".into(), "/user/a/".into())
        );
        assert_eq!(
            bind_address("http://:9/user/b/").unwrap(),
            ("127.0.0.1:9".into(), "/user/b/".into())
        );
        assert!(bind_address("https://x:1/").is_err());
        assert!(bind_address("http://x/").is_err());
    }
}
