//! TLS toward https upstreams: which servers the proxy trusts and which certificate it shows.
//!
//! configurable-http-proxy takes `--client-ssl-key`, `--client-ssl-cert` and `--client-ssl-ca`
//! for its connections to targets (JupyterHub's `internal_ssl` passes all three, plus
//! `--client-ssl-request-cert` and `--client-ssl-reject-unauthorized`, which CHP stores but never
//! applies to a target connection). Here:
//! - trust: the system's roots (Debian's `ca-certificates`), plus every certificate of the CA
//!   file when one is given (CHP, through Node, trusts only the CA file then; a private CA beside
//!   the public roots keeps https targets on public certificates working too);
//! - identity: the client certificate chain and key, when given, for upstreams that ask;
//! - the server name checked is the target's host (a DNS name or an IP address).
//!
//! The system roots are read once, on the first https connection, unless files were given, in
//! which case everything is read and checked at start-up so a bad file is a start-up error.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::error::ConfigError;
use crate::tls::{provider, read_certs, read_key, tls_err};

/// Files that configure the proxy's TLS client (`--client-ssl-*`). All optional; `cert` and
/// `key` go together.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsFiles {
    /// PEM files whose certificates are trusted besides the system roots (`--client-ssl-ca`;
    /// the hub passes its sites' CA files).
    pub ca: Vec<PathBuf>,
    /// PEM certificate chain presented to upstreams that ask for one (`--client-ssl-cert`).
    pub cert: Option<PathBuf>,
    /// PEM private key of that certificate (`--client-ssl-key`).
    pub key: Option<PathBuf>,
}

impl UpstreamTlsFiles {
    /// Whether nothing is configured (system roots only).
    pub fn is_empty(&self) -> bool {
        self.ca.is_empty() && self.cert.is_none() && self.key.is_none()
    }
}

/// The TLS client for https upstreams. Cheap to clone; clones share one configuration (and its
/// session cache, so reconnects resume sessions).
#[derive(Clone, Default)]
pub struct UpstreamTls {
    connector: Arc<OnceLock<Result<TlsConnector, String>>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("loaded", &self.connector.get().is_some())
            .finish()
    }
}

impl UpstreamTls {
    /// Trust the system's roots, read on first use.
    pub fn system() -> Self {
        Self::default()
    }

    /// Trust the system's roots plus every certificate of `files.ca`, and present `files.cert`/`files.key`; all read
    /// and checked now.
    ///
    /// # Errors
    /// [`ConfigError::Tls`] naming the file that cannot be read, holds no certificate or key,
    /// or whose key does not fit the certificate; [`ConfigError::UpstreamTls`] when only one of
    /// certificate and key is given.
    pub fn from_files(files: &UpstreamTlsFiles) -> Result<Self, ConfigError> {
        let mut roots = system_roots();
        for ca in &files.ca {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::UpstreamTls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key_der = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| tls_err(key, format!("key does not fit the certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ConfigError::UpstreamTls(
                    "a client certificate needs both --client-ssl-cert and --client-ssl-key".into(),
                ));
            }
        };
        let tls = Self::default();
        let _ = tls.connector.set(Ok(connector(config)));
        Ok(tls)
    }

    /// The connector, building the system-roots one on first use.
    pub(crate) fn connector(&self) -> std::io::Result<&TlsConnector> {
        self.connector
            .get_or_init(|| {
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        connector(
                            b.with_root_certificates(system_roots())
                                .with_no_client_auth(),
                        )
                    })
                    .map_err(|e| format!("TLS client setup: {e}"))
            })
            .as_ref()
            .map_err(|e| std::io::Error::other(e.clone()))
    }
}

fn connector(mut config: ClientConfig) -> TlsConnector {
    // The proxy speaks HTTP/1.1 to upstreams, upgrades included.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// The system's trusted roots; unreadable entries are skipped (and logged without content).
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "skipping a system root certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system root certificates found: https upstreams need --client-ssl-ca (a CA file)"
        );
    } else {
        tracing::debug!(added, ignored, "system root certificates loaded");
    }
    roots
}

/// The name an upstream's certificate must carry: the target's host without IPv6 brackets.
pub(crate) fn server_name(authority: &http::uri::Authority) -> Option<ServerName<'static>> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host).ok().map(|n| n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_hosts_or_ips() {
        let name = |a: &str| server_name(&a.parse().unwrap());
        assert!(matches!(
            name("gateway.lumi.example:443"),
            Some(ServerName::DnsName(_))
        ));
        assert!(matches!(
            name("127.0.0.1:8443"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(name("[::1]:8443"), Some(ServerName::IpAddress(_))));
    }

    #[test]
    fn bad_files_are_named() {
        let missing = UpstreamTlsFiles {
            ca: vec!["/nonexistent/ca.pem".into()],
            ..UpstreamTlsFiles::default()
        };
        let err = UpstreamTls::from_files(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let half = UpstreamTlsFiles {
            cert: Some("/nonexistent/cert.pem".into()),
            ..UpstreamTlsFiles::default()
        };
        let err = UpstreamTls::from_files(&half).unwrap_err().to_string();
        assert!(err.contains("--client-ssl-key"), "{err}");
    }
}
