//! `audit verify`: accepts an intact chain across rotation and names the first broken record for
//! each kind of tampering.

mod audit_support;

use std::path::{Path, PathBuf};

use audit_support::*;
use careguard::audit::commands::verify_text;
use careguard::audit::record::{encode, frame};
use careguard::audit::verify::{verify, BreakKind, Verification};
use careguard::audit::Retention;

/// A one-segment log of 10 records.
fn one_segment() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Redacted), 10);
    let file = segment_files(dir.path()).remove(0);
    (dir, file)
}

/// A log of 12 records over several segments.
fn rotated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Retention::Full);
    cfg.segment_max_bytes = 4096;
    write_log(dir.path(), &cfg, 12);
    assert!(segment_files(dir.path()).len() >= 3);
    dir
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(
        file,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[track_caller]
fn broken_at(dir: &Path, file: &Path, line: usize, kind: BreakKind) -> Verification {
    let v = verify(&[dir.to_path_buf()]).unwrap();
    let b = v
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("not detected: {v:?}"));
    assert_eq!(
        (b.file.as_path(), b.line, b.kind),
        (file, line, kind),
        "{b:?}"
    );
    assert_eq!(v.exit_code(), 1);
    let text = verify_text(&v);
    assert!(
        text.contains(&format!("{}:{line}: {}", file.display(), kind.as_str())),
        "{text}"
    );
    v
}

#[test]
fn intact_chains_verify_with_files_or_folders() {
    let dir = rotated();
    let v = verify(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        (v.records, v.first_seq, v.exit_code()),
        (12, Some(0), 0),
        "{v:?}"
    );
    assert!(verify_text(&v).starts_with("intact: 12 records"));
    // Files given one by one, in any order, are put in segment order.
    let mut files = segment_files(dir.path());
    files.reverse();
    assert_eq!(verify(&files).unwrap().exit_code(), 0);
}

#[test]
fn an_edited_field_is_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    assert!(l[4].contains("\"status\":200"));
    l[4] = l[4].replacen("\"status\":200", "\"status\":201", 1);
    write_lines(&file, &l);
    let v = broken_at(dir.path(), &file, 5, BreakKind::Edited);
    assert_eq!(v.records, 4);
}

#[test]
fn an_edit_with_a_recomputed_hash_is_caught_at_the_next_record() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    let f = frame(l[4].as_bytes()).unwrap();
    let (forged, _) = encode(&f.prev, f.seq, "2026-01-01T00:00:00.000Z", None, Some(7)).unwrap();
    l[4] = String::from_utf8(forged).unwrap().trim_end().to_string();
    write_lines(&file, &l);
    broken_at(dir.path(), &file, 6, BreakKind::Edited);
}

#[test]
fn a_deleted_record_is_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    l.remove(4);
    write_lines(&file, &l);
    let v = broken_at(dir.path(), &file, 5, BreakKind::Deleted);
    assert!(v.broken.unwrap().detail.contains("1 record(s) missing"));
}

#[test]
fn the_first_record_deleted_is_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    l.remove(0);
    write_lines(&file, &l);
    broken_at(dir.path(), &file, 1, BreakKind::Deleted);
}

#[test]
fn swapped_records_are_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    l.swap(4, 5);
    write_lines(&file, &l);
    broken_at(dir.path(), &file, 5, BreakKind::Reordered);
}

#[test]
fn an_inserted_copy_is_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    let copy = l[2].clone();
    l.insert(4, copy);
    write_lines(&file, &l);
    broken_at(dir.path(), &file, 5, BreakKind::Inserted);
}

#[test]
fn an_inserted_forgery_that_links_is_caught() {
    // A forged record chained to record 3 and numbered 4: it links, the real record 4 does not.
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    let before = frame(l[3].as_bytes()).unwrap();
    let (forged, _) = encode(
        &before.hash,
        before.seq + 1,
        "2026-01-01T00:00:00.000Z",
        None,
        Some(1),
    )
    .unwrap();
    l.insert(4, String::from_utf8(forged).unwrap().trim_end().to_string());
    write_lines(&file, &l);
    let v = broken_at(dir.path(), &file, 5, BreakKind::Inserted);
    assert_eq!(v.records, 4);
}

#[test]
fn a_broken_link_between_segments_is_caught() {
    let dir = rotated();
    let files = segment_files(dir.path());
    // Drop the last record of the first segment: the second segment no longer links.
    let mut l = lines(&files[0]);
    l.pop();
    write_lines(&files[0], &l);
    let v = broken_at(dir.path(), &files[1], 1, BreakKind::SegmentLink);
    assert!(v
        .broken
        .unwrap()
        .detail
        .contains("missing after the end of"));
}

#[test]
fn a_removed_segment_is_caught() {
    let dir = rotated();
    let files = segment_files(dir.path());
    std::fs::remove_file(&files[1]).unwrap();
    broken_at(dir.path(), &files[2], 1, BreakKind::SegmentLink);
}

#[test]
fn a_non_record_line_is_caught() {
    let (dir, file) = one_segment();
    let mut l = lines(&file);
    l[2] = "{\"hello\":1}".into();
    write_lines(&file, &l);
    broken_at(dir.path(), &file, 3, BreakKind::Edited);
}

#[test]
fn nothing_to_verify_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(err.to_string().contains("no audit segments"), "{err}");
}
