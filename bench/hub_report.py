#!/usr/bin/env python3
"""Summarise the raw results of bench/hub.sh: print a table with PASS/FAIL marks, write JSON.

Input: JSON lines written by bench/hub.sh (kind cold / rss / load / spawn / kernel). Every number reported is the
median across rounds. Exit status: 0 if every target is met, 3 if one is missed.
"""

import argparse
import datetime
import json
import os
import statistics
import sys

TARGETS = ["ours", "jh"]
NAMES = {"ours": "stackhub", "jh": "JupyterHub+CHP"}
API_TESTS = ["get-c1", "get-cN", "list-c1", "list-cN"]
MIB = 1024


def median(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_x(r, digits=1):
    return "n/a" if r is None else f"{r:.{digits}f}x"


def fmt_num(x, scale=1.0, digits=0):
    return "n/a" if x is None else f"{x / scale:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for flag in ["ours-bin", "jh-version", "chp-version", "loadavg-before", "loadavg-after"]:
        ap.add_argument("--" + flag, default="")
    for flag in ["cold-rounds", "rounds", "duration", "connections", "create", "users"]:
        ap.add_argument("--" + flag, type=int, default=0)
    a = ap.parse_args()

    with open(a.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    cold = {}
    for t in TARGETS:
        runs = [r["result"]["ms"] for r in rows if r["kind"] == "cold" and r["target"] == t]
        cold[t] = {"ms_median": median(runs), "ms_rounds": runs}

    rss = {t: {} for t in TARGETS}
    for r in rows:
        if r["kind"] == "rss":
            rss[r["target"]][r["phase"]] = {k: v for k, v in r.items()
                                           if k not in ("kind", "phase", "target")}

    create = {}
    for t in TARGETS:
        runs = [r["result"] for r in rows
                if r["kind"] == "load" and r["test"] == "create" and r["target"] == t]
        x = runs[0] if runs else {}
        created = x.get("statuses", {}).get("201", 0)
        secs = x.get("elapsed_s") or None
        create[t] = {"created_201": created, "requests": x.get("requests"),
                     "users_per_s": created / secs if secs else None,
                     "p50_us": x.get("p50_us"), "p99_us": x.get("p99_us"), "raw": x}

    api = {}
    for test in API_TESTS:
        api[test] = {}
        for t in TARGETS:
            runs = [r["result"] for r in rows
                    if r["kind"] == "load" and r["test"] == test and r["target"] == t]
            bad = sum(n for x in runs for code, n in x["statuses"].items() if code != "200")
            api[test][t] = {
                "rps_median": median([x["rps"] for x in runs]),
                "p50_us_median": median([x["p50_us"] for x in runs]),
                "p99_us_median": median([x["p99_us"] for x in runs]),
                "non_200_total": bad,
                "rounds": runs,
            }

    spawn = {t: next((r["result"] for r in rows if r["kind"] == "spawn" and r["target"] == t),
                     {}) for t in TARGETS}
    kernel = {t: {r["path"]: r["result"] for r in rows
                  if r["kind"] == "kernel" and r["target"] == t} for t in TARGETS}
    rtt = {t: {path: kernel[t].get(path, {}).get("rtt", {}).get("p50_us")
               for path in ("hub", "direct")} for t in TARGETS}

    ratios = {
        "cold_start_jh_over_ours": ratio(cold["jh"]["ms_median"], cold["ours"]["ms_median"]),
        "users_per_s_ours_over_jh": ratio(create["ours"]["users_per_s"],
                                          create["jh"]["users_per_s"]),
    }
    for test in API_TESTS:
        ratios[f"{test}_rps_ours_over_jh"] = ratio(api[test]["ours"]["rps_median"],
                                                  api[test]["jh"]["rps_median"])
    idle_ours = rss["ours"].get("idle", {}).get("hub_vmrss_kib")
    jh_idle = rss["jh"].get("idle", {})
    jh_idle_sum = (jh_idle.get("hub_vmrss_kib", 0) + jh_idle.get("child_vmrss_kib", 0)) or None
    ratios["idle_rss_jh_over_ours"] = ratio(jh_idle_sum, idle_ours)
    ratios["spawn_overhead_jh_over_ours"] = ratio(spawn["jh"].get("overhead_ms"),
                                                  spawn["ours"].get("overhead_ms"))
    for t in TARGETS:
        ratios[f"kernel_rtt_{t}_hub_over_direct"] = ratio(rtt[t]["hub"], rtt[t]["direct"])

    checks = []

    def check(name, value, ok, limit):
        checks.append({"name": name, "value": value, "limit": limit, "pass": bool(ok)})

    for test in API_TESTS:
        r = ratios[f"{test}_rps_ours_over_jh"]
        check(f"{label(test, a.connections)}: req/s ours / JH", fmt_x(r),
              r is not None and r >= 20, ">= 20x")
        p99 = api[test]["ours"]["p99_us_median"]
        check(f"{label(test, a.connections)}: p99 ours", f"{fmt_num(p99, 1000, 2)} ms",
              p99 is not None and p99 < 5000, "< 5 ms")
    bad = sum(api[t]["ours"]["non_200_total"] for t in API_TESTS)
    check("API non-200 answers from ours (all rounds)", str(bad), bad == 0, "0")
    c = cold["ours"]["ms_median"]
    check("cold start ours", f"{fmt_num(c, 1, 1)} ms", c is not None and c <= 100, "<= 100 ms")
    check("idle RSS ours", f"{fmt_num(idle_ours, MIB, 1)} MiB",
          idle_ours is not None and idle_ours <= 25 * MIB, "<= 25 MiB")
    check(f"users created by ours (of {a.create})", str(create["ours"]["created_201"]),
          create["ours"]["created_201"] == a.create, f"{a.create} x 201")

    o = spawn["ours"].get("overhead_ms")
    check("spawn overhead ours (median)", f"{fmt_num(o, 1, 1)} ms", o is not None and o <= 50,
          "<= 50 ms")
    r = ratios["kernel_rtt_ours_hub_over_direct"]
    check("kernel 1+1 p50 via ours / direct", fmt_x(r, 2), r is not None and r <= 1.3, "<= 1.3x")

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_before": a.loadavg_before,
        "loadavg_after": a.loadavg_after,
        "ours_bin": a.ours_bin,
        "jupyterhub_version": a.jh_version,
        "chp_version": a.chp_version,
        "cold_rounds": a.cold_rounds,
        "load": {"rounds": a.rounds, "duration_s": a.duration, "connections": a.connections,
                 "users": a.users, "created_one_by_one": a.create},
    }
    report = {"meta": meta, "cold_start": cold, "rss_kib": rss, "create": create, "api": api,
              "spawn": spawn, "kernel": kernel, "ratios": ratios, "targets": checks}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print_report(a, meta, cold, rss, create, api, spawn, rtt, ratios, checks)
    return 0 if all(c["pass"] for c in checks) else 3


def label(test, conns):
    what, c = test.split("-")
    path = "GET /users/NAME" if what == "get" else "GET /users"
    return f"{path} c{1 if c == 'c1' else conns}"


def print_report(a, meta, cold, rss, create, api, spawn, rtt, ratios, checks):
    out = []
    p = out.append
    p("")
    p(f"stackhub hub benchmark  ({meta['date']}, {meta['cpus']} CPUs, "
      f"load average {a.loadavg_before} at start, {a.loadavg_after} at end)")
    p(f"  ours = stackhub {a.ours_bin}, public port")
    p(f"  jh   = JupyterHub {a.jh_version} + configurable-http-proxy {a.chp_version}, "
      f"public port (through CHP)")
    p("  ratio = stackhub / JupyterHub for rates, JupyterHub / stackhub for times and memory")
    p(f"  medians over rounds; API: {a.rounds} rounds x {a.duration}s per test, "
      f"{a.users} users, hubs rotated each round")
    p("")
    p(f"{'':<34}{'stackhub':>14}{'JupyterHub+CHP':>18}{'ratio':>10}")
    c_o, c_j = cold["ours"]["ms_median"], cold["jh"]["ms_median"]
    p(f"{f'cold start, ms ({a.cold_rounds} rounds)':<34}{fmt_num(c_o, 1, 1):>14}"
      f"{fmt_num(c_j, 1, 1):>18}{fmt_x(ratios['cold_start_jh_over_ours']):>10}  (JH / ours)")
    i_o = rss["ours"].get("idle", {})
    i_j = rss["jh"].get("idle", {})
    jh_sum = i_j.get("hub_vmrss_kib", 0) + i_j.get("child_vmrss_kib", 0)
    p(f"{'idle RSS, MiB':<34}{fmt_num(i_o.get('hub_vmrss_kib'), MIB, 1):>14}"
      f"{fmt_num(jh_sum, MIB, 1):>18}{fmt_x(ratios['idle_rss_jh_over_ours']):>10}  (JH / ours)")
    p(f"{'  of which hub / proxy':<34}{'-':>14}"
      f"{fmt_num(i_j.get('hub_vmrss_kib'), MIB, 1) + ' / ' + fmt_num(i_j.get('child_vmrss_kib'), MIB, 1):>18}")
    l_o = rss["ours"].get("loaded", {})
    l_j = rss["jh"].get("loaded", {})
    p(f"{'RSS after load (peak), MiB':<34}"
      f"{fmt_num(l_o.get('hub_vmrss_kib'), MIB, 1) + ' (' + fmt_num(l_o.get('hub_vmhwm_kib'), MIB, 1) + ')':>14}"
      f"{fmt_num(l_j.get('hub_vmrss_kib', 0) + l_j.get('child_vmrss_kib', 0), MIB, 1) + ' (' + fmt_num(l_j.get('hub_vmhwm_kib', 0) + l_j.get('child_vmhwm_kib', 0), MIB, 1) + ')':>18}")
    u_o, u_j = create["ours"], create["jh"]
    p(f"{f'users created/s ({a.create} POSTs, c1)':<34}{fmt_num(u_o['users_per_s']):>14}"
      f"{fmt_num(u_j['users_per_s']):>18}{fmt_x(ratios['users_per_s_ours_over_jh']):>10}")
    p(f"{'  201 answers':<34}{u_o['created_201']:>14}{u_j['created_201']:>18}")
    p("")
    p(f"{'API (' + str(a.users) + ' users)':<22}{'----------- stackhub ------------':>36}"
      f"{'-------- JupyterHub+CHP ---------':>37}")
    p(f"{'':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'!200':>6}"
      f"{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'!200':>6}{'ratio':>9}")
    for test in API_TESTS:
        o, j = api[test]["ours"], api[test]["jh"]
        p(f"{label(test, a.connections):<22}"
          f"{fmt_num(o['rps_median']):>10}{fmt_num(o['p50_us_median'], 1000, 2):>10}"
          f"{fmt_num(o['p99_us_median'], 1000, 2):>10}{o['non_200_total']:>6}"
          f"{fmt_num(j['rps_median']):>11}{fmt_num(j['p50_us_median'], 1000, 2):>10}"
          f"{fmt_num(j['p99_us_median'], 1000, 2):>10}{j['non_200_total']:>6}"
          f"{fmt_x(ratios[f'{test}_rps_ours_over_jh']):>9}")
    p("")
    p(f"{'spawns (medians)':<34}{'stackhub':>14}{'JupyterHub+CHP':>18}{'ratio':>10}")
    for key, what in [("spawn_ms", "spawn-to-ready, ms"), ("own_ms", "  server's own start, ms"),
                      ("overhead_ms", "  overhead (difference), ms"),
                      ("noticed_ms", "  listening -> ready event, ms")]:
        so, sj = spawn["ours"].get(key), spawn["jh"].get(key)
        rr = ratio(sj, so) if key in ("overhead_ms", "noticed_ms") else None
        p(f"{what:<34}{fmt_num(so, 1, 1):>14}{fmt_num(sj, 1, 1):>18}"
          f"{(fmt_x(rr) + '  (JH / ours)') if rr else '':>23}")
    p("")
    p(f"{'kernel 1+1 round trip, p50 ms':<34}{'stackhub':>14}{'JupyterHub+CHP':>18}")
    for path, what in [("hub", "through the hub's public port"),
                       ("direct", "straight to the server")]:
        p(f"{'  ' + what:<34}{fmt_num(rtt['ours'][path], 1000, 2):>14}"
          f"{fmt_num(rtt['jh'][path], 1000, 2):>18}")
    p(f"{'  through / direct':<34}{fmt_x(ratios['kernel_rtt_ours_hub_over_direct'], 2):>14}"
      f"{fmt_x(ratios['kernel_rtt_jh_hub_over_direct'], 2):>18}")
    p("")
    p("targets")
    for c in checks:
        mark = "PASS" if c["pass"] else "FAIL"
        p(f"  [{mark}] {c['name']:<42} {c['value']:>14}   (target {c['limit']})")
    print("\n".join(out))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
