# Set-up shared by the parts that run whole hubs (hub, scale, ha): process bookkeeping, the
# release build, and how stackhub and JupyterHub 6 (+ the configurable-http-proxy it starts)
# are configured and started. Source it after scripts/lib.sh and bench/chp.sh, then call
# `hubs_init PART`.
# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here for the parts that source it

die() {
  log "ERROR: $*"
  exit 1
}

# hubs_init PART: a scratch dir ($WORK, removed on exit), the log dir ($LOGS, emptied) and the
# exit trap that stops every process started with `start`. A part may define `cleanup_extra`
# (run first by the trap) to stop what it started otherwise.
hubs_init() {
  OUT_DIR="$ROOT/bench/out"
  LOGS="$OUT_DIR/$1-logs"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-bench-$1.XXXXXX")"
  PIDS=()
  rm -rf "$LOGS"
  mkdir -p "$LOGS"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
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

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$? pid i kids=()
  trap - EXIT INT TERM
  if declare -F cleanup_extra >/dev/null; then cleanup_extra || true; fi
  # JupyterHub stops its proxy on SIGTERM; note the proxy's pid to make sure.
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

# start NAME CMD...: run CMD in the background, logging to $LOGS/NAME.log; sets STARTED_PID.
start() {
  local name=$1
  shift
  "$@" >>"$LOGS/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# wait_http NAME PID URL [SECONDS]: wait until URL answers 2xx (default: within 30 s).
wait_http() {
  local name=$1 pid=$2 url=$3 secs=${4:-30} i rc=0
  for ((i = 0; i < secs * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || rc=$?
      log "last lines of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2 || true
      die "$name exited during startup (exit status $rc)"
    fi
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$name did not answer $url within $secs s (log: $LOGS/$name.log)"
}

# kib PID FIELD: FIELD (VmRSS, VmHWM) of PID in KiB.
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# free_ports N: N free TCP ports on 127.0.0.1.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
' "$1"
}

# rotated R: the targets ($TARGETS), rotated by R places, so no target always runs first.
rotated() {
  local r=$1 n=${#TARGETS[@]} i
  for ((i = 0; i < n; i++)); do echo "${TARGETS[$(((i + r) % n))]}"; done
}

# now: wall-clock seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# build_hubs: the project venv (JupyterHub 6), configurable-http-proxy, and the release
# binaries: stackhub (unless BENCH_OURS_BIN names one) and the bench helpers. Sets JUPYTERHUB,
# JH_VERSION, OURS_BIN and BENCH_BIN (the helpers' directory).
build_hubs() {
  apt_install curl
  command -v python3 >/dev/null || apt_install python3
  ensure_venv
  JUPYTERHUB="$STACKHUB_VENV/bin/jupyterhub"
  [ -x "$JUPYTERHUB" ] || die "jupyterhub not found in $STACKHUB_VENV"
  ensure_chp
  if [ -n "${BENCH_OURS_BIN:-}" ]; then
    log "BENCH_OURS_BIN is set: measuring $BENCH_OURS_BIN as \"ours\" (stackhub not built)"
    cargo build --release --locked -p stackhub-bench
    OURS_BIN="$BENCH_OURS_BIN"
  else
    log "cargo build --release -p hub -p stackhub-bench"
    cargo build --release --locked -p hub -p stackhub-bench ||
      die "building stackhub failed (BENCH_OURS_BIN=/path/to/stackhub measures another binary)"
    OURS_BIN="$CARGO_TARGET_DIR/release/stackhub"
  fi
  [ -x "$OURS_BIN" ] || die "stackhub binary not found or not executable: $OURS_BIN"
  BENCH_BIN="$CARGO_TARGET_DIR/release"
  JH_VERSION="$("$JUPYTERHUB" --version)"
}

# How each hub is started. A part sets, before calling jh_config / hub_cmd:
#   SERVER_CMD   the single-user server's command (array; both hubs run it); `{dir}` in it
#                stands for the hub's DIR
#   TOKEN        the admin API token (JupyterHub: the `bench` service's)
#   JH_EXTRA     lines appended to JupyterHub's config (optional)
#   OURS_TOML    lines appended to stackhub's TOML config, after [spawner] (optional)
#   OURS_ENV     extra environment of stackhub, NAME=value (array, optional)

# py_list ARGS...: ARGS as a list literal (Python and TOML read the same one).
py_list() {
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"
}

# jh_config DIR PORT HUB_PORT API_PORT: a JupyterHub config using DIR for all its state.
jh_config() {
  local dir=$1
  mkdir -p "$dir"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cookie_secret"
  chmod 600 "$dir/cookie_secret"
  cat >"$dir/jupyterhub_config.py" <<PY
import os

c = get_config()  # noqa
c.Application.log_level = "WARN"
c.JupyterHub.log_level = "WARN"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = $2
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = $3
c.JupyterHub.db_url = "sqlite:///$dir/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$dir/cookie_secret"
c.JupyterHub.pid_file = "$dir/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.ConfigurableHTTPProxy.command = ["$CHP_BIN"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$4"
c.ConfigurableHTTPProxy.pid_file = "$dir/proxy.pid"
c.JupyterHub.spawner_class = "simple"
# Answer a start with 202 at once (as ours does after its 0.5 s): JupyterHub 6.1 answers 500
# ("Exception is not set") when a spawn outlasts the default 10 s on a loaded machine.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.SimpleLocalProcessSpawner.home_dir_template = "$dir/home/{username}"
c.Spawner.cmd = $(py_list "${SERVER_CMD[@]//\{dir\}/$dir}")
# jupyter_server refuses to run as root without it (our spawner adds it the same way).
c.Spawner.args = ["--allow-root"] if os.getuid() == 0 else []
c.JupyterHub.services = [{"name": "bench", "api_token": "$TOKEN"}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["bench"]}]
${JH_EXTRA:-}
PY
}

# hub_cmd TARGET DIR PORT: print the command line (NUL-separated) that starts TARGET on PORT
# with all its state in DIR (JupyterHub also needs two more ports, picked here).
hub_cmd() {
  local t=$1 dir=$2 port=$3 hub_port api_port
  mkdir -p "$dir"
  case $t in
    ours)
      printf '[spawner]\nvenv = "%s"\ncmd = %s\nstart_timeout = 120\n%s\n' "$STACKHUB_VENV" \
        "$(py_list "${SERVER_CMD[@]//\{dir\}/$dir}")" "${OURS_TOML:-}" >"$dir/stackhub.toml"
      read -r hub_port < <(free_ports 1)
      printf '%s\0' env "STACKHUB_ADMIN_TOKEN=$TOKEN" "STACKHUB_DATA_DIR=$dir/data" RUST_LOG=warn \
        "STACKHUB_HUB_PORT=$hub_port" ${OURS_ENV[@]+"${OURS_ENV[@]}"} "$OURS_BIN" --config "$dir/stackhub.toml" \
        --ip 127.0.0.1 --port "$port"
      ;;
    jh)
      read -r hub_port api_port < <(free_ports 2)
      jh_config "$dir" "$port" "$hub_port" "$api_port"
      printf '%s\0' "$JUPYTERHUB" -f "$dir/jupyterhub_config.py"
      ;;
  esac
}

# as_subreaper "$0" "$@": re-run the calling part (first thing in it) as a child subreaper
# (prctl PR_SET_CHILD_SUBREAPER, kept across exec): servers that outlive the hub that started
# them (a hub restart, a killed replica) become this shell's children and are reaped when they
# exit. Without it they would stay zombies here (PID 1 may not reap), which both hubs take for
# live servers.
as_subreaper() {
  [ -n "${BENCH_SUBREAPER:-}" ] && return 0
  export BENCH_SUBREAPER=1
  exec python3 -c 'import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$@"
}

# pids_of_exe PATH: the processes running the executable PATH.
pids_of_exe() {
  local p target
  target=$(readlink -f "$1")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$target" ] && echo "${p#/proc/}"
  done
  return 0
}

# kill_exe PATH: SIGKILL every process running PATH (the stand-in servers this part started:
# PATH is the binary built into this part's own target directory).
kill_exe() {
  local pid
  for pid in $(pids_of_exe "$1"); do kill -KILL "$pid" 2>/dev/null || true; done
}
