#!/usr/bin/env python3
"""Spawn overhead of one hub, for bench/hub.sh: prints one JSON line.

Each round starts USER's default server through the REST API, reads the progress event stream
until `ready`, then stops the server and waits until the hub reports it gone. Per round:

- spawn_ms: POST until the `ready` event arrived;
- own_ms: the single-user server's own start, from the exec of its command (a wrapper appends
  the time to STAMP) to its "Jupyter Server ... is running at" log line (in LOG);
- overhead_ms = spawn_ms - own_ms: what the hub (and its spawner and proxy) add.
- noticed_ms: from the "is running at" line to the `ready` event (how long a listening server
  waits to be noticed).

Only the standard library: runs under any python3.
"""

import argparse
import http.client
import json
import re
import statistics
import sys
import time
import urllib.parse

RUNNING = re.compile(
    r"^\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] Jupyter Server \S+ is running at:"
)


def call(base, token, method, path, body=None, timeout=60):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {"Authorization": f"token {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, u.path + path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def wait_ready(base, token, user, timeout):
    """Read the progress stream until an event says ready; the time it arrived."""
    u = urllib.parse.urlsplit(base)
    deadline = time.time() + timeout
    while time.time() < deadline:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        conn.request(
            "GET",
            f"{u.path}/users/{user}/server/progress",
            headers={"Authorization": f"token {token}", "Accept": "text/event-stream"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"progress stream answered {resp.status}: {resp.read()[:200]!r}")
        while True:
            line = resp.readline()
            if not line:
                break  # stream ended without ready (e.g. it began before the spawn): retry
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if event.get("ready"):
                    t = time.time()
                    conn.close()
                    return t
                if event.get("failed"):
                    raise SystemExit(f"spawn failed: {event}")
        conn.close()
    raise SystemExit(f"{user}'s server not ready within {timeout} s")


def wait_stopped(base, token, user, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, data = call(base, token, "GET", f"/users/{user}")
        model = json.loads(data)
        if status == 200 and not model.get("servers") and not model.get("pending"):
            return
        time.sleep(0.05)
    raise SystemExit(f"{user}'s server still there {timeout} s after the stop")


def last_running_at(log, after):
    """Epoch seconds of the last "is running at" line logged after `after`."""
    found = None
    with open(log, errors="replace") as f:
        for line in f:
            m = RUNNING.match(line)
            if m:
                t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
                t += int(m.group(1)[20:]) / 1000
                if t >= after - 0.002:
                    found = t
    return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True, help="http://host:port/hub/api")
    p.add_argument("--token", required=True)
    p.add_argument("--user", default="spawnee")
    p.add_argument("--stamp", required=True, help="file the wrapper appends exec times to")
    p.add_argument("--log", required=True, help="file holding the server's log")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--keep", action="store_true", help="leave the last server running")
    a = p.parse_args()

    status, data = call(a.api, a.token, "POST", f"/users/{a.user}")
    if status not in (201, 409):
        raise SystemExit(f"creating {a.user} answered {status}: {data[:200]!r}")
    rounds = []
    for r in range(a.rounds):
        with open(a.stamp, "a"):
            pass
        with open(a.stamp) as f:
            stamps_before = len(f.read().split())
        t0 = time.time()
        status, data = call(a.api, a.token, "POST", f"/users/{a.user}/server", body={})
        if status not in (201, 202):
            raise SystemExit(f"start answered {status}: {data[:300]!r}")
        t_ready = wait_ready(a.api, a.token, a.user, a.timeout)
        with open(a.stamp) as f:
            stamps = [float(x) for x in f.read().split()]
        if len(stamps) <= stamps_before:
            raise SystemExit(f"the server's wrapper wrote no exec time to {a.stamp}")
        t_exec = stamps[-1]
        # The log line can land a moment after readiness was noticed: wait for it.
        t_listen = None
        for _ in range(100):
            t_listen = last_running_at(a.log, t_exec)
            if t_listen is not None:
                break
            time.sleep(0.02)
        if t_listen is None:
            raise SystemExit(f"no 'is running at' line after the exec in {a.log}")
        spawn = (t_ready - t0) * 1e3
        own = (t_listen - t_exec) * 1e3
        rounds.append(
            {
                "spawn_ms": round(spawn, 2),
                "own_ms": round(own, 2),
                "overhead_ms": round(spawn - own, 2),
                "noticed_ms": round((t_ready - t_listen) * 1e3, 2),
            }
        )
        print(f"round {r + 1}: {rounds[-1]}", file=sys.stderr)
        if a.keep and r == a.rounds - 1:
            break
        status, data = call(a.api, a.token, "DELETE", f"/users/{a.user}/server")
        if status not in (202, 204):
            raise SystemExit(f"stop answered {status}: {data[:300]!r}")
        wait_stopped(a.api, a.token, a.user, a.timeout)

    def med(k):
        return statistics.median(x[k] for x in rounds)

    print(
        json.dumps(
            {
                "rounds": rounds,
                "spawn_ms": med("spawn_ms"),
                "own_ms": med("own_ms"),
                "overhead_ms": med("overhead_ms"),
                "noticed_ms": med("noticed_ms"),
            }
        )
    )


if __name__ == "__main__":
    main()
