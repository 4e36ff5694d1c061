#!/usr/bin/env bash
# Kernel gateway benchmark (`bench/run gateway`): stackhub-gateway ("ours") against Jupyter
# Enterprise Gateway ("eg", `jupyter_enterprise_gateway` from PyPI) and a kernel driven directly
# over ZeroMQ ("direct", the floor), all with the same python3 kernelspec (the project venv's
# ipykernel) on 127.0.0.1.
#
# Measures kernel start-to-ready, `1+1` round trip p50/p99 over the WebSocket (over ZeroMQ for
# direct), a 10 MB output, 50 kernels started at once (time until all are ready, failures) and
# gateway RSS. Prints a table with PASS/FAIL marks and writes bench/out/gateway.json.
#
# Knobs (environment):
#   BENCH_ROUNDS=3            latency rounds per target (targets rotated each round); medians
#   BENCH_STARTS=5            sequential kernel starts per round
#   BENCH_ITERATIONS=300      `1+1` round trips per round
#   BENCH_BIG_MB=10           size of the big output
#   BENCH_CONCURRENT=50       kernels started at once
#   BENCH_CONCURRENT_ROUNDS=1 concurrent-start rounds per gateway
#   BENCH_EG_VENV             venv for Enterprise Gateway (default ~/.cache/stackhub/bench-eg-venv)
#   BENCH_STRICT=1            exit 1 when a target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
STARTS=${BENCH_STARTS:-5}
ITERS=${BENCH_ITERATIONS:-300}
BIG_MB=${BENCH_BIG_MB:-10}
CONC=${BENCH_CONCURRENT:-50}
CONC_ROUNDS=${BENCH_CONCURRENT_ROUNDS:-1}
EG_VENV=${BENCH_EG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/bench-eg-venv}
TOKEN="bench-$RANDOM$RANDOM"
OUT_DIR="$ROOT/bench/out"
LOGS="$OUT_DIR/gateway-logs"
TARGETS=(direct ours eg)

die() {
  log "ERROR: $*"
  exit 1
}

