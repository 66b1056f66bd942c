//! `replay`: the same rules change nothing; a changed rule set reports exactly the verdicts that
//! changed; records without text are skipped and counted.

mod audit_support;

use std::path::Path;

use audit_support::*;
use careguard::audit::commands::replay_text;
use careguard::audit::replay::{replay, ReplayOptions};
use careguard::audit::Retention;

fn options(rules: Option<&Path>) -> ReplayOptions {
    ReplayOptions {
        rules: rules.map(Path::to_path_buf),
        examples: 100,
        progress: false,
    }
}

/// A copy of `rules/` with the stigma slur rule taken out.
fn rules_without_slurs() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dst = tempfile::tempdir().unwrap();
    copy_dir(&src, dst.path());
    let file = dst.path().join("en/reply_stigma.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let start = text
        .find("[[rule]]\nid = \"reply.stigma.slurs\"")
        .expect("the slur rule exists");
    let end = start + 8 + text[start + 8..].find("[[rule]]").expect("a rule follows");
    std::fs::write(&file, format!("{}{}", &text[..start], &text[end..])).unwrap();
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

#[test]
fn the_same_rules_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.segment_max_bytes = 8192;
    write_log(dir.path(), &cfg, 30);
    let r = replay(&[dir.path().to_path_buf()], &options(None)).unwrap();
    assert_eq!((r.records, r.replayed, r.changed), (30, 30, 0), "{r:?}");
    assert!(!r.any_change());
    assert_eq!(
        r.logged_rules_versions.get(engine().rules().version()),
        Some(&30)
    );
    assert_eq!(r.rules_version, engine().rules().version());
}

#[test]
fn a_removed_rule_reports_exactly_the_changed_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.segment_max_bytes = 8192;
    write_log(dir.path(), &cfg, 30);
    assert!(
        segment_files(dir.path()).len() > 2,
        "replayed in parallel over segments"
    );
    let rules = rules_without_slurs();
    let r = replay(&[dir.path().to_path_buf()], &options(Some(rules.path()))).unwrap();
    // Records 1, 4, 7, ... carry the slur reply: 10 of 30.
    let stigma: Vec<u64> = (0..30).filter(|i| i % 3 == 1).collect();
    assert_eq!(r.replayed, 30);
    assert_eq!(r.changed, 10, "{r:#?}");
    assert_eq!(r.criteria.len(), 1, "{:?}", r.criteria);
    assert_eq!(
        (
            r.criteria["no-stigma"].newly,
            r.criteria["no-stigma"].no_longer
        ),
        (0, 10)
    );
    assert_eq!(r.actions.len(), 1);
    assert_eq!(r.actions["replace->allow"], 10);
    assert_eq!((r.crisis.newly, r.crisis.no_longer), (0, 0));
    let criterion_examples: Vec<u64> = r
        .examples
        .iter()
        .filter(|e| e.what == "no-stigma")
        .map(|e| e.record)
        .collect();
    assert_eq!(criterion_examples, stigma);
    assert!(r
        .examples
        .iter()
        .all(|e| e.what != "no-stigma" || (e.was == "violated" && e.now == "not violated")));
    assert_ne!(r.rules_version, engine().rules().version());
    let text = replay_text(&r);
    assert!(
        text.contains("no-stigma") && text.contains("replace -> allow"),
        "{text}"
    );
}

#[test]
fn redacted_records_replay_and_hashed_ones_are_skipped() {
    let redacted = tempfile::tempdir().unwrap();
    write_log(
        redacted.path(),
        &config(redacted.path(), Retention::Redacted),
        9,
    );
    let r = replay(&[redacted.path().to_path_buf()], &options(None)).unwrap();
    assert_eq!((r.replayed, r.changed), (9, 0));

    let hashed = tempfile::tempdir().unwrap();
    write_log(hashed.path(), &config(hashed.path(), Retention::Hashed), 6);
    let r = replay(&[hashed.path().to_path_buf()], &options(None)).unwrap();
    assert_eq!((r.records, r.replayed, r.skipped_no_text), (6, 0, 6));
}

#[test]
fn a_missing_rules_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Full), 1);
    let missing = dir.path().join("no-rules-here");
    assert!(replay(&[dir.path().to_path_buf()], &options(Some(&missing))).is_err());
}
