//! `careguard audit verify`: walks the hash chain across segments and names the first break.
//!
//! Segments are read and hashed in parallel (one thread per core); the chain is then walked in
//! order. A break is classified by looking around it: a record whose own hash does not match is
//! *edited*; a record that links to a later one was *reordered*; a record that the next one skips
//! was *inserted*; a gap in the sequence numbers means records were *deleted*; a break at a
//! segment's first record is a *broken link between segments*. A chain only proves that nothing
//! was changed after the last hash was seen: keep the printed last hash somewhere else (a ticket,
//! a mail) to anchor it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::record::{Frame, Hash, GENESIS};
use super::segments::{self, Torn};
use super::AuditError;

/// What kind of break was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The record's content does not match its hash (or is not a record at all).
    Edited,
    /// Records are missing before this one.
    Deleted,
    /// This record is out of order.
    Reordered,
    /// This record was inserted: the next one links past it.
    Inserted,
    /// The first record of a segment does not link to the last record of the previous segment.
    SegmentLink,
}

impl BreakKind {
    /// The words used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Edited => "edited record",
            BreakKind::Deleted => "deleted record",
            BreakKind::Reordered => "reordered record",
            BreakKind::Inserted => "inserted record",
            BreakKind::SegmentLink => "broken link between segments",
        }
    }
}

/// The first break in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The segment file.
    pub file: PathBuf,
    /// The 1-based line of the first broken record.
    pub line: usize,
    /// What happened.
    pub kind: BreakKind,
    /// Details: expected and found sequence numbers, missing counts.
    pub detail: String,
}

/// A torn tail found at the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// Its length.
    pub bytes: usize,
}

/// The result of walking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Segment files read.
    pub segments: usize,
    /// Records checked before the first break (all of them when intact).
    pub records: u64,
    /// Sequence number of the first record.
    pub first_seq: Option<u64>,
    /// Hash of the last record checked, hex: an anchor worth keeping elsewhere.
    pub last_hash: Option<String>,
    /// The first break, if any.
    pub broken: Option<Break>,
    /// Torn tails (lines a crash cut short), in order.
    pub torn: Vec<TornTail>,
}

impl Verification {
    /// 0 when intact, 1 when broken, 2 when intact but with torn tails.
    pub fn exit_code(&self) -> u8 {
        match (&self.broken, self.torn.is_empty()) {
            (Some(_), _) => 1,
            (None, false) => 2,
            (None, true) => 0,
        }
    }
}

/// One segment's framing, read in parallel.
struct Segment {
    path: PathBuf,
    frames: Vec<Option<Frame>>,
    torn: Option<Torn>,
}

fn read_segment(path: &Path) -> Result<Segment, AuditError> {
    let bytes = segments::read(path)?;
    let lines = segments::split(&bytes);
    Ok(Segment {
        path: path.to_path_buf(),
        frames: lines
            .lines
            .iter()
            .map(|l| super::record::frame(l))
            .collect(),
        torn: lines.torn,
    })
}

/// Reads `paths` on every core, keeping their order.
fn read_all(paths: &[PathBuf]) -> Result<Vec<Segment>, AuditError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Segment, AuditError>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(read_segment(path));
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every slot is filled")
        })
        .collect()
}

