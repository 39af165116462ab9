#!/usr/bin/env bash
# Benchmark (not a test): the fanout function on the local stack's PostgreSQL (or
# DATABASE_URL's server), in a fresh database, with 50 partner receivers on loopback.
# 1. throughput: 1,000 events x 50 endpoints = 50,000 deliveries drained by one fanout
#    instance, against a baseline measured in the same run: the same bodies POSTed from memory
#    to the same receivers with the same concurrency (no claim, signing or record);
# 2. latency: events ingested at a steady 500/s for 20 s, one delivery each, the fanout nudged
#    after each commit; p50/p99 from commit to the receiver's receipt;
# 3. partners as they are, each in a fresh database: 50 receivers answering in 100 ms (and,
#    with --slow, in 1 s) against the Little's-law limit concurrency / latency; 49 healthy
#    receivers alone, then with one that never answers (5 s timeout), then with one that
#    answers 500, then alone again: the healthy ones' throughput and p99 against the mean of
#    the runs alone
#    (--partner-events N per receiver, 200 by default; 0 skips them); then 100,000 deliveries
#    for one partner after a 10-minute outage: drain time, peak request rate, claims
#    (--outage N; 0 skips it: about 3 minutes). --partners-only skips 1 and 2; --trace prints
#    each scenario second by second.
# Arguments are passed on, e.g. `scripts/bench-fanout.sh --events 200 --seconds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
./target/release/ferry-bench fanout "$@"
