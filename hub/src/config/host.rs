//! `subdomain_host`: the per-user origins setting, parsed once, and the DNS label of a user
//! name (see `crate::origins` for what the hub does with them).

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A parsed `subdomain_host`: `scheme://domain[:port]`, no path, query or user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubdomainHost {
    https: bool,
    domain: String,
    port: Option<u16>,
}

impl SubdomainHost {
    /// Parse `https://hub.example[:port][/]`.
    ///
    /// # Errors
    /// Why the value is unusable (the caller names the key).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|_| format!("`{raw}` is not a URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme must be http or https, not `{other}`")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold user info".to_owned());
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(
                "must be scheme://host[:port] with no path (base_url sets the path)".to_owned(),
            );
        }
        let domain = match url.host() {
            Some(url::Host::Domain(d)) if d.contains('.') || d == "localhost" => d.to_owned(),
            Some(url::Host::Domain(_)) | None => {
                return Err("must name a domain with subdomains (hub.example)".to_owned());
            }
            Some(_) => return Err("must be a domain name, not an IP address".to_owned()),
        };
        Ok(Self {
            https,
            domain: domain.to_ascii_lowercase(),
            port: url.port(),
        })
    }

    /// The hub's own host name (`hub.example`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    fn origin_of(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{}://{host}:{p}", self.scheme()),
            None => format!("{}://{host}", self.scheme()),
        }
    }

    /// Whether the hub is served over https.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The hub's origin: `https://hub.example[:port]`.
    pub fn hub_origin(&self) -> String {
        self.origin_of(&self.domain)
    }

    /// The host name of `user`'s servers: `LABEL.hub.example`.
    pub fn user_domain(&self, user: &str) -> String {
        format!("{}.{}", dns_label(user), self.domain)
    }

    /// The origin of `user`'s servers: `https://LABEL.hub.example[:port]`.
    pub fn user_origin(&self, user: &str) -> String {
        self.origin_of(&self.user_domain(user))
    }

    /// Whether a `Host` header value names a host below the hub's (`*.hub.example`, any
    /// port): where users' servers live and the hub's pages must not.
    pub fn is_below(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.len() > self.domain.len() + 1
            && name.ends_with(&self.domain)
            && name.as_bytes()[name.len() - self.domain.len() - 1] == b'.'
    }
}

impl fmt::Display for SubdomainHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hub_origin())
    }
}

impl<'de> Deserialize<'de> for SubdomainHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("subdomain_host: {e}")))
    }
}

/// The host name of a `Host` header value, without its port (IPv6 brackets kept).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// A user name as one DNS label, always `[a-z0-9-]{1,63}` and distinct per name: a name that
/// already is such a label (lower case, not all digits, no leading or trailing `-`, no `--`) is
/// kept; any other becomes `u-STUB--HASH` (`STUB`: up to 8 of its safe characters, `HASH`: 32
/// hex digits of its SHA-256), which contains `--` and so never equals a kept name. JupyterHub's
/// `idna` hook does the same with a 7-digit hash and tries IDNA first; a longer hash keeps a
/// chosen name from landing on another user's host, and skipping IDNA keeps names that IDNA
/// maps onto each other (`ａlice`, `alice`) apart.
pub fn dns_label(name: &str) -> String {
    let safe = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.bytes().all(|b| b.is_ascii_digit())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if safe {
        return name.to_owned();
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..16]);
    let stub: String = name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(8)
        .collect();
    let stub = if stub.is_empty() {
        "x".to_owned()
    } else {
        stub
    };
    format!("u-{stub}--{hash}")
}