# --- processes: everything started here is stopped on exit -----------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-bench-gw.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$? pid i kids=()
  trap - EXIT INT TERM
  # The gateways stop their kernels on SIGTERM; note the kernels' pids to make sure.
  for pid in "${PIDS[@]}"; do mapfile -t -O "${#kids[@]}" kids < <(children "$pid"); done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for pid in "${kids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$rc"
}
children() { # PID: the pids whose parent is PID.
  local p stat ppid
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    read -r _ ppid _ <<<"$stat"
    [ "$ppid" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
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

wait_http() { # NAME PID URL: wait until URL answers 2xx.
  local name=$1 pid=$2 url=$3 i
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name exited during startup (log: $LOGS/$name.log)"
    fi
    curl -fsS -o /dev/null --max-time 1 -H "Authorization: token $TOKEN" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$name did not answer $url within 30 s (log: $LOGS/$name.log)"
}

kib() { # PID FIELD: VmRSS / VmHWM of the gateway process itself (kernels excluded).
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# --- install and build ------------------------------------------------------------------------
apt_install curl
ensure_venv
if [ ! -x "$EG_VENV/bin/jupyter-enterprisegateway" ]; then
  log "installing jupyter_enterprise_gateway into $EG_VENV"
  python3 -m venv "$EG_VENV"
  "$EG_VENV/bin/pip" install -q --upgrade pip >/dev/null
  # Its own venv: EG pins jupyter_client 6 / jupyter_server 1, older than the project's.
  "$EG_VENV/bin/pip" install -q jupyter_enterprise_gateway
fi
EG_VERSION=$("$EG_VENV/bin/python" -c 'import enterprise_gateway as e; print(e.__version__)')
log "cargo build --release -p kernel-gateway (stackhub-gateway, gateway_bench)"
cargo build --release --locked -p kernel-gateway --bin stackhub-gateway --example gateway_bench ||
  die "building stackhub-gateway failed"
OURS_BIN="$CARGO_TARGET_DIR/release/stackhub-gateway"
BENCH="$CARGO_TARGET_DIR/release/examples/gateway_bench"

# --- the shared kernelspec --------------------------------------------------------------------
rm -rf "$LOGS"
mkdir -p "$LOGS" "$WORK/share/jupyter/kernels/python3" "$WORK/runtime"
PY="$STACKHUB_VENV/bin/python"
ARGV_JSON=$(printf '["%s","-m","ipykernel_launcher","-f","{connection_file}"]' "$PY")
cat >"$WORK/share/jupyter/kernels/python3/kernel.json" <<EOF
{"argv": $ARGV_JSON, "display_name": "Python 3 (bench)", "language": "python"}
EOF
export JUPYTER_PATH="$WORK/share/jupyter"
export JUPYTER_RUNTIME_DIR="$WORK/runtime"

read -r P_OURS P_EG < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

cat >"$WORK/ours.toml" <<EOF
ip = "127.0.0.1"
port = $P_OURS
kernel_launch_timeout = 300
EOF

log "starting stackhub-gateway on :$P_OURS and Enterprise Gateway $EG_VERSION on :$P_EG"
start ours env STACKHUB_GATEWAY_AUTH_TOKEN="$TOKEN" RUST_LOG=warn "$OURS_BIN" --config "$WORK/ours.toml"
PID_OURS=$STARTED_PID
start eg env EG_AUTH_TOKEN="$TOKEN" "$EG_VENV/bin/jupyter-enterprisegateway" --ip=127.0.0.1 \
  --port="$P_EG" --port_retries=0 --EnterpriseGatewayApp.default_kernel_name=python3 --log-level=WARN
PID_EG=$STARTED_PID
wait_http ours "$PID_OURS" "http://127.0.0.1:$P_OURS/api/kernelspecs"
wait_http eg "$PID_EG" "http://127.0.0.1:$P_EG/api/kernelspecs"
for p in "$P_OURS" "$P_EG"; do
  curl -fsS -H "Authorization: token $TOKEN" "http://127.0.0.1:$p/api/kernelspecs" |
    grep -q '"Python 3 (bench)"' || die "gateway on :$p does not serve the bench kernelspec"
done
declare -A URL=([ours]="http://127.0.0.1:$P_OURS" [eg]="http://127.0.0.1:$P_EG")
declare -A PID=([ours]=$PID_OURS [eg]=$PID_EG)

RESULTS="$WORK/results.jsonl"
printf '{"kind":"meta","versions":"EG %s, ipykernel %s, %s cores","loadavg":"%s"}\n' "$EG_VERSION" \
  "$("$PY" -c 'import ipykernel; print(ipykernel.__version__)')" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" >"$RESULTS"
for t in ours eg; do
  printf '{"kind":"rss","phase":"idle","target":"%s","vmrss_kib":%d,"vmhwm_kib":%d}\n' \
    "$t" "$(kib "${PID[$t]}" VmRSS)" "$(kib "${PID[$t]}" VmHWM)" >>"$RESULTS"
done

run_latency() { # TARGET ROUND
  local t=$1 r=$2 res common=(--starts "$STARTS" --iterations "$ITERS" --big-mb "$BIG_MB")
  if [ "$t" = direct ]; then
    res=$("$BENCH" direct --argv-json "$ARGV_JSON" "${common[@]}" 2>>"$LOGS/bench.log")
  else
    res=$("$BENCH" gateway --url "${URL[$t]}" --token "$TOKEN" "${common[@]}" 2>>"$LOGS/bench.log")
  fi || die "latency round $r against $t failed (see $LOGS/bench.log)"
  printf '{"kind":"latency","target":"%s","round":%d,"result":%s}\n' "$t" "$r" "$res" >>"$RESULTS"
  log "  round $r  $(printf '%-6s' "$t") $(echo "$res" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("start %.0f ms  rtt p50 %.0f us p99 %.0f us  %s MB %.0f ms" % (r["start_ms"],
      r["rtt"]["p50_us"], r["rtt"]["p99_us"], '"$BIG_MB"', r["big_ms"]))')"
}

log "latency: $ROUNDS rounds x ($STARTS starts, $ITERS round trips, ${BIG_MB} MB output x3)"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#TARGETS[@]}; i++)); do
    run_latency "${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}" "$r"
  done
done

log "concurrent starts: $CONC kernels at once, $CONC_ROUNDS round(s) per gateway"
for ((r = 1; r <= CONC_ROUNDS; r++)); do
  for t in ours eg; do
    res=$("$BENCH" concurrent --url "${URL[$t]}" --token "$TOKEN" --n "$CONC" 2>>"$LOGS/bench.log") ||
      die "concurrent starts against $t failed (see $LOGS/bench.log)"
    printf '{"kind":"concurrent","target":"%s","round":%d,"result":%s}\n' "$t" "$r" "$res" >>"$RESULTS"
    log "  round $r  $(printf '%-6s' "$t") $res"
    sleep 2 # let the stopped kernels go before the next gateway's burst
  done
done

for t in ours eg; do
  printf '{"kind":"rss","phase":"loaded","target":"%s","vmrss_kib":%d,"vmhwm_kib":%d}\n' \
    "$t" "$(kib "${PID[$t]}" VmRSS)" "$(kib "${PID[$t]}" VmHWM)" >>"$RESULTS"
done

cp "$RESULTS" "$LOGS/results.jsonl"
strict=()
[ "${BENCH_STRICT:-0}" = 1 ] && strict=(--strict)
"$BENCH" report "$RESULTS" "$OUT_DIR/gateway.json" "${strict[@]}"
log "raw numbers: $OUT_DIR/gateway.json, logs: $LOGS"
