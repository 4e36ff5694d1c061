#!/usr/bin/env bash
# Proxy benchmark (`bench/run proxy`): stackhub-proxy ("ours") against configurable-http-proxy
# ("chp"), nginx as a tuned reverse proxy ("nginx"), HAProxy splicing response bodies
# ("haproxy", for reference: the other proxy here that moves bodies with splice(2)) and no
# proxy at all ("direct"), all in front of the same nginx backend and WebSocket upstreams on
# 127.0.0.1.
#
# Measures HTTP throughput (wrk, 1 KiB and 1 MiB, several interleaved rounds, medians),
# WebSocket echo latency, the Nagle/delayed-ACK stall on multi-frame replies, and RSS.
# Prints a table with PASS/FAIL marks and writes bench/out/proxy.json.
#
# Knobs (environment):
#   BENCH_OURS_BIN          measure this binary as "ours" instead of building stackhub-proxy
#   BENCH_ROUNDS=7          wrk rounds per target and size
#   BENCH_DURATION=5        seconds per wrk run
#   BENCH_CONNECTIONS=64    wrk connections
#   BENCH_WS_ROUNDS=5       WebSocket echo rounds (BENCH_WS_ITERATIONS=1000 round trips each)
#   BENCH_NAGLE_ROUNDS=3    Nagle rounds (BENCH_NAGLE_ITERATIONS=50 round trips each)
#   BENCH_STRICT=1          exit 1 when a target is missed
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
# shellcheck source=bench/chp.sh
source "$ROOT/bench/chp.sh"

ROUNDS=${BENCH_ROUNDS:-7}
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNECTIONS:-64}
WS_ROUNDS=${BENCH_WS_ROUNDS:-5}
WS_ITERS=${BENCH_WS_ITERATIONS:-1000}
NAGLE_ROUNDS=${BENCH_NAGLE_ROUNDS:-3}
NAGLE_ITERS=${BENCH_NAGLE_ITERATIONS:-50}
NAGLE_FRAMES=3
TOKEN=secret
OUT_DIR="$ROOT/bench/out"
LOGS="$OUT_DIR/proxy-logs"
TARGETS=(direct ours chp nginx haproxy)
PROXIES=(ours chp nginx haproxy)
SIZES=(1k 1m)

die() {
  log "ERROR: $*"
  exit 1
}

