//! The audit writer: records for every kind of exchange, retention, rotation, restarts, crashes
//! and a full queue. Driven through `ExchangeSink::record` with constructed exchanges.

mod audit_support;

use audit_support::*;
use careguard::audit::record::digest_hex;
use careguard::audit::verify::verify;
use careguard::audit::{OnFull, Retention};
use careguard::guard::policy::{Action, Mode};
use careguard::guard::ExchangeSink;
use careguard::hooks::ExchangeOutcome;
use careguard::metrics::UpstreamErrorKind;

#[test]
fn every_action_streamed_or_not_gets_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, metrics) = start(&config(dir.path(), Retention::Full));
    let actions = [
        Action::Allow,
        Action::Annotate,
        Action::Append,
        Action::Reask,
        Action::Replace,
        Action::Block,
    ];
    let mut expected = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        for streamed in [false, true] {
            let mode = if i % 2 == 0 {
                Mode::Enforce
            } else {
                Mode::Shadow
            };
            let s = decided(state(CRISIS_USER, Some(BRIDGES_REPLY), "US"), *action, mode);
            let id = format!("req-{}-{streamed}", action.as_str());
            record(&log, &id, streamed, &s);
            expected.push((id, action.as_str(), mode.as_str(), streamed));
        }
    }
    // A stream the client left, an upstream failure, and a request the guard kept no state for.
    let s = state(BENIGN_USER, Some(CLEAN_REPLY), "US");
    log.record(
        &summary(
            "req-gone",
            true,
            Some("Try"),
            ExchangeOutcome::ClientDisconnected,
        ),
        Some(&s),
    );
    let failed = ExchangeOutcome::UpstreamFailed(UpstreamErrorKind::ChunkTimeout);
    log.record(&summary("req-failed", true, None, failed), Some(&s));
    log.record(
        &summary("req-rejected", false, None, ExchangeOutcome::Rejected),
        None,
    );
    log.shutdown();

    let recs = records(dir.path());
    assert_eq!(recs.len(), 15);
    for (r, (id, action, mode, streamed)) in recs.iter().zip(&expected) {
        assert_eq!(r["request_id"], id.as_str());
        assert_eq!(r["decision"]["action"], *action);
        assert_eq!(r["decision"]["mode"], *mode);
        assert_eq!(r["streamed"], *streamed);
        assert_eq!(r["status"], 200);
        assert_eq!(r["outcome"], "completed");
        assert_eq!(r["v"], 1);
        assert_eq!(r["tenant"], "clinic-a");
        assert_eq!(r["route"], "chat_completions");
        assert_eq!(r["upstream_model"], "gpt-test");
        assert_eq!(r["rules_version"], engine().rules().version());
        assert_eq!(r["assessment"]["crisis"], true);
        assert_eq!(r["assessment"]["conditions"][0]["id"], "suicidal_ideation");
        assert_eq!(r["violations"][0]["criterion"], "no-suicide-enablement");
        assert!(r["violations"][0]["evidence"][0]["span"].is_array());
        assert_eq!(r["referral"]["shown"], true);
        assert_eq!(r["referral"]["region"], "US");
        assert_eq!(r["messages"][1]["role"], "user");
        assert_eq!(r["upstream"]["text"], BRIDGES_REPLY);
        let time = r["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
    }
    assert_eq!(recs[6]["reasks"], 1, "the reask record counts its re-ask");
    assert_eq!(recs[12]["outcome"], "client_disconnected");
    assert_eq!(recs[12]["delivered"]["text"], "Try");
    assert_eq!(recs[13]["outcome"], "upstream_failed");
    assert_eq!(recs[13]["upstream_error"], "chunk_timeout");
    assert_eq!(recs[14]["outcome"], "rejected");
    assert_eq!(recs[14]["status"], 400);
    assert!(
        recs[14]["assessment"].is_null() && recs[14]["messages"].as_array().unwrap().is_empty()
    );
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..15).collect::<Vec<_>>());

    let bytes: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(metrics.records_written.get(), 15);
    assert_eq!(metrics.bytes_written.get(), bytes);
    assert_eq!(metrics.records_dropped.get(), 0);
    assert_eq!(metrics.write_errors.get(), 0);
    let v = verify(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!((v.records, v.exit_code()), (15, 0));
}

#[test]
fn retention_full_redacted_hashed() {
    let user =
        "I'm Ana, mail ana.lopez@example.org or call (555) 123-4567; I feel hopeless lately.";
    let reply = "I'm sorry you feel hopeless, Ana. I can't call 555-123-4567 for you.";
    for retention in [Retention::Full, Retention::Redacted, Retention::Hashed] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = start(&config(dir.path(), retention));
        record(&log, "req-1", false, &state(user, Some(reply), "US"));
        log.shutdown();
        let raw = std::fs::read_to_string(&segment_files(dir.path())[0]).unwrap();
        let r = &records(dir.path())[0];
        assert_eq!(r["retention"], retention.as_str());
        assert!(!raw.to_lowercase().contains("authorization"));
        match retention {
            Retention::Full => {
                assert_eq!(r["messages"][1]["text"], user);
                assert_eq!(r["upstream"]["text"], reply);
            }
            Retention::Redacted => {
                assert_eq!(
                    r["messages"][1]["text"],
                    "I'm Ana, mail [email] or call [phone]; I feel hopeless lately."
                );
                assert_eq!(
                    r["delivered"]["text"],
                    "I'm sorry you feel hopeless, Ana. I can't call [phone] for you."
                );
                assert!(!raw.contains("example.org") && !raw.contains("123-4567"));
            }
            Retention::Hashed => {
                assert!(
                    !raw.contains("hopeless") && !raw.contains("Ana") && !raw.contains("companion"),
                    "{raw}"
                );
                assert!(r["messages"][1].get("text").is_none());
                assert_eq!(r["messages"][1]["sha256"], digest_hex(user));
                assert_eq!(r["upstream"]["sha256"], digest_hex(reply));
                assert_eq!(r["messages"][1]["role"], "user");
            }
        }
        // Everything that is not text survives every retention.
        assert_eq!(r["request_id"], "req-1");
        assert!(r["assessment"].is_object());
    }
}

