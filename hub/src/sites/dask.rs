//! A site's Dask Gateway: where clients reach it (parsed once from the site's config), whether
//! its API answers (part of the site's health check), and what a single-user server's
//! environment says about it (`DASK_GATEWAY__*`, read by the stock `dask_gateway` client and
//! dask-labextension).
//!
//! `stackhub-gateway` serves Dask Gateway's API and scheduler proxy on its own port, so a site
//! whose config names no Dask address has one at its gateway URL, with the proxy at
//! `gateway://<host>:<port>` of that URL. `dask_address = ""` says the site has none.
//!
//! Browsers open a cluster's dashboard at the client's `public_address` + the cluster's
//! `dashboard_route`. By default that is the hub (`crate::dask_dashboards` serves
//! `<base_url>hub/dask/<site>/clusters/<name>/...` to the signed-in owner): the public address
//! is the origin of the hub's `public_url`, and the site's `stackhub-gateway` runs with
//! `[dask] dashboard_prefix = "<base_url>hub/dask/<site>"` so that the route it gives clusters is
//! that path. A site's `dask_public_address` overrides it (dashboards served elsewhere); without
//! `public_url` the hub cannot tell browsers where it is, and the Dask address is used.

use std::collections::BTreeMap;

use serde::Serialize;

/// A site's Dask Gateway as clients address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteDask {
    /// The REST API (`bridges.json` `address`), without a trailing `/`.
    pub address: String,
    /// The scheduler proxy (`bridges.json` `proxy_address`): `scheme://host:port`.
    pub proxy_address: String,
    /// Where browsers open dashboards (the client's `public_address`), without a trailing `/`.
    pub public_address: String,
}

/// Why a Dask address is not usable: `(field, reason)`.
pub type BadDask = (&'static str, String);

/// A site's Dask settings as configured (`[[sites]]` `dask_address`, `dask_proxy_address`,
/// `dask_public_address`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DaskSettings<'a> {
    /// `dask_address`.
    pub address: Option<&'a str>,
    /// `dask_proxy_address`.
    pub proxy_address: Option<&'a str>,
    /// `dask_public_address`.
    pub public_address: Option<&'a str>,
}

/// The Dask Gateway of a site whose kernel gateway is `gateway_url`, from its config (see the
/// module docs); `hub_origin` is the origin of the hub's `public_url`, if it has one. `None`
/// when the site has none.
///
/// # Errors
/// An address that is not an http(s) URL with a host, or a proxy address without a host and
/// port.
pub fn resolve(
    gateway_url: &str,
    settings: DaskSettings<'_>,
    hub_origin: Option<&str>,
) -> Result<Option<SiteDask>, BadDask> {
    let DaskSettings {
        address,
        proxy_address,
        public_address,
    } = settings;
    let (field, address) = match address {
        Some("") => return Ok(None),
        Some(a) => ("dask_address", a),
        None => ("gateway_url", gateway_url),
    };
    let url = url::Url::parse(address)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            (
                field,
                format!("{address:?} is not an http(s) URL with a host"),
            )
        })?;
    let proxy_address = match proxy_address {
        Some(p) => {
            let ok = url::Url::parse(p)
                .ok()
                .is_some_and(|u| u.host_str().is_some() && u.port().is_some());
            if !ok {
                return Err((
                    "dask_proxy_address",
                    format!("{p:?} is not an address of the form scheme://host:port"),
                ));
            }
            p.to_owned()
        }
        None => {
            // (`host_str` keeps an IPv6 address's brackets.)
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(80);
            format!("gateway://{host}:{port}")
        }
    };
    if let Some(p) = public_address
        && !url::Url::parse(p)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
    {
        return Err((
            "dask_public_address",
            format!("{p:?} is not an http(s) URL with a host"),
        ));
    }
    let address = address.trim_end_matches('/').to_owned();
    let public_address = public_address
        .or(hub_origin)
        .map_or_else(|| address.clone(), |p| p.trim_end_matches('/').to_owned());
    Ok(Some(SiteDask {
        address,
        proxy_address,
        public_address,
    }))
}

