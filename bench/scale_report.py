#!/usr/bin/env python3
"""Summarise the raw results of bench/scale.sh: print a table with the issue's targets, write JSON.

Input: JSON lines written by bench/scale.sh (kind rss / load / routes / starts / restart). One run
per measurement; percentiles are nearest-rank over that run's samples. Exit status: 0 if every
target is met, 3 if one is missed (or a hub is missing), 1 if a run went wrong.
"""

import argparse
import datetime
import json
import math
import os
import sys

NAMES = {"ours": "stackhub", "ours-pg": "stackhub on PostgreSQL", "jh": "JupyterHub+CHP"}
API_P99_MS = 10.0
RESTART_S = 5.0
FACTOR = 10.0


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s), max(1, math.ceil(p * len(s)))) - 1]


def fmt(x, digits=1, unit=""):
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for flag in ["ours-bin", "jh-version", "chp-version", "jh-settings", "loadavg-before",
                 "loadavg-after"]:
        ap.add_argument("--" + flag, default="")
    for flag in ["users", "servers", "starts", "requests", "spawn-conc"]:
        ap.add_argument("--" + flag, type=int, default=0)
    a = ap.parse_args()
    with open(a.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    targets = [t for t in NAMES if any(r.get("target") == t for r in rows)]
    problems = []

    def one(kind, t, test=None):
        for r in rows:
            if r["kind"] == kind and r["target"] == t and (test is None or r.get("test") == test):
                return r
        return None

    m = {t: {} for t in targets}
    raw = {t: [r for r in rows if r["target"] == t] for t in targets}
    for t in targets:
        for test in ["get-user", "list-page"]:
            r = one("load", t, test)
            if r is None:
                continue
            x = r["result"]
            bad = {k: v for k, v in x["statuses"].items() if k != "200"}
            if bad:
                problems.append(f"{t} {test}: non-200 answers {bad}")
            m[t][test] = {"p50_ms": x["p50_us"] / 1e3, "p99_ms": x["p99_us"] / 1e3,
                          "requests": x["requests"], "rps": x["rps"]}
        r = one("starts", t)
        if r:
            ready, post = r["result"]["ready_ms"], r["result"]["post_ms"]
            m[t]["start"] = {"p50_ms": pct(ready, 0.5), "p99_ms": pct(ready, 0.99), "n": len(ready),
                             "post_p50_ms": pct(post, 0.5), "post_p99_ms": pct(post, 0.99)}
        for test, key in [("fleet-start", "started_per_s"), ("fleet-stop", "stopped_per_s")]:
            r = one("routes", t, test)
            if r:
                secs = r["result"]["since_t0_ms"] / 1e3
                m[t][test] = {key: r["result"]["total"] / secs if secs else None, "seconds": secs}
        post = one("load", t, "fleet-post")
        if post:
            bad = {k: v for k, v in post["result"]["statuses"].items() if k not in ("201", "202")}
            if bad:
                problems.append(f"{t} fleet start: answers other than 201/202: {bad}")
        r, k = one("routes", t, "restart"), one("restart", t)
        if r and k:
            total = r["result"]["since_t0_ms"] / 1e3
            down = float(k["down"]) - float(k["kill"])
            m[t]["restart"] = {"seconds": total, "down_s": down, "up_s": total - down}
        for phase in ["users", "fleet", "loaded", "restarted"]:
            r = next((x for x in rows if x["kind"] == "rss" and x["target"] == t
                      and x["phase"] == phase), None)
            if r:
                m[t].setdefault("rss", {})[phase] = {
                    "total_mib": (r["hub_vmrss_kib"] + r["proxy_vmrss_kib"]) / 1024,
                    "hub_mib": r["hub_vmrss_kib"] / 1024, "proxy_mib": r["proxy_vmrss_kib"] / 1024,
                    "hub_peak_mib": r["hub_vmhwm_kib"] / 1024,
                    "hub_anon_mib": r.get("hub_rssanon_kib", 0) / 1024,
                    "hub_file_mib": r.get("hub_rssfile_kib", 0) / 1024}

    def val(t, *path):
        x = m.get(t, {})
        for p in path:
            x = x.get(p) if isinstance(x, dict) else None
        return x

    # (label, path, unit, digits, higher_is_better, absolute target or None)
    lines = [
        ("GET /users/NAME p50", ("get-user", "p50_ms"), "ms", 2, False, None),
        ("GET /users/NAME p99", ("get-user", "p99_ms"), "ms", 2, False, ("< 10 ms", API_P99_MS)),
        ("GET /users?offset&limit=100 p50", ("list-page", "p50_ms"), "ms", 2, False, None),
        ("GET /users?offset&limit=100 p99", ("list-page", "p99_ms"), "ms", 2, False,
         ("< 10 ms", API_P99_MS)),
        ("server start (POST to ready) p50", ("start", "p50_ms"), "ms", 1, False, None),
        ("server start (POST to ready) p99", ("start", "p99_ms"), "ms", 1, False,
         ("< 10 ms", API_P99_MS)),
        ("servers started (routes added) /s", ("fleet-start", "started_per_s"), "/s", 1, True, None),
        ("servers stopped (routes removed) /s", ("fleet-stop", "stopped_per_s"), "/s", 1, True, None),
        ("hub RSS at size (hub + proxy)", ("rss", "loaded", "total_mib"), "MiB", 1, False, None),
        ("restart to all routes answering", ("restart", "seconds"), "s", 2, False, ("< 5 s", RESTART_S)),
    ]
    checks, pg_checks = [], []
    pg = "ours-pg" in targets
    print()
    print(f"scale: {a.users} users, {a.servers} running stand-in servers per hub; "
          f"load average {a.loadavg_before} -> {a.loadavg_after}")
    print(f"ours: {a.ours_bin} (SQLite{'; ours-pg: on PostgreSQL' if pg else ''}); "
          f"JupyterHub {a.jh_version} + CHP {a.chp_version}")
    print(f"JupyterHub set: {a.jh_settings}")
    pg_head = f" {'ours-pg':>10} {'pg ratio':>8}" if pg else ""
    head = f"{'':38} {'ours':>10}{pg_head} {'JupyterHub':>11} {'ratio':>8}  targets (ours)"
    print(head)
    print("-" * len(head))
    for label, path, unit, digits, higher, absolute in lines:
        j = val("jh", *path)

        def ratio(o):
            if o is not None and j is not None and o > 0 and j > 0:
                return o / j if higher else j / o
            return None

        def check(o, into):
            marks = []
            if absolute:
                ok = o is not None and o < absolute[1]
                marks.append(f"{absolute[0]}: {'met' if ok else 'NOT MET'}")
                into.append({"what": f"{label} {absolute[0]}", "met": ok})
            if not label.endswith("p50"):  # the targets are on the p99s
                ok = ratio(o) is not None and ratio(o) >= FACTOR
                marks.append(f">= {FACTOR:.0f}x JH: {'met' if ok else 'NOT MET'}")
                into.append({"what": f"{label} >= {FACTOR:.0f}x JupyterHub", "met": ok})
            return marks

        o = val("ours", *path)
        marks = check(o, checks)
        pg_cols = ""
        if pg:
            p = val("ours-pg", *path)
            check(p, pg_checks)
            pg_cols = f" {fmt(p, digits):>10} {fmt(ratio(p), 1, 'x'):>8}"
        print(f"{label:38} {fmt(o, digits):>10}{pg_cols} {fmt(j, digits):>11} "
              f"{fmt(ratio(o), 1, 'x'):>8}  {'; '.join(marks)}   [{unit}]")
    for t in targets:
        rs = val(t, "restart")
        if rs:
            print(f"  {NAMES[t]} restart: {rs['down_s']:.2f} s to exit after SIGTERM, "
                  f"{rs['up_s']:.2f} s from exec to all {a.servers} routes answering")
        rss = val(t, "rss") or {}
        print(f"  {NAMES[t]} RSS (MiB, hub + proxy): " + ", ".join(
            f"{ph} {v['total_mib']:.1f} ({v['hub_mib']:.1f} + {v['proxy_mib']:.1f})"
            for ph, v in rss.items()))
        print(f"  {NAMES[t]} hub RSS split (MiB, heap and stacks + mapped files): " + ", ".join(
            f"{ph} {v['hub_anon_mib']:.1f} + {v['hub_file_mib']:.1f}" for ph, v in rss.items()))
        st = val(t, "start")
        if st:
            print(f"  {NAMES[t]} start POST answered: p50 {st['post_p50_ms']:.1f} ms, "
                  f"p99 {st['post_p99_ms']:.1f} ms ({st['n']} starts)")
    print("ratio: JupyterHub's time / latency / RSS over ours, or our rate over JupyterHub's.")
    for p in problems:
        print(f"PROBLEM: {p}")
    missed = [c["what"] for c in checks if not c["met"]]
    print(f"targets met: {len(checks) - len(missed)}/{len(checks)}")
    if pg:
        print(f"targets met on PostgreSQL: {sum(c['met'] for c in pg_checks)}/{len(pg_checks)}")

    doc = {
        "part": "scale",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": a.loadavg_before,
                    "loadavg_after": a.loadavg_after},
        "ours_bin": a.ours_bin, "jupyterhub": a.jh_version, "chp": a.chp_version,
        "jupyterhub_settings": a.jh_settings,
        "params": {"users": a.users, "servers": a.servers, "starts": a.starts,
                   "requests": a.requests, "spawn_concurrency": a.spawn_conc},
        "results": m, "targets": checks, "targets_postgresql": pg_checks, "problems": problems,
        "raw": raw,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    if problems:
        return 1
    return 3 if missed or "ours" not in targets or "jh" not in targets else 0


if __name__ == "__main__":
    sys.exit(main())
