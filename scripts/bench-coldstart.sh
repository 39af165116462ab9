#!/usr/bin/env bash
# Benchmark (not a test): cold start of the packaged function binaries (dist/bin, from
# scripts/package.sh) in Lambda mode — process start to the first poll of a loopback Runtime
# API — against spawning a process that does nothing, in the same run, with each binary's size.
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