/// The origin (`scheme://host[:port]`) of the hub's `public_url`, where browsers reach it.
pub fn hub_origin(public_url: Option<&str>) -> Option<String> {
    let url = url::Url::parse(public_url?).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Checks that `dask`'s API answers as Dask Gateway's does (`GET /api/version`, what stock
/// clients probe a gateway with before using it).
///
/// # Errors
/// What is wrong, naming the address (no credential is sent or named).
pub async fn check(http: &reqwest::Client, dask: &SiteDask) -> Result<(), String> {
    let url = format!("{}/api/version", dask.address);
    let resp = http.get(&url).send().await.map_err(|e| {
        format!(
            "the Dask Gateway at {} is not reachable: {}",
            dask.address,
            if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "connection refused or no route".to_owned()
            } else {
                e.without_url().to_string()
            }
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "the Dask Gateway at {} answered HTTP {} (is Dask enabled at the site?)",
            dask.address,
            status.as_u16()
        ));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if body["version"].is_string() {
        Ok(())
    } else {
        Err(format!(
            "the Dask Gateway at {} did not answer /api/version with a version",
            dask.address
        ))
    }
}

/// The Dask part of a server's environment for site `site_id`: the stock client's
/// configuration (`DASK_GATEWAY__ADDRESS`, `__PROXY_ADDRESS`, `__PUBLIC_ADDRESS`), its
/// authentication through the hub (`__AUTH__TYPE` = `stackhub_dask.SiteAuth`, which asks the hub
/// for the user's token at the site with the server's own API token, see
/// `hub/share/server/stackhub_dask.py`) and the site it is for. No credential is in it.
pub fn server_env(site_id: &str, dask: &SiteDask) -> BTreeMap<String, String> {
    [
        ("DASK_GATEWAY__ADDRESS", dask.address.clone()),
        ("DASK_GATEWAY__PROXY_ADDRESS", dask.proxy_address.clone()),
        ("DASK_GATEWAY__PUBLIC_ADDRESS", dask.public_address.clone()),
        (
            "DASK_GATEWAY__AUTH__TYPE",
            "stackhub_dask.SiteAuth".to_owned(),
        ),
        ("STACKHUB_DASK_SITE", site_id.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr<'a>(address: Option<&'a str>, proxy_address: Option<&'a str>) -> DaskSettings<'a> {
        DaskSettings {
            address,
            proxy_address,
            public_address: None,
        }
    }

    #[test]
    fn browsers_open_dashboards_at_the_hub_unless_told_otherwise() {
        let origin = hub_origin(Some("https://hub.example:8443/jh/"));
        assert_eq!(origin.as_deref(), Some("https://hub.example:8443"));
        assert_eq!(hub_origin(Some("not a url")), None);
        assert_eq!(hub_origin(None), None);
        let via_hub = resolve(
            "http://10.0.0.3:8888/",
            DaskSettings::default(),
            origin.as_deref(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(via_hub.public_address, "https://hub.example:8443");
        assert_eq!(via_hub.address, "http://10.0.0.3:8888");
        let elsewhere = DaskSettings {
            public_address: Some("https://dask.lumi.example/"),
            ..DaskSettings::default()
        };
        let d = resolve("http://10.0.0.3:8888/", elsewhere, origin.as_deref())
            .unwrap()
            .unwrap();
        assert_eq!(d.public_address, "https://dask.lumi.example");
        let d = resolve("http://10.0.0.3:8888/", DaskSettings::default(), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            d.public_address, "http://10.0.0.3:8888",
            "no public_url: the gateway"
        );
        let bad = DaskSettings {
            public_address: Some("dask.lumi.example"),
            ..DaskSettings::default()
        };
        let (field, why) = resolve("http://x:1/", bad, None).unwrap_err();
        assert_eq!(field, "dask_public_address");
        assert!(why.contains("dask.lumi.example"), "{why}");
    }

    #[test]
    fn the_gateway_address_is_the_default_and_empty_means_none() {
        let d = resolve("http://127.0.0.3:8888/", DaskSettings::default(), None)
            .unwrap()
            .unwrap();
        assert_eq!(d.address, "http://127.0.0.3:8888");
        assert_eq!(d.proxy_address, "gateway://127.0.0.3:8888");
        let d = resolve("https://jeg.lumi.example/", DaskSettings::default(), None)
            .unwrap()
            .unwrap();
        assert_eq!(d.proxy_address, "gateway://jeg.lumi.example:443");
        let d = resolve("http://[::1]:8888/", DaskSettings::default(), None)
            .unwrap()
            .unwrap();
        assert_eq!(d.proxy_address, "gateway://[::1]:8888");
        assert_eq!(
            resolve("http://x:1/", addr(Some(""), None), None).unwrap(),
            None
        );
        let d = resolve(
            "http://x:1/",
            addr(
                Some("https://dask.lumi.example/"),
                Some("tcp://dask.lumi.example:80"),
            ),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (d.address.as_str(), d.proxy_address.as_str()),
            ("https://dask.lumi.example", "tcp://dask.lumi.example:80")
        );
    }

    #[test]
    fn bad_addresses_are_named() {
        let (field, why) = resolve("http://x:1/", addr(Some("dask.lumi"), None), None).unwrap_err();
        assert_eq!(field, "dask_address");
        assert!(why.contains("dask.lumi"), "{why}");
        let (field, why) = resolve(
            "http://x:1/",
            addr(None, Some("dask.lumi.example:80")),
            None,
        )
        .unwrap_err();
        assert_eq!(field, "dask_proxy_address");
        assert!(why.contains("dask.lumi.example:80"), "{why}");
        let (field, _) = resolve("http://x:1/", addr(None, Some("tcp://host")), None).unwrap_err();
        assert_eq!(field, "dask_proxy_address");
    }

    #[test]
    fn the_server_environment_configures_the_stock_client_without_credentials() {
        let d = resolve("http://127.0.0.3:8888/", DaskSettings::default(), None)
            .unwrap()
            .unwrap();
        let env = server_env("lumi", &d);
        assert_eq!(env["DASK_GATEWAY__ADDRESS"], "http://127.0.0.3:8888");
        assert_eq!(
            env["DASK_GATEWAY__PROXY_ADDRESS"],
            "gateway://127.0.0.3:8888"
        );
        assert_eq!(env["DASK_GATEWAY__AUTH__TYPE"], "stackhub_dask.SiteAuth");
        assert_eq!(env["STACKHUB_DASK_SITE"], "lumi");
    }
}
