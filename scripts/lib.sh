# Shared shell helpers for the project's scripts. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# Build output lives outside the clone so fresh CI clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/target}"
export STACKHUB_VENV="${STACKHUB_VENV:-$ROOT/.venv}"

log() { printf '==> %s\n' "$*" >&2; }

# apt_install PKG...: install Debian packages that are not there yet.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_venv: the project-local Python environment with the real Jupyter components.
ensure_venv() {
  local req="$ROOT/scripts/requirements.txt" stamp="$STACKHUB_VENV/.stackhub-requirements"
  if [ -x "$STACKHUB_VENV/bin/python" ] && cmp -s "$req" "$stamp"; then return 0; fi
  log "creating Python environment in $STACKHUB_VENV"
  python3 -m venv "$STACKHUB_VENV"
  "$STACKHUB_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$STACKHUB_VENV/bin/pip" install -q -r "$req"
  cp "$req" "$stamp"
}

# ensure_idp: the test OpenID Connect provider's npm packages (tests/idp/package-lock.json:
# oidc-provider, playwright-core), installed with `npm ci` into the user cache and linked as
# tests/idp/node_modules (gitignored), so fresh clones reuse them.
ensure_idp() {
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  local src="$ROOT/tests/idp" cache="${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/idp-node"
  if ! cmp -s "$src/package-lock.json" "$cache/package-lock.json" || [ ! -d "$cache/node_modules" ]; then
    log "installing the test identity provider's npm packages into $cache"
    rm -rf "$cache" && mkdir -p "$cache"
    cp "$src/package.json" "$src/package-lock.json" "$cache/"
    (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  ln -sfn "$cache/node_modules" "$src/node_modules"
}

# install_kernel_launcher: the kernel-side launcher of Slurm kernel jobs
# (images/slurm/stackhub-kernel-launcher) into the venv's bin, bound to the venv's Python, so a
# job on a node sharing the venv runs `stackhub-kernel-launcher` from PATH (config
# `slurm.launcher_command`).
install_kernel_launcher() {
  local src="$ROOT/images/slurm/stackhub-kernel-launcher" dst="$STACKHUB_VENV/bin/stackhub-kernel-launcher"
  if [ -f "$dst" ] && cmp -s <(sed "1s|.*|#!$STACKHUB_VENV/bin/python3|" "$src") "$dst"; then return 0; fi
  log "installing stackhub-kernel-launcher into $STACKHUB_VENV/bin"
  sed "1s|.*|#!$STACKHUB_VENV/bin/python3|" "$src" > "$dst.tmp"
  chmod 0755 "$dst.tmp"
  mv "$dst.tmp" "$dst"
}
