#!/usr/bin/env bash
# Runs ferry's integration, exactly-once and contract tests against a real 3-node Citus cluster
# (a coordinator and two workers on loopback, under .ferry/citus/), with DATABASE_URL pointing
# at the coordinator, plus the Citus-only tests (`tests/it/citus.rs`).
#
# Needs a PostgreSQL whose binaries have the citus extension installed (Citus 12.1 for
# PostgreSQL 15: no package of it is on the registries this project reaches, so build it from
# Citus's source into the machine's PostgreSQL, or use a machine that has it). Exits with a
# message when it is missing. CI cannot run this; `scripts/test.sh` keeps the single-node suite.
#
#   scripts/test-citus.sh                 the suites; the cluster is stopped afterwards
#   scripts/test-citus.sh --keep          start (or reuse) the cluster, print its URL, leave it up
#   scripts/test-citus.sh --stop          stop a kept cluster
#   scripts/test-citus.sh -- <cargo test args>   only some tests, e.g. -- rollup::
#                                                 (several filters: -- -- derived:: citus::)
#
# FERRY_CITUS_PORT (default 9700) is the coordinator's port; workers take the next two.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${FERRY_CITUS_PORT:-9700}
root="$PWD/.ferry/citus"
mode=test
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) mode=keep ;;
    --stop) mode=stop ;;
    --) shift; cargo_args=("$@"); break ;;
    *) echo "usage: $0 [--keep|--stop] [-- <cargo test args>]" >&2; exit 2 ;;
  esac
  shift
done

bin=${FERRY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "test-citus: no PostgreSQL server binaries (set FERRY_PG_BIN)" >&2
  exit 1
fi
sharedir=$("$bin/pg_config" --sharedir 2>/dev/null || pg_config --sharedir)
if [ ! -f "$sharedir/extension/citus.control" ]; then
  cat >&2 <<EOF
test-citus: the citus extension is not installed for $("$bin/postgres" --version)
  ($sharedir/extension/citus.control is missing).
  Install Citus 12.1 for this PostgreSQL (a package from Citus, or a build from its source:
  ./configure && make && make install), then run this again.
EOF
  exit 1
fi

# Server commands run as the postgres system user when we are root (PostgreSQL refuses root).
as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

nodes=(coordinator worker1 worker2)
node_port() { echo $((port + $1)); }

stop_cluster() {
  for i in 0 1 2; do
    local data="$root/${nodes[$i]}"
    [ -f "$data/postmaster.pid" ] && as_server "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  done
}

if [ "$mode" = stop ]; then
  stop_cluster
  echo "test-citus: cluster stopped ($root)"
  exit 0
fi

start_cluster() {
  mkdir -p "$root"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$root"
  for i in 0 1 2; do
    local data="$root/${nodes[$i]}" p
    p=$(node_port "$i")
    if [ ! -f "$data/PG_VERSION" ]; then
      as_server "$bin/initdb" -D "$data" -U ferry --auth=trust --no-sync >/dev/null
      cat >>"$data/postgresql.conf" <<EOF
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
port = $p
unix_socket_directories = '$data'
max_connections = 400
# Citus runs a maintenance worker per database, and every test makes a database.
max_worker_processes = 1000
max_prepared_transactions = 400
fsync = off
full_page_writes = off
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
log_min_messages = warning
EOF
    fi
    if ! as_server "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_server "$bin/pg_ctl" -D "$data" -l "$root/${nodes[$i]}.log" -w start >/dev/null
    fi
  done
  # The maintenance database of every node has the extension; the coordinator's knows the
  # workers. The test harness creates each test's database on every node the same way.
  for i in 0 1 2; do
    psql -qX -v ON_ERROR_STOP=1 "postgres://ferry@127.0.0.1:$(node_port "$i")/postgres" \
      -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
  done
  psql -qX -v ON_ERROR_STOP=1 "postgres://ferry@127.0.0.1:$port/postgres" >/dev/null <<EOF
SELECT citus_set_coordinator_host('127.0.0.1', $port);
SELECT citus_add_node('127.0.0.1', $(node_port 1)) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $(node_port 1));
SELECT citus_add_node('127.0.0.1', $(node_port 2)) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $(node_port 2));
EOF
  # Test databases of earlier runs (each test makes one on every node).
  for i in 0 1 2; do
    local u="postgres://ferry@127.0.0.1:$(node_port "$i")/postgres"
    for d in $(psql -qXAt "$u" -c "SELECT datname FROM pg_database WHERE datname LIKE 't\_%' OR datname LIKE 'ferry\_tmpl\_%'"); do
      psql -qX "$u" -c "DROP DATABASE $d WITH (FORCE)" >/dev/null 2>&1 || true
    done
  done
  local version
  version=$(psql -qXAt "postgres://ferry@127.0.0.1:$port/postgres" -c "SELECT citus_version()")
  echo "test-citus: ${version%% on *}: coordinator 127.0.0.1:$port, workers :$(node_port 1) :$(node_port 2) ($root)" >&2
}

start_cluster
# Citus turns TLS on with a self-signed X.509 v1 certificate, which rustls refuses even
# without verification; loopback needs no TLS.
url="postgres://ferry@127.0.0.1:$port/postgres?sslmode=disable"
if [ "$mode" = keep ]; then
  echo "DATABASE_URL=$url"
  echo "(stop it with: scripts/test-citus.sh --stop)" >&2
  exit 0
fi
trap stop_cluster EXIT

FERRY_SETUP=local source scripts/setup.sh
cargo build --workspace --bins
if [ ${#cargo_args[@]} -eq 0 ]; then
  cargo_args=(-p ferry-tests --features citus --no-fail-fast)
else
  cargo_args=(-p ferry-tests --features citus "${cargo_args[@]}")
fi
# The exactly-once test crashes a worker mid-run (immediate shutdown, recovery on start).
restart="$bin/pg_ctl -D $root/worker1 -l $root/worker1.log -m immediate -w restart"
[ "$(id -u)" -eq 0 ] && restart="runuser -u postgres -- $restart"
DATABASE_URL=$url FERRY_TEST_CITUS_RESTART="$restart >/dev/null" cargo test "${cargo_args[@]}"
