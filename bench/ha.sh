#!/usr/bin/env bash
# Replica benchmark (`bench/run ha`): two stackhub replicas ("a", "b") on one PostgreSQL
# database (scripts/lib.sh start_postgres) behind HAProxy from Debian, configured as the
# project's tests do (`balance roundrobin`, `option redispatch`, `retries 1`, health check
# `GET /hub/ready`, or `/hub/health` on a build without it); servers are `standin-server`
# (bench/src/bin/standin-server.rs) through `spawner.cmd`.
#
#   1. API req/s with 1 vs 2 replicas: GET /hub/api/users/NAME (BENCH_USERS users, random) with
#      BENCH_CONNECTIONS connections for BENCH_DURATION s through an HAProxy with replica a only
#      and through one with a and b (same settings), alternated, BENCH_ROUNDS rounds; medians.
#   2. failover, BENCH_KILLS times (odd rounds kill the leader, even ones the other replica):
#      under a steady API load through HAProxy (http-load, 8 connections), with one spawn in
#      flight on the victim (its stand-in waits BENCH_SLOW_MS before it listens), SIGKILL the
#      victim; then time (from the kill, through HAProxy) the first successful API call, the
#      first spawn of a new user to ready, and the in-flight spawn until it is ready (within
#      30 s: the survivor takes it over once its lease runs out). The victim is restarted and
#      rejoins before the next round. Medians.
#   3. the reference: JupyterHub 6 (+ CHP, SQLite; it has no replicas) SIGKILLed and started
#      again, BENCH_KILLS times: kill to the first successful API call through its public port.
# Prints a table and writes bench/out/ha.json.
#
# Knobs (environment):
#   BENCH_OURS_BIN          measure this binary as "ours" instead of building stackhub
#   BENCH_USERS=1000        users
#   BENCH_ROUNDS=5          req/s rounds (1 and 2 replicas each)
#   BENCH_DURATION=5        seconds per req/s run
#   BENCH_CONNECTIONS=32    connections of the req/s runs
#   BENCH_KILLS=5           failovers (and JupyterHub restarts)
#   BENCH_SLOW_MS=4000      how long the in-flight spawn's server waits before it listens
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
# shellcheck source=bench/chp.sh
source "$ROOT/bench/chp.sh"
# shellcheck source=bench/hubs.sh
source "$ROOT/bench/hubs.sh"
as_subreaper "$0" "$@"

USERS=${BENCH_USERS:-1000}
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNECTIONS:-32}
KILLS=${BENCH_KILLS:-5}
SLOW_MS=${BENCH_SLOW_MS:-4000}
for v in USERS ROUNDS DURATION CONNS KILLS SLOW_MS; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then die "BENCH_$v must be a positive number, not '${!v}'"; fi
done
TOKEN="bench-token-$RANDOM$RANDOM$RANDOM$RANDOM"
COOKIE_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

