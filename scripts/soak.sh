#!/usr/bin/env bash
# A soak under faults: the four function binaries run as Azure custom handlers on loopback, fed
# the demo's mix at a steady rate (queue messages into ingest, gzip files through moto's S3
# into transform, timers for rollup and fanout), while processes are SIGKILLed, PostgreSQL
# restarts in immediate mode, the partner receiver goes away for minutes and corrupt files land
# in the bucket. At the end it checks that every accepted event is stored exactly once (ids
# and a checksum), rollups equal raw counts, every due webhook reached the partner (verified
# with the official `standardwebhooks` library, deduplicated by webhook-id), no connection
# leaked, and each function's memory stayed flat. Exit status 1 on any failed check.
#
#   scripts/soak.sh [minutes]           (default 10; extra arguments go to scripts/soak.py)
#   FERRY_SOAK_PROFILE=debug scripts/soak.sh 3      (the debug binaries)
#   FERRY_SOAK_BIN_DIR=target/debug scripts/soak.sh 1  (binaries already built: no build;
#                                                     scripts/test.sh runs this)
#
# State and function logs under .ferry/soak/. scripts/test.sh runs one minute of it.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SETUP=local source scripts/setup.sh
pip_pin "$FERRY_TOOLS/venv" "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
command -v psql >/dev/null 2>&1 || apt_install postgresql-client

minutes=${1:-10}
shift || true
profile=${FERRY_SOAK_PROFILE:-release}
bin_dir=${FERRY_SOAK_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  packages=(-p ferry-ingest -p ferry-transform -p ferry-rollup -p ferry-fanout -p ferry-local)
  if [ "$profile" = release ]; then
    cargo build --release --bins "${packages[@]}"
  else
    cargo build --bins "${packages[@]}"
  fi
  bin_dir=$(pwd)/target/$profile
fi

port=$("$FERRY_TOOLS/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
"$FERRY_TOOLS/venv/bin/python" - "$port" <<'EOF'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1).read()
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("moto server did not start")
EOF

"$FERRY_TOOLS/venv/bin/python" scripts/soak.py --minutes "$minutes" --bin-dir "$bin_dir" \
  --moto "http://127.0.0.1:$port" "$@"
