#!/usr/bin/env bash
# What writing the audit log costs the proxy: careguard in front of the shared harness's mock at a
# fixed 1,000 req/s (oha, 2.9 KB chat body), with and without --audit-dir, alternating, N rounds.
# Prints p50/p99 latency and careguard's CPU seconds per run. Needs the harness built once
# (scripts/bench.sh does it) and oha on PATH.
#   scripts/bench-audit-overhead.sh [ROUNDS]        (default 2)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-2}"
MOCK="${MOCK:-/tmp/bench/mockup/target/release/mockup}"
BODY="${BODY:-/tmp/bench/payloads/chat.json}"
[[ -x "$MOCK" && -f "$BODY" ]] || { echo "run scripts/bench.sh --quick once to build the harness's mock" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
MOCK_ADDR=127.0.0.1:18000 "$MOCK" >/dev/null 2>&1 & MOCK_PID=$!
AUDIT="$(mktemp -d)"
trap 'kill $MOCK_PID 2>/dev/null || true; rm -rf "$AUDIT"' EXIT
sleep 0.5
load() { oha -z "$1" -q 1000 --latency-correction -c 64 --no-tui --output-format json -m POST \
    -H 'content-type: application/json' -D "$BODY" http://127.0.0.1:18080/v1/chat/completions; }
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    extra=(); [[ $mode == on ]] && extra=(--audit-dir "$AUDIT/$round")
    "$ROOT/target/release/careguard" serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:18090 \
        --upstream http://127.0.0.1:18000/v1 "${extra[@]}" >/dev/null 2>&1 & PID=$!
    for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:18090/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    load 3s >/dev/null
    before=$(awk '{print $14+$15}' /proc/$PID/stat)
    load 8s > /tmp/careguard-audit-overhead.json
    after=$(awk '{print $14+$15}' /proc/$PID/stat)
    kill $PID; wait $PID 2>/dev/null || true
    python3 - "$mode" "$round" "$before" "$after" <<'PY'
import json, os, sys
mode, rnd, before, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = json.load(open("/tmp/careguard-audit-overhead.json"))
p = d["latencyPercentiles"]; n = d["summary"].get("successRate", 1)
tick = os.sysconf("SC_CLK_TCK")
print(f"audit {mode:3} round {rnd}: {d['summary']['requestsPerSec']:.0f} req/s  p50 {p['p50']*1e6:.0f} µs  p99 {p['p99']*1e6:.0f} µs  careguard CPU {(after-before)/tick:.2f} s")
PY
  done
done
