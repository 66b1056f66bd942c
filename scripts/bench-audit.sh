#!/usr/bin/env bash
# Audit log throughput: writes a log of AUDIT_BENCH_RECORDS records (default 200000) through the
# real writer (redacted retention, 32 MB segments), then times `audit verify` and `replay` over it.
#
#   scripts/bench-audit.sh
#   AUDIT_BENCH_RECORDS=1000000 scripts/bench-audit.sh
#
# Targets (issue 5): verify >= 200,000 records/s, replay >= 50,000 records/s on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo test --release --test audit_bench -- --ignored --nocapture --test-threads 1
