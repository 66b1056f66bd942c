//! Throughput of the audit log: writes a log through the real writer, then times `verify` and
//! `replay` over it. Ignored by default; run with `scripts/bench-audit.sh`, which builds in release
//! mode. The size comes from `AUDIT_BENCH_RECORDS` (default 200000).

mod audit_support;

use std::time::Instant;

use audit_support::*;
use careguard::audit::replay::{replay, ReplayOptions};
use careguard::audit::verify::verify;
use careguard::audit::Retention;

#[test]
#[ignore = "benchmark: run scripts/bench-audit.sh"]
fn bench_write_verify_replay() {
    let n: usize = std::env::var("AUDIT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Redacted);
    cfg.queue_capacity = 65_536;
    cfg.segment_max_bytes = 32 * 1024 * 1024;
    let states = [
        state(BENIGN_USER, Some(CLEAN_REPLY), "US"),
        state(BENIGN_USER, Some(STIGMA_REPLY), "US"),
        state(CRISIS_USER, Some(BRIDGES_REPLY), "GB"),
        state(
            "I've been feeling so low and I can't sleep. My email is sam@example.com.",
            Some("I'm sorry you're going through this. Would you like to talk about what's keeping you up?"),
            "US",
        ),
    ];
    let (log, metrics) = start(&cfg);
    let started = Instant::now();
    for i in 0..n {
        record(
            &log,
            &format!("req-{i}"),
            i % 2 == 0,
            &states[i % states.len()],
        );
    }
    log.shutdown();
    let write = started.elapsed();
    let dropped = metrics.records_dropped.get();
    let bytes = metrics.bytes_written.get();
    let written = metrics.records_written.get();
    let segments = segment_files(dir.path()).len();
    println!(
        "write:  {written} records ({dropped} dropped), {:.1} MB in {segments} segments, {:.2} s, {:.0} records/s",
        bytes as f64 / 1e6,
        write.as_secs_f64(),
        written as f64 / write.as_secs_f64()
    );

    let paths = [dir.path().to_path_buf()];
    let started = Instant::now();
    let v = verify(&paths).unwrap();
    let t = started.elapsed();
    assert_eq!(v.exit_code(), 0);
    println!(
        "verify: {} records in {:.3} s, {:.0} records/s",
        v.records,
        t.as_secs_f64(),
        v.records as f64 / t.as_secs_f64()
    );

    let options = ReplayOptions {
        rules: None,
        examples: 10,
        progress: false,
    };
    let started = Instant::now();
    let r = replay(&paths, &options).unwrap();
    let t = started.elapsed();
    println!(
        "replay: {} records in {:.3} s, {:.0} records/s ({} changed)",
        r.replayed,
        t.as_secs_f64(),
        r.replayed as f64 / t.as_secs_f64(),
        r.changed
    );
}
