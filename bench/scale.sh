#!/usr/bin/env bash
# Scale benchmark (`bench/run scale`): stackhub ("ours", its public port with the embedded proxy,
# on SQLite; "ours-pg": the same on PostgreSQL from scripts/lib.sh start_postgres) against
# JupyterHub 6 + the configurable-http-proxy it starts ("jh"), one after the
# other on 127.0.0.1, each with BENCH_USERS users and BENCH_SERVERS running servers. The servers
# are `standin-server` (bench/src/bin/standin-server.rs, a few hundred KiB each), run by both
# hubs' local-process spawners through their command setting (`spawner.cmd`, `c.Spawner.cmd`).
#
# Per hub, in this order:
#   1. create the users (bulk POST /hub/api/users, 500 names a request; not timed);
#   2. fleet start: POST /users/NAME/server for the first BENCH_SERVERS users, BENCH_SPAWN_CONC
#      at a time, until every /user/NAME/ answers through the hub's public port with its own
#      server (bench route-wait): servers started (= routes added) per second;
#   3. REST latency at that size, 1 connection: GET /users/NAME (random users) and GET
#      /users?offset=N&limit=100 (BENCH_REQUESTS each), then BENCH_STARTS server starts of more
#      users, each POST to ready (bench/hub_starts.py); p50/p99;
#   4. hub RSS (ours: the stackhub process; jh: jupyterhub + CHP);
#   5. restart: SIGTERM to the hub (both keep their servers running: JupyterHub with
#      cleanup_servers = False; its CHP stops with it), start it again, time until every
#      /user/NAME/ answers through the public port again;
#   6. fleet stop: DELETE /users/NAME/server for every server, BENCH_SPAWN_CONC at a time, until
#      no /user/NAME/ answers with its server: servers stopped (= routes removed) per second.
# Prints a table with the ratios and the issue's targets (met / not met) and writes
# bench/out/scale.json.
#
# Knobs (environment):
#   BENCH_OURS_BIN            measure this binary as "ours" instead of building stackhub
#   BENCH_USERS=10000         users on each hub
#   BENCH_SERVERS=1000        running servers on each hub
#   BENCH_STARTS=20           timed single server starts (of users past the fleet)
#   BENCH_REQUESTS=2000       requests per REST latency test
#   BENCH_SPAWN_CONC=20       start / stop requests in flight during the fleet start and stop
#   BENCH_TARGETS="ours ours-pg jh"   which hubs, in this order
#   BENCH_STRICT=1            exit 1 when a target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
# shellcheck source=bench/chp.sh
source "$ROOT/bench/chp.sh"
# shellcheck source=bench/hubs.sh
source "$ROOT/bench/hubs.sh"
as_subreaper "$0" "$@"

USERS=${BENCH_USERS:-10000}
SERVERS=${BENCH_SERVERS:-1000}
STARTS=${BENCH_STARTS:-20}
REQUESTS=${BENCH_REQUESTS:-2000}
SPAWN_CONC=${BENCH_SPAWN_CONC:-20}
read -r -a TARGETS <<<"${BENCH_TARGETS:-ours ours-pg jh}"
TOKEN="bench-token-$RANDOM$RANDOM$RANDOM$RANDOM"
PAGE=100

for v in USERS SERVERS STARTS REQUESTS SPAWN_CONC; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then die "BENCH_$v must be a positive number, not '${!v}'"; fi
done
[ "$USERS" -ge "$((SERVERS + STARTS))" ] ||
  die "BENCH_USERS ($USERS) must be at least BENCH_SERVERS + BENCH_STARTS ($((SERVERS + STARTS)))"
[ "$USERS" -gt "$PAGE" ] || die "BENCH_USERS ($USERS) must be more than one page ($PAGE)"
for t in "${TARGETS[@]}"; do
  case $t in ours | ours-pg | jh) ;; *) die "BENCH_TARGETS: unknown hub '$t' (known: ours ours-pg jh)" ;; esac
