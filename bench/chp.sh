# Installs configurable-http-proxy 4 for the benchmark parts (proxy, hub). Source it after
# scripts/lib.sh; it sets NODE_DIR and CHP_BIN and installs CHP there if it is missing.
# shellcheck shell=bash
NODE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/bench-node"
CHP_BIN="$NODE_DIR/node_modules/.bin/configurable-http-proxy"

# ensure_chp: install configurable-http-proxy@4 into $NODE_DIR unless it is there already.
ensure_chp() {
  command -v npm >/dev/null || die "npm (Node 20) is needed to install configurable-http-proxy"
  if [ ! -x "$CHP_BIN" ]; then
    log "installing configurable-http-proxy into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
      configurable-http-proxy@4 >/dev/null
  fi
}

# chp_version: the installed configurable-http-proxy version.
chp_version() {
  node -p "require('$NODE_DIR/node_modules/configurable-http-proxy/package.json').version"
}