/// Walks the chain through the segments under `paths` (see [`segments::list`] for the order).
pub fn verify(paths: &[PathBuf]) -> Result<Verification, AuditError> {
    let files = segments::list(paths)?;
    let segs = read_all(&files)?;
    let mut out = Verification {
        segments: segs.len(),
        records: 0,
        first_seq: None,
        last_hash: None,
        broken: None,
        torn: Vec::new(),
    };
    let mut last: Option<Previous> = None;
    let mut last_at = (PathBuf::new(), 0usize);
    'walk: for (si, seg) in segs.iter().enumerate() {
        for (li, frame) in seg.frames.iter().enumerate() {
            let at = |kind, detail: String| Break {
                file: seg.path.clone(),
                line: li + 1,
                kind,
                detail,
            };
            let Some(f) = frame else {
                out.broken = Some(at(
                    BreakKind::Edited,
                    "not a well-formed record line".into(),
                ));
                break 'walk;
            };
            if !f.hash_ok {
                out.broken = Some(at(
                    BreakKind::Edited,
                    format!("record {}: its content does not match its hash", f.seq),
                ));
                break 'walk;
            }
            match last {
                None => {
                    let named_first = seg
                        .path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(segments::segment_seq)
                        == Some(0);
                    if f.seq == 0 && f.prev != GENESIS {
                        out.broken = Some(at(
                            BreakKind::Edited,
                            "record 0 does not start the chain".into(),
                        ));
                        break 'walk;
                    }
                    if f.seq > 0 && named_first && li == 0 {
                        out.broken = Some(at(
                            BreakKind::Deleted,
                            format!(
                                "the log's first segment starts at record {}: {} record(s) missing",
                                f.seq, f.seq
                            ),
                        ));
                        break 'walk;
                    }
                    out.first_seq = Some(f.seq);
                }
                Some(before) if f.prev != before.hash => {
                    let (kind, detail, back) = classify(&segs, si, li, f, before);
                    let mut b = at(kind, detail);
                    if back {
                        (b.file, b.line) = last_at.clone();
                        out.records -= 1;
                    }
                    out.broken = Some(b);
                    break 'walk;
                }
                Some(before) if f.seq != before.seq + 1 => {
                    out.broken = Some(at(
                        BreakKind::Edited,
                        format!("sequence number {} follows {}", f.seq, before.seq),
                    ));
                    break 'walk;
                }
                Some(_) => {}
            }
            last = Some(Previous {
                hash: f.hash,
                seq: f.seq,
                prev: f.prev,
            });
            last_at = (seg.path.clone(), li + 1);
            out.records += 1;
        }
        if let Some(t) = seg.torn {
            out.torn.push(TornTail {
                file: seg.path.clone(),
                line: t.line,
                bytes: t.bytes,
            });
        }
    }
    out.last_hash = last.map(|p| hex::encode(p.hash));
    Ok(out)
}

/// Frames after position (`si`, `li`), in chain order.
fn after(segs: &[Segment], si: usize, li: usize) -> impl Iterator<Item = &Frame> {
    segs[si].frames[li + 1..]
        .iter()
        .chain(segs[si + 1..].iter().flat_map(|s| s.frames.iter()))
        .flatten()
}

/// The record before the break: its hash, its sequence number and the hash it links to.
#[derive(Clone, Copy)]
struct Previous {
    hash: Hash,
    seq: u64,
    prev: Hash,
}

/// Why record `f` at (`si`, `li`) does not link to the record before it. Returns the kind, the
/// details and whether the culprit is the record before (an inserted record the chain skips).
fn classify(
    segs: &[Segment],
    si: usize,
    li: usize,
    f: &Frame,
    before: Previous,
) -> (BreakKind, String, bool) {
    const LOOK_AHEAD: usize = 10_000;
    let expected = before.seq + 1;
    if after(segs, si, li)
        .take(LOOK_AHEAD)
        .any(|g| g.hash == f.prev)
    {
        return (
            BreakKind::Reordered,
            format!(
                "expected record {expected}, found record {} (it links to a record further on)",
                f.seq
            ),
            false,
        );
    }
    if f.prev == before.prev {
        return (
            BreakKind::Inserted,
            format!(
                "record {} does not belong here: the next record links past it",
                before.seq
            ),
            true,
        );
    }
    if after(segs, si, li)
        .next()
        .is_some_and(|next| next.prev == before.hash)
    {
        return (
            BreakKind::Inserted,
            format!(
                "record {} does not belong here: the next record links to record {}",
                f.seq, before.seq
            ),
            false,
        );
    }
    let missing = f.seq.saturating_sub(expected);
    if li == 0 && si > 0 {
        let previous = segs[si - 1]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let detail = if missing > 0 {
            format!("{missing} record(s) missing after the end of {previous} (expected record {expected}, found {})", f.seq)
        } else {
            format!("does not link to the last record of {previous}")
        };
        return (BreakKind::SegmentLink, detail, false);
    }
    if missing > 0 {
        return (
            BreakKind::Deleted,
            format!(
                "{missing} record(s) missing before record {} (expected record {expected})",
                f.seq
            ),
            false,
        );
    }
    (
        BreakKind::Edited,
        format!(
            "record {} does not link to record {}: one of them was rewritten",
            f.seq, before.seq
        ),
        false,
    )
}
