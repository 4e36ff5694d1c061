#!/usr/bin/env bash
# Hub benchmark (`bench/run hub`): stackhub ("ours", the public port with its embedded proxy)
# against JupyterHub 6 from the project venv behind the configurable-http-proxy it starts
# itself ("jh"), both on 127.0.0.1, both reached on their public port.
#
# Measures cold start (exec to the first 200 from GET /hub/api, fresh data dir each round),
# idle RSS (JupyterHub: hub + CHP), users created per second (sequential POSTs), and, with 1000
# users present, GET /hub/api/users/NAME and GET /hub/api/users (a 200-user page) req/s and p99
# at 1 and many connections; then spawn overhead (spawn-to-ready minus the single-user server's
# own start, bench/hub_spawn.py) and a kernel `1+1` round trip through the hub's public port vs
# straight to the single-user server (gateway_bench, the same client for every path; it acknowledges
# every read at once, so the direct path is the server's real floor, not the ~40 ms stall that
# delayed ACKs add to jupyter_server's un-Nagled kernel frames).
# Prints a table with PASS/FAIL marks and writes bench/out/hub.json.
#
# Knobs (environment):
#   BENCH_OURS_BIN          measure this binary as "ours" instead of building stackhub
#   BENCH_COLD_ROUNDS=3     cold starts per hub (fresh data dir each)
#   BENCH_ROUNDS=3          load rounds (targets rotated each round); medians
#   BENCH_DURATION=3        seconds per load run
#   BENCH_CONNECTIONS=32    connections of the concurrent load runs (the other runs use 1)
#   BENCH_CREATE=300        users created one by one (timed)
#   BENCH_USERS=1000        users present during the load runs
#   BENCH_SPAWN_ROUNDS=5    server starts per hub
#   BENCH_RTT=300           kernel round trips per path
#   BENCH_STRICT=1          exit 1 when a target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
# shellcheck source=bench/chp.sh
source "$ROOT/bench/chp.sh"
# shellcheck source=bench/hubs.sh
source "$ROOT/bench/hubs.sh"

COLD_ROUNDS=${BENCH_COLD_ROUNDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-3}
CONNS=${BENCH_CONNECTIONS:-32}
CREATE=${BENCH_CREATE:-300}
USERS=${BENCH_USERS:-1000}
SPAWN_ROUNDS=${BENCH_SPAWN_ROUNDS:-5}
RTT=${BENCH_RTT:-300}
TOKEN="bench-token-$RANDOM$RANDOM$RANDOM$RANDOM"
TARGETS=(ours jh)

[ "$USERS" -ge "$CREATE" ] || die "BENCH_USERS ($USERS) must be >= BENCH_CREATE ($CREATE)"
hubs_init hub

# --- install and build ------------------------------------------------------------------------
build_hubs
LOAD="$CARGO_TARGET_DIR/release/http-load"
log "cargo build --release -p kernel-gateway --example gateway_bench (the kernel round-trip client)"
cargo build --release --locked -p kernel-gateway --example gateway_bench
KERNEL_CLIENT="$CARGO_TARGET_DIR/release/examples/gateway_bench"
SINGLEUSER="$STACKHUB_VENV/bin/jupyterhub-singleuser"
[ -x "$SINGLEUSER" ] || die "jupyterhub-singleuser not found in $STACKHUB_VENV"
# Both hubs start single-user servers through this wrapper: it appends the exec time to the
# file named by its first argument, so the server's own start can be told apart.
WRAPPER="$WORK/singleuser-wrapper.sh"
printf '#!/bin/sh\nstamp=$1\nshift\ndate +%%s.%%N >>"$stamp"\nexec "%s" "$@"\n' "$SINGLEUSER" >"$WRAPPER"
chmod +x "$WRAPPER"
SERVER_CMD=("$WRAPPER" "{dir}/exec-stamps")

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. cold start ----------------------------------------------------------------------------
log "cold start: $COLD_ROUNDS rounds per hub, exec to the first 200 from GET /hub/api"
for ((r = 1; r <= COLD_ROUNDS; r++)); do
  for t in $(rotated "$((r - 1))"); do
    dir="$WORK/cold-$t-$r"
    read -r port < <(free_ports 1)
    mapfile -d '' -t cmd < <(hub_cmd "$t" "$dir" "$port")
    res=$(cd "$dir" && python3 "$ROOT/bench/hub_coldstart.py" --url "http://127.0.0.1:$port/hub/api" \
      --log "$LOGS/cold-$t-$r.log" -- "${cmd[@]}") || die "$t did not start (see $LOGS/cold-$t-$r.log)"
    printf '{"kind":"cold","target":"%s","round":%d,"result":%s}\n' "$t" "$r" "$res" >>"$RESULTS"
    log "  round $r  $(printf '%-4s' "$t") $res"
  done