# --- processes: everything started here is stopped on exit -----------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-bench.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: run CMD in the background, logging to $LOGS/NAME.log; sets STARTED_PID.
start() {
  local name=$1
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# started_or_die NAME PID: fail with the log's tail if the process is gone.
started_or_die() {
  local name=$1 pid=$2 rc=0
  kill -0 "$pid" 2>/dev/null && return 0
  wait "$pid" 2>/dev/null || rc=$?
  log "last lines of $LOGS/$name.log:"
  tail -n 20 "$LOGS/$name.log" >&2 || true
  die "${WHAT[$name]:-$name} exited during startup (exit status $rc)"
}

# wait_http NAME PID URL: wait until URL answers 2xx.
wait_http() {
  local name=$1 pid=$2 url=$3 i
  for ((i = 0; i < 150; i++)); do
    started_or_die "$name" "$pid"
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "${WHAT[$name]:-$name} did not answer $url within 15 s (log: $LOGS/$name.log)"
}

# wait_port NAME PID PORT: wait until 127.0.0.1:PORT accepts connections.
wait_port() {
  local name=$1 pid=$2 port=$3 i
  for ((i = 0; i < 150; i++)); do
    started_or_die "$name" "$pid"
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$name did not listen on 127.0.0.1:$port within 15 s (log: $LOGS/$name.log)"
}

# tree_kib PID FIELD: FIELD (VmRSS, VmHWM) in KiB summed over PID and its direct children.
tree_kib() {
  local pid=$1 field=$2 total=0 p stat ppid kib
  local pids=("$pid")
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    read -r _ ppid _ <<<"$stat"
    [ "$ppid" = "$pid" ] && pids+=("${p#/proc/}")
  done
  for p in "${pids[@]}"; do
    kib=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# rotated R: the targets, rotated by R places, so no target always runs first or last.
rotated() {
  local r=$1 n=${#TARGETS[@]} i
  for ((i = 0; i < n; i++)); do echo "${TARGETS[$(((i + r) % n))]}"; done
}

# --- install and build ------------------------------------------------------------------------
apt_install nginx-light wrk curl haproxy
command -v python3 >/dev/null || apt_install python3
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || die "nginx not found after installing nginx-light"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
[ -x "$HAPROXY" ] || die "haproxy not found after installing haproxy"
ensure_chp

if [ -n "${BENCH_OURS_BIN:-}" ]; then
  log "BENCH_OURS_BIN is set: measuring $BENCH_OURS_BIN as \"ours\" (stackhub-proxy not built)"
  cargo build --release --locked -p stackhub-bench
  OURS_BIN="$BENCH_OURS_BIN"
else
  log "cargo build --release -p proxy -p stackhub-bench"
  cargo build --release --locked -p proxy -p stackhub-bench ||
    die "building stackhub-proxy failed (BENCH_OURS_BIN=/path/to/proxy measures another binary)"
  OURS_BIN="$CARGO_TARGET_DIR/release/stackhub-proxy"
fi
[ -x "$OURS_BIN" ] || die "proxy binary not found or not executable: $OURS_BIN"
declare -A WHAT=([ours]="ours ($OURS_BIN)" [chp]="configurable-http-proxy ($CHP_BIN)")
WS_ECHO="$CARGO_TARGET_DIR/release/ws-echo"
WS_LATENCY="$CARGO_TARGET_DIR/release/ws-latency"

# --- ports, files, configs --------------------------------------------------------------------
read -r P_BACKEND P_NGINX P_OURS P_OURS_API P_CHP P_CHP_API P_WS_ECHO P_WS_NAGLE P_HAPROXY < <(
  python3 -c '
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
'
)
rm -rf "$LOGS"
mkdir -p "$LOGS" "$WORK/www" "$WORK/backend" "$WORK/nginx"
head -c 1024 /dev/urandom >"$WORK/www/1k"
head -c 1048576 /dev/urandom >"$WORK/www/1m"

# Shared by both nginx instances: own pid/log/temp paths, no access log.
nginx_common() {
  local dir=$1
  [ "$(id -u)" -eq 0 ] && echo "user root;"
  cat <<EOF
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
  local dir=$1
  cat <<EOF
  access_log off;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
EOF
}

{
  nginx_common "$WORK/backend"
  echo "http {"
  nginx_http_common "$WORK/backend"
  cat <<EOF
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=16 inactive=1h;
  open_file_cache_valid 1h;
  server {
    listen 127.0.0.1:$P_BACKEND reuseport backlog=4096;
    root $WORK/www;
  }
}
EOF
} >"$WORK/backend/nginx.conf"

# nginx as the best-in-class reverse proxy: pooled keepalive upstream connections, HTTP/1.1
# to the upstream, in-memory buffering, WebSocket upgrades on the ws paths.
{
  nginx_common "$WORK/nginx"
  echo "http {"
  nginx_http_common "$WORK/nginx"
  cat <<EOF
  upstream backend {
    server 127.0.0.1:$P_BACKEND;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$P_NGINX reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # Large in-memory buffers and no disk spooling: the fastest variant for 1 MiB bodies
      # (vs buffering off / defaults) when this harness was written.
      proxy_buffers 32 32k;
      proxy_busy_buffers_size 256k;
      proxy_max_temp_file_size 0;
    }
    location /ws/echo {
      proxy_pass http://127.0.0.1:$P_WS_ECHO;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
    location /ws/nagle {
      proxy_pass http://127.0.0.1:$P_WS_NAGLE;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
  }
}
EOF
} >"$WORK/nginx/nginx.conf"
# HAProxy (one thread per core, its default) with pooled server connections and response
# bodies spliced, WebSocket upgrades on the ws paths.
mkdir -p "$WORK/haproxy"
cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  option http-keep-alive
  http-reuse always
frontend public
  bind 127.0.0.1:$P_HAPROXY
  use_backend ws_echo if { path_beg /ws/echo }
  use_backend ws_nagle if { path_beg /ws/nagle }
  default_backend files
backend files
  option splice-response
  server backend 127.0.0.1:$P_BACKEND
backend ws_echo
  server echo 127.0.0.1:$P_WS_ECHO
backend ws_nagle
  server nagle 127.0.0.1:$P_WS_NAGLE
EOF
cp "$WORK/backend/nginx.conf" "$LOGS/backend-nginx.conf"
cp "$WORK/nginx/nginx.conf" "$LOGS/proxy-nginx.conf"
cp "$WORK/haproxy/haproxy.cfg" "$LOGS/haproxy.cfg"

# --- start everything -------------------------------------------------------------------------
log "starting backend nginx, WebSocket upstreams and the proxies"
"$NGINX" -t -q -p "$WORK/backend" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" ||
  die "backend nginx config rejected (see $LOGS/backend-nginx.conf)"
"$NGINX" -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ||
  die "proxy nginx config rejected (see $LOGS/proxy-nginx.conf)"
"$HAPROXY" -c -q -f "$WORK/haproxy/haproxy.cfg" || die "haproxy config rejected (see $LOGS/haproxy.cfg)"

start backend "$NGINX" -p "$WORK/backend" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf"
PID_BACKEND=$STARTED_PID
start ws-echo "$WS_ECHO" --port "$P_WS_ECHO" --mode echo
PID_WS_ECHO=$STARTED_PID
start ws-nagle "$WS_ECHO" --port "$P_WS_NAGLE" --mode nagle-burst --frames "$NAGLE_FRAMES"
PID_WS_NAGLE=$STARTED_PID
start nginx "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
PID_NGINX=$STARTED_PID
start haproxy "$HAPROXY" -f "$WORK/haproxy/haproxy.cfg"
PID_HAPROXY=$STARTED_PID
proxy_args() { echo --ip 127.0.0.1 --port "$1" --api-ip 127.0.0.1 --api-port "$2" \
  --default-target "http://127.0.0.1:$P_BACKEND"; }
# shellcheck disable=SC2046 # proxy_args is a list of words without spaces
start ours env CONFIGPROXY_AUTH_TOKEN="$TOKEN" "$OURS_BIN" $(proxy_args "$P_OURS" "$P_OURS_API")
PID_OURS=$STARTED_PID
# shellcheck disable=SC2046
start chp env CONFIGPROXY_AUTH_TOKEN="$TOKEN" "$CHP_BIN" $(proxy_args "$P_CHP" "$P_CHP_API")
PID_CHP=$STARTED_PID

wait_http backend "$PID_BACKEND" "http://127.0.0.1:$P_BACKEND/1k"
wait_port ws-echo "$PID_WS_ECHO" "$P_WS_ECHO"
wait_port ws-nagle "$PID_WS_NAGLE" "$P_WS_NAGLE"
wait_http nginx "$PID_NGINX" "http://127.0.0.1:$P_NGINX/1k"
wait_http haproxy "$PID_HAPROXY" "http://127.0.0.1:$P_HAPROXY/1k"
wait_http ours "$PID_OURS" "http://127.0.0.1:$P_OURS/_chp_healthz"
wait_http chp "$PID_CHP" "http://127.0.0.1:$P_CHP/_chp_healthz"

add_route() { # API_PORT PATH TARGET
  curl -fsS -o /dev/null --max-time 5 -X POST -H "Authorization: token $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"target\":\"$3\"}" \
    "http://127.0.0.1:$1/api/routes$2" || die "adding route $2 -> $3 on API port $1 failed"
}
for api in "$P_OURS_API" "$P_CHP_API"; do
  add_route "$api" /ws/echo "http://127.0.0.1:$P_WS_ECHO"
  add_route "$api" /ws/nagle "http://127.0.0.1:$P_WS_NAGLE"
done

declare -A PORT=([direct]=$P_BACKEND [ours]=$P_OURS [chp]=$P_CHP [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
declare -A PID=([ours]=$PID_OURS [chp]=$PID_CHP [nginx]=$PID_NGINX [haproxy]=$PID_HAPROXY)
http_url() { echo "http://127.0.0.1:${PORT[$1]}/$2"; }
ws_url() { # TARGET echo|nagle
  case $1 in
    direct) [ "$2" = echo ] && echo "ws://127.0.0.1:$P_WS_ECHO/ws/echo" ||
      echo "ws://127.0.0.1:$P_WS_NAGLE/ws/nagle" ;;
    *) echo "ws://127.0.0.1:${PORT[$1]}/ws/$2" ;;
  esac
}

# Check every path returns the right bytes and every WebSocket route works before measuring.
for t in "${TARGETS[@]}"; do
  for s in "${SIZES[@]}"; do
    curl -fsS --max-time 10 "$(http_url "$t" "$s")" | cmp -s - "$WORK/www/$s" ||
      die "$t: GET /$s did not return the backend's file"
  done
  "$WS_LATENCY" "$(ws_url "$t" echo)" --warmup 0 --iterations 3 --timeout-ms 5000 >/dev/null ||
    die "$t: WebSocket echo through $(ws_url "$t" echo) failed"
  "$WS_LATENCY" "$(ws_url "$t" nagle)" --warmup 0 --iterations 3 --expect-frames "$NAGLE_FRAMES" \
    --timeout-ms 5000 >/dev/null || die "$t: WebSocket burst through $(ws_url "$t" nagle) failed"
done

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
for t in "${PROXIES[@]}"; do
  printf '{"kind":"rss","phase":"idle","target":"%s","vmrss_kib":%d,"vmhwm_kib":%d}\n' \
    "$t" "$(tree_kib "${PID[$t]}" VmRSS)" "$(tree_kib "${PID[$t]}" VmHWM)" >>"$RESULTS"
done

# --- HTTP throughput --------------------------------------------------------------------------
# run_wrk TARGET SIZE ROUND SECONDS: ROUND 0 is an unrecorded warm-up.
run_wrk() {
  local t=$1 s=$2 r=$3 secs=$4 out line
  out="$LOGS/wrk-$t-$s-r$r.txt"
  wrk -t2 -c"$CONNS" -d"${secs}s" --timeout 10s --latency -s "$ROOT/bench/wrk-json.lua" \
    "$(http_url "$t" "$s")" >"$out" 2>&1 || die "wrk against $t /$s failed (see $out)"
  line=$(grep '^WRK_JSON ' "$out") || die "no summary from wrk against $t /$s (see $out)"
  [ "$r" -eq 0 ] && return 0
  printf '{"kind":"http","target":"%s","size":"%s","round":%d,"result":%s}\n' \
    "$t" "$s" "$r" "${line#WRK_JSON }" >>"$RESULTS"
  log "  round $r  $(printf '%-6s' "$t") /$s  $(echo "$line" | sed -E 's/.*"rps":([0-9.]+).*/\1/') req/s"
}

log "HTTP warm-up (1 s per target and size)"
for s in "${SIZES[@]}"; do for t in "${TARGETS[@]}"; do run_wrk "$t" "$s" 0 1; done; done
log "HTTP throughput: $ROUNDS rounds x ${DURATION}s, wrk -t2 -c$CONNS"
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${SIZES[@]}"; do
    for t in $(rotated "$((r - 1))"); do run_wrk "$t" "$s" "$r" "$DURATION"; done
  done
done

# --- WebSocket latency ------------------------------------------------------------------------
# run_ws TEST TARGET ROUND ITERATIONS WARMUP FRAMES
run_ws() {
  local test=$1 t=$2 r=$3 n=$4 warm=$5 frames=$6 res
  res=$("$WS_LATENCY" "$(ws_url "$t" "$test")" --iterations "$n" --warmup "$warm" \
    --expect-frames "$frames" 2>>"$LOGS/ws-latency.log") ||
    die "ws-latency ($test) against $t failed (see $LOGS/ws-latency.log)"
  printf '{"kind":"ws","test":"%s","target":"%s","round":%d,"result":%s}\n' \
    "$test" "$t" "$r" "$res" >>"$RESULTS"
  log "  round $r  $(printf '%-6s' "$t") $test  $res"
}

log "WebSocket echo: $WS_ROUNDS rounds x $WS_ITERS round trips"
for ((r = 1; r <= WS_ROUNDS; r++)); do
  for t in $(rotated "$((r - 1))"); do run_ws echo "$t" "$r" "$WS_ITERS" 100 1; done
done
log "Nagle burst ($NAGLE_FRAMES frames per reply): $NAGLE_ROUNDS rounds x $NAGLE_ITERS round trips"
for ((r = 1; r <= NAGLE_ROUNDS; r++)); do
  for t in $(rotated "$((r - 1))"); do run_ws nagle "$t" "$r" "$NAGLE_ITERS" 20 "$NAGLE_FRAMES"; done
done

for t in "${PROXIES[@]}"; do
  printf '{"kind":"rss","phase":"loaded","target":"%s","vmrss_kib":%d,"vmhwm_kib":%d}\n' \
    "$t" "$(tree_kib "${PID[$t]}" VmRSS)" "$(tree_kib "${PID[$t]}" VmHWM)" >>"$RESULTS"
done

# --- report -----------------------------------------------------------------------------------
cp "$RESULTS" "$LOGS/results.jsonl"
python3 "$ROOT/bench/proxy_report.py" "$RESULTS" "$OUT_DIR/proxy.json" \
  --ours-bin "$OURS_BIN" --chp-version "$(chp_version)" \
  --nginx-version "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')" \
  --haproxy-version "$("$HAPROXY" -v | awk 'NR == 1 { print $3 }')" \
  --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNS" \
  --ws-rounds "$WS_ROUNDS" --ws-iterations "$WS_ITERS" \
  --nagle-rounds "$NAGLE_ROUNDS" --nagle-iterations "$NAGLE_ITERS" --nagle-frames "$NAGLE_FRAMES" &&
  rc=0 || rc=$?
log "raw numbers: $OUT_DIR/proxy.json, logs: $LOGS"
if [ "$rc" -eq 3 ]; then
  [ "${BENCH_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
exit "$rc"
