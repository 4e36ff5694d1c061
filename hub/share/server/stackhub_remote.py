# The "Remote Compute Kernels" part of the single-user servers' configuration (loaded by
# jupyter_server_config.py beside it): a stock jupyterhub-singleuser in gateway mode whose kernels
# run at a site and whose files live in the user's S3 space at that site. Everything
# user-specific comes from the environment the hub sets:
#
#   JUPYTER_GATEWAY_URL / _AUTH_SCHEME / _AUTH_TOKEN / _ALLOWED_ENVS  GatewayClient (stock)
#   STACKHUB_GATEWAY_TOKEN_URL, STACKHUB_GATEWAY_TOKEN_EXPIRES_AT     renewal of the hub token
#   AWS_*, STACKHUB_S3_BUCKET, STACKHUB_S3_PREFIX                      the user's S3 grant
#
# Credentials stay in the environment: nothing here logs or prints them.
import json
import logging
import os
import time
import urllib.request

from jupyter_server.gateway.gateway_client import GatewayTokenRenewerBase

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)


class HubGatewayTokenRenewer(GatewayTokenRenewerBase):
    """Fetch a fresh gateway token from the hub before the current one expires.

    jupyter_server calls get_token before each gateway request (REST and the kernel WebSocket
    relay); the hub answers POST {STACKHUB_GATEWAY_TOKEN_URL} (authorised by this server's
    JUPYTERHUB_API_TOKEN) with {"token": ..., "expires_at": EPOCH_SECONDS}. A token is renewed
    when less than a quarter of its lifetime (at most five minutes) is left, so short lifetimes
    (a site's gateway_token_lifetime_secs) work too.
    """

    max_margin = 300.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._url = os.environ.get("STACKHUB_GATEWAY_TOKEN_URL", "")
        self._remember(float(os.environ.get("STACKHUB_GATEWAY_TOKEN_EXPIRES_AT") or 0))

    def _remember(self, expires_at):
        self._expires_at = expires_at
        lifetime = max(expires_at - time.time(), 0.0)
        self._margin = min(self.max_margin, lifetime / 4)

    def get_token(self, auth_header_key, auth_scheme, auth_token, **kwargs):
        if not self._url or time.time() < self._expires_at - self._margin:
            return auth_token
        req = urllib.request.Request(
            self._url,
            data=b"{}",
            method="POST",
            headers={
                "Authorization": "token " + os.environ.get("JUPYTERHUB_API_TOKEN", ""),
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.load(resp)
        self._remember(float(body["expires_at"]))
        self.log.info(
            "renewed the gateway token for %s (valid until %s)",
            os.environ.get("STACKHUB_SITE", "the site"),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._expires_at)),
        )
        return body["token"]


if os.environ.get("JUPYTER_GATEWAY_URL"):
    c.GatewayClient.gateway_token_renewer_class = HubGatewayTokenRenewer

# Remote-kernels servers only: a full Lab keeps its home as its contents (its S3 space is a
# second place, not the file browser's root).
if os.environ.get("JUPYTER_GATEWAY_URL") and os.environ.get("STACKHUB_S3_BUCKET"):
    c.ServerApp.contents_manager_class = "s3contents.S3ContentsManager"
    s3 = c.S3ContentsManager
    s3.bucket = os.environ["STACKHUB_S3_BUCKET"]
    s3.prefix = os.environ.get("STACKHUB_S3_PREFIX", "").strip("/")
    s3.endpoint_url = os.environ.get("AWS_ENDPOINT_URL", "")
    s3.region_name = os.environ.get("AWS_DEFAULT_REGION", "")
    s3.access_key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
    s3.secret_access_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if os.environ.get("AWS_SESSION_TOKEN"):
        s3.session_token = os.environ["AWS_SESSION_TOKEN"]


class RedactKernelStartArgs(logging.Filter):
    """jupyter_server's GatewayKernelManager logs every kernel start's arguments at INFO,
    including the environment forwarded to the kernel (the S3 grant and the gateway token).
    Keep the line, drop the arguments."""

    def filter(self, record):
        if isinstance(record.msg, str) and record.msg.startswith("GatewayKernelManager started kernel"):
            head = record.getMessage().split(", args:", 1)[0]
            record.msg = head + ", args: (not logged: they carry the kernel's credentials)"
            record.args = ()
        return True


# The server application's logger (traitlets names it after the class, "ServerApp").
logging.getLogger("ServerApp").addFilter(RedactKernelStartArgs())