done

# --- 2. the hubs measured under load ----------------------------------------------------------
log "starting both hubs for the API measurements"
declare -A PORT PID
for t in "${TARGETS[@]}"; do
  read -r "PORT[$t]" < <(free_ports 1)
  mapfile -d '' -t cmd < <(hub_cmd "$t" "$WORK/run-$t" "${PORT[$t]}")
  cd "$WORK/run-$t"
  start "$t" "${cmd[@]}"
  cd "$ROOT"
  PID[$t]=$STARTED_PID
done
api() { echo "http://127.0.0.1:${PORT[$1]}/hub/api$2"; }
for t in "${TARGETS[@]}"; do
  wait_http "$t" "${PID[$t]}" "$(api "$t" "")"
  curl -fsS -o /dev/null --max-time 10 -H "Authorization: token $TOKEN" "$(api "$t" /users)" ||
    die "$t: GET /hub/api/users with the admin token failed (log: $LOGS/$t.log)"
done
sleep 1

# rss TARGET PHASE: record VmRSS/VmHWM of the hub process and (JupyterHub) its proxy child.
rss() {
  local t=$1 phase=$2 pid=${PID[$1]} kid proxy_rss=0 proxy_hwm=0
  for kid in $(children "$pid"); do
    proxy_rss=$((proxy_rss + $(kib "$kid" VmRSS)))
    proxy_hwm=$((proxy_hwm + $(kib "$kid" VmHWM)))
  done
  printf '{"kind":"rss","phase":"%s","target":"%s","hub_vmrss_kib":%d,"hub_vmhwm_kib":%d,"child_vmrss_kib":%d,"child_vmhwm_kib":%d}\n' \
    "$phase" "$t" "$(kib "$pid" VmRSS)" "$(kib "$pid" VmHWM)" "$proxy_rss" "$proxy_hwm" >>"$RESULTS"
}
for t in "${TARGETS[@]}"; do rss "$t" idle; done
# JupyterHub's proxy must be its child, or its RSS would be missing.
[ -n "$(children "${PID[jh]}")" ] || die "JupyterHub has no child process (where is its proxy?)"

# load TARGET LABEL ROUND ARGS...: run http-load against TARGET; ROUND 0 is not recorded.
load() {
  local t=$1 label=$2 r=$3 res
  shift 3
  res=$("$LOAD" -H "Authorization: token $TOKEN" "$@" 2>>"$LOGS/http-load-$t.log") ||
    die "http-load ($label) against $t failed (see $LOGS/http-load-$t.log)"
  [ "$r" -eq 0 ] && return 0
  printf '{"kind":"load","test":"%s","target":"%s","round":%d,"result":%s}\n' \
    "$label" "$t" "$r" "$res" >>"$RESULTS"
  log "  round $r  $(printf '%-4s' "$t") $(printf '%-10s' "$label") $res"
}

# --- 3. users created per second --------------------------------------------------------------
log "creating $CREATE users one by one (POST /hub/api/users/u{i}, 1 connection)"
for t in "${TARGETS[@]}"; do
  load "$t" create 1 --method POST --url "$(api "$t" '/users/u{i}')" --count "$CREATE" --concurrency 1
done

# --- 4. API throughput with $USERS users ------------------------------------------------------
log "bulk-creating u$CREATE..u$((USERS - 1)) (not timed)"
for t in "${TARGETS[@]}"; do
  for ((lo = CREATE; lo < USERS; lo += 100)); do
    hi=$((lo + 100 < USERS ? lo + 100 : USERS))
    body=$(python3 -c 'import json, sys; print(json.dumps({"usernames": [f"u{i}" for i in range(int(sys.argv[1]), int(sys.argv[2]))]}))' "$lo" "$hi")
    code=$(curl -sS -o "$LOGS/bulk-$t.json" -w '%{http_code}' --max-time 120 -X POST \
      -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' -d "$body" "$(api "$t" /users)")
    [ "$code" = 201 ] || die "$t: bulk-creating users u$lo..u$((hi - 1)) answered $code (see $LOGS/bulk-$t.json)"
  done
  n=$(curl -fsS --max-time 30 -H "Authorization: token $TOKEN" "$(api "$t" /users)" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)))') ||
    die "$t: GET /hub/api/users failed after creating users"
  [ "$n" -eq "$((USERS < 200 ? USERS : 200))" ] || die "$t: GET /hub/api/users returned $n users, not a full page"
  curl -fsS -o /dev/null --max-time 10 -H "Authorization: token $TOKEN" "$(api "$t" "/users/u$((USERS - 1))")" ||
    die "$t: GET /hub/api/users/u$((USERS - 1)) failed"
