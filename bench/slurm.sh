#!/usr/bin/env bash
# Slurm kernel benchmark (`bench/run slurm`): the start overhead the Slurm launcher adds, on a real
# single-node Slurm (scripts/slurm-local) with the project venv's ipykernel. One stackhub-gateway
# serves a local python3 kernelspec and a Slurm one; kernel-gateway/examples/slurm_bench.rs
# starts them alternately and prints medians of local start-to-ready, Slurm submit-to-ready,
# Slurm job-running-to-ready and their difference (the launcher's overhead). Writes
# bench/out/slurm.json.
#
# Knobs: BENCH_ROUNDS=10, BENCH_PROFILE=release (or debug: skips the long release build).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-10}
PROFILE=${BENCH_PROFILE:-release}
apt_install slurmctld slurmd slurm-client
ensure_venv

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-bench-slurm.XXXXXX")"
GW_PID=""
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$GW_PID" ]; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
  fi
  "$ROOT/scripts/slurm-local" stop "$WORK/slurm" || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

flag=(); [ "$PROFILE" = release ] && flag=(--release)
log "cargo build ${flag[*]} -p kernel-gateway (stackhub-gateway, slurm_bench)"
cargo build "${flag[@]}" --locked -p kernel-gateway --bin stackhub-gateway --example slurm_bench
BIN="$CARGO_TARGET_DIR/$PROFILE"

ports() { python3 -c '
import random, socket
out = []
while len(out) < 4:
    p = random.randrange(10000, 20000)
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    if p not in out:
        out.append(p)
print(*out)'; }
read -r P_CTLD P_SLURMD P_GW P_CB < <(ports)

log "starting a single-node Slurm"
SLURM_NODE=benchnode SLURMCTLD_PORT=$P_CTLD SLURMD_PORT=$P_SLURMD \
  "$ROOT/scripts/slurm-local" start "$WORK/slurm" >/dev/null

PY="$STACKHUB_VENV/bin/python3"
mkdir -p "$WORK/kernels/python3" "$WORK/kernels/slurm"
ARGV=$(printf '["%s","-m","ipykernel_launcher","-f","{connection_file}"]' "$PY")
echo "{\"argv\": $ARGV, \"display_name\": \"Python 3\", \"language\": \"python\"}" \
  >"$WORK/kernels/python3/kernel.json"
echo "{\"argv\": $ARGV, \"display_name\": \"Python 3 (Slurm)\", \"language\": \"python\",
  \"metadata\": {\"stackhub\": {\"launcher\": \"slurm\"}}}" >"$WORK/kernels/slurm/kernel.json"
TOKEN="bench-$RANDOM$RANDOM"
cat >"$WORK/gateway.toml" <<TOML
ip = "127.0.0.1"
port = $P_GW
kernelspec_dirs = ["$WORK/kernels"]
[slurm]
slurm_conf = "$WORK/slurm/slurm.conf"
callback_listen = "127.0.0.1:$P_CB"
launcher_command = ["$PY", "$ROOT/images/slurm/stackhub-kernel-launcher"]
state_dir = "$WORK/state"
kernel_ip = "127.0.0.1"
poll_interval = 0.5
TOML

STACKHUB_GATEWAY_AUTH_TOKEN="$TOKEN" RUST_LOG=warn "$BIN/stackhub-gateway" \
  --config "$WORK/gateway.toml" 2>"$WORK/gateway.log" &
GW_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$P_GW/health" >/dev/null 2>&1 && break
  sleep 0.1
done

log "$ROUNDS rounds: local kernel, then Slurm kernel"
mkdir -p "$ROOT/bench/out"
"$BIN/examples/slurm_bench" --url "http://127.0.0.1:$P_GW" --token "$TOKEN" \
  --local python3 --slurm slurm --rounds "$ROUNDS" | tee "$ROOT/bench/out/slurm.json"
python3 - "$ROOT/bench/out/slurm.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"local start-to-ready        {r['local_start_to_ready_ms']:8.0f} ms (median of {r['rounds']})")
print(f"Slurm submit-to-ready       {r['slurm_submit_to_ready_ms']:8.0f} ms")
print(f"Slurm job-running-to-ready  {r['slurm_job_running_to_ready_ms']:8.0f} ms")
print(f"launcher overhead           {r['launcher_overhead_ms']:8.0f} ms (job running -> ready, minus local start)")
PY
