//! Command line of `stackhub-proxy`: configurable-http-proxy's flags where they make sense, so
//! JupyterHub's `ConfigurableHTTPProxy` can start it in place of CHP.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::client_tls::{UpstreamTls, UpstreamTlsFiles};
use crate::error::ConfigError;
use crate::forward::ProxyOptions;
use crate::tls::ClientAuth;

/// `stackhub-proxy` arguments. The API secret comes from `CONFIGPROXY_AUTH_TOKEN`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "stackhub-proxy",
    version,
    about = "HTTP and WebSocket reverse proxy with the configurable-http-proxy REST API"
)]
pub struct Args {
    /// Public-facing IP of the proxy ("" or "*" for all interfaces)
    #[arg(long, default_value = "", value_name = "IP")]
    pub ip: String,
    /// Public-facing port of the proxy
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Inward-facing IP for the API
    #[arg(long = "api-ip", default_value = "localhost", value_name = "IP")]
    pub api_ip: String,
    /// Inward-facing port for the API [default: port + 1]
    #[arg(long = "api-port")]
    pub api_port: Option<u16>,
    /// Default proxy target (a route at "/")
    #[arg(long = "default-target", value_name = "URL")]
    pub default_target: Option<String>,
    /// Fetch error pages from URL/CODE?url=REQUEST_URL
    #[arg(long = "error-target", value_name = "URL")]
    pub error_target: Option<String>,
    /// PEM private key for HTTPS on the public port
    #[arg(long = "ssl-key", value_name = "FILE", requires = "ssl_cert")]
    pub ssl_key: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on the public port
    #[arg(long = "ssl-cert", value_name = "FILE", requires = "ssl_key")]
    pub ssl_cert: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates on the public port must chain to
    #[arg(long = "ssl-ca", value_name = "FILE")]
    pub ssl_ca: Option<PathBuf>,
    /// Ask clients of the public port for a certificate (needs --ssl-ca)
    #[arg(long = "ssl-request-cert")]
    pub ssl_request_cert: bool,
    /// Refuse public-port clients without a valid certificate (with --ssl-request-cert)
    #[arg(long = "ssl-reject-unauthorized")]
    pub ssl_reject_unauthorized: bool,
    /// PEM private key for HTTPS on the API port
    #[arg(long = "api-ssl-key", value_name = "FILE", requires = "api_ssl_cert")]
    pub api_ssl_key: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on the API port
    #[arg(long = "api-ssl-cert", value_name = "FILE", requires = "api_ssl_key")]
    pub api_ssl_cert: Option<PathBuf>,
    /// PEM private key presented to https targets that ask for a client certificate
    #[arg(
        long = "client-ssl-key",
        value_name = "FILE",
        requires = "client_ssl_cert"
    )]
    pub client_ssl_key: Option<PathBuf>,
    /// PEM certificate chain presented to https targets that ask for a client certificate
    #[arg(
        long = "client-ssl-cert",
        value_name = "FILE",
        requires = "client_ssl_key"
    )]
    pub client_ssl_cert: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for https targets, besides the system's roots
    #[arg(long = "client-ssl-ca", value_name = "FILE")]
    pub client_ssl_ca: Option<PathBuf>,
    /// Accepted for configurable-http-proxy compatibility (JupyterHub's internal_ssl passes it);
    /// like CHP, it has no effect on connections to targets
    #[arg(long = "client-ssl-request-cert")]
    pub client_ssl_request_cert: bool,
    /// Accepted for configurable-http-proxy compatibility; no effect (target certificates are
    /// always verified)
    #[arg(long = "client-ssl-reject-unauthorized")]
    pub client_ssl_reject_unauthorized: bool,
    /// PEM CA certificate(s) client certificates on the API port must chain to
    #[arg(long = "api-ssl-ca", value_name = "FILE")]
    pub api_ssl_ca: Option<PathBuf>,
    /// Ask API clients for a certificate (needs --api-ssl-ca)
    #[arg(long = "api-ssl-request-cert")]
    pub api_ssl_request_cert: bool,
    /// Refuse API clients without a valid certificate (with --api-ssl-request-cert)
    #[arg(long = "api-ssl-reject-unauthorized")]
    pub api_ssl_reject_unauthorized: bool,
    /// Route on the Host header: the first path segment of a route is its hostname
    #[arg(long = "host-routing")]
    pub host_routing: bool,
    /// Don't add X-Forwarded-* headers to proxied requests
    #[arg(long = "no-x-forward")]
    pub no_x_forward: bool,
    /// Strip the route prefix before forwarding
    #[arg(long = "no-include-prefix")]
    pub no_include_prefix: bool,
    /// Don't prepend the target's path to forwarded requests
    #[arg(long = "no-prepend-path")]
    pub no_prepend_path: bool,
    /// Extra header for every proxied request, "Name: value" (repeatable)
    #[arg(long = "custom-header", value_name = "HEADER")]
    pub custom_header: Vec<String>,
    /// Milliseconds to wait for an upstream's response head before answering 503
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Microseconds a WebSocket tunnel keeps polling for its next message after forwarding one,
    /// instead of sleeping (0 turns it off; at most 1000)
    #[arg(
        long = "tunnel-busy-poll-us",
        value_name = "US",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(0..=1000)
    )]
    pub tunnel_busy_poll_us: u64,
    /// Receive buffer of upstream sockets in KiB, fixed so an upstream cannot run far ahead of
    /// its client (0 leaves it to the kernel's autotuning; at most 65536; used only when
    /// net.core.rmem_max allows it)
    #[arg(
        long = "upstream-recv-buffer-kib",
        value_name = "KIB",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(0..=65536)
    )]
    pub upstream_recv_buffer_kib: u64,
    /// Worker threads serving the public port [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Log level: debug, info, warn or error (RUST_LOG overrides)
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
}