done

TESTS=(get-c1 get-cN list-c1 list-cN)
test_args() { # TARGET TEST
  local t=$1
  case $2 in
    get-c1) echo --url "$(api "$t" '/users/u{i}')" --modulo "$USERS" --concurrency 1 ;;
    get-cN) echo --url "$(api "$t" '/users/u{i}')" --modulo "$USERS" --concurrency "$CONNS" ;;
    list-c1) echo --url "$(api "$t" /users)" --concurrency 1 ;;
    list-cN) echo --url "$(api "$t" /users)" --concurrency "$CONNS" ;;
  esac
}
log "API warm-up (1 s per hub and test)"
for test in "${TESTS[@]}"; do
  # shellcheck disable=SC2046 # test_args prints words without spaces
  for t in "${TARGETS[@]}"; do load "$t" "$test" 0 --duration 1 $(test_args "$t" "$test"); done
done
log "API throughput: $ROUNDS rounds x ${DURATION}s, 1 and $CONNS connections"
for ((r = 1; r <= ROUNDS; r++)); do
  for test in "${TESTS[@]}"; do
    for t in $(rotated "$((r - 1))"); do
      # shellcheck disable=SC2046
      load "$t" "$test" "$r" --duration "$DURATION" $(test_args "$t" "$test")
    done
  done
done
for t in "${TARGETS[@]}"; do rss "$t" loaded; done

# --- 5. spawn overhead and kernel round trip --------------------------------------------------
# server_log TARGET: where the single-user server's output goes.
server_log() {
  case $1 in
    ours) echo "$WORK/run-ours/data/logs/spawnee.log" ;;
    jh) echo "$LOGS/jh.log" ;;
  esac
}
log "spawn overhead: $SPAWN_ROUNDS server starts per hub (the last server is kept running)"
for t in $(rotated 0); do
  res=$(python3 "$ROOT/bench/hub_spawn.py" --api "$(api "$t" "")" --token "$TOKEN" --user spawnee \
    --stamp "$WORK/run-$t/exec-stamps" --log "$(server_log "$t")" --rounds "$SPAWN_ROUNDS" --keep \
    2>>"$LOGS/spawn-$t.log") || die "$t: spawning failed (see $LOGS/spawn-$t.log)"
  printf '{"kind":"spawn","target":"%s","result":%s}\n' "$t" "$res" >>"$RESULTS"
  log "  $(printf '%-4s' "$t") $res"
done
log "kernel 1+1 round trip: $RTT per path, through each hub's public port and straight to its server"
for t in $(rotated 1); do
  direct=$(grep -oE 'http://127\.0\.0\.1:[0-9]+/user/spawnee/' "$(server_log "$t")" | tail -n 1)
  [ -n "$direct" ] || die "$t: the single-user server's own URL is not in $(server_log "$t")"
  for path in hub direct; do
    case $path in
      hub) url="http://127.0.0.1:${PORT[$t]}/user/spawnee" ;;
      direct) url="${direct%/}" ;;
    esac
    res=$("$KERNEL_CLIENT" gateway --quickack --url "$url" --token "$TOKEN" --starts 1 --iterations "$RTT" \
      --big-mb 1 --big-rounds 0 2>>"$LOGS/kernel-$t.log") ||
      die "$t: kernel round trip via $path failed (see $LOGS/kernel-$t.log)"
    printf '{"kind":"kernel","target":"%s","path":"%s","result":%s}\n' "$t" "$path" "$res" >>"$RESULTS"
    log "  $(printf '%-4s' "$t") $(printf '%-6s' "$path") $res"
  done
done

# --- report -----------------------------------------------------------------------------------
cp "$RESULTS" "$LOGS/results.jsonl"
python3 "$ROOT/bench/hub_report.py" "$RESULTS" "$OUT_DIR/hub.json" \
  --ours-bin "$OURS_BIN" --jh-version "$JH_VERSION" --chp-version "$(chp_version)" \
  --cold-rounds "$COLD_ROUNDS" --rounds "$ROUNDS" --duration "$DURATION" \
  --connections "$CONNS" --create "$CREATE" --users "$USERS" \
  --loadavg-before "$LOAD_BEFORE" --loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)" &&
  rc=0 || rc=$?
log "raw numbers: $OUT_DIR/hub.json, logs: $LOGS"
if [ "$rc" -eq 3 ]; then
  [ "${BENCH_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
exit "$rc"
