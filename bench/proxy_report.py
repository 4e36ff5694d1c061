#!/usr/bin/env python3
"""Summarise the raw results of bench/proxy.sh: print a table with PASS/FAIL marks, write JSON.

Input: JSON lines written by bench/proxy.sh (kind http / ws / rss). Every number reported is the
median across rounds. Throughput ratios are paired: within each round the targets run back to
back, so the ratio is taken per round and the median of those is reported (and checked). On a
shared machine the load drifts between rounds; a paired ratio cancels what both sides of a round
saw, where a ratio of two medians taken from different rounds does not. The ratio of the
medians is kept in the JSON beside it. Exit status: 0 if every target is met, 3 if one is missed.
"""

import argparse
import datetime
import json
import os
import statistics
import sys

TARGETS = ["direct", "ours", "chp", "nginx", "haproxy"]
PROXIES = ["ours", "chp", "nginx", "haproxy"]
# Compared against in the ratios; HAProxy is a reference without a target of its own.
BASES = ["direct", "chp", "nginx", "haproxy"]
SIZES = {"1k": "1 KiB", "1m": "1 MiB"}
MIB = 1024 * 1024


def median(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for flag in ["ours-bin", "chp-version", "nginx-version", "haproxy-version"]:
        ap.add_argument("--" + flag, default="")
    for flag in [
        "rounds", "duration", "connections", "ws-rounds", "ws-iterations",
        "nagle-rounds", "nagle-iterations", "nagle-frames",
    ]:
        ap.add_argument("--" + flag, type=int, default=0)
    a = ap.parse_args()

    with open(a.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    http = {}
    for s in SIZES:
        http[s] = {}
        for t in TARGETS:
            runs = [r["result"] for r in rows
                    if r["kind"] == "http" and r["target"] == t and r["size"] == s]
            http[s][t] = {
                "rps_median": median([x["rps"] for x in runs]),
                "p50_us_median": median([x["p50_us"] for x in runs]),
                "p99_us_median": median([x["p99_us"] for x in runs]),
                "errors_total": sum(sum(x["errors"].values()) for x in runs),
                "rounds": runs,
            }

    ws = {}
    for test in ["echo", "nagle"]:
        ws[test] = {}
        for t in TARGETS:
            runs = [r["result"] for r in rows
                    if r["kind"] == "ws" and r["test"] == test and r["target"] == t]
            ws[test][t] = {
                "p50_us_median": median([x["p50_us"] for x in runs]),
                "p99_us_median": median([x["p99_us"] for x in runs]),
                "mean_us_median": median([x["mean_us"] for x in runs]),
                "rounds": runs,
            }

    rss = {t: {} for t in PROXIES}
    for r in rows:
        if r["kind"] == "rss":
            rss[r["target"]][r["phase"]] = {"vmrss_kib": r["vmrss_kib"], "vmhwm_kib": r["vmhwm_kib"]}

    def rps(s, t):
        return http[s][t]["rps_median"]

    def paired(s, base):
        by_round = {}
        for r in rows:
            if r["kind"] == "http" and r["size"] == s and r["target"] in ("ours", base):
                by_round.setdefault(r["round"], {})[r["target"]] = r["result"]["rps"]
        return [ratio(v["ours"], v[base]) for _, v in sorted(by_round.items())
                if "ours" in v and base in v and v[base]]

    ratios = {}
    for s in SIZES:
        for base in BASES:
            per_round = paired(s, base)
            ratios[f"throughput_{s}_ours_over_{base}"] = median(per_round)
            ratios[f"throughput_{s}_ours_over_{base}_per_round"] = per_round
            ratios[f"throughput_{s}_ours_over_{base}_of_medians"] = ratio(
                rps(s, "ours"), rps(s, base))
    e_ours, e_direct, e_nginx = (ws["echo"][t] for t in ["ours", "direct", "nginx"])
    ratios["ws_p50_ours_minus_direct_us"] = e_ours["p50_us_median"] - e_direct["p50_us_median"]
    ratios["ws_p99_ours_over_nginx"] = ratio(e_ours["p99_us_median"], e_nginx["p99_us_median"])

    checks = []

    def check(name, value, ok, limit):
        checks.append({"name": name, "value": value, "limit": limit, "pass": bool(ok)})

    for s, label in SIZES.items():
        r = ratios[f"throughput_{s}_ours_over_chp"]
        check(f"throughput {label}: ours / CHP", fmt_x(r), r is not None and r >= 3, ">= 3x")
        r = ratios[f"throughput_{s}_ours_over_nginx"]
        check(f"throughput {label}: ours / nginx", fmt_x(r), r is not None and r >= 0.9, ">= 0.9x")
    errs = sum(http[s]["ours"]["errors_total"] for s in SIZES)
    check("HTTP errors through ours (all rounds)", str(errs), errs == 0, "0")
    d = ratios["ws_p50_ours_minus_direct_us"]
    check("ws echo p50: ours - direct", f"{d:+.0f} us", d <= 30, "<= +30 us")
    check("ws echo p99: ours vs nginx",
          f"{e_ours['p99_us_median']:.0f} vs {e_nginx['p99_us_median']:.0f} us",
          e_ours["p99_us_median"] <= e_nginx["p99_us_median"], "ours <= nginx")
    idle = rss["ours"]["idle"]["vmrss_kib"]
    check("idle RSS ours", f"{idle / 1024:.1f} MiB", idle <= 10 * 1024, "<= 10 MiB")
    n = ws["nagle"]["ours"]["p50_us_median"]
    check("Nagle burst round trip p50 through ours", f"{n / 1000:.2f} ms", n < 10_000, "< 10 ms")

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "ours_bin": a.ours_bin,
        "chp_version": a.chp_version,
        "nginx_version": a.nginx_version,
        "haproxy_version": a.haproxy_version,
        "wrk": {"threads": 2, "connections": a.connections, "duration_s": a.duration,
                "rounds": a.rounds},
        "ws_echo": {"rounds": a.ws_rounds, "iterations": a.ws_iterations},
        "nagle": {"rounds": a.nagle_rounds, "iterations": a.nagle_iterations,
                  "frames_per_reply": a.nagle_frames},
    }
    report = {"meta": meta, "http": http, "ws_echo": ws["echo"], "nagle": ws["nagle"],
              "rss_kib": rss, "ratios": ratios, "targets": checks}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print_report(a, meta, http, ws, rss, ratios, checks)
    return 0 if all(c["pass"] for c in checks) else 3


def fmt_x(r):
    return "n/a" if r is None else f"{r:.2f}x"


def fmt_num(x, scale=1.0, digits=0):
    return "n/a" if x is None else f"{x / scale:,.{digits}f}"


def print_report(a, meta, http, ws, rss, ratios, checks):
    out = []
    p = out.append
    p("")
    p(f"stackhub proxy benchmark  ({meta['date']}, {meta['cpus']} CPUs, "
      f"load at end {meta['loadavg_at_end'][0]:.2f})")
    p(f"  ours  = {a.ours_bin}")
    p(f"  chp   = configurable-http-proxy {a.chp_version}   nginx = {a.nginx_version} "
      f"(upstream keepalive 64)   haproxy = {a.haproxy_version} (splice-response)")
    p(f"  every number is the median over rounds; wrk -t2 -c{a.connections} -d{a.duration}s "
      f"x {a.rounds} rounds, targets rotated each round")
    p("")
    p("HTTP throughput         ---------- 1 KiB ----------   ---------- 1 MiB ----------")
    p("target                   req/s   p50 ms   p99 ms  err     req/s   p50 ms   p99 ms  err")
    for t in TARGETS:
        cols = []
        for s in SIZES:
            h = http[s][t]
            cols.append(f"{fmt_num(h['rps_median']):>9} {fmt_num(h['p50_us_median'], 1000, 2):>8} "
                        f"{fmt_num(h['p99_us_median'], 1000, 2):>8} {h['errors_total']:>4}")
        p(f"{t:<16}{cols[0]}   {cols[1]}")
    p("")
    p("ratios (req/s; median of the per-round ratios, in brackets the ratio of the medians)")
    p("                         ours/direct        ours/CHP      ours/nginx    ours/haproxy")
    for s, label in SIZES.items():
        cols = "".join(
            f"{fmt_x(ratios[f'throughput_{s}_ours_over_{b}']):>9} "
            f"({fmt_x(ratios[f'throughput_{s}_ours_over_{b}_of_medians'])})"
            for b in BASES)
        p(f"  {label:<18}{cols}")
    for s, label in SIZES.items():
        for b, name in [("chp", "CHP"), ("nginx", "nginx"), ("haproxy", "HAProxy")]:
            rounds = " ".join(fmt_x(x) for x in ratios[f"throughput_{s}_ours_over_{b}_per_round"])
            p(f"    {label} ours/{name:<6} by round: {rounds}")
    p("")
    p(f"WebSocket round trip (us)     echo: {a.ws_rounds} x {a.ws_iterations}          "
          f"Nagle burst ({a.nagle_frames} frames): {a.nagle_rounds} x {a.nagle_iterations}")
    p("target                   p50      p99     mean          p50      p99     mean")
    for t in TARGETS:
        e, n = ws["echo"][t], ws["nagle"][t]
        p(f"{t:<16}{fmt_num(e['p50_us_median']):>9}{fmt_num(e['p99_us_median']):>9}"
          f"{fmt_num(e['mean_us_median']):>9}     {fmt_num(n['p50_us_median']):>9}"
          f"{fmt_num(n['p99_us_median']):>9}{fmt_num(n['mean_us_median']):>9}")
    p(f"  ws echo p50 ours - direct = {ratios['ws_p50_ours_minus_direct_us']:+.0f} us;  "
      f"p99 ours / nginx = {fmt_x(ratios['ws_p99_ours_over_nginx'])}")
    p("")
    p("RSS (MiB)               idle   after load   peak (VmHWM)")
    for t in PROXIES:
        i, l = rss[t].get("idle", {}), rss[t].get("loaded", {})
        name = "nginx (all procs)" if t == "nginx" else t
        p(f"{name:<18}{fmt_num(i.get('vmrss_kib'), 1024, 1):>10}{fmt_num(l.get('vmrss_kib'), 1024, 1):>13}"
          f"{fmt_num(l.get('vmhwm_kib'), 1024, 1):>15}")
    p("")
    p("targets")
    for c in checks:
        mark = "PASS" if c["pass"] else "FAIL"
        p(f"  [{mark}] {c['name']:<42} {c['value']:>18}   (target {c['limit']})")
    print("\n".join(out))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