impl Args {
    /// The public listen address.
    ///
    /// # Errors
    /// A message naming the bad `--ip` value.
    pub fn public_addr(&self) -> Result<SocketAddr, String> {
        Ok(SocketAddr::new(parse_ip("--ip", &self.ip)?, self.port))
    }

    /// The API listen address.
    ///
    /// # Errors
    /// A message naming the bad `--api-ip` value, or an `--api-port` past 65535.
    pub fn api_addr(&self) -> Result<SocketAddr, String> {
        let port = match self.api_port {
            Some(p) => p,
            None => self
                .port
                .checked_add(1)
                .ok_or("--api-port: --port 65535 leaves no default API port; set --api-port")?,
        };
        Ok(SocketAddr::new(parse_ip("--api-ip", &self.api_ip)?, port))
    }

    /// Client certificates on the public port (`--ssl-ca`, `--ssl-request-cert`, ...).
    pub fn public_client_auth(&self) -> ClientAuth {
        ClientAuth {
            ca: self.ssl_ca.clone(),
            request_cert: self.ssl_request_cert,
            reject_unauthorized: self.ssl_reject_unauthorized,
        }
    }

    /// Client certificates on the API port (`--api-ssl-ca`, `--api-ssl-request-cert`, ...).
    pub fn api_client_auth(&self) -> ClientAuth {
        ClientAuth {
            ca: self.api_ssl_ca.clone(),
            request_cert: self.api_ssl_request_cert,
            reject_unauthorized: self.api_ssl_reject_unauthorized,
        }
    }

    /// The forwarding options these flags describe.
    ///
    /// # Errors
    /// [`ConfigError::CustomHeader`] for a `--custom-header` that is not `Name: value`;
    /// [`ConfigError::Tls`] naming a `--client-ssl-*` file that is unreadable or unusable.
    pub fn proxy_options(&self) -> Result<ProxyOptions, ConfigError> {
        let custom_headers = self
            .custom_header
            .iter()
            .map(|raw| {
                let (name, value) = raw
                    .split_once(':')
                    .ok_or_else(|| ConfigError::CustomHeader(raw.clone()))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| ConfigError::CustomHeader(raw.clone()))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| ConfigError::CustomHeader(raw.clone()))?;
                Ok((name, value))
            })
            .collect::<Result<_, ConfigError>>()?;
        let files = UpstreamTlsFiles {
            ca: self.client_ssl_ca.iter().cloned().collect(),
            cert: self.client_ssl_cert.clone(),
            key: self.client_ssl_key.clone(),
        };
        let upstream_tls = if files.is_empty() {
            UpstreamTls::system()
        } else {
            UpstreamTls::from_files(&files)?
        };
        Ok(ProxyOptions {
            x_forward: !self.no_x_forward,
            include_prefix: !self.no_include_prefix,
            prepend_path: !self.no_prepend_path,
            host_routing: self.host_routing,
            custom_headers,
            timeout: self.timeout.map(Duration::from_millis),
            tunnel_busy_poll: Duration::from_micros(self.tunnel_busy_poll_us),
            upstream_recv_buffer: match self.upstream_recv_buffer_kib {
                0 => None,
                kib => usize::try_from(kib * 1024).ok(),
            },
            error_target: self.error_target.clone(),
            upstream_tls,
            ..ProxyOptions::default()
        })
    }
}

