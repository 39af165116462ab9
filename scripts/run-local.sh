#!/usr/bin/env bash
# Runs ferry locally: installs what is missing, builds, and runs `ferry demo`, which starts
# (or reuses) a private PostgreSQL under .ferry/ unless DATABASE_URL is set, applies the
# migrations, and pushes a generated mixed stream through the local queue into `ingest`.
# Extra arguments go to `ferry demo` (e.g. --events 100000 --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
cargo build --release -p ferry-local --bin ferry
exec ./target/release/ferry demo "$@"
