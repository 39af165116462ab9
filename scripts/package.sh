#!/usr/bin/env bash
# The one build step of a deployment: release binaries of the functions for x86_64 Linux with
# a glibc floor of 2.31 (cargo-zigbuild links against that version's symbols, so one binary
# starts on Lambda's provided.al2023, glibc 2.34, and on Azure Functions' Linux workers, 2.31),
# zipped the way each platform runs them:
#
#   dist/lambda/<function>.zip   bootstrap                      (provided.al2023)
#   dist/azure/<function>.zip    host.json, <function>*/function.json, handler  (custom handler;
#                                host.json is infra/azure/<function>-host.json when there is one)
#   dist/bin/<function>          the binary itself
#   dist/SHA256SUMS              of all of the above
#
# Usage: scripts/package.sh [function ...]   (default: ingest transform rollup fanout query)
# Installs ziglang and cargo-zigbuild from PyPI into .ferry/tools/venv when missing.
# arm64 (Graviton) needs the aarch64 Rust target, which this machine lacks; see terraform/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=package source scripts/setup.sh

GLIBC=2.31
TARGET=x86_64-unknown-linux-gnu
all=(ingest transform rollup fanout query)
functions=("$@")
[ ${#functions[@]} -gt 0 ] || functions=("${all[@]}")
for f in "${functions[@]}"; do
  [[ " ${all[*]} " == *" $f "* ]] || { echo "package: unknown function '$f' (one of: ${all[*]})" >&2; exit 2; }
done

export PATH="$FERRY_TOOLS/venv/bin:$PATH"
# Reproducible: no build path in the binary (panic locations name files), and the zips'
# timestamps come from the commit, not the clock.
export CARGO_TARGET_x86_64_unknown_linux_gnu_RUSTFLAGS="--remap-path-prefix=$PWD=/ferry --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH

# Always all five in one build, even to package one: cargo unifies the dependencies' features
# across the packages of one build, so `-p ferry-ingest` alone would build a different ingest.
packages=()
for f in "${all[@]}"; do packages+=(-p "ferry-$f"); done
echo "package: building ${all[*]} (release, $TARGET, glibc $GLIBC); packaging ${functions[*]}" >&2
start=$(date +%s)
cargo zigbuild --release --locked --target "$TARGET.$GLIBC" "${packages[@]}" --bins
echo "package: built in $(($(date +%s) - start)) s" >&2

mkdir -p dist/lambda dist/azure dist/bin
for f in "${functions[@]}"; do
  install -m 0755 "target/$TARGET/release/$f" "dist/bin/$f"
done

# Zips written by Python's zipfile: entries in a fixed order with fixed times, and the unix
# mode stored, so `bootstrap` and `handler` keep their run bit (a zip made without it is the
# classic cause of "permission denied" on both platforms).
python3 - "$SOURCE_DATE_EPOCH" "${functions[@]}" <<'EOF'
import os, sys, time, zipfile

epoch = max(int(sys.argv[1]), 315532800)  # zip times start in 1980
stamp = time.gmtime(epoch)[:6]

def write(path, entries):
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, source, mode in sorted(entries):
            info = zipfile.ZipInfo(name, stamp)
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(source, "rb") as f:
                z.writestr(info, f.read())
    os.replace(tmp, path)

for fn in sys.argv[2:]:
    binary = f"dist/bin/{fn}"
    write(f"dist/lambda/{fn}.zip", [("bootstrap", binary, 0o755)])
    # An app holds the function folders named after its binary: transform and transform-blob.
    folders = sorted(d for d in os.listdir("infra/azure")
                     if os.path.isfile(f"infra/azure/{d}/function.json")
                     and (d == fn or d.startswith(fn + "-")))
    # The shared host.json, unless the app has a host file of its own: query's forwards HTTP
    # requests as they are and serves them without the /api prefix.
    host = f"infra/azure/{fn}-host.json"
    if not os.path.isfile(host):
        host = "infra/azure/host.json"
    entries = [("host.json", host, 0o644), ("handler", binary, 0o755)]
    entries += [(f"{d}/function.json", f"infra/azure/{d}/function.json", 0o644) for d in folders]
    write(f"dist/azure/{fn}.zip", entries)
EOF

(cd dist && find bin lambda azure -type f ! -name '*.tmp' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

printf '\n%-10s %12s %12s %12s  %s\n' function binary lambda.zip azure.zip "newest glibc symbol" >&2
for f in "${functions[@]}"; do
  glibc=$(objdump -T "dist/bin/$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
  printf '%-10s %12s %12s %12s  %s\n' "$f" "$(stat -c %s "dist/bin/$f")" \
    "$(stat -c %s "dist/lambda/$f.zip")" "$(stat -c %s "dist/azure/$f.zip")" "$glibc" >&2
done
echo "package: dist/ is ready; deploy with terraform/examples/aws or terraform/examples/azure" >&2
