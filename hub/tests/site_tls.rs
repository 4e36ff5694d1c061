//! A site gateway served over https with a certificate from a private CA: with `ca_file` the
//! hub's health check trusts it; a gateway whose CA nobody configured is down and the reason
//! says TLS. (The sites' CA files are trusted together, by the hub as by its proxy.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use hub::Config;
use hub::sites::SiteRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("openssl must be installed to make test certificates (scripts/test installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a `localhost` server certificate signed by it: (ca, cert, key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-nodes", "-days", "1"];
    args.extend(ec);
    args.extend([
        "-subj",
        "/CN=site CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req", "-nodes"];
    args.extend(ec);
    args.extend(["-subj", "/CN=gw", "-keyout", "gw.key", "-out", "gw.csr"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("gw.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "gw.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "gw.ext",
            "-out",
            "gw.pem",
        ],
    );
    (dir.join("ca.pem"), dir.join("gw.pem"), dir.join("gw.key"))
}

/// An https server answering every request with 200 `{}` (a gateway's `GET /api`).
async fn https_gateway(cert: &Path, key: &Path) -> u16 {
    let acceptor = proxy::tls_acceptor(cert, key, false).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn private_ca_of_an_https_gateway() {
    let dir = std::env::temp_dir().join(format!("stackhub-site-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = private_ca(&dir);
    let port = https_gateway(&cert, &key).await;
    // Another site's gateway, with a certificate from a CA nobody configured.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, other_cert, other_key) = private_ca(&other);
    let other_port = https_gateway(&other_cert, &other_key).await;
    let config = format!(
        "data_dir = {data:?}\n[s3]\nembedded = false\n\
         [[sites]]\nid = \"lumi\"\nname = \"LUMI Bridge\"\n\
         gateway_url = \"https://localhost:{port}/\"\nca_file = {ca:?}\n\
         [[sites]]\nid = \"leonardo\"\nname = \"LEONARDO Bridge\"\n\
         gateway_url = \"https://127.0.0.1:{other_port}/\"\n",
        data = dir.join("data").display().to_string(),
        ca = ca.display().to_string(),
    );
    let file = dir.join("stackhub.toml");
    std::fs::write(&file, config).unwrap();
    let env = HashMap::<&str, &str>::new();
    let config = Config::load(Some(&file), &env).unwrap();
    let sites = SiteRegistry::start(&config, &env).await.unwrap();
    sites.check_all().await;

    // Neither site has S3 here, so both are unavailable; what matters is the gateway's part.
    let lumi = sites.health("lumi").await.unwrap();
    assert!(
        !lumi.reasons.iter().any(|r| r.contains("gateway")),
        "{:?}",
        lumi.reasons
    );
    let leonardo = sites.health("leonardo").await.unwrap();
    let gateway = leonardo
        .reasons
        .iter()
        .find(|r| r.contains("gateway"))
        .expect("an untrusted gateway is a reason");
    assert!(
        gateway.contains("TLS") && gateway.contains("certificate"),
        "{gateway}"
    );

    // ca_file only makes sense for an https gateway; an unreadable one stops the start.
    let bad = format!(
        "data_dir = {data:?}\n[s3]\nembedded = false\n[[sites]]\nid = \"lumi\"\nname = \"L\"\n\
         gateway_url = \"http://127.0.0.1:{port}/\"\nca_file = \"/nonexistent/ca.pem\"\n",
        data = dir.join("data").display().to_string(),
    );
    std::fs::write(&file, &bad).unwrap();
    let err = Config::load(Some(&file), &env).unwrap_err().to_string();
    assert!(err.contains("ca_file"), "{err}");
    std::fs::write(&file, bad.replace("http://", "https://")).unwrap();
    let config = Config::load(Some(&file), &env).unwrap();
    let err = SiteRegistry::start(&config, &env)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    sites.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
