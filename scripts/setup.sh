#!/usr/bin/env bash
# Installs what ferry needs on a fresh Debian machine, if missing. FERRY_SETUP picks how much:
#   package  the release build only: ziglang and cargo-zigbuild (PyPI) in $FERRY_TOOLS/venv;
#   local    the local stack and the benchmarks: what follows, without the deploy checks' tools;
#   all      (default, the tests) both, plus pytest and python-hcl2 in $FERRY_TOOLS/venv and
#            checkov in a venv of its own ($FERRY_TOOLS/checkov: it ships a fork of the hcl2
#            package that would shadow python-hcl2), and schemathesis in $FERRY_TOOLS/schemathesis
#            (the query API's OpenAPI check), Chromium (apt) and playwright-core (npm) for the
#            dashboard's browser test. The Terraform CLI and its AWS provider
#            mirror cannot come from a package registry; the deploy tests say so if missing.
# The rest: the PostgreSQL server
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
ZIG_VERSION=0.15.2
ZIGBUILD_VERSION=0.24.1
PYTEST_VERSION=8.3.4
HCL2_VERSION=8.1.4
CHECKOV_VERSION=3.3.30
STANDARDWEBHOOKS_VERSION=1.1.0
SCHEMATHESIS_VERSION=4.32.5
PLAYWRIGHT_VERSION=1.65.1
FERRY_SETUP=${FERRY_SETUP:-all}

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

playwright_installed() {
  [ -f "$FERRY_TOOLS/node/node_modules/playwright-core/package.json" ] &&
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$FERRY_TOOLS/node/node_modules/playwright-core/package.json" | head -n 1
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

# The version of a package installed in a venv, or nothing.
pip_version() {
  [ -x "$1/bin/python" ] &&
    "$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null
}

# Creates the venv $1 if it has no working pip (Debian's python3 needs python3-venv for it).
ensure_venv() {
  "$1/bin/python" -m pip --version >/dev/null 2>&1 && return 0
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  mkdir -p "$(dirname "$1")"
  rm -rf "$1"
  python3 -m venv "$1" >/dev/null 2>&1 || {
    rm -rf "$1"
    apt_install python3-venv
    python3 -m venv "$1"
  }
}

# pip_pin VENV NAME==VERSION...: installs those not installed at that version.
pip_pin() {
  local venv=$1 want=() spec
  shift
  for spec in "$@"; do
    [ "$(pip_version "$venv" "${spec%%==*}" || true)" = "${spec#*==}" ] || want+=("$spec")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  echo "setup: installing ${want[*]} into $venv" >&2
  ensure_venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}"
}

if [ "$FERRY_SETUP" != local ]; then
  # The release build's cross linker: zig, pinned to glibc 2.31 by cargo-zigbuild.
  pip_pin "$FERRY_TOOLS/venv" "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
  command -v objdump >/dev/null 2>&1 || apt_install binutils
  command -v git >/dev/null 2>&1 || apt_install git
fi
if [ "$FERRY_SETUP" = package ]; then
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
  return 0 2>/dev/null || exit 0
fi

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
  ensure_venv "$FERRY_TOOLS/venv"
  "$FERRY_TOOLS/venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ -n "$need_azurite" ]; then
  echo "setup: installing azurite@$AZURITE_VERSION into $FERRY_TOOLS/node" >&2
  mkdir -p "$FERRY_TOOLS/node"
  npm install --prefix "$FERRY_TOOLS/node" --no-audit --no-fund --loglevel=error \
    --save-exact "azurite@$AZURITE_VERSION" >/dev/null
fi

if [ "$FERRY_SETUP" = all ]; then
  pip_pin "$FERRY_TOOLS/venv" "pytest==$PYTEST_VERSION" "python-hcl2==$HCL2_VERSION" \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
  pip_pin "$FERRY_TOOLS/checkov" "checkov==$CHECKOV_VERSION"
  # The query API's property-based check (tests/it/query.rs), in a venv of its own.
  pip_pin "$FERRY_TOOLS/schemathesis" "schemathesis==$SCHEMATHESIS_VERSION"
  # The dashboard's browser test: Debian's Chromium (and a font to draw text with), driven by
  # playwright-core from npm (it downloads no browser of its own).
  [ -x /usr/bin/chromium ] || apt_install chromium fonts-dejavu-core
  if [ "$(playwright_installed || true)" != "$PLAYWRIGHT_VERSION" ]; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    echo "setup: installing playwright-core@$PLAYWRIGHT_VERSION into $FERRY_TOOLS/node" >&2
    mkdir -p "$FERRY_TOOLS/node"
    npm install --prefix "$FERRY_TOOLS/node" --no-audit --no-fund --loglevel=error \
      --save-exact "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
  fi
fi
