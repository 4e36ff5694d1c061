#!/usr/bin/env bash
# Dask benchmark (`bench/run dask`): stackhub-gateway's Dask service ("ours",
# kernel-gateway/src/dask/) against upstream dask-gateway-server 2026.3.0 ("upstream": its
# default local backend, UnsafeLocalBackend, with its Go dask-gateway-proxy serving HTTP and
# the scheduler TLS on one port), both on 127.0.0.1, driven by the stock dask-gateway 2026.3.0
# client with distributed 2026.8.0 (the DEDL environment's) from one bench venv.
#
# Upstream still runs `dask-scheduler` / `dask-worker`, gone from distributed >= 2026.6
# (dask/dask-gateway#944): its ClusterConfig.scheduler_cmd / worker_cmd are set to the venv's
# `dask scheduler` / `dask worker`. Upstream authenticates with its SimpleAuthenticator
# (BasicAuth, a password), ours with a `[[users]]` token (Bearer).
#
# Measured with bench/dask_bench.py (one JSON line per measurement):
#   1. service RSS (VmRSS; upstream: server + proxy) idle, with BENCH_DASK_CLUSTERS clusters
#      running (schedulers, no workers), and once they are stopped; and, apart, what our warm
#      schedulers (`[dask] warm_schedulers`, default 1: Python processes with Dask imported,
#      waiting to become the next cluster's scheduler) hold;
#   2. BENCH_DASK_ROUNDS rounds, gateways in a rotated order: create to running (new_cluster
#      returns a RUNNING cluster), scale to 4 workers until all are connected
#      (wait_for_workers), `submit(inc, 1).result()` round trips through the gateway's scheduler
#      proxy and straight to the scheduler's own address (interleaved), and the stop.
# Prints a table with the ratios and the issue's targets (met / NOT MET) and writes
# bench/out/dask.json.
#
# Knobs (environment):
#   BENCH_DASK_ROUNDS=5        rounds per gateway; medians over rounds
#   BENCH_DASK_ITERATIONS=200  round trips per round through the proxy, and as many direct
#   BENCH_DASK_CLUSTERS=10     clusters running for the loaded RSS
#   BENCH_DASK_VENV            the bench venv (default ~/.cache/stackhub/bench-dask-venv)
#   BENCH_OURS_BIN             measure this stackhub-gateway binary instead of building one
#   BENCH_STRICT=1             exit 1 when a target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
# shellcheck source=bench/hubs.sh
source "$ROOT/bench/hubs.sh"

ROUNDS=${BENCH_DASK_ROUNDS:-5}
ITERS=${BENCH_DASK_ITERATIONS:-200}
CLUSTERS=${BENCH_DASK_CLUSTERS:-10}
VENV=${BENCH_DASK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/bench-dask-venv}
TARGETS=(ours upstream)
# What the bench venv holds: upstream's server with its local backend, the stock client and
# the DEDL environment's distributed (scripts/requirements-dedl.txt).
REQS=("dask-gateway-server[local]==2026.3.0" "dask-gateway==2026.3.0" "distributed==2026.8.0")

for v in ROUNDS ITERS CLUSTERS; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then die "BENCH_DASK_$v must be a positive number, not '${!v}'"; fi
done

hubs_init dask
RESULTS="$WORK/results.jsonl"
record() { echo "$1" >>"$RESULTS"; }

# --- install and build ------------------------------------------------------------------------
apt_install curl
command -v python3 >/dev/null || apt_install python3
stamp="$VENV/.stackhub-bench-requirements"
if ! [ -x "$VENV/bin/dask-gateway-server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${REQS[*]}" ]; then
  log "installing ${REQS[*]} into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "${REQS[@]}"
  echo "${REQS[*]}" >"$stamp"
