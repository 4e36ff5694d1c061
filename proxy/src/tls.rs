//! TLS for the public and API listeners (rustls), from PEM files as configurable-http-proxy takes them.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::ConfigError;

/// Build an acceptor from a PEM certificate chain and a PEM private key. The public listener
/// offers HTTP/2 and HTTP/1.1 by ALPN; `alpn_h2 = false` offers HTTP/1.1 only.
///
/// # Errors
/// [`ConfigError::Tls`] naming the file that cannot be read or holds no usable key/certificate.
pub fn acceptor(cert: &Path, key: &Path, alpn_h2: bool) -> Result<TlsAcceptor, ConfigError> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?
        .with_no_client_auth()
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
