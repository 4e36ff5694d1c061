#!/usr/bin/env python3
"""One failover, for bench/ha.sh: kill a hub process, time what works again; prints one JSON line.

Set up first (imports, threads waiting), then SIGKILL --kill PID and start the clocks. Then, at
once and side by side, until each succeeds or --timeout passes:

- api: GET BASE/hub/api/users/USER (a fresh connection each try, 2 ms apart) until a 200:
  api_ms, and api_failures (the tries that failed before it);
- spawn (--spawn-user): POST BASE/hub/api/users/NAME/server, retried while it fails, then GET
  the user until its server is ready: spawn_ms (kill to ready);
- in flight (--inflight-user): a user whose spawn was started on the killed process before the
  kill; GET the user until its server is ready: inflight_ms, or null when it was not ready
  within --inflight-timeout (inflight_last: what the hub said last).

With --restart CMD..., CMD is started right after the kill (a hub restarted in place: the
JupyterHub reference); its pid is in the output (restarted_pid) and its output goes to
--restart-log. All times are milliseconds from the kill.

Only the standard library: runs under any python3.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse


def call(base, token, method, path, body=None, timeout=2.0):
    """(status, parsed JSON or None) on a fresh connection; (None, error text) on failure."""
    u = urllib.parse.urlsplit(base)
    headers = {"Authorization": f"token {token}", "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path.rstrip("/") + "/hub/api" + path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else None
    except ValueError:
        return resp.status, None


def server_of(doc):
    return ((doc or {}).get("servers") or {}).get("") if isinstance(doc, dict) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kill", type=int, required=True, help="pid to SIGKILL")
    ap.add_argument("--base", required=True, help="http://HOST:PORT (the load balancer / hub)")
    ap.add_argument("--token", required=True)
    ap.add_argument("--user", required=True, help="the user the API probe reads")
    ap.add_argument("--spawn-user")
    ap.add_argument("--inflight-user")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--inflight-timeout", type=float, default=30)
    ap.add_argument("--restart-log")
    ap.add_argument("--restart-cwd")
    ap.add_argument("--restart", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    out = {}
    go = threading.Event()
    t0 = [0.0]

    def ms():
        return (time.perf_counter() - t0[0]) * 1e3

    def api_probe():
        go.wait()
        failures = 0
        while ms() < a.timeout * 1e3:
            status, _ = call(a.base, a.token, "GET", f"/users/{a.user}")
            if status == 200:
                out["api_ms"] = ms()
                break
            failures += 1
            time.sleep(0.002)
        out["api_failures"] = failures

    def wait_ready(user, limit_s, key):
        last = None
        while ms() < limit_s * 1e3:
            status, doc = call(a.base, a.token, "GET", f"/users/{user}")
            server = server_of(doc) if status == 200 else None
            last = {"status": status, "server": server}
            if server and server.get("ready"):
                out[key] = ms()
                return
            time.sleep(0.01)
        out[key] = None
        out[key.replace("_ms", "_last")] = last

    def spawn_probe():
        go.wait()
        posts = 0
        while ms() < a.timeout * 1e3:
            status, doc = call(a.base, a.token, "POST", f"/users/{a.spawn_user}/server", {},
                               timeout=10)
            posts += 1
            if status == 201:
                out["spawn_ms"] = ms()
                break
            msg = json.dumps(doc) if doc is not None else ""
            if status == 202 or (status == 400 and ("pending" in msg or "running" in msg)):
                wait_ready(a.spawn_user, a.timeout, "spawn_ms")
                break
            if status is not None and 400 <= status < 500:
                out["spawn_error"] = f"{status} {msg}"
                break
            time.sleep(0.005)
        out["spawn_posts"] = posts

    def inflight_probe():
        go.wait()
        wait_ready(a.inflight_user, a.inflight_timeout, "inflight_ms")

    threads = [threading.Thread(target=api_probe)]
    if a.spawn_user:
        threads.append(threading.Thread(target=spawn_probe))
    if a.inflight_user:
        threads.append(threading.Thread(target=inflight_probe))
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    os.kill(a.kill, signal.SIGKILL)
    out["killed_at"] = time.time()
    if a.restart:
        log = open(a.restart_log or os.devnull, "ab")
        proc = subprocess.Popen(a.restart, cwd=a.restart_cwd, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        out["restarted_pid"] = proc.pid
        out["restart_exec_ms"] = ms()
    go.set()
    for t in threads:
        t.join()
    print(json.dumps(out))
    return 0 if out.get("api_ms") is not None else 1


if __name__ == "__main__":
    sys.exit(main())