done

# Room for the fleet: one stand-in is ~0.5 MiB RSS; each hub holds a socket or two per server.
avail_kib=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)
[ "$avail_kib" -gt $((SERVERS * 4096 + 4 * 1024 * 1024)) ] ||
  die "not enough free memory for $SERVERS servers (MemAvailable $((avail_kib / 1024)) MiB)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((SERVERS * 4 + 1000)) ] ||
  die "open-file limit $(ulimit -n) is too low for $SERVERS servers (ulimit -n)"
[ "$(ulimit -u)" = unlimited ] || [ "$(ulimit -u)" -gt $((SERVERS * 2 + 1000)) ] ||
  die "process limit $(ulimit -u) is too low for $SERVERS servers (ulimit -u)"

PG_URL=""
if [[ " ${TARGETS[*]} " == *" ours-pg "* ]]; then
  start_postgres # sets an EXIT trap of its own: hubs_init replaces it, cleanup_extra stops PostgreSQL
  psql -q "$STACKHUB_TEST_POSTGRES_URL" -c 'CREATE DATABASE bench_scale' >/dev/null ||
    die "cannot create the database bench_scale"
  PG_URL="${STACKHUB_TEST_POSTGRES_URL%/*}/bench_scale"
fi
hubs_init scale
build_hubs
LOAD="$BENCH_BIN/http-load"
ROUTE_WAIT="$BENCH_BIN/route-wait"
STANDIN="$BENCH_BIN/standin-server"
SERVER_CMD=("$STANDIN")
# shellcheck disable=SC2317 # invoked by cleanup
cleanup_extra() {
  local f
  for f in "$WORK"/*/proxy.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  kill_exe "$STANDIN"
  [ -z "$PG_URL" ] || stop_postgres
}
# What JupyterHub needs to hold the fleet and keep it over a restart.
JH_EXTRA='c.JupyterHub.concurrent_spawn_limit = 0  # no limit (default 100)
c.JupyterHub.active_server_limit = 0  # no limit (the default)
c.JupyterHub.cleanup_servers = False  # a restart keeps the servers (default: stops them)
c.Spawner.ip = "127.0.0.1"
c.Spawner.poll_interval = 300  # poll each server every 5 min (default 30 s: 33 polls/s)'
JH_SETTINGS="concurrent_spawn_limit=0, active_server_limit=0, cleanup_servers=False, Spawner.poll_interval=300, slow_spawn_timeout=0, start_timeout=http_timeout=120"

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
record() { printf '%s\n' "$1" >>"$RESULTS"; }

# rss TARGET PHASE: VmRSS/VmHWM of the hub (and its split: RssAnon, the heap and stacks; RssFile,
# the mapped executable and libraries) and of JupyterHub's proxy, from its pid file (the servers
# are the hub's children too, and are not counted).
rss() {
  local t=$1 pid=${PID[$1]} proxy=0 proxy_hwm=0 p
  if [ "$t" = jh ]; then
    p=$(cat "$WORK/jh/proxy.pid" 2>/dev/null) || die "JupyterHub's proxy pid file is missing"
    proxy=$(kib "$p" VmRSS)
    proxy_hwm=$(kib "$p" VmHWM)
  fi
  record "$(printf '{"kind":"rss","phase":"%s","target":"%s","hub_vmrss_kib":%d,"hub_vmhwm_kib":%d,"hub_rssanon_kib":%d,"hub_rssfile_kib":%d,"proxy_vmrss_kib":%d,"proxy_vmhwm_kib":%d}' \
    "$2" "$t" "$(kib "$pid" VmRSS)" "$(kib "$pid" VmHWM)" "$(kib "$pid" RssAnon)" "$(kib "$pid" RssFile)" \
    "$proxy" "$proxy_hwm")"
}

# load TARGET LABEL ARGS...: run http-load against TARGET's API, record and print its result.
load() {
  local t=$1 label=$2 res
  shift 2
  res=$("$LOAD" -H "Authorization: token $TOKEN" "$@" 2>>"$LOGS/http-load-$t.log") ||
    die "http-load ($label) against $t failed (see $LOGS/http-load-$t.log)"
  [ "$label" = warmup ] && return 0
  record "{\"kind\":\"load\",\"test\":\"$label\",\"target\":\"$t\",\"result\":$res}"
  log "  $(printf '%-4s %-12s' "$t" "$label") $res"
}

# routes TARGET WANT T0 TIMEOUT LABEL [START COUNT]: wait until every route is up / down.
routes() {
  local t=$1 res
  res=$("$ROUTE_WAIT" --url "http://127.0.0.1:${PORT[$t]}/user/u{i}/" --start "${6:-0}" \
    --count "${7:-$SERVERS}" --want "$2" --t0 "$3" --timeout-s "$4" 2>>"$LOGS/route-wait-$t.log") ||
    die "$t: $5: routes not all $2 within $4 s: $res (log: $LOGS/$t.log)"
  record "{\"kind\":\"routes\",\"test\":\"$5\",\"target\":\"$t\",\"result\":$res}"
  log "  $(printf '%-4s %-12s' "$t" "$5") $res"
}

# servers_gone TARGET: wait (60 s at most) until no stand-in runs, then kill what is left.
servers_gone() {
  local i n
  for ((i = 0; i < 600; i++)); do
    n=$(pids_of_exe "$STANDIN" | wc -l)
    [ "$n" -eq 0 ] && return 0
    sleep 0.1
  done
  log "  $1: $n stand-in servers still running 60 s after their stop; killing them"
  kill_exe "$STANDIN"
}

declare -A PORT PID
api() { echo "http://127.0.0.1:${PORT[$1]}/hub/api$2"; }
log "hubs: ${TARGETS[*]}; $USERS users, $SERVERS servers, $STARTS timed starts, $REQUESTS requests per REST test"
log "JupyterHub settings: $JH_SETTINGS"
for t in "${TARGETS[@]}"; do
  dir="$WORK/$t"
  read -r "PORT[$t]" < <(free_ports 1)
  OURS_ENV=()
  [ "$t" = ours-pg ] && OURS_ENV=("STACKHUB_DB_URL=$PG_URL")
  mapfile -d '' -t cmd < <(hub_cmd "${t%-pg}" "$dir" "${PORT[$t]}")
  log "$t: starting the hub"
  cd "$dir"
  start "$t" "${cmd[@]}"
  cd "$ROOT"
  PID[$t]=$STARTED_PID
  wait_http "$t" "${PID[$t]}" "$(api "$t" "")" 60

  log "$t: creating $USERS users (500 a request; not timed)"
  t0=$(now)
  for ((lo = 0; lo < USERS; lo += 500)); do
    hi=$((lo + 500 < USERS ? lo + 500 : USERS))
    body=$(python3 -c 'import json, sys; print(json.dumps({"usernames": [f"u{i}" for i in range(int(sys.argv[1]), int(sys.argv[2]))]}))' "$lo" "$hi")
    code=$(curl -sS -o "$LOGS/bulk-$t.json" -w '%{http_code}' --max-time 300 -X POST \
      -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' -d "$body" "$(api "$t" /users)")
    [ "$code" = 201 ] || die "$t: bulk-creating users u$lo..u$((hi - 1)) answered $code (see $LOGS/bulk-$t.json)"
  done
  log "  $t: $USERS users in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(now)") s"
  rss "$t" users

  log "$t: fleet start: $SERVERS servers, $SPAWN_CONC requests in flight, until every route answers"
  t0=$(now)
  load "$t" fleet-post --method POST --body '{}' -H 'Content-Type: application/json' \
    --url "$(api "$t" '/users/u{i}/server')" --count "$SERVERS" --concurrency "$SPAWN_CONC" --timeout-ms 120000
  routes "$t" up "$t0" 600 fleet-start
  rss "$t" fleet

  log "$t: REST latency with $USERS users and $SERVERS servers (1 connection)"
  load "$t" warmup --url "$(api "$t" '/users/u{i}')" --modulo "$USERS" --count 200
  load "$t" get-user --url "$(api "$t" '/users/u{i}')" --modulo "$USERS" --start 7 --count "$REQUESTS"
  load "$t" warmup --url "$(api "$t" "/users?offset={i}&limit=$PAGE")" --modulo "$((USERS - PAGE))" --count 50
  load "$t" list-page --url "$(api "$t" "/users?offset={i}&limit=$PAGE")" --modulo "$((USERS - PAGE))" \
    --start 13 --count "$REQUESTS"
  mapfile -t extra < <(seq -f 'u%.0f' "$SERVERS" "$((SERVERS + STARTS - 1))")
  res=$(python3 "$ROOT/bench/hub_starts.py" --api "$(api "$t" "")" --token "$TOKEN" "${extra[@]}" \
    2>>"$LOGS/starts-$t.log") || die "$t: timed server starts failed (see $LOGS/starts-$t.log)"
  record "{\"kind\":\"starts\",\"target\":\"$t\",\"result\":$res}"
  log "  $t starts       $res"
  rss "$t" loaded

  log "$t: restart: SIGTERM, start again, until all $SERVERS routes answer"
  t_kill=$(now)
  kill -TERM "${PID[$t]}"
  wait "${PID[$t]}" 2>/dev/null || true
  if [ "$t" = jh ]; then # JupyterHub stops its proxy on SIGTERM; wait for that too.
    p=$(cat "$dir/proxy.pid" 2>/dev/null || true)
    for ((i = 0; i < 300; i++)); do
      if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then break; fi
      sleep 0.01
    done
  fi
  t_down=$(now)
  cd "$dir"
  start "$t" "${cmd[@]}"
  cd "$ROOT"
  PID[$t]=$STARTED_PID
  routes "$t" up "$t_kill" 600 restart
  record "{\"kind\":\"restart\",\"target\":\"$t\",\"kill\":$t_kill,\"down\":$t_down}"
  wait_http "$t" "${PID[$t]}" "$(api "$t" "")" 60
  rss "$t" restarted

  log "$t: fleet stop: $SERVERS servers, $SPAWN_CONC requests in flight, until no route answers"
  t0=$(now)
  load "$t" fleet-delete --method DELETE --url "$(api "$t" '/users/u{i}/server')" --count "$SERVERS" \
    --concurrency "$SPAWN_CONC" --timeout-ms 120000
  routes "$t" down "$t0" 600 fleet-stop
  for u in "${extra[@]}"; do
    curl -sS -o /dev/null --max-time 60 -X DELETE -H "Authorization: token $TOKEN" "$(api "$t" "/users/$u/server")" || true
  done
  servers_gone "$t"
  log "$t: stopping the hub"
  kill -TERM "${PID[$t]}"
  wait "${PID[$t]}" 2>/dev/null || true
done

# --- report -----------------------------------------------------------------------------------
cp "$RESULTS" "$LOGS/results.jsonl"
python3 "$ROOT/bench/scale_report.py" "$RESULTS" "$OUT_DIR/scale.json" \
  --ours-bin "$OURS_BIN" --jh-version "$JH_VERSION" --chp-version "$(chp_version)" \
  --jh-settings "$JH_SETTINGS" --users "$USERS" --servers "$SERVERS" --starts "$STARTS" \
  --requests "$REQUESTS" --spawn-conc "$SPAWN_CONC" \
  --loadavg-before "$LOAD_BEFORE" --loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)" &&
  rc=0 || rc=$?
log "raw numbers: $OUT_DIR/scale.json, logs: $LOGS"
if [ "$rc" -eq 3 ]; then
  [ "${BENCH_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
exit "$rc"
