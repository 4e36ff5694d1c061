#!/usr/bin/env python3
"""Summarise the raw results of bench/dask.sh: print a table with the issue's targets, write JSON.

Input: JSON lines written by bench/dask.sh (kind rss / round / peak; each `result` is a line of
bench/dask_bench.py). Every figure is the median over rounds; the proxy / direct ratio is paired
(per round, both measured interleaved on the same cluster), then the median of those. Exit
status: 0 if every target is met, 3 if one is missed, 1 if a run went wrong.
"""

import argparse
import datetime
import json
import os
import statistics
import sys

NAMES = {"ours": "stackhub-gateway", "upstream": "dask-gateway-server"}
CREATE_RATIO = 0.5  # ours' create to running <= 0.5x upstream's
PROXY_RATIO = 1.1  # round trip through our proxy <= 1.1x direct
RSS_RATIO = 0.2  # our RSS <= 1/5 of upstream's server + proxy


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1, unit=""):
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for flag in ["ours-bin", "versions", "upstream-settings", "loadavg-before", "loadavg-after"]:
        ap.add_argument("--" + flag, default="")
    for flag in ["rounds", "iterations", "clusters"]:
        ap.add_argument("--" + flag, type=int, default=0)
    a = ap.parse_args()

    raw = [json.loads(line) for line in open(a.results) if line.strip()]
    problems = []
    m = {}
    for t in NAMES:
        recs = [r for r in raw if r["kind"] == "round" and r["target"] == t]
        rounds = [r["result"] for r in recs]
        rss = {r["result"]["phase"]: r["result"] for r in raw
               if r["kind"] == "rss" and r["target"] == t}
        peak = [r["vmhwm_kib"] for r in raw if r["kind"] == "peak" and r["target"] == t]
        if len(rounds) != a.rounds:
            problems.append(f"{t}: {len(rounds)} of {a.rounds} rounds")
        if not {"idle", "clusters"} <= set(rss):
            problems.append(f"{t}: RSS phases missing ({sorted(rss)})")
        m[t] = {
            "create_ms": med([r["create_ms"] for r in rounds]),
            "scale4_ms": med([r["scale_ms"] for r in rounds]),
            "stop_ms": med([r["stop_ms"] for r in rounds]),
            "gone_ms": med([r["gone_s"] * 1e3 for r in recs if "gone_s" in r]),
            "rtt_proxy_p50_us": med([r["rtt_proxy_us"]["p50"] for r in rounds]),
            "rtt_proxy_p99_us": med([r["rtt_proxy_us"]["p99"] for r in rounds]),
            "rtt_direct_p50_us": med([r["rtt_direct_us"]["p50"] for r in rounds]),
            "rtt_direct_p99_us": med([r["rtt_direct_us"]["p99"] for r in rounds]),
            "proxy_over_direct": med([r["rtt_proxy_us"]["p50"] / r["rtt_direct_us"]["p50"]
                                      for r in rounds]),
            "proxy_over_direct_rounds": [round(r["rtt_proxy_us"]["p50"] / r["rtt_direct_us"]["p50"], 3)
                                         for r in rounds],
            "rss_mib": {ph: v["vmrss_kib"] / 1024 for ph, v in rss.items()},
            "rss_per_process_mib": {ph: [p["vmrss_kib"] / 1024 for p in v.get("per_pid", [])]
                                    for ph, v in rss.items()},
            "create_all_s": rss.get("clusters", {}).get("create_all_s"),
            "peak_mib": peak[0] / 1024 if peak else None,
        }

    o, u = m["ours"], m["upstream"]

    def ratio(x, y):
        return None if x is None or y in (None, 0) else x / y

    checks = []

    def check(what, value, limit):
        ok = value is not None and value <= limit
        checks.append({"what": what, "value": value, "limit": limit, "met": ok})
        return f"<= {limit:g}x: {'met' if ok else 'NOT MET'}"

    print()
    print(f"Dask gateways on {os.cpu_count()} cores, load {a.loadavg_before} -> {a.loadavg_after}; "
          f"{a.versions}")
    print(f"upstream: {a.upstream_settings}; medians of {a.rounds} rounds, {a.iterations} round "
          f"trips each way per round, RSS with {a.clusters} clusters")
    print(f"{'':36} {'ours':>10} {'upstream':>10} {'ours/up':>8}  target")
    rows = [
        ("create to running (ms)", "create_ms", 0, True),
        ("scale to 4 workers connected (ms)", "scale4_ms", 0, False),
        ("stop (ms)", "stop_ms", 0, False),
        ("stop: processes gone after (ms)", "gone_ms", 0, False),
        ("round trip via proxy p50 (us)", "rtt_proxy_p50_us", 0, False),
        ("round trip direct p50 (us)", "rtt_direct_p50_us", 0, False),
        ("round trip via proxy p99 (us)", "rtt_proxy_p99_us", 0, False),
        ("round trip direct p99 (us)", "rtt_direct_p99_us", 0, False),
    ]
    for label, key, digits, target in rows:
        r = ratio(o[key], u[key])
        mark = check(f"create to running <= {CREATE_RATIO}x upstream", r, CREATE_RATIO) if target else ""
        print(f"{label:36} {fmt(o[key], digits):>10} {fmt(u[key], digits):>10} "
              f"{fmt(r, 2, 'x'):>8}  {mark}")
    mark = check(f"round trip via our proxy <= {PROXY_RATIO}x direct", o["proxy_over_direct"],
                 PROXY_RATIO)
    print(f"{'proxy / direct p50 (paired)':36} {fmt(o['proxy_over_direct'], 2, 'x'):>10} "
          f"{fmt(u['proxy_over_direct'], 2, 'x'):>10} {'':>8}  ours {mark}")
    for ph, label in [("idle", "RSS idle (MiB)"), ("clusters", f"RSS, {a.clusters} clusters (MiB)"),
                      ("stopped", "RSS, clusters stopped (MiB)")]:
        ov, uv = o["rss_mib"].get(ph), u["rss_mib"].get(ph)
        r = ratio(ov, uv)
        mark = check(f"{label} <= 1/5 of upstream's server + proxy", r, RSS_RATIO) \
            if ph in ("idle", "clusters") else ""
        print(f"{label:36} {fmt(ov):>10} {fmt(uv):>10} {fmt(r, 3, 'x'):>8}  {mark}")
    print(f"{'RSS peak, end of run (MiB)':36} {fmt(o['peak_mib']):>10} {fmt(u['peak_mib']):>10} "
          f"{fmt(ratio(o['peak_mib'], u['peak_mib']), 3, 'x'):>8}")
    up_split = u["rss_per_process_mib"]
    print("  upstream RSS server + proxy (MiB): " + ", ".join(
        f"{ph} {' + '.join(f'{x:.1f}' for x in v)}" for ph, v in up_split.items()))
    warm = next((r for r in raw if r["kind"] == "warm"), None)
    if warm:
        print(f"  ours: {warm['processes']} warm scheduler(s) waiting for the next cluster hold "
              f"{warm['vmrss_kib'] / 1024:.1f} MiB more (Python processes, not in the RSS rows; "
              f"with them idle: {fmt(o['rss_mib'].get('idle', 0) + warm['vmrss_kib'] / 1024)} MiB)")
    print(f"  {a.clusters} clusters created one after the other: ours "
          f"{fmt(o['create_all_s'])} s, upstream {fmt(u['create_all_s'])} s")
    print(f"  proxy / direct per round: ours {o['proxy_over_direct_rounds']}, "
          f"upstream {u['proxy_over_direct_rounds']}")
    for p in problems:
        print(f"PROBLEM: {p}")
    missed = [c["what"] for c in checks if not c["met"]]
    print(f"targets met: {len(checks) - len(missed)}/{len(checks)}")

    doc = {
        "part": "dask",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": a.loadavg_before,
                    "loadavg_after": a.loadavg_after},
        "ours_bin": a.ours_bin, "versions": a.versions, "upstream_settings": a.upstream_settings,
        "params": {"rounds": a.rounds, "iterations": a.iterations, "clusters": a.clusters},
        "results": m, "targets": checks, "problems": problems, "raw": raw,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    if problems:
        return 1
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
