#!/usr/bin/env bash
# Remote kernel path benchmark (`bench/run remote`): `1+1` round trip from a WebSocket client
# through the proxy library's direct kernel route (`kernel-route-proxy`: a remote-kernels route
# with `kernel_gateway` data and an authoriser, as the hub embeds it) to `stackhub-gateway` and
# its kernel, against the same kernelspec driven over ZeroMQ directly (the floor) and the same
# gateway without the proxy (for the proxy's share). The route's single-user target is an
# address where nothing listens: a socket relayed instead of routed directly would fail the run.
#
# Prints p50/p99 per target, the ratio remote / direct ZeroMQ with PASS/FAIL for the target
# <= 1.3x, and writes bench/out/remote.json.
#
# Knobs (environment):
#   BENCH_ROUNDS=3          rounds (targets rotated each round); medians across rounds
#   BENCH_ITERATIONS=300    `1+1` round trips per round (after 20 warm-up ones)
#   BENCH_BIG_MB=10         size of the big output (measured once per round)
#   BENCH_STRICT=1          exit 1 when the target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
ITERS=${BENCH_ITERATIONS:-300}
BIG_MB=${BENCH_BIG_MB:-10}
GW_TOKEN="bench-gw-$RANDOM$RANDOM"
HUB_TOKEN="bench-hub-$RANDOM$RANDOM"
OUT_DIR="$ROOT/bench/out"
LOGS="$OUT_DIR/remote-logs"
TARGETS=(direct gateway remote)

die() {
  log "ERROR: $*"
  exit 1
}

# --- processes: everything started here is stopped on exit -----------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-bench-remote.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # NAME CMD...: run CMD in the background, logging to $LOGS/NAME.log; sets STARTED_PID.
  local name=$1
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

wait_port() { # NAME PID PORT: wait until PORT accepts connections.
  local name=$1 pid=$2 port=$3 i
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name exited during startup (log: $LOGS/$name.log)"
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$name did not listen on :$port within 30 s (log: $LOGS/$name.log)"
}

# --- build ------------------------------------------------------------------------------------
ensure_venv
log "cargo build --release (stackhub-gateway, gateway_bench, kernel-route-proxy)"
cargo build --release --locked -p kernel-gateway --bin stackhub-gateway --example gateway_bench ||
  die "building stackhub-gateway failed"
cargo build --release --locked -p stackhub-bench --bin kernel-route-proxy ||
  die "building kernel-route-proxy failed"
GW_BIN="$CARGO_TARGET_DIR/release/stackhub-gateway"
PROXY_BIN="$CARGO_TARGET_DIR/release/kernel-route-proxy"
BENCH="$CARGO_TARGET_DIR/release/examples/gateway_bench"

# --- the kernelspec, the gateway and the proxy ------------------------------------------------
rm -rf "$LOGS"
mkdir -p "$LOGS" "$WORK/share/jupyter/kernels/python3" "$WORK/runtime"
PY="$STACKHUB_VENV/bin/python"
ARGV_JSON=$(printf '["%s","-m","ipykernel_launcher","-f","{connection_file}"]' "$PY")
cat >"$WORK/share/jupyter/kernels/python3/kernel.json" <<EOF
{"argv": $ARGV_JSON, "display_name": "Python 3 (bench)", "language": "python"}
EOF
export JUPYTER_PATH="$WORK/share/jupyter"
export JUPYTER_RUNTIME_DIR="$WORK/runtime"

read -r P_GW P_PROXY < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cat >"$WORK/gateway.toml" <<EOF
ip = "127.0.0.1"
port = $P_GW
kernel_launch_timeout = 300
EOF

log "starting stackhub-gateway on :$P_GW and kernel-route-proxy on :$P_PROXY"
start gateway env STACKHUB_GATEWAY_AUTH_TOKEN="$GW_TOKEN" RUST_LOG=warn "$GW_BIN" --config "$WORK/gateway.toml"
PID_GW=$STARTED_PID
start proxy env BENCH_HUB_TOKEN="$HUB_TOKEN" BENCH_GATEWAY_TOKEN="$GW_TOKEN" RUST_LOG=warn \
  "$PROXY_BIN" --port "$P_PROXY" --gateway-url "http://127.0.0.1:$P_GW" --user bench --site bench
PID_PROXY=$STARTED_PID
wait_port gateway "$PID_GW" "$P_GW"
wait_port proxy "$PID_PROXY" "$P_PROXY"

