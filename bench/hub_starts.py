#!/usr/bin/env python3
"""Timed server starts through a hub's REST API, for bench/scale.sh: prints one JSON line.

For each user in turn: POST /users/NAME/server, then (unless the answer was 201, which both
hubs give only when the server is ready) GET /users/NAME every --poll-ms until its default
server reports `ready`. Per start: post_ms (until the POST was answered) and ready_ms (until
the server was known ready). The servers are left running.

Only the standard library: runs under any python3.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse


class Api:
    def __init__(self, base, token, timeout=60):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.path = u.hostname, u.port, u.path.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout
        self.conn = None

    def call(self, method, path, body=None):
        """(status, parsed JSON or None); one keep-alive connection, reopened on errors."""
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, self.path + path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            try:
                doc = json.loads(data) if data else None
            except ValueError:
                doc = None
            return resp.status, doc
        raise AssertionError("unreachable")


def ready(doc):
    server = ((doc or {}).get("servers") or {}).get("")
    return bool(server and server.get("ready"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True, help="http://HOST:PORT/hub/api")
    ap.add_argument("--token", required=True)
    ap.add_argument("--poll-ms", type=float, default=2)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("users", nargs="+")
    a = ap.parse_args()
    api = Api(a.api, a.token)
    post_ms, ready_ms = [], []
    for user in a.users:
        t0 = time.perf_counter()
        status, doc = api.call("POST", f"/users/{user}/server", {})
        t_post = time.perf_counter()
        if status not in (201, 202):
            sys.exit(f"POST /users/{user}/server answered {status}: {doc}")
        if status != 201:
            while True:
                s, doc = api.call("GET", f"/users/{user}")
                if s == 200 and ready(doc):
                    break
                if time.perf_counter() - t0 > a.timeout:
                    sys.exit(f"{user}'s server not ready after {a.timeout} s: {s} {doc}")
                time.sleep(a.poll_ms / 1e3)
        t_ready = time.perf_counter()
        post_ms.append((t_post - t0) * 1e3)
        ready_ms.append((t_ready - t0) * 1e3)
    print(json.dumps({"post_ms": post_ms, "ready_ms": ready_ms}))


if __name__ == "__main__":
    main()