apt_install haproxy
start_postgres # sets an EXIT trap of its own: hubs_init replaces it, cleanup_extra stops PostgreSQL
hubs_init ha
build_hubs
LOAD="$BENCH_BIN/http-load"
STANDIN="$BENCH_BIN/standin-server"
SERVER_CMD=("$STANDIN")
# shellcheck disable=SC2317 # invoked by cleanup
cleanup_extra() {
  local f
  for f in "$WORK"/*/proxy.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  kill_exe "$STANDIN"
  stop_postgres
}
# How long the in-flight spawn gets to become ready on the survivor (spawn leases last 5 s, then
# the leader takes them over).
INFLIGHT_TIMEOUT=30

psql -q "$STACKHUB_TEST_POSTGRES_URL" -c 'CREATE DATABASE bench_ha' >/dev/null ||
  die "cannot create the database bench_ha"
DB_URL="${STACKHUB_TEST_POSTGRES_URL%/*}/bench_ha"
OURS_ENV=("STACKHUB_DB_URL=$DB_URL" "STACKHUB_COOKIE_SECRET=$COOKIE_SECRET")
OURS_TOML="[spawner.environment]
STANDIN_SLOW_PREFIX = \"slow\"
STANDIN_SLOW_MS = \"$SLOW_MS\""
JH_EXTRA='c.JupyterHub.cleanup_servers = False
c.Spawner.ip = "127.0.0.1"'

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
record() { printf '%s\n' "$1" >>"$RESULTS"; }

# --- the replicas and the load balancers ------------------------------------------------------
declare -A PORT PID CMD
# replica NAME: start replica NAME (its command is kept for restarts) and wait for its API.
replica() {
  local r=$1
  if [ -z "${CMD[$r]:-}" ]; then
    read -r "PORT[$r]" < <(free_ports 1)
    mapfile -d '' -t cmd < <(hub_cmd ours "$WORK/$r" "${PORT[$r]}")
    CMD[$r]=$(printf '%q ' "${cmd[@]}")
  fi
  cd "$WORK/$r"
  eval "start $r ${CMD[$r]}"
  cd "$ROOT"
  PID[$r]=$STARTED_PID
  wait_http "$r" "${PID[$r]}" "http://127.0.0.1:${PORT[$r]}/hub/api" 60
}
log "starting replica a, then b (PostgreSQL: $DB_URL)"
replica a
replica b
CHECK=/hub/ready
curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[a]}$CHECK" 2>/dev/null || CHECK=/hub/health
log "HAProxy health check: GET $CHECK"

# haproxy NAME REPLICA...: an HAProxy in front of the replicas; sets PORT[NAME].
haproxy_lb() {
  local name=$1 r cfg="$WORK/$1.cfg"
  shift
  read -r "PORT[$name]" < <(free_ports 1)
  cat >"$cfg" <<CFG
global
  maxconn 4096
  stats socket $WORK/$name.sock mode 600 level admin
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option redispatch
  retries 1
frontend public
  bind 127.0.0.1:${PORT[$name]}
  default_backend hubs
backend hubs
  balance roundrobin
  option httpchk GET $CHECK
  default-server inter 500ms fall 2 rise 2
CFG
  for r in "$@"; do echo "  server $r 127.0.0.1:${PORT[$r]} check" >>"$cfg"; done
  haproxy -c -q -f "$cfg" || die "HAProxy refuses $cfg"
  start "$name" haproxy -db -f "$cfg"
  PID[$name]=$STARTED_PID
}
haproxy_lb lb1 a
haproxy_lb lb2 a b
HAPROXY_VERSION=$(haproxy -v | head -n 1)

# lb_up LB REPLICA: wait (30 s at most) until HAProxy LB sees REPLICA as UP.
lb_up() {
  local i
  for ((i = 0; i < 300; i++)); do
    python3 - "$WORK/$1.sock" "$2" <<'PY' && return 0
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines():
    f = line.split(",")
    if len(f) > 17 and f[0] == "hubs" and f[1] == sys.argv[2]:
        sys.exit(0 if f[17].startswith("UP") else 1)
sys.exit(1)
PY
    sleep 0.1
  done
  die "HAProxy $1 does not see replica $2 up after 30 s"
}
lb_up lb1 a
lb_up lb2 a
lb_up lb2 b
lb() { echo "http://127.0.0.1:${PORT[$1]}"; }

log "creating $USERS users through lb2 (not timed)"
for ((lo = 0; lo < USERS; lo += 500)); do
  hi=$((lo + 500 < USERS ? lo + 500 : USERS))
  body=$(python3 -c 'import json, sys; print(json.dumps({"usernames": [f"u{i}" for i in range(int(sys.argv[1]), int(sys.argv[2]))]}))' "$lo" "$hi")
  code=$(curl -sS -o "$LOGS/bulk.json" -w '%{http_code}' --max-time 300 -X POST \
    -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' -d "$body" "$(lb lb2)/hub/api/users")
  [ "$code" = 201 ] || die "bulk-creating users u$lo..u$((hi - 1)) answered $code (see $LOGS/bulk.json)"
done
extra=$(python3 -c 'import json, sys; n = int(sys.argv[1]); print(json.dumps({"usernames": [f"{p}{k}" for p in ("slow", "fresh") for k in range(1, n + 1)]}))' "$KILLS")
code=$(curl -sS -o "$LOGS/bulk.json" -w '%{http_code}' --max-time 60 -X POST -H "Authorization: token $TOKEN" \
  -H 'Content-Type: application/json' -d "$extra" "$(lb lb2)/hub/api/users")
[ "$code" = 201 ] || die "creating the failover rounds' users answered $code (see $LOGS/bulk.json)"

# load LB LABEL ROUND ARGS...: http-load GET /users/u{i} through LB; ROUND 0 is not recorded.
load() {
  local l=$1 label=$2 r=$3 res
  shift 3
  res=$("$LOAD" -H "Authorization: token $TOKEN" --url "$(lb "$l")/hub/api/users/u{i}" \
    --modulo "$USERS" "$@" 2>>"$LOGS/http-load-$l.log") ||
    die "http-load ($label) through $l failed (see $LOGS/http-load-$l.log)"
  [ "$r" -eq 0 ] && return 0
  record "{\"kind\":\"load\",\"test\":\"$label\",\"round\":$r,\"result\":$res}"
  log "  round $r  $(printf '%-10s' "$label") $res"
}

# --- 1. req/s, 1 vs 2 replicas ----------------------------------------------------------------
log "API req/s: GET /hub/api/users/NAME, $CONNS connections, ${DURATION}s, $ROUNDS rounds"
load lb1 warmup 0 --duration 1 --concurrency "$CONNS"
load lb2 warmup 0 --duration 1 --concurrency "$CONNS"
for ((r = 1; r <= ROUNDS; r++)); do
  order=(lb1 lb2)
  [ $((r % 2)) -eq 0 ] && order=(lb2 lb1)
  for l in "${order[@]}"; do
    label=replicas-1
    [ "$l" = lb2 ] && label=replicas-2
    load "$l" "$label" "$r" --duration "$DURATION" --concurrency "$CONNS"
  done
done

# --- 2. failover ------------------------------------------------------------------------------
leader() { # the replica that leads now (its stackhub_leader gauge), or "?"
  local r metrics
  for r in a b; do
    metrics=$(curl -fsS --max-time 2 -H "Authorization: token $TOKEN" "http://127.0.0.1:${PORT[$r]}/hub/metrics" 2>/dev/null) ||
      continue
    if grep -qx 'stackhub_leader 1' <<<"$metrics"; then echo "$r"; return 0; fi
  done
  echo "?"
}
log "failover: $KILLS SIGKILLs under load, one spawn in flight on the victim each time"
for ((k = 1; k <= KILLS; k++)); do
  # Odd rounds kill the leader, even rounds the other replica.
  lead=$(leader)
  case $lead in a) other=b ;; b) other=a ;; *) die "no replica says it leads (stackhub_leader)" ;; esac
  victim=$lead
  [ $((k % 2)) -eq 0 ] && victim=$other
  "$LOAD" -H "Authorization: token $TOKEN" --url "$(lb lb2)/hub/api/users/u{i}" --modulo "$USERS" \
    --concurrency 8 --duration 8 --timeout-ms 5000 >"$WORK/bg-$k.json" 2>>"$LOGS/http-load-bg.log" &
  bg=$!
  code=$(curl -sS -o "$LOGS/inflight-$k.json" -w '%{http_code}' --max-time 10 -X POST \
    -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' -d '{}' \
    "http://127.0.0.1:${PORT[$victim]}/hub/api/users/slow$k/server" 2>/dev/null) || true
  [ "$code" = 202 ] || die "round $k: the in-flight spawn's POST answered $code, not 202 (see $LOGS/inflight-$k.json)"
  sleep 1
  res=$(python3 "$ROOT/bench/ha_failover.py" --kill "${PID[$victim]}" --base "$(lb lb2)" --token "$TOKEN" \
    --user u1 --spawn-user "fresh$k" --inflight-user "slow$k" --inflight-timeout "$INFLIGHT_TIMEOUT" \
    2>>"$LOGS/failover.log") || die "failover round $k: no API call succeeded (see $LOGS/failover.log)"
  wait "${PID[$victim]}" 2>/dev/null || true
  wait "$bg" || die "the background load of round $k failed (see $LOGS/http-load-bg.log)"
  record "{\"kind\":\"failover\",\"round\":$k,\"victim\":\"$victim\",\"leader\":\"$lead\",\"inflight_post\":\"$code\",\"result\":$res,\"load\":$(cat "$WORK/bg-$k.json")}"
  log "  round $k: killed $victim (leader before: $lead) $res; load: $(cat "$WORK/bg-$k.json")"
  log "  restarting $victim"
  replica "$victim"
  lb_up lb2 "$victim"
  lb_up lb1 a
done

# --- 3. the reference: JupyterHub killed and started again -------------------------------------
log "JupyterHub reference: $KILLS SIGKILLs, each followed by a restart"
read -r "PORT[jh]" < <(free_ports 1)
mapfile -d '' -t jcmd < <(hub_cmd jh "$WORK/jh" "${PORT[jh]}")
cd "$WORK/jh"
start jh "${jcmd[@]}"
cd "$ROOT"
PID[jh]=$STARTED_PID
wait_http jh "${PID[jh]}" "$(lb jh)/hub/api" 60
code=$(curl -sS -o "$LOGS/bulk-jh.json" -w '%{http_code}' --max-time 60 -X POST -H "Authorization: token $TOKEN" \
  -H 'Content-Type: application/json' -d '{"usernames": ["u1"]}' "$(lb jh)/hub/api/users")
[ "$code" = 201 ] || die "JupyterHub: creating u1 answered $code"
for ((k = 1; k <= KILLS; k++)); do
  res=$(python3 "$ROOT/bench/ha_failover.py" --kill "${PID[jh]}" --base "$(lb jh)" --token "$TOKEN" --user u1 \
    --restart-log "$LOGS/jh.log" --restart-cwd "$WORK/jh" --restart "${jcmd[@]}" 2>>"$LOGS/failover.log") ||
    die "JupyterHub restart $k: no API call succeeded (see $LOGS/failover.log, $LOGS/jh.log)"
  wait "${PID[jh]}" 2>/dev/null || true
  PID[jh]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["restarted_pid"])' "$res")
  PIDS+=("${PID[jh]}")
  record "{\"kind\":\"jh-restart\",\"round\":$k,\"result\":$res}"
  log "  round $k: $res"
done

# --- report -----------------------------------------------------------------------------------
cp "$RESULTS" "$LOGS/results.jsonl"
python3 "$ROOT/bench/ha_report.py" "$RESULTS" "$OUT_DIR/ha.json" \
  --ours-bin "$OURS_BIN" --jh-version "$JH_VERSION" --haproxy "$HAPROXY_VERSION" --check "$CHECK" \
  --inflight-timeout "$INFLIGHT_TIMEOUT" --users "$USERS" --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNS" \
  --kills "$KILLS" --slow-ms "$SLOW_MS" \
  --loadavg-before "$LOAD_BEFORE" --loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)"
log "raw numbers: $OUT_DIR/ha.json, logs: $LOGS"