RESULTS="$WORK/results.jsonl"
printf '{"kind":"meta","versions":"ipykernel %s, %s cores","loadavg":"%s"}\n' \
  "$("$PY" -c 'import ipykernel; print(ipykernel.__version__)')" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" >"$RESULTS"

run_round() { # TARGET ROUND
  local t=$1 r=$2 res common=(--starts 1 --iterations "$ITERS" --big-mb "$BIG_MB" --big-rounds 1)
  case $t in
    direct) res=$("$BENCH" direct --argv-json "$ARGV_JSON" "${common[@]}" 2>>"$LOGS/bench.log") ;;
    gateway) res=$("$BENCH" gateway --url "http://127.0.0.1:$P_GW" --token "$GW_TOKEN" \
      "${common[@]}" 2>>"$LOGS/bench.log") ;;
    remote) res=$("$BENCH" gateway --url "http://127.0.0.1:$P_GW" --token "$GW_TOKEN" \
      --ws-url "http://127.0.0.1:$P_PROXY/user/bench" --ws-token "$HUB_TOKEN" \
      "${common[@]}" 2>>"$LOGS/bench.log") ;;
  esac || die "round $r against $t failed (see $LOGS/bench.log)"
  printf '{"kind":"latency","target":"%s","round":%d,"result":%s}\n' "$t" "$r" "$res" >>"$RESULTS"
  log "  round $r  $(printf '%-8s' "$t") $(echo "$res" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("rtt p50 %.0f us p99 %.0f us  %s MB %.0f ms" % (r["rtt"]["p50_us"], r["rtt"]["p99_us"],
      '"$BIG_MB"', r["big_ms"]))')"
}

log "latency: $ROUNDS rounds x $ITERS round trips (+ one ${BIG_MB} MB output) per target"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#TARGETS[@]}; i++)); do
    run_round "${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}" "$r"
  done
done
printf '{"kind":"meta_end","loadavg":"%s"}\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
cp "$RESULTS" "$LOGS/results.jsonl"

python3 - "$RESULTS" "$OUT_DIR/remote.json" "${BENCH_STRICT:-0}" "$BIG_MB" <<'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
BIG = sys.argv[4]
meta = next(r for r in rows if r["kind"] == "meta")
end = next((r for r in rows if r["kind"] == "meta_end"), {})
targets = ["direct", "gateway", "remote"]
summary = {"meta": meta, "loadavg_end": end.get("loadavg")}
for t in targets:
    rs = [r["result"] for r in rows if r["kind"] == "latency" and r["target"] == t]
    med = lambda f: statistics.median(f(r) for r in rs) if rs else None
    summary[t] = {
        "rounds": len(rs),
        "rtt_p50_us": med(lambda r: r["rtt"]["p50_us"]),
        "rtt_p99_us": med(lambda r: r["rtt"]["p99_us"]),
        "big_ms": med(lambda r: r["big_ms"]),
    }
fmt = lambda v, u: "-" if v is None else f"{v:.1f}{u}"
print()
print(f"Remote kernel path benchmark  ({summary['direct']['rounds']} rounds; {meta['versions']}; "
      f"load average {meta['loadavg']} at start, {end.get('loadavg', '?')} at end)")
print()
print(f"{'median':<30} {'direct-ZMQ':>12} {'gateway':>12} {'proxy+gw':>12}")
for name, k, u in [("1+1 round trip p50", "rtt_p50_us", " us"),
                   ("1+1 round trip p99", "rtt_p99_us", " us"),
                   (f"{BIG} MB output", "big_ms", " ms")]:
    print(f"{name:<30} " + " ".join(f"{fmt(summary[t][k], u):>12}" for t in targets))
print()
d, g, r = (summary[t]["rtt_p50_us"] for t in targets)
ratio = r / d if d and r else None
summary["ratio_remote_direct_p50"] = ratio
summary["ratio_remote_gateway_p50"] = r / g if g and r else None
ok = ratio is not None and ratio <= 1.3
print(f"  [{'PASS' if ok else 'FAIL'}] round trip p50 proxy+gateway / direct ZeroMQ = "
      f"{'-' if ratio is None else f'{ratio:.2f}x'} (target <= 1.30x; gateway alone: "
      f"{'-' if not (g and d) else f'{g / d:.2f}x'}; the proxy adds "
      f"{'-' if not (g and r) else f'{r - g:+.0f} us'})")
print()
json.dump({"summary": summary, "rows": rows}, open(sys.argv[2], "w"), indent=2)
if not ok and sys.argv[3] == "1":
    sys.exit(1)
EOF
log "raw numbers: $OUT_DIR/remote.json, logs: $LOGS"
