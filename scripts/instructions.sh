#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a number that, unlike req/s or CPU time, does
# not move when other processes share the cores, so two versions of careguard can be compared on
# a busy machine. Runs careguard (one proxy thread) under valgrind in front of an upstream that
# is already listening, warms it with 500 requests, then counts N more.
#
#   scripts/instructions.sh [N]        # default N = 2000
#
# Environment:
#   CAREGUARD_BENCH_DIR  the shared harness, for its chat payload (default ../shared/bench)
#   MOCK_PORT            the upstream's port on 127.0.0.1 (default 18000; start the harness's
#                        mock with `MOCK_ADDR=127.0.0.1:18000 /tmp/bench/mockup/target/release/mockup`
#                        after one `run.sh --quick` has built it)
#   CAREGUARD_GUARD=none the proxy alone (examples/passthrough.rs)
#   STREAM=1             streamed requests (`stream: true`: the mock's 40 content events and
#                        [DONE]); the count is then per stream
#   CARGO_FLAGS          added to `cargo build` (e.g. --no-default-features for the system allocator)
#   PGO=1                count the profile-guided build of scripts/pgo-build.sh (built first)
# Needs valgrind, oha and curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${CAREGUARD_BENCH_DIR:-$ROOT/../shared/bench}"
MOCK_PORT="${MOCK_PORT:-18000}"
N="${1:-2000}"
PORT=8070
ADMIN=9070
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

for tool in valgrind oha curl; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
done
curl -s -o /dev/null -m 2 "http://127.0.0.1:$MOCK_PORT/" || {
    echo "no upstream on 127.0.0.1:$MOCK_PORT (see MOCK_PORT above)" >&2
    exit 2
}
python3 "$BENCH_DIR/payloads/make_payloads.py" "$OUT" >/dev/null
PAYLOAD="$OUT/chat.json"
UNIT=request
if [[ "${STREAM:-}" == 1 ]]; then
    PAYLOAD="$OUT/chat_stream.json"
    UNIT=stream
fi

# shellcheck source=build-measured.sh
source "$ROOT/scripts/build-measured.sh"
build_measured
if [[ "${CAREGUARD_GUARD:-}" == none ]]; then
    CMD=(env TOKIO_WORKER_THREADS=1 "$BIN_DIR/examples/passthrough"
        "127.0.0.1:$PORT" "127.0.0.1:$ADMIN" "http://127.0.0.1:$MOCK_PORT/v1")
else
    CMD=("$BIN_DIR/careguard" serve --workers 1 --listen "127.0.0.1:$PORT"
        --admin-listen "127.0.0.1:$ADMIN" --upstream "http://127.0.0.1:$MOCK_PORT/v1")
fi
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$OUT/cg.%p" "${CMD[@]}" \
    >"$OUT/log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
    curl -fsS -o /dev/null -m 1 "http://127.0.0.1:$ADMIN/readyz" 2>/dev/null && break
    sleep 1
done
load() {
    oha --no-tui -n "$1" -c 4 -m POST -T application/json -D "$PAYLOAD" \
        "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null 2>&1
}
load 500
callgrind_control -z >/dev/null 2>&1
load "$N"
callgrind_control -d >/dev/null 2>&1
sleep 1
total=$(for f in "$OUT"/cg.*.1; do
    callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
done | awk '{s += $1} END {print s}')
echo "instructions per $UNIT (user space, all threads): $((total / N))"