#[test]
fn rotation_by_size_links_segments_and_a_restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.segment_max_bytes = 4096;
    write_log(dir.path(), &cfg, 12);
    let first_run = segment_files(dir.path()).len();
    assert!(first_run >= 3, "{first_run} segments");
    for p in segment_files(dir.path()) {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(
            len <= 4096 || std::fs::read_to_string(&p).unwrap().lines().count() == 1,
            "{p:?} is {len} bytes"
        );
    }
    // Restart: a new segment whose first record links to the last record on disk.
    let (log, _) = start(&cfg);
    record(
        &log,
        "after-restart",
        false,
        &state(BENIGN_USER, Some(CLEAN_REPLY), "US"),
    );
    log.shutdown();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), first_run + 1);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 13);
    for pair in recs.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1
        );
    }
    assert_eq!(recs[0]["prev"], "0".repeat(64));
    let v = verify(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        (v.records, v.segments, v.exit_code()),
        (13, first_run + 1, 0),
        "{v:?}"
    );
}

#[test]
fn rotation_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Hashed);
    cfg.segment_max_age_secs = 1;
    let (log, _) = start(&cfg);
    let s = state(BENIGN_USER, Some(CLEAN_REPLY), "US");
    record(&log, "a", false, &s);
    // Age is measured by the writer's clock; waiting past it is the behaviour under test.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    record(&log, "b", false, &s);
    log.shutdown();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(verify(&[dir.path().to_path_buf()]).unwrap().exit_code(), 0);
}

#[test]
fn a_killed_writer_leaves_a_readable_log_with_a_reported_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Retention::Redacted);
    write_log(dir.path(), &cfg, 10);
    // The crash: the last record was only partly written.
    let file = segment_files(dir.path())[0].clone();
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 40).unwrap();
    drop(f);

    let v = verify(&[dir.path().to_path_buf()]).unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.records, 9);
    assert_eq!(v.torn.len(), 1);
    assert_eq!((v.torn[0].file.clone(), v.torn[0].line), (file.clone(), 10));
    assert_eq!(v.exit_code(), 2);
    let text = careguard::audit::commands::verify_text(&v);
    assert!(text.contains(&format!("{}:10", file.display())), "{text}");
    assert_eq!(
        records(dir.path()).len(),
        9,
        "the complete records still parse"
    );

    // The restarted writer links past the torn line; the whole log still verifies.
    let (log, _) = start(&cfg);
    record(
        &log,
        "after-crash",
        true,
        &state(BENIGN_USER, Some(CLEAN_REPLY), "US"),
    );
    log.shutdown();
    let v = verify(&[dir.path().to_path_buf()]).unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!((v.records, v.torn.len(), v.segments), (10, 1, 2));
    let recs = records(dir.path());
    assert_eq!(recs[9]["seq"], 9);
    assert_eq!(recs[9]["prev"], recs[8]["hash"]);
}

#[test]
fn a_full_queue_drops_and_counts_never_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.queue_capacity = 1;
    cfg.on_full = OnFull::Drop;
    let (log, metrics) = start(&cfg);
    let s = state(CRISIS_USER, Some(BRIDGES_REPLY), "US");
    let sent = 3_000u64;
    for i in 0..sent {
        record(&log, &format!("r{i}"), false, &s);
    }
    log.shutdown();
    // After shutdown nothing is accepted, and that is counted too.
    record(&log, "late", false, &s);
    let recs = records(dir.path());
    let exchanges = recs.iter().filter(|r| r["kind"] == "exchange").count() as u64;
    let noted: u64 = recs
        .iter()
        .filter(|r| r["kind"] == "dropped")
        .map(|r| r["dropped"].as_u64().unwrap())
        .sum();
    let dropped = metrics.records_dropped.get();
    assert_eq!(
        exchanges + dropped,
        sent + 1,
        "every exchange is either written or counted as dropped"
    );
    assert_eq!(
        noted,
        dropped - 1,
        "drops before shutdown are noted in the log itself"
    );
    assert_eq!(metrics.records_written.get(), recs.len() as u64);
    assert_eq!(verify(&[dir.path().to_path_buf()]).unwrap().exit_code(), 0);
}

#[test]
fn bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.queue_capacity = 0;
    let err = careguard::audit::AuditLog::start(
        &cfg,
        careguard::audit::AuditMetrics::unregistered().unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("audit.queue_capacity"), "{err}");
    cfg.queue_capacity = 10;
    cfg.dir = None;
    assert!(careguard::audit::AuditLog::start(
        &cfg,
        careguard::audit::AuditMetrics::unregistered().unwrap()
    )
    .is_err());
}

#[test]
fn every_fsync_policy_writes_a_verifiable_chain() {
    use careguard::audit::FsyncPolicy;
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval,
        FsyncPolicy::EveryRecord,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), Retention::Redacted);
        cfg.fsync = fsync;
        cfg.fsync_interval_ms = 1;
        write_log(dir.path(), &cfg, 5);
        let v = verify(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!((v.records, v.exit_code()), (5, 0), "{fsync:?}");
    }
}
