//! Segment files: their names, their order, and splitting one into record lines with its torn
//! tail (a last line a crash cut short) set apart.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::record::{self, Frame};
use super::AuditError;

/// File names start with this.
pub const NAME_PREFIX: &str = "careguard-audit-";
/// File names end with this.
pub const NAME_SUFFIX: &str = ".jsonl";

/// The file name of the segment numbered `seq` started at `start`:
/// `careguard-audit-20261126T052232Z-000042.jsonl`.
pub fn segment_name(start: SystemTime, seq: u64) -> String {
    format!(
        "{NAME_PREFIX}{}-{seq:06}{NAME_SUFFIX}",
        record::stamp(start)
    )
}

/// The segment number in a segment file name, if it is one.
pub fn segment_seq(name: &str) -> Option<u64> {
    let middle = name.strip_prefix(NAME_PREFIX)?.strip_suffix(NAME_SUFFIX)?;
    let (_, seq) = middle.rsplit_once('-')?;
    seq.parse().ok()
}

/// The segment files under `paths` (files as given, folders searched one level deep) in chain
/// order: by segment number, then by name; files that are not named like segments come last.
pub fn list(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut found = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| AuditError::io(path, e))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| AuditError::io(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| AuditError::io(path, e))?;
                let name = entry.file_name();
                if name.to_str().and_then(segment_seq).is_some() {
                    found.push(entry.path());
                }
            }
        } else {
            found.push(path.clone());
        }
    }
    let key = |p: &PathBuf| {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        (segment_seq(&name).unwrap_or(u64::MAX), name)
    };
    found.sort_by_cached_key(key);
    found.dedup();
    if found.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(AuditError::NoSegments(shown.join(", ")));
    }
    Ok(found)
}

/// A line that a crash cut short (or left unreadable) at the end of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// Its 1-based line number.
    pub line: usize,
    /// Its length in bytes.
    pub bytes: usize,
    /// Whether it ended with a newline (then it is complete but unreadable).
    pub newline: bool,
}

/// A segment split into lines.
#[derive(Debug)]
pub struct Lines<'a> {
    /// The complete lines (without newlines), the first being line 1.
    pub lines: Vec<&'a [u8]>,
    /// The torn last line, if there is one (not in `lines`).
    pub torn: Option<Torn>,
}

/// Splits a segment's bytes into lines; a last line without a newline, or one that is not a
/// record at all (e.g. zeros left by a power loss), is the torn tail.
pub fn split(bytes: &[u8]) -> Lines<'_> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut torn = None;
    // `split` yields an empty piece after a final newline; anything else there is cut short.
    if let Some(last) = lines.pop() {
        if !last.is_empty() {
            torn = Some(Torn {
                line: lines.len() + 1,
                bytes: last.len(),
                newline: false,
            });
        }
    }
    if torn.is_none() {
        if let Some(last) = lines.last() {
            if record::frame(last).is_none() {
                torn = Some(Torn {
                    line: lines.len(),
                    bytes: last.len(),
                    newline: true,
                });
                lines.pop();
            }
        }
    }
    Lines { lines, torn }
}

/// Reads a whole segment file.
pub fn read(path: &Path) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|e| AuditError::io(path, e))
}

/// The last complete record of a segment: its frame and its line number.
pub fn last_record(bytes: &[u8]) -> Option<(Frame, usize)> {
    let lines = split(bytes);
    lines
        .lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| record::frame(l).filter(|f| f.hash_ok).map(|f| (f, i + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_segment_number() {
        let t = std::time::UNIX_EPOCH;
        let name = segment_name(t, 42);
        assert_eq!(name, "careguard-audit-19700101T000000Z-000042.jsonl");
        assert_eq!(segment_seq(&name), Some(42));
        assert_eq!(
            segment_seq("careguard-audit-x-1000000.jsonl"),
            Some(1_000_000)
        );
        assert_eq!(segment_seq("other.jsonl"), None);
    }

    #[test]
    fn a_cut_line_is_the_torn_tail() {
        let (a, h) = record::encode(&record::GENESIS, 0, "t", None, Some(1)).unwrap();
        let (b, _) = record::encode(&h, 1, "t", None, Some(1)).unwrap();
        let mut bytes = [a.clone(), b.clone()].concat();
        assert_eq!(split(&bytes).lines.len(), 2);
        assert!(split(&bytes).torn.is_none());
        bytes.truncate(a.len() + 20);
        let lines = split(&bytes);
        assert_eq!(lines.lines.len(), 1);
        assert_eq!(
            lines.torn,
            Some(Torn {
                line: 2,
                bytes: 20,
                newline: false
            })
        );
        let zeros = [a, vec![0u8; 10], b"\n".to_vec()].concat();
        assert_eq!(
            split(&zeros).torn.map(|t| (t.line, t.newline)),
            Some((2, true))
        );
    }
}
