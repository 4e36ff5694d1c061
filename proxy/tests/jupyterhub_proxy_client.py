"""Drive stackhub-proxy with JupyterHub's own proxy client class.

Usage: python jupyterhub_proxy_client.py API_URL PUBLIC_URL TOKEN UPSTREAM_URL

`jupyterhub.proxy.ConfigurableHTTPProxy` with `should_start=False` is exactly what a JupyterHub
configured with an external proxy uses. Every step asserts; any failure exits non-zero with the
reason on stderr, and the last line printed on success is "ok".
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

from jupyterhub.proxy import ConfigurableHTTPProxy


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def main(api_url, public_url, token, upstream):
    proxy = ConfigurableHTTPProxy(api_url=api_url, auth_token=token, should_start=False)

    await proxy.add_route("/user/alice/", upstream, {"user": "alice", "server_name": ""})
    await proxy.add_route("/user/alice/gpu/", upstream + "/gpu", {"user": "alice", "server_name": "gpu"})

    routes = await proxy.get_all_routes()
    assert set(routes) == {"/user/alice/", "/user/alice/gpu/"}, routes
    alice = routes["/user/alice/"]
    assert alice["target"] == upstream, alice
    assert alice["data"]["user"] == "alice", alice
    assert alice["data"]["server_name"] == "", alice
    # JupyterHub lists only routes that carry its `jupyterhub` marker, so both being listed shows
    # the marker was stored; the class strips it (and `target`) from `data`.
    assert "last_activity" in alice["data"], alice

    # Real traffic flows through the routes the hub's client added.
    status, body = fetch(public_url + "/user/alice/api/status")
    assert status == 200, (status, body)
    seen = json.loads(body)
    assert seen["path"] == "/user/alice/api/status", seen
    status, body = fetch(public_url + "/user/alice/gpu/lab")
    assert status == 200, (status, body)
    assert json.loads(body)["path"] == "/gpu/user/alice/gpu/lab", body

    await proxy.delete_route("/user/alice/gpu/")
    routes = await proxy.get_all_routes()
    assert set(routes) == {"/user/alice/"}, routes
    status, _ = fetch(public_url + "/user/alice/gpu/lab")
    # The shorter route now takes the request.
    assert status == 200, status

    await proxy.delete_route("/user/alice/")
    assert await proxy.get_all_routes() == {}
    status, _ = fetch(public_url + "/user/alice/api/status")
    assert status == 404, status

    # Deleting a missing route is not an error for JupyterHub (it ignores the 404).
    await proxy.delete_route("/user/nobody/")

    # A wrong token is refused with 403.
    bad = ConfigurableHTTPProxy(api_url=api_url, auth_token="wrong", should_start=False)
    try:
        await bad.get_all_routes()
    except Exception as err:  # aiohttp (JupyterHub 6) or tornado (5.x) client error
        status = getattr(err, "status", None)
        if status is None:
            status = getattr(err, "code", None)
        assert status == 403, repr(err)
    else:
        raise AssertionError("wrong token was accepted")
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
