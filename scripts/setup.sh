#!/usr/bin/env bash
# Installs what ferry needs on a fresh Debian machine, if missing: the PostgreSQL server
# binaries (for the private server of the local stack and the tests) and a C compiler.
# Idempotent; sourced by run-local.sh, test.sh and the bench scripts.
set -euo pipefail

have_postgres() {
  [ -n "${FERRY_PG_BIN:-}" ] && [ -x "$FERRY_PG_BIN/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

need=()
have_postgres || need+=(postgresql)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
