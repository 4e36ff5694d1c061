#!/usr/bin/env python3
"""Summarise the raw results of bench/ha.sh: print a table, write JSON.

Input: JSON lines written by bench/ha.sh (kind load / failover / jh-restart). Medians across
rounds. The issue sets no numeric target for this part: it prints the figures, JupyterHub's
restart beside our failover as the reference.
"""

import argparse
import datetime
import json
import os
import statistics
import sys


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0, unit=""):
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    for flag in ["ours-bin", "jh-version", "haproxy", "check", "loadavg-before",
                 "loadavg-after"]:
        ap.add_argument("--" + flag, default="")
    for flag in ["users", "rounds", "duration", "connections", "kills", "slow-ms", "inflight-timeout"]:
        ap.add_argument("--" + flag, type=int, default=0)
    a = ap.parse_args()
    with open(a.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    rps = {}
    for label in ["replicas-1", "replicas-2"]:
        runs = [r["result"] for r in rows if r["kind"] == "load" and r["test"] == label]
        rps[label] = {
            "rps_median": median([x["rps"] for x in runs]),
            "p50_ms_median": median([x["p50_us"] / 1e3 for x in runs]),
            "p99_ms_median": median([x["p99_us"] / 1e3 for x in runs]),
            "non_200": sum(n for x in runs for c, n in x["statuses"].items() if c != "200"),
            "rounds": runs,
        }
    # Paired: 2 replicas over 1 within each round (the two ran back to back), then the median.
    by_round = {}
    for r in rows:
        if r["kind"] == "load":
            by_round.setdefault(r["round"], {})[r["test"]] = r["result"]["rps"]
    paired = [x["replicas-2"] / x["replicas-1"] for _, x in sorted(by_round.items())
              if x.get("replicas-1") and x.get("replicas-2")]
    fo = [r for r in rows if r["kind"] == "failover"]
    jh = [r for r in rows if r["kind"] == "jh-restart"]

    def bad(load):
        return sum(n for c, n in load["statuses"].items() if c != "200")

    failover = {
        "api_ms_median": median([r["result"].get("api_ms") for r in fo]),
        "spawn_ms_median": median([r["result"].get("spawn_ms") for r in fo]),
        "inflight_ms_median": median([r["result"].get("inflight_ms") for r in fo]),
        "inflight_completed": sum(r["result"].get("inflight_ms") is not None for r in fo),
        "failed_requests_under_load": [bad(r["load"]) for r in fo],
        "requests_under_load": [r["load"]["requests"] for r in fo],
        "rounds": fo,
    }
    problems = [f"failover round {r['round']}: the new user's spawn failed: {r['result']['spawn_error']}"
                for r in fo if r["result"].get("spawn_error")]
    jh_restart = {"api_ms_median": median([r["result"].get("api_ms") for r in jh]), "rounds": jh}

    r1, r2 = rps["replicas-1"]["rps_median"], rps["replicas-2"]["rps_median"]
    print()
    print(f"ha: 2 stackhub replicas on PostgreSQL behind {a.haproxy} (health check GET {a.check}); "
          f"{a.users} users; load average {a.loadavg_before} -> {a.loadavg_after}")
    print(f"ours: {a.ours_bin}; reference: JupyterHub {a.jh_version} (one process, SQLite, + CHP)")
    print(f"API req/s, GET /hub/api/users/NAME, {a.connections} connections, {a.duration} s x "
          f"{a.rounds} rounds (medians):")
    for label in ["replicas-1", "replicas-2"]:
        x = rps[label]
        print(f"  {label}: {fmt(x['rps_median'])} req/s, p50 {fmt(x['p50_ms_median'], 2)} ms, "
              f"p99 {fmt(x['p99_ms_median'], 2)} ms, non-200 {x['non_200']}")
    if paired:
        print(f"  2 replicas / 1 replica: {median(paired):.2f}x, the median of the per-round ratios "
              f"({', '.join(f'{x:.2f}' for x in paired)}; ratio of the medians {r2 / r1:.2f}x); one "
              "2-core machine runs both replicas, PostgreSQL, HAProxy and the load")
    print(f"failover, {len(fo)} SIGKILLs under load (milliseconds from the kill, medians):")
    head = f"  {'':44} {'ours':>10} {'JupyterHub':>11}"
    print(head)
    print(f"  {'first successful API call':44} {fmt(failover['api_ms_median'], 1):>10} "
          f"{fmt(jh_restart['api_ms_median'], 1):>11}  (JupyterHub: restarted at once)")
    print(f"  {'first spawn of a new user, to ready':44} {fmt(failover['spawn_ms_median'], 1):>10} "
          f"{'n/a':>11}")
    inflight = (f"{fmt(failover['inflight_ms_median'], 1)} ms "
                f"({failover['inflight_completed']}/{len(fo)} ready within {a.inflight_timeout} s)")
    if not failover["inflight_completed"]:
        inflight += " (not available: no replica finished them; a build without spawn leases cannot)"
    print(f"  {'spawn in flight on the killed replica, ready':44} {inflight}")
    print(f"  (its server waits {a.slow_ms} ms before it listens; the kill comes 1 s after its start)")
    print("  per round: " + "; ".join(
        f"{r['victim']}{'*' if r['victim'] == r['leader'] else ''}: api "
        f"{fmt(r['result'].get('api_ms'), 1)}, spawn {fmt(r['result'].get('spawn_ms'), 0)}, "
        f"in flight {fmt(r['result'].get('inflight_ms'), 0)}" for r in fo) + "  (* the leader)")
    print(f"  requests failed under load (of the steady 8-connection load, per kill): "
          f"{failover['failed_requests_under_load']} of {failover['requests_under_load']}")
    print("  JupyterHub per restart: " + ", ".join(fmt(r["result"].get("api_ms"), 0) for r in jh))
    for p in problems:
        print(f"PROBLEM: {p}")

    doc = {
        "part": "ha",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": a.loadavg_before,
                    "loadavg_after": a.loadavg_after},
        "ours_bin": a.ours_bin, "jupyterhub": a.jh_version, "haproxy": a.haproxy,
        "health_check": a.check,
        "params": {"users": a.users, "rounds": a.rounds, "duration_s": a.duration,
                   "connections": a.connections, "kills": a.kills, "slow_ms": a.slow_ms,
                   "inflight_timeout_s": a.inflight_timeout},
        "rps": rps, "rps_ratio_2_over_1_paired_median": median(paired), "rps_ratio_2_over_1_per_round": paired,
        "failover": failover, "jupyterhub_restart": jh_restart, "problems": problems,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
