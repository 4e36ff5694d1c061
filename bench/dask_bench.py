"""Driver of the Dask part (`bench/run dask`): the stock `dask_gateway` client against one
Dask Gateway (ours or upstream's), printing one JSON line per measurement.

    dask_bench.py round --address http://127.0.0.1:P --proxy-address gateway://127.0.0.1:P \
        --auth bearer --iterations 200
    dask_bench.py rss --address ... --proxy-address ... --auth basic --clusters 10 --pids 12,34

The secret comes from the environment (BENCH_DASK_SECRET), never argv: `--auth bearer` sends
`Authorization: Bearer <secret>` (ours: a `[[users]]` token), `--auth basic` is the client's
BasicAuth with user BENCH_DASK_USER and password <secret> (upstream's SimpleAuthenticator).

`round`: one cluster, created and stopped: create to running (`new_cluster` returns a RUNNING
cluster), scale to 4 workers until all are connected (`wait_for_workers`), `submit(inc).result()`
round trips through the gateway's scheduler proxy and straight to the scheduler's own address
(a second Client with the cluster's security), interleaved in blocks, and the stop.
`rss`: VmRSS of the service's processes (--pids) idle, then with N clusters running (no
workers), then the N clusters stopped.
"""

import argparse
import json
import os
import statistics
import sys
import time

from dask_gateway import BasicAuth, Gateway
from dask_gateway.auth import GatewayAuth
from distributed import Client


class Bearer(GatewayAuth):
    """`Authorization: Bearer <token>` on every request (ours' `[[users]]` tokens)."""

    def __init__(self, token):
        self.token = token

    def pre_request(self, resp):
        return {"Authorization": "Bearer " + self.token}, None


def inc(x):
    return x + 1


def gateway(args):
    secret = os.environ["BENCH_DASK_SECRET"]
    if args.auth == "bearer":
        auth = Bearer(secret)
    else:
        auth = BasicAuth(os.environ.get("BENCH_DASK_USER", "bench"), secret)
    return Gateway(args.address, proxy_address=args.proxy_address, auth=auth)


def emit(obj):
    print(json.dumps(obj), flush=True)


def rtts(client, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.submit(inc, 1, pure=False).result()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def cmd_round(args):
    gw = gateway(args)
    t0 = time.perf_counter()
    cluster = gw.new_cluster()
    create_ms = (time.perf_counter() - t0) * 1e3
    status = gw.get_cluster(cluster.name).status.name
    if status != "RUNNING":
        sys.exit(f"new_cluster returned a cluster that is {status}, not RUNNING")
    try:
        client = cluster.get_client(set_as_default=False)
        t1 = time.perf_counter()
        cluster.scale(args.workers)
        client.wait_for_workers(args.workers, timeout=args.timeout)
        scale_ms = (time.perf_counter() - t1) * 1e3
        address = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address)
        direct = Client(address, security=cluster.security, set_as_default=False)
        rtts(client, args.warmup)
        rtts(direct, args.warmup)
        proxy_us, direct_us = [], []
        block = max(1, args.iterations // 4)
        done = 0
        while done < args.iterations:
            n = min(block, args.iterations - done)
            proxy_us += rtts(client, n)
            direct_us += rtts(direct, n)
            done += n
        direct.close()
        client.close()
    finally:
        t2 = time.perf_counter()
        cluster.shutdown()
        stop_ms = (time.perf_counter() - t2) * 1e3
        cluster.close()
        gw.close()
    emit(
        {
            "create_ms": create_ms,
            "scale_ms": scale_ms,
            "stop_ms": stop_ms,
            "scheduler": address.split("://")[0],
            "rtt_proxy_us": {"p50": statistics.median(proxy_us), "p99": pct(proxy_us, 99)},
            "rtt_direct_us": {"p50": statistics.median(direct_us), "p99": pct(direct_us, 99)},
            "n": args.iterations,
        }
    )


def rss_kib(pids):
    total = {}
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    total[k] = total.get(k, 0) + int(v.split()[0])
    return {"vmrss_kib": total.get("VmRSS", 0), "vmhwm_kib": total.get("VmHWM", 0)}


def cmd_rss(args):
    pids = [int(p) for p in args.pids.split(",") if p]
    gw = gateway(args)
    gw.list_clusters()  # authenticated once, as a client would be
    emit({"phase": "idle", **rss_kib(pids), "per_pid": [rss_kib([p]) for p in pids]})
    clusters = []
    t = time.perf_counter()
    try:
        for _ in range(args.clusters):
            clusters.append(gw.new_cluster())
        running = [c for c in gw.list_clusters() if c.status.name == "RUNNING"]
        if len(running) != args.clusters:
            sys.exit(f"{len(running)} of {args.clusters} clusters running")
        time.sleep(2)  # a heartbeat or two from each scheduler
        emit(
            {
                "phase": "clusters",
                "clusters": len(running),
                "create_all_s": time.perf_counter() - t,
                **rss_kib(pids),
                "per_pid": [rss_kib([p]) for p in pids],
            }
        )
    finally:
        for c in clusters:
            c.shutdown()
            c.close()
    emit({"phase": "stopped", **rss_kib(pids), "per_pid": [rss_kib([p]) for p in pids]})
    gw.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["round", "rss"])
    p.add_argument("--address", required=True)
    p.add_argument("--proxy-address", required=True)
    p.add_argument("--auth", choices=["bearer", "basic"], required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--pids", default="")
    args = p.parse_args()
    {"round": cmd_round, "rss": cmd_rss}[args.command](args)


if __name__ == "__main__":
    main()