fn parse_ip(flag: &str, raw: &str) -> Result<IpAddr, String> {
    match raw {
        "" | "*" | "0.0.0.0" => Ok(IpAddr::from([0, 0, 0, 0])),
        "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{flag} {other:?}: not an IP address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn chp_style_command_line_parses() {
        let args = Args::try_parse_from([
            "stackhub-proxy",
            "--ip",
            "127.0.0.1",
            "--port",
            "8000",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "8001",
            "--error-target",
            "http://127.0.0.1:8081/hub/error",
            "--log-level=debug",
            "--custom-header",
            "X-Site: central",
            "--client-ssl-request-cert",
            "--client-ssl-reject-unauthorized",
        ])
        .unwrap();
        assert_eq!(args.public_addr().unwrap().to_string(), "127.0.0.1:8000");
        assert_eq!(args.api_addr().unwrap().to_string(), "127.0.0.1:8001");
        let opts = args.proxy_options().unwrap();
        assert_eq!(opts.custom_headers[0].0, "x-site");
        assert!(opts.x_forward && opts.include_prefix);
        assert_eq!(opts.tunnel_busy_poll, Duration::from_micros(50));
        assert_eq!(opts.upstream_recv_buffer, Some(1024 * 1024));
    }

    #[test]
    fn upstream_recv_buffer_is_bounded() {
        let parse =
            |v: &str| Args::try_parse_from(["stackhub-proxy", "--upstream-recv-buffer-kib", v]);
        let auto = parse("0").unwrap().proxy_options().unwrap();
        assert_eq!(auto.upstream_recv_buffer, None);
        let small = parse("256").unwrap().proxy_options().unwrap();
        assert_eq!(small.upstream_recv_buffer, Some(256 * 1024));
        let err = parse("100000").unwrap_err().to_string();
        assert!(
            err.contains("100000") && err.contains("--upstream-recv-buffer-kib"),
            "{err}"
        );
    }

    #[test]
    fn tunnel_busy_poll_is_bounded() {
        let parse = |v: &str| Args::try_parse_from(["stackhub-proxy", "--tunnel-busy-poll-us", v]);
        let off = parse("0").unwrap().proxy_options().unwrap();
        assert!(off.tunnel_busy_poll.is_zero());
        let err = parse("5000").unwrap_err().to_string();
        assert!(
            err.contains("5000") && err.contains("--tunnel-busy-poll-us"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let args = Args::try_parse_from(["p", "--ip", "nowhere"]).unwrap();
        assert!(args.public_addr().unwrap_err().contains("--ip \"nowhere\""));
        let args = Args::try_parse_from(["p", "--port", "65535"]).unwrap();
        assert!(args.api_addr().unwrap_err().contains("--api-port"));
        let args = Args::try_parse_from(["p", "--custom-header", "novalue"]).unwrap();
        assert!(args.proxy_options().is_err());
        assert!(Args::try_parse_from(["p", "--ssl-key", "k.pem"]).is_err());
        assert!(Args::try_parse_from(["p", "--client-ssl-key", "k.pem"]).is_err());
        let args = Args::try_parse_from(["p", "--client-ssl-ca", "/nonexistent/ca.pem"]).unwrap();
        let err = args.proxy_options().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(Args::try_parse_from(["p", "--port", "99999"]).is_err());
    }
}
