//! Test certificates made with Debian's `openssl` (installed by scripts/test): a CA, a server
//! certificate for `localhost`/`127.0.0.1` and a client certificate signed by it, and a
//! self-signed certificate nobody trusts. EC P-256 keys: quick to make.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// A temporary PKI, removed when dropped.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A self-signed certificate for `localhost`/`127.0.0.1` that is not signed by `ca`.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("openssl must be installed to make test certificates");
    assert!(status.success(), "openssl {args:?}");
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";

impl Pki {
    /// Make a fresh PKI in a temporary directory named after `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stackhub-pki-{name}-{}-{}",
            std::process::id(),
            super::free_port_pair().0
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let req = |extra: &[&str]| {
            let mut args = vec!["req", "-nodes", "-days", "1"];
            args.extend_from_slice(&EC);
            args.extend_from_slice(extra);
            openssl(&dir, &args);
        };
        req(&[
            "-x509",
            "-subj",
            "/CN=stackhub test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(dir.join("server.ext"), SERVER_EXT).unwrap();
        std::fs::write(
            dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for who in ["server", "client"] {
            req(&[
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ]);
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    &format!("{who}.ext"),
                    "-out",
                    &format!("{who}.pem"),
                ],
            );
        }
        req(&[
            "-x509",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.pem",
        ]);
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
            dir,
        }
    }

    /// An HTTP/1.1 TLS acceptor with the server certificate.
    pub fn server(&self) -> TlsAcceptor {
        proxy::tls_acceptor(&self.server_cert, &self.server_key, false).unwrap()
    }

    /// An acceptor with the self-signed certificate.
    pub fn rogue_server(&self) -> TlsAcceptor {
        proxy::tls_acceptor(&self.rogue_cert, &self.rogue_key, false).unwrap()
    }

    /// An acceptor with the server certificate that requires a client certificate signed by the CA.
    pub fn mtls_server(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca) {
            roots.add(cert).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let key =
            rustls_pemfile::private_key(&mut std::fs::read(&self.server_key).unwrap().as_slice())
                .unwrap()
                .unwrap();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.server_cert), key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// The proxy's TLS client options trusting this CA, with or without the client certificate.
    pub fn upstream_tls(&self, with_client_cert: bool) -> proxy::UpstreamTls {
        let files = proxy::UpstreamTlsFiles {
            ca: vec![self.ca.clone()],
            cert: with_client_cert.then(|| self.client_cert.clone()),
            key: with_client_cert.then(|| self.client_key.clone()),
        };
        proxy::UpstreamTls::from_files(&files).unwrap()
    }
}

fn certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut std::fs::read(path).unwrap().as_slice())
        .map(Result::unwrap)
        .collect()
}
