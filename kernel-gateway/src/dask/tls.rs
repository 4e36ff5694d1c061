//! Each cluster's own TLS identity: a self-signed certificate (names `daskgateway-<cluster>` and
//! `dask-internal`) and its key. The scheduler, its workers and the user's client all present
//! and trust this one certificate, as upstream's clusters do; the gateway's scheduler proxy
//! never terminates it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::config::Secret;

/// A cluster's certificate (PEM) and private key (PKCS#8 PEM).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The certificate, also the CA the cluster's parties trust.
    pub cert: String,
    /// The private key.
    pub key: Secret,
}

/// The SNI name clients use for `cluster`.
pub fn sni_name(cluster: &str) -> String {
    format!("daskgateway-{cluster}")
}

/// A new certificate and key for `cluster` (ECDSA P-256, valid for a year).
///
/// # Errors
/// The key or certificate could not be made (rcgen's message).
pub fn new_cluster_tls(cluster: &str) -> Result<ClusterTls, String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params = CertificateParams::new(vec![sni_name(cluster), "dask-internal".to_owned()])
        .map_err(|e| format!("cannot make certificate parameters: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dask-internal");
    params.distinguished_name = dn;
    let ymd = |d: chrono::NaiveDate| {
        use chrono::Datelike as _;
        rcgen::date_time_ymd(
            d.year(),
            u8::try_from(d.month()).unwrap_or(1),
            u8::try_from(d.day()).unwrap_or(1),
        )
    };
    let today = chrono::Utc::now().date_naive();
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(365));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok(ClusterTls {
        cert: cert.pem(),
        key: Secret::new(key.serialize_pem()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn certificate_names_the_cluster_and_key_is_pkcs8() {
        let tls = new_cluster_tls("abc123").unwrap();
        assert!(tls.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key.expose().starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = rustls_pemfile_cert(&tls.cert);
        let text = String::from_utf8_lossy(&der);
        assert!(text.contains("daskgateway-abc123"), "SAN missing");
        assert!(text.contains("dask-internal"));
        // Two clusters never share a key.
        let other = new_cluster_tls("abc123").unwrap();
        assert_ne!(other.key.expose(), tls.key.expose());
    }

    fn rustls_pemfile_cert(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