fi
PY="$VENV/bin/python"
UP_PROXY_BIN=$("$PY" -c 'import dask_gateway_server, os
print(os.path.join(os.path.dirname(dask_gateway_server.__file__), "proxy", "dask-gateway-proxy"))')
[ -x "$UP_PROXY_BIN" ] || die "no dask-gateway-proxy binary in the dask-gateway-server wheel ($UP_PROXY_BIN)"
VERSIONS=$("$PY" -c 'import dask_gateway_server, dask_gateway, distributed
print(f"dask-gateway-server {dask_gateway_server.__version__}, dask-gateway {dask_gateway.__version__}, distributed {distributed.__version__}")')
if [ -n "${BENCH_OURS_BIN:-}" ]; then
  log "BENCH_OURS_BIN is set: measuring $BENCH_OURS_BIN as \"ours\" (stackhub-gateway not built)"
  OURS_BIN=$BENCH_OURS_BIN
else
  log "cargo build --release -p kernel-gateway (stackhub-gateway)"
  cargo build --release --locked -p kernel-gateway --bin stackhub-gateway ||
    die "building stackhub-gateway failed"
  OURS_BIN="$CARGO_TARGET_DIR/release/stackhub-gateway"
fi
[ -x "$OURS_BIN" ] || die "stackhub-gateway binary not found or not executable: $OURS_BIN"

# --- both gateways ----------------------------------------------------------------------------
SECRET_OURS="bench-token-$RANDOM$RANDOM$RANDOM$RANDOM"
SECRET_UP="bench-password-$RANDOM$RANDOM$RANDOM$RANDOM"
read -r P_OURS P_UP P_UP_API < <(free_ports 3)
mkdir -p "$WORK/ours" "$WORK/upstream"

cat >"$WORK/ours/gateway.toml" <<EOF
ip = "127.0.0.1"
port = $P_OURS

[[users]]
name = "bench"
token_sha256 = "$(printf '%s' "$SECRET_OURS" | sha256sum | cut -d' ' -f1)"

[dask]
python = "$PY"
max_clusters_per_user = $((CLUSTERS + 2))
runtime_dir = "$WORK/ours/dask"
EOF

cat >"$WORK/upstream/config.py" <<EOF
c = get_config()  # noqa
c.DaskGateway.address = "127.0.0.1:$P_UP_API"
c.DaskGateway.log_level = "WARN"
c.Proxy.address = "127.0.0.1:$P_UP"
c.Proxy.log_level = "warn"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = open("$WORK/upstream/password").read().strip()
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.LocalBackend.clusters_directory = "$WORK/upstream/clusters"
# distributed >= 2026.6 has no dask-scheduler / dask-worker (dask/dask-gateway#944).
c.ClusterConfig.scheduler_cmd = ["$VENV/bin/dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["$VENV/bin/dask", "worker"]
EOF
(umask 077 && printf '%s\n' "$SECRET_UP" >"$WORK/upstream/password")
UP_SETTINGS="UnsafeLocalBackend, SimpleAuthenticator, scheduler_cmd/worker_cmd = dask scheduler/worker"

log "starting stackhub-gateway on :$P_OURS and dask-gateway-server on :$P_UP (API :$P_UP_API)"
start ours env -u STACKHUB_GATEWAY_AUTH_TOKEN RUST_LOG=warn "$OURS_BIN" --config "$WORK/ours/gateway.toml"
PID_OURS=$STARTED_PID
(cd "$WORK/upstream" && exec "$VENV/bin/dask-gateway-server" -f "$WORK/upstream/config.py") \
  >>"$LOGS/upstream.log" 2>&1 &
PID_UP=$!
PIDS+=("$PID_UP")
wait_http ours "$PID_OURS" "http://127.0.0.1:$P_OURS/api/version"
wait_http upstream "$PID_UP" "http://127.0.0.1:$P_UP/api/version"
PID_UP_PROXY=""
for p in $(children "$PID_UP"); do
  [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$UP_PROXY_BIN")" ] && PID_UP_PROXY=$p
done
[ -n "$PID_UP_PROXY" ] || die "dask-gateway-server started no dask-gateway-proxy"
declare -A ADDR=([ours]="127.0.0.1:$P_OURS" [upstream]="127.0.0.1:$P_UP")
declare -A AUTH=([ours]=bearer [upstream]=basic)
declare -A SECRET=([ours]=$SECRET_OURS [upstream]=$SECRET_UP)
declare -A SVC_PIDS=([ours]=$PID_OURS [upstream]="$PID_UP,$PID_UP_PROXY")

drive() { # TARGET COMMAND ARGS...: bench/dask_bench.py against TARGET, its JSON lines on stdout.
  local t=$1
  shift
  BENCH_DASK_SECRET=${SECRET[$t]} BENCH_DASK_USER=bench "$PY" "$ROOT/bench/dask_bench.py" "$@" \
    --address "http://${ADDR[$t]}" --proxy-address "gateway://${ADDR[$t]}" --auth "${AUTH[$t]}" \
    2>>"$LOGS/driver-$t.log"
}

# warm_schedulers: our gateway's schedulers started ahead of demand (`[dask] warm_schedulers`,
# the local launcher's `python -c` program naming it), which belong to no cluster yet.
warm_schedulers() {
  local p
  for p in $(children "$PID_OURS"); do
    grep -qa warm_schedulers "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
}

# settle TARGET: wait until the service has no cluster processes left (its children other than
# upstream's proxy and our warm schedulers), so a cluster stopping in the background does not
# slow the next one down; prints the seconds it took.
settle() {
  local t=$1 i p left t0 warm
  t0=$(now)
  for ((i = 0; i < 600; i++)); do
    left=0
    warm=" $(warm_schedulers | tr '\n' ' ') "
    for p in $(children "${SVC_PIDS[$t]%%,*}"); do
      [ "$p" = "$PID_UP_PROXY" ] || [[ "$warm" == *" $p "* ]] || left=$((left + 1))
    done
    [ "$left" -eq 0 ] && break
    sleep 0.1
  done
  [ "$left" -eq 0 ] || die "$t: $left cluster processes still running 60 s after the stop"
  python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$t0" "$(now)"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "RSS idle, with $CLUSTERS clusters running, and after they stopped"
for t in "${TARGETS[@]}"; do
  out=$(drive "$t" rss --clusters "$CLUSTERS" --pids "${SVC_PIDS[$t]}") ||
    die "$t: $CLUSTERS clusters did not all run (see $LOGS/driver-$t.log, $LOGS/$t.log)"
  while read -r line; do
    record "{\"kind\":\"rss\",\"target\":\"$t\",\"result\":$line}"
    log "  $(printf '%-8s' "$t") $line"
  done <<<"$out"
  log "  $(printf '%-8s' "$t") cluster processes gone $(settle "$t") s after the stops"
done
# What our warm schedulers hold (not in the service's RSS above: separate Python processes).
warm_kib=0 warm_n=0
for p in $(warm_schedulers); do warm_kib=$((warm_kib + $(kib "$p" VmRSS))) warm_n=$((warm_n + 1)); done
record "{\"kind\":\"warm\",\"target\":\"ours\",\"processes\":$warm_n,\"vmrss_kib\":$warm_kib}"
log "  ours     warm schedulers: $warm_n, $((warm_kib / 1024)) MiB"

log "$ROUNDS rounds: create, scale to 4, $ITERS round trips via the proxy and direct, stop"
for ((r = 0; r < ROUNDS; r++)); do
  for t in $(rotated "$r"); do
    res=$(drive "$t" round --iterations "$ITERS") ||
      die "$t: round $((r + 1)) failed (see $LOGS/driver-$t.log, $LOGS/$t.log)"
    gone=$(settle "$t")
    record "{\"kind\":\"round\",\"target\":\"$t\",\"round\":$((r + 1)),\"gone_s\":$gone,\"result\":$res}"
    log "  round $((r + 1)) $(printf '%-8s' "$t") $res; processes gone after ${gone} s"
  done
done
for t in "${TARGETS[@]}"; do
  IFS=, read -r -a pids <<<"${SVC_PIDS[$t]}"
  hwm=0
  for p in "${pids[@]}"; do hwm=$((hwm + $(kib "$p" VmHWM))); done
  record "{\"kind\":\"peak\",\"target\":\"$t\",\"vmhwm_kib\":$hwm}"
done

# --- report -----------------------------------------------------------------------------------
cp "$RESULTS" "$LOGS/results.jsonl"
python3 "$ROOT/bench/dask_report.py" "$RESULTS" "$OUT_DIR/dask.json" \
  --ours-bin "$OURS_BIN" --versions "$VERSIONS" --upstream-settings "$UP_SETTINGS" \
  --rounds "$ROUNDS" --iterations "$ITERS" --clusters "$CLUSTERS" \
  --loadavg-before "$LOAD_BEFORE" --loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)" &&
  rc=0 || rc=$?
log "raw numbers: $OUT_DIR/dask.json, logs: $LOGS"
if [ "$rc" -eq 3 ]; then
  [ "${BENCH_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
exit "$rc"
