#!/usr/bin/env bash
# Benchmark (not a test): the whole pipeline on the local stack's PostgreSQL (or DATABASE_URL's
# server), in a fresh database. The demo's stream (clickstream, product changes, payments, with
# producer retries and malformed input) goes into the local queue at a steady 10,000 events/s
# for 60 s; 4 ingest workers take batches of up to 10 messages; every commit that queues
# webhooks nudges the fanout (2 instances, as the Terraform module runs it) (one receiver per tenant, answering at once); the rollup timer
# ticks every 60 s, as deployed (once before sending, then half a period into it, 30 s by
# default, so that one tick lands mid-stream). The events are stamped as a live stream (when
# each would be sent had sending begun as the stream was generated, less up to 2 s; 1% up to
# 10 minutes late; sending begins a few seconds later); `--event-times spread` puts
# them over the two hours before sending, as the demo does. For each event it prints:
#   queue -> committed row        p50/p99/max (target: p99 < 100 ms)
#   event -> visible in rollups   p50/p99/max (target: within one tick period + one run)
#   commit -> partner receipt     p50/p99/max for the events that produced a webhook
#                                 (target: p99 < 1 s)
# About 2 minutes (the timer must tick past the last event). Arguments are passed on, e.g.
# `scripts/bench-e2e.sh --rate 5000 --seconds 20 --rollup-every 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
./target/release/ferry-bench e2e "$@"
