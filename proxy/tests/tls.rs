//! `--ssl-key` / `--ssl-cert`: the real binary serves HTTPS, offering HTTP/2 and HTTP/1.1 by ALPN.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Upstream;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

fn client_config(cert: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let pem = std::fs::read(cert).unwrap();
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[tokio::test]
async fn https_with_alpn_h2_and_http11() {
    let pki = common::pki::Pki::new("listener");
    let (key, cert, ca) = (&pki.server_key, &pki.server_cert, &pki.ca);
    let up = Upstream::start().await;
    let (port, api_port) = common::free_port_pair();
    let _child = Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
        .args(["--default-target", &up.url()])
        .arg("--ssl-key")
        .arg(key)
        .arg("--ssl-cert")
        .arg(cert)
        .env("CONFIGPROXY_AUTH_TOKEN", "t")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    for (alpn, version) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let connector = TlsConnector::from(client_config(ca, &[alpn]));
        let mut tcp = None;
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                tcp = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp.expect("proxy did not listen"))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        let req = http::Request::get("/secure/path")
            .header("host", "localhost")
            .version(version)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if version == http::Version::HTTP_2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = {
                let (mut parts, body) = req.into_parts();
                parts.uri = format!("https://localhost:{port}/secure/path")
                    .parse()
                    .unwrap();
                http::Request::from_parts(parts, body)
            };
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), version);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["path"], "/secure/path");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn unreadable_certificate_is_a_usage_error_naming_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args([
            "--port",
            "0",
            "--ssl-key",
            "/nonexistent/key.pem",
            "--ssl-cert",
            "/nonexistent/cert.pem",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}

/// JupyterHub's `internal_ssl` command line: the API port asks for and checks client
/// certificates (`--api-ssl-ca`, `--api-ssl-request-cert`, `--api-ssl-reject-unauthorized`).
#[tokio::test]
async fn api_port_requires_client_certificates_as_internal_ssl_asks() {
    let pki = common::pki::Pki::new("api-mtls");
    let (port, api_port) = common::free_port_pair();
    let _child = Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
        .arg("--api-ssl-key")
        .arg(&pki.server_key)
        .arg("--api-ssl-cert")
        .arg(&pki.server_cert)
        .arg("--api-ssl-ca")
        .arg(&pki.ca)
        .args(["--api-ssl-request-cert", "--api-ssl-reject-unauthorized"])
        .env("CONFIGPROXY_AUTH_TOKEN", "t")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(&pki.ca).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let chain: Vec<_> =
        rustls_pemfile::certs(&mut std::fs::read(&pki.client_cert).unwrap().as_slice())
            .map(Result::unwrap)
            .collect();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&pki.client_key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let with_cert = Arc::new(builder.clone().with_client_auth_cert(chain, key).unwrap());
    let without = Arc::new(builder.with_no_client_auth());

    let routes = |config: Arc<ClientConfig>| async move {
        let mut tcp = None;
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", api_port)).await {
                tcp = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp.expect("API did not listen"))
            .await
            .ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/api/routes")
            .header("host", "localhost")
            .header("authorization", "token t")
            .body(Empty::<Bytes>::new())
            .unwrap();
        Some(send.send_request(req).await.ok()?.status())
    };
    assert_eq!(routes(with_cert).await, Some(http::StatusCode::OK));
    // TLS 1.3: the server's refusal arrives after the client's handshake, at the first read.
    assert_eq!(routes(without).await, None);

    // Requesting certificates without a CA to check them is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_stackhub-proxy"))
        .args(["--port", "0"])
        .arg("--api-ssl-key")
        .arg(&pki.server_key)
        .arg("--api-ssl-cert")
        .arg(&pki.server_cert)
        .arg("--api-ssl-request-cert")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-ssl-") && err.contains("CA"), "{err}");
}
