"""Dask Gateway at the hub's sites, from a single-user server and its kernels.

The hub sets, for the profile's site (hub/src/sites/dask.rs):

    DASK_GATEWAY__ADDRESS, DASK_GATEWAY__PROXY_ADDRESS, DASK_GATEWAY__PUBLIC_ADDRESS
    DASK_GATEWAY__AUTH__TYPE=stackhub_dask.SiteAuth
    STACKHUB_DASK_SITE=<site id>

so a stock ``dask_gateway.Gateway()`` (and dask-labextension) reaches that site's gateway and
authenticates as the user with :class:`SiteAuth`. ``gateway("lumi")`` gives a client for another
site, its addresses read from the hub (``GET /hub/api/sites``); ``s3("lumi")`` the user's S3
space at a site, for the results.

No credential is stored in a file or printed: the site token lives in this process's memory and
is asked from the hub with the server's own API token (``JUPYTERHUB_API_TOKEN``), which the
server's kernels inherit.
"""

import json
import os
import threading
import time
import urllib.error
import urllib.request

from dask_gateway.auth import GatewayAuth

# Renew a site token this long before it expires.
_RENEW_BEFORE = 60


def _hub_call(method, path):
    api = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not api or not token:
        raise RuntimeError(
            "stackhub_dask: JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are not set "
            "(this runs in a server the hub started)"
        )
    req = urllib.request.Request(
        api + path,
        method=method,
        data=b"" if method == "POST" else None,
        headers={"Authorization": "token " + token},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e).get("message", "")
        except Exception:
            message = ""
        raise RuntimeError(
            f"stackhub_dask: the hub answered HTTP {e.code} to {method} {path}: {message}"
        ) from None


class SiteAuth(GatewayAuth):
    """``Authorization: Bearer <the user's token at the site>``, from the hub
    (``POST /hub/api/sites/<site>/token``), renewed a minute before it expires."""

    def __init__(self, site=None, **kwargs):
        super().__init__(**kwargs)
        self.site = site or os.environ.get("STACKHUB_DASK_SITE", "")
        if not self.site:
            raise ValueError("stackhub_dask.SiteAuth: no site given and STACKHUB_DASK_SITE is not set")
        self._lock = threading.Lock()
        self._header = None
        self._expires_at = 0.0

    def _authorization(self):
        with self._lock:
            if self._header is None or time.time() > self._expires_at - _RENEW_BEFORE:
                answer = _hub_call("POST", f"/sites/{self.site}/token")
                scheme = answer.get("token_type") or "Bearer"
                self._header = f"{scheme} {answer['token']}"
                self._expires_at = float(answer.get("expires_at") or time.time() + 3600)
            return self._header

    def pre_request(self, resp):
        return {"Authorization": self._authorization()}, None

    def __repr__(self):
        return f"SiteAuth(site={self.site!r})"


def sites():
    """``{site id: {"name", "address", "proxy_address", "public_address", "available",
    "reason"}}`` of the sites with a Dask Gateway, as the hub last checked them
    (``public_address``: where browsers open dashboards, usually the hub)."""
    out = {}
    for s in _hub_call("GET", "/sites"):
        if s.get("dask"):
            out[s["id"]] = {"name": s["name"], **s["dask"]}
    return out


def gateway(site=None, **kwargs):
    """A ``dask_gateway.Gateway`` for ``site`` (default: this server's, ``STACKHUB_DASK_SITE``)."""
    from dask_gateway import Gateway

    site = site or os.environ.get("STACKHUB_DASK_SITE", "")
    known = sites()
    if site not in known:
        raise ValueError(
            f"site {site!r} has no Dask Gateway on this hub (sites with one: {', '.join(sorted(known)) or 'none'})"
        )
    d = known[site]
    return Gateway(
        address=d["address"],
        proxy_address=d["proxy_address"],
        public_address=d.get("public_address") or d["address"],
        auth=SiteAuth(site),
        **kwargs,
    )


def s3(site):
    """``(s3fs.S3FileSystem, "bucket/users/NAME/")``: the user's S3 space at ``site``, with
    temporary credentials from the hub (``POST /hub/api/sites/<site>/s3-credentials``) held by
    the file system object only."""
    import s3fs

    info = next((s for s in _hub_call("GET", "/sites") if s["id"] == site), None)
    if not info or not info.get("s3"):
        raise ValueError(f"site {site!r} has no S3 store on this hub")
    c = _hub_call("POST", f"/sites/{site}/s3-credentials")
    store = info["s3"]
    fs = s3fs.S3FileSystem(
        key=c["AccessKeyId"],
        secret=c["SecretAccessKey"],
        token=c.get("SessionToken"),
        endpoint_url=store["endpoint"],
        client_kwargs={"region_name": store["region"]},
    )
    # Every site keeps a user's files below users/NAME/ of its bucket (s3-exchange).
    return fs, f"{store['bucket']}/users/{os.environ['JUPYTERHUB_USER']}/"
