#!/usr/bin/env bash
# Benchmark (not a test): 1,000,000 generated events through the ingest handler in-process vs
# raw binary COPY of the same rows with the same dedup, in the same run, on the local stack's
# PostgreSQL (or DATABASE_URL's server). Prints both rates, the ratio, and the write-strategy
# sweep. Arguments go to `ferry-bench ingest` (e.g. --events 200000 --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
exec ./target/release/ferry-bench ingest "$@"
