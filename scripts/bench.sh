#!/usr/bin/env bash
# Benchmark careguard against hitting the mock upstream directly, with the shared harness.
#
#   scripts/bench.sh            # full run (harness defaults: 2 rounds, 10 s per measurement)
#   scripts/bench.sh --quick    # smoke run (1 round, 2 s per measurement)
#
# Extra arguments go to the harness's run.sh (e.g. --rounds 1, --targets direct,nginx to add
# nginx to the same run). Environment:
#   CAREGUARD_BENCH_DIR  the harness (default: ../shared/bench relative to the repository)
#   CARGO_FLAGS          added to `cargo build` (e.g. --no-default-features for the system allocator)
#   CAREGUARD_LISTEN     careguard's main listener   (default 127.0.0.1:8080)
#   CAREGUARD_ADMIN      careguard's admin listener  (default 127.0.0.1:9090)
#   MOCK_PORT            the harness mock's port     (default 18000)
#   CAREGUARD_WORKERS    proxy threads (`serve --workers`; default: `[server] workers`, i.e. one
#                        per core)
#   CAREGUARD_GUARD=none the proxy alone, with the pass-through guard (examples/passthrough.rs):
#                        what the proxy path costs without the engine
#   PGO=1                measure the profile-guided build of scripts/pgo-build.sh (built first;
#                        needs llvm-profdata, see that script) instead of `cargo build --release`
# Results: /tmp/bench/results/results.md (harness output), plus careguard's idle RSS and CPU time
# per request printed here (SCRATCH: the harness scratch folder, default /tmp/bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${CAREGUARD_BENCH_DIR:-$ROOT/../shared/bench}"
LISTEN="${CAREGUARD_LISTEN:-127.0.0.1:8080}"
ADMIN="${CAREGUARD_ADMIN:-127.0.0.1:9090}"
MOCK_PORT="${MOCK_PORT:-18000}"
LOG="${TMPDIR:-/tmp}/careguard-bench.log"

if [[ ! -x "$BENCH_DIR/run.sh" && ! -f "$BENCH_DIR/run.sh" ]]; then
    echo "bench harness not found at $BENCH_DIR (set CAREGUARD_BENCH_DIR)" >&2
    exit 2
fi

TARGETS_ARGS=(--targets none)
for arg in "$@"; do
    if [[ "$arg" == "--targets" ]]; then TARGETS_ARGS=(); fi
done

# shellcheck source=build-measured.sh
source "$ROOT/scripts/build-measured.sh"
build_measured
if [[ "${CAREGUARD_GUARD:-}" == none ]]; then
    if [[ -n "${CAREGUARD_WORKERS:-}" ]]; then export TOKIO_WORKER_THREADS="$CAREGUARD_WORKERS"; fi
    "$BIN_DIR/examples/passthrough" "$LISTEN" "$ADMIN" \
        "http://127.0.0.1:$MOCK_PORT/v1" >"$LOG" 2>&1 &
else
    WORKERS_ARGS=()
    if [[ -n "${CAREGUARD_WORKERS:-}" ]]; then WORKERS_ARGS=(--workers "$CAREGUARD_WORKERS"); fi
    "$BIN_DIR/careguard" serve "${WORKERS_ARGS[@]}" \
        --listen "$LISTEN" --admin-listen "$ADMIN" \
        --upstream "http://127.0.0.1:$MOCK_PORT/v1" >"$LOG" 2>&1 &
fi
PID=$!
cleanup() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "http://$ADMIN/readyz" >/dev/null

rss_idle=$(ps -o rss= -p "$PID" | tr -d ' ')
echo "careguard pid $PID, idle RSS ${rss_idle} KiB"

bash "$BENCH_DIR/run.sh" "${TARGETS_ARGS[@]}" "$@" "careguard=http://$LISTEN"

rss_after=$(ps -o rss= -p "$PID" | tr -d ' ')
echo "careguard idle RSS before load: ${rss_idle} KiB; RSS after load: ${rss_after} KiB"

# CPU time per request: careguard's user and system time (/proc/PID/stat) over a 10 s oha run at
# concurrency 32 on the harness's chat body. Unlike req/s, this barely moves when other processes
# share the cores, so it is the number to compare between versions.
ticks() { awk '{print $14, $15}' "/proc/$PID/stat"; }
hz=$(getconf CLK_TCK)
read -r u1 s1 < <(ticks)
n=$(oha --no-tui --output-format json -z 10s -c 32 -m POST -T application/json \
    -D "${SCRATCH:-/tmp/bench}/payloads/chat.json" "http://$LISTEN/v1/chat/completions" 2>/dev/null |
    python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["statusCodeDistribution"].values()))' ||
    echo 0)
read -r u2 s2 < <(ticks)
if [[ "$n" -gt 0 ]]; then
    awk -v u=$((u2 - u1)) -v s=$((s2 - s1)) -v n="$n" -v hz="$hz" 'BEGIN {
        printf "careguard CPU per request (c=32, %d requests): %.1f µs (user %.1f, system %.1f)\n",
            n, (u + s) / hz * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n }'
fi
echo "results: ${RESULTS_DIR:-/tmp/bench/results}/results.md"
