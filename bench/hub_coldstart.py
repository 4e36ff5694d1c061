#!/usr/bin/env python3
"""Cold start of a hub: exec to the first 200 from a URL, polled every 5 ms.

Usage: hub_coldstart.py --url URL --log FILE [--cwd DIR] [--timeout S] -- CMD [ARG...]

Starts CMD in its own process group, polls URL with a
fresh connection every --interval-ms until it answers 200, prints one JSON line
{"ms": .., "polls": ..} and stops CMD and all its descendants (SIGTERM, then SIGKILL).
Exits 1 if CMD exits or does not answer within --timeout seconds.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse


def descendants(pid):
    """Pids of all descendants of pid (read from /proc), children first."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc):
    """Stop proc, its process group and every descendant (JupyterHub starts its proxy in a
    session of its own, and leaves it running if the signal comes before its handler is set)."""
    kids = descendants(proc.pid)
    for pid in [proc.pid] + kids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in kids):
        time.sleep(0.05)
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cwd")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--interval-ms", type=float, default=5)
    ap.add_argument("cmd", nargs="+")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query

    with open(a.log, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(a.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=a.cwd,
                                start_new_session=True)
    polls = 0
    try:
        while True:
            polls += 1
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    ms = (time.monotonic() - t0) * 1000
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                print(f"hub_coldstart: {a.cmd[0]} exited with {proc.returncode} before answering "
                      f"(log: {a.log})", file=sys.stderr)
                return 1
            if time.monotonic() - t0 > a.timeout:
                print(f"hub_coldstart: no 200 from {a.url} within {a.timeout} s (log: {a.log})",
                      file=sys.stderr)
                return 1
            time.sleep(a.interval_ms / 1000)
        print(json.dumps({"ms": round(ms, 1), "polls": polls}))
        return 0
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
