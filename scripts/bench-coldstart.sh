#!/usr/bin/env bash
# Benchmark (not a test): cold start of the packaged function binaries (dist/bin, from
# scripts/package.sh), with each binary's size:
# - init: process start to the first poll of a loopback Lambda Runtime API (and to the first
#   answer on GET / as an Azure custom handler), against spawning a process that does nothing;
# - the first invocation with an empty connection pool, against the second (warm) one and a
#   bare connect + SELECT 1 to the same database (the local stack's PostgreSQL, or the server
#   of DATABASE_URL: a database ferry_bench_coldstart is created next to it).
# Arguments go to `ferry-bench coldstart` (e.g. --runs 50, or --bin label=path to compare
# other builds).
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
bins=()
if [[ " $* " != *" --bin "* ]]; then
  for f in ingest transform rollup fanout; do
    [ -x "dist/bin/$f" ] || { echo "dist/bin/$f is missing: run scripts/package.sh first" >&2; exit 1; }
    bins+=(--bin "$f=dist/bin/$f")
  done
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
exec ./target/release/ferry-bench coldstart "${bins[@]}" "$@"
