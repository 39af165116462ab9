#!/usr/bin/env bash
# Installs what ferry needs on a fresh Debian machine, if missing: the PostgreSQL server
# binaries (for the private server of the local stack and the tests) with the postgresql-hll
# extension, a C compiler, and the storage emulators the transform tests talk to over their
# real wire protocols: moto server (S3) in a Python venv and Azurite (Azure Blob) from npm,
# both under $FERRY_TOOLS
# (default <repo>/.ferry/tools). Exports FERRY_TOOLS so tests find
# $FERRY_TOOLS/venv/bin/moto_server and $FERRY_TOOLS/node/node_modules/.bin/azurite-blob.
# Idempotent; sourced by run-local.sh, test.sh and the bench scripts.
set -euo pipefail

MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0

FERRY_TOOLS=${FERRY_TOOLS:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.ferry/tools"}
export FERRY_TOOLS

have_postgres() {
  [ -n "${FERRY_PG_BIN:-}" ] && [ -x "$FERRY_PG_BIN/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

# The installed version, or nothing, of a package in the tools venv / the tools node prefix.
moto_installed() {
  [ -x "$FERRY_TOOLS/venv/bin/moto_server" ] &&
    "$FERRY_TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null
}
azurite_installed() {
  [ -x "$FERRY_TOOLS/node/node_modules/.bin/azurite-blob" ] &&
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$FERRY_TOOLS/node/node_modules/azurite/package.json" | head -n 1
}

apt_install() {
  echo "setup: installing $*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# postgresql-hll (distinct counts in rollups) for the server major version in use.
pg_major() {
  local bin=${FERRY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
  [ -n "$bin" ] && basename "$(dirname "$bin")"
}
have_hll() {
  local major
  major=$(pg_major) || return 1
  [ -f "/usr/share/postgresql/$major/extension/hll.control" ]
}

need=()
have_postgres || need+=(postgresql)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
need_moto=""
[ "$(moto_installed || true)" = "$MOTO_VERSION" ] || need_moto=1
need_azurite=""
[ "$(azurite_installed || true)" = "$AZURITE_VERSION" ] || need_azurite=1
if [ -n "$need_moto" ]; then
  command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
fi
if [ -n "$need_azurite" ]; then
  command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
fi

[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
# After PostgreSQL itself, so the extension matches its major version.
if ! have_hll; then
  apt_install "postgresql-$(pg_major)-hll"
fi

if [ -n "$need_moto" ]; then
  echo "setup: installing moto[server]==$MOTO_VERSION into $FERRY_TOOLS/venv" >&2
  mkdir -p "$FERRY_TOOLS"
  if ! "$FERRY_TOOLS/venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$FERRY_TOOLS/venv"
    # Debian's python3 has no ensurepip without python3-venv.
    python3 -m venv "$FERRY_TOOLS/venv" >/dev/null 2>&1 || {
      rm -rf "$FERRY_TOOLS/venv"
      apt_install python3-venv
      python3 -m venv "$FERRY_TOOLS/venv"
    }
  fi
  "$FERRY_TOOLS/venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ -n "$need_azurite" ]; then
  echo "setup: installing azurite@$AZURITE_VERSION into $FERRY_TOOLS/node" >&2
  mkdir -p "$FERRY_TOOLS/node"
  npm install --prefix "$FERRY_TOOLS/node" --no-audit --no-fund --loglevel=error \
    --save-exact "azurite@$AZURITE_VERSION" >/dev/null
fi
