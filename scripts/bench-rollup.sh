#!/usr/bin/env bash
# Benchmark (not a test): the rollup function on the local stack's PostgreSQL (or
# DATABASE_URL's server), in a fresh database.
# 1. bulk: 1,000,000 fresh events rolled up in one run, against a baseline measured in the same
#    run on the same rows (the cheapest rollup: one count per tenant, bucket and type);
# 2. incremental: the table grown to 10,000,000 events over two days (the hour-wide partitions
#    `ferry migrate` records) and
#    rolled up, then 10,000 new events and the time of the one run that picks them up.
# Arguments are passed on, e.g. `scripts/bench-rollup.sh --events 200000 --base 1000000`.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
./target/release/ferry-bench rollup "$@"
