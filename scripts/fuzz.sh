#!/usr/bin/env bash
# Fuzzes every parser that sees outside bytes (fuzz/fuzz_targets/*.rs, each with the invariant
# it checks in its header) with cargo-fuzz (libFuzzer), then prints executions/s and findings
# per target.
#
#   scripts/fuzz.sh [seconds per target] [target ...]     (default: 600 s, every target)
#   FUZZ_JOBS=2 scripts/fuzz.sh 600                         (targets side by side)
#
# Seeds are committed in fuzz/seeds/<target>; what the fuzzer learns goes to fuzz/corpus/ and
# crashes to fuzz/artifacts/<target>/ (both ignored by git). A finding becomes a regression
# test next to the code it is about. Not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
jobs=${FUZZ_JOBS:-1}
all=(events escapes azure_envelope notification object json_array csv rules url_guard)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# libFuzzer is C++, built by libfuzzer-sys.
if ! command -v c++ >/dev/null; then
    echo "== installing g++ (libFuzzer is built from C++)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz (crates.io)" >&2
    cargo install cargo-fuzz --locked
fi
# libFuzzer's instrumentation needs nightly flags: the nightly toolchain when it is installed,
# else the installed toolchain with RUSTC_BOOTSTRAP (no other toolchain can be fetched here).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
cd fuzz
# Optimised, with debug assertions (an integer overflow is a finding); no sanitizer: ferry has
# no unsafe code.
echo "== building the targets" >&2
"${fuzz[@]}" build -s none -O -a

logs=$(mktemp -d)
# Findings of this run only: artifacts newer than this marker.
touch "$logs/start"
run() {
    local t=$1
    mkdir -p "corpus/$t" "artifacts/$t"
    "${fuzz[@]}" run -s none -O -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 >"$logs/$t.log" 2>&1 || true
}
export -f run
export seconds logs
export FUZZ_CMD="${fuzz[*]}"
echo "== fuzzing: ${targets[*]} (${seconds}s each, $jobs at a time)" >&2
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'fuzz=($FUZZ_CMD); run {}'

printf '\n%-16s %12s %10s %8s %9s  %s\n' target executions "exec/s" corpus findings "where"
status=0
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    stat() { grep -o "stat::$1: *[0-9]*" "$log" | awk '{print $2}' | tail -1; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    corpus=$(find "corpus/$t" -type f | wc -l)
    found=$(find "artifacts/$t" -type f -newer "$logs/start" 2>/dev/null | wc -l)
    where=""
    if [ "$found" -gt 0 ] || grep -q "panicked\|ERROR: libFuzzer" "$log"; then
        status=1
        where="fuzz/artifacts/$t/ (log: $log)"
    fi
    printf '%-16s %12s %10s %8s %9s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$found" "$where"
done
echo
if [ "$status" -ne 0 ]; then
    echo "findings: reproduce with (cd fuzz && cargo +nightly fuzz run -s none -O -a <target> <artifact>)" >&2
fi
exit "$status"
