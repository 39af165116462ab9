#!/usr/bin/env bash
# The test command: installs what is missing, then format check, clippy, and every test
# (unit, integration against a real PostgreSQL, contract tests of the real binaries).
# Without DATABASE_URL the tests start a throwaway PostgreSQL from the system's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
# Contract tests run the real function binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace
