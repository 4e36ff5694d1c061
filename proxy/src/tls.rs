//! TLS for the public and API listeners (rustls), from PEM files as configurable-http-proxy takes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::ConfigError;

/// Client certificates on a listener, as CHP's `--ssl-ca`/`--ssl-request-cert`/
/// `--ssl-reject-unauthorized` (and their `--api-ssl-*` twins) describe them.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// PEM CA certificate(s) client certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Ask clients for a certificate.
    pub request_cert: bool,
    /// With `request_cert`: refuse clients without a valid one. Without it a client may send
    /// none (one it does send must still be valid: rustls has no "accept anything" mode).
    pub reject_unauthorized: bool,
}

/// Build an acceptor from a PEM certificate chain and a PEM private key. The public listener
/// offers HTTP/2 and HTTP/1.1 by ALPN; `alpn_h2 = false` offers HTTP/1.1 only.
///
/// # Errors
/// [`ConfigError::Tls`] naming the file that cannot be read or holds no usable key/certificate.
pub fn acceptor(cert: &Path, key: &Path, alpn_h2: bool) -> Result<TlsAcceptor, ConfigError> {
    acceptor_with(cert, key, alpn_h2, &ClientAuth::default())
}

/// [`acceptor`] that also asks clients for certificates as `clients` says.
///
/// # Errors
/// [`ConfigError::Tls`] naming the file that cannot be read or holds no usable key/certificate;
/// [`ConfigError::ClientAuth`] when client certificates are requested without a CA file.
pub fn acceptor_with(
    cert: &Path,
    key: &Path,
    alpn_h2: bool,
    clients: &ClientAuth,
) -> Result<TlsAcceptor, ConfigError> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?;
    let builder = match (&clients.ca, clients.request_cert) {
        (_, false) => builder.with_no_client_auth(),
        (None, true) => {
            return Err(ConfigError::ClientAuth(
                "requesting client certificates needs a CA file to check them against".into(),
            ));
        }
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if clients.reject_unauthorized {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| tls_err(ca, format!("cannot check client certificates: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_err(key, format!("key does not fit the certificate: {e}")))?;
    config.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The one crypto provider of the workspace (ring).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn tls_err(path: &Path, reason: String) -> ConfigError {
    ConfigError::Tls {
        path: path.to_owned(),
        reason,
    }
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| tls_err(path, e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate found".into()));
    }
    Ok(certs)
}

/// The first private key of a PEM file. Errors name the file, never its content.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| tls_err(path, e.to_string()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_err(path, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| tls_err(path, "no private key found".into()))
}
