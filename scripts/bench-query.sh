#!/usr/bin/env bash
# Benchmark (not a test): the query function's routes on the local stack's PostgreSQL (or
# DATABASE_URL's server). 10,000,000 events over 91 days (three tenants, the demo's mix) are
# rolled up by the real rollup, then each route takes 400 requests from 8 concurrent clients
# over HTTP on loopback, against the same ferry_shared::queries read run directly with the same
# concurrency, in the same run: p50/p99 latency, requests/s and the ratio. Day-wide partitions
# (91 of them) unless FERRY_PARTITION_INTERVAL says otherwise. Arguments are passed on, e.g.
# `scripts/bench-query.sh --events 1000000 --clients 4 --requests 200`, or `--reuse` to keep
# the loaded database of an earlier run with the same event count.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
FERRY_PARTITION_INTERVAL=${FERRY_PARTITION_INTERVAL:-1d} ./target/release/ferry-bench query "$@"
