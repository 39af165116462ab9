#!/usr/bin/env bash
# Benchmark (not a test): a generated gzip NDJSON file through the transform handler from the
# local store vs raw binary COPY of the same rows (already parsed, same dedup) in the same run,
# on the local stack's PostgreSQL (or DATABASE_URL's server). Prints both rates, the ratio and
# the handler's peak RSS (it runs in its own process). By default twice: 1,000,000 and
# 4,000,000 events, to show that memory does not grow with the file. Arguments replace the
# sizes, e.g. `scripts/bench-transform.sh 200000`.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(/usr/lib/postgresql/*/bin/postgres --version | head -1)"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 4000000)
for n in "${sizes[@]}"; do
  echo "== $n events"
  ./target/release/ferry-bench transform --events "$n"
done
