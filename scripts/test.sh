#!/usr/bin/env bash
# The test command: installs what is missing, then format check, clippy, every Rust test
# (unit, integration against a real PostgreSQL, contract tests of the real binaries), the
# one-minute soak under faults (scripts/soak.sh 1, with the debug binaries), the
# release packages (scripts/package.sh) and the deploy checks (tests/deploy, pytest): the
# packages' binaries and zips, Terraform fmt/validate/test, the AWS example applied against
# moto server, checkov, and the Azure module's wiring.
# Without DATABASE_URL the tests start a throwaway PostgreSQL from the system's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== no function over 100 lines (scripts/fn-lengths.py)" >&2
python3 scripts/fn-lengths.py --max 100
echo "== cargo test" >&2
# Contract tests run the real function binaries, so build them first.
cargo build --workspace --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$work/cargo.log"
status=${PIPESTATUS[0]}
set -e

echo "== soak under faults, 1 minute (scripts/soak.sh)" >&2
soak=0
FERRY_SOAK_BIN_DIR="$(pwd)/target/debug" bash scripts/soak.sh 1 || soak=$?

echo "== scripts/package.sh" >&2
package=0
bash scripts/package.sh || package=$?

echo "== deploy checks (tests/deploy)" >&2
set +e
"$FERRY_TOOLS/venv/bin/python" -m pytest tests/deploy -p no:cacheprovider -q -rfE \
  --junitxml="$work/deploy.xml"
deploy=$?
set -e

# One closing line for the whole run (cargo's last lines are per-binary, often doc tests).
cargo_counts=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d %d", p, f }' "$work/cargo.log")
deploy_counts=$("$FERRY_TOOLS/venv/bin/python" - "$work/deploy.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 1")  # pytest did not run: count it as a failure
    sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad + skipped)  # a skipped deploy check counts as failed
EOF
)
read -r cp cf <<<"$cargo_counts"
read -r dp df <<<"$deploy_counts"
[ "$package" -eq 0 ] || df=$((df + 1))
sp=1 sf=0
[ "$soak" -eq 0 ] || { sp=0; sf=1; }
echo "rust: $cp passed, $cf failed; soak: $sp passed, $sf failed; deploy: $dp passed, $df failed; package exit $package"
echo "tests: $((cp + sp + dp)) passed, $((cf + sf + df)) failed"
[ "$status" -eq 0 ] && [ "$soak" -eq 0 ] && [ "$package" -eq 0 ] && [ "$deploy" -eq 0 ]
