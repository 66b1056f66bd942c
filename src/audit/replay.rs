//! `careguard replay`: re-runs the engine over logged exchanges that kept their text and counts
//! what a rule change would change.
//!
//! For each record with text (full or redacted retention) the conversation is classified again
//! and the first upstream reply checked again. Verdicts are compared per criterion (violated
//! before, not now, and the reverse), for the crisis flag, and per action: the action the
//! default policy takes for the logged violations against the one it takes for the new ones, so
//! the comparison isolates the rules from policy settings and shadow mode. Records kept as
//! digests only are counted and skipped. Redacted text is replayed as redacted, so a rule that
//! needs an identifier (a phone number) may read differently there.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::record::{Kind, LoggedRecord};
use super::segments;
use super::verify::TornTail;
use super::AuditError;
use crate::engine::{Condition, Criterion, Engine, Message, Role, Violation};
use crate::guard::policy::{Policy, PolicyConfig};

/// Counts of verdicts that flipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flips {
    /// Not flagged before, flagged now.
    pub newly: u64,
    /// Flagged before, not now.
    pub no_longer: u64,
}

/// One changed verdict, for the reader to look up (`seq` is the record's number in the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Example {
    /// The record's sequence number.
    pub record: u64,
    /// The segment file it is in.
    pub file: String,
    /// What changed: a criterion id, `crisis` or `action`.
    pub what: String,
    /// The verdict before.
    pub was: String,
    /// The verdict now.
    pub now: String,
}

/// What replaying a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// The version of the rules replayed with.
    pub rules_version: String,
    /// The rule versions the records were judged with, and how many records each.
    pub logged_rules_versions: BTreeMap<String, u64>,
    /// Exchange records read.
    pub records: u64,
    /// Records re-run.
    pub replayed: u64,
    /// Records skipped because they kept no text (hashed retention, or no conversation).
    pub skipped_no_text: u64,
    /// Lines that were not readable records (torn tails excluded).
    pub unreadable: u64,
    /// Records with at least one changed verdict.
    pub changed: u64,
    /// Per criterion id.
    pub criteria: BTreeMap<String, Flips>,
    /// The crisis flag.
    pub crisis: Flips,
    /// `was->now` action pairs under the default policy, with counts (only pairs that differ).
    pub actions: BTreeMap<String, u64>,
    /// The first changes, by record number.
    pub examples: Vec<Example>,
    /// Torn tails met (skipped).
    pub torn: Vec<TornTail>,
}

impl ReplaySummary {
    /// Whether any verdict changed.
    pub fn any_change(&self) -> bool {
        self.changed > 0
    }

    fn merge(&mut self, other: ReplaySummary) {
        for (k, v) in other.logged_rules_versions {
            *self.logged_rules_versions.entry(k).or_default() += v;
        }
        self.records += other.records;
        self.replayed += other.replayed;
        self.skipped_no_text += other.skipped_no_text;
        self.unreadable += other.unreadable;
        self.changed += other.changed;
        for (k, v) in other.criteria {
            let e = self.criteria.entry(k).or_default();
            e.newly += v.newly;
            e.no_longer += v.no_longer;
        }
        self.crisis.newly += other.crisis.newly;
        self.crisis.no_longer += other.crisis.no_longer;
        for (k, v) in other.actions {
            *self.actions.entry(k).or_default() += v;
        }
        self.examples.extend(other.examples);
        self.torn.extend(other.torn);
    }
}

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// A rules folder; the embedded rules when `None`.
    pub rules: Option<PathBuf>,
    /// How many examples to keep.
    pub examples: usize,
    /// Draw a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
}

/// Replays the segments under `paths` on every core.
pub fn replay(paths: &[PathBuf], options: &ReplayOptions) -> Result<ReplaySummary, AuditError> {
    let engine = match &options.rules {
        Some(dir) => Engine::new(crate::engine::RuleSet::from_dir(dir).map_err(AuditError::Rules)?),
        None => Engine::embedded().map_err(AuditError::Rules)?,
    };
    let policy = Policy::new(PolicyConfig::default());
    let files = segments::list(paths)?;
    let total_bytes: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let next = AtomicUsize::new(0);
    let progress = Progress::default();
    let result: Mutex<Result<ReplaySummary, AuditError>> = Mutex::new(Ok(ReplaySummary::default()));
    let show = options.progress && std::io::stderr().is_terminal();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut local = ReplaySummary::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break };
                        if let Err(e) = replay_segment(
                            &engine,
                            &policy,
                            path,
                            options.examples,
                            &mut local,
                            &progress,
                        ) {
                            *result.lock().unwrap_or_else(|e| e.into_inner()) = Err(e);
                            break;
                        }
                    }
                    if let Ok(total) = result.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        total.merge(local);
                    }
                })
            })
            .collect();
        if show {
            s.spawn(|| progress.draw(total_bytes));
        }
        for w in workers {
            let _ = w.join();
        }
        progress.done.store(true, Ordering::Relaxed);
    });
    let mut summary = result.into_inner().unwrap_or_else(|e| e.into_inner())?;
    summary.rules_version = engine.rules().version().to_string();
    summary.examples.sort();
    summary.examples.truncate(options.examples);
    summary
        .torn
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(summary)
}

/// Replays one segment into `out`.
fn replay_segment(
    engine: &Engine,
    policy: &Policy,
    path: &std::path::Path,
    max_examples: usize,
    out: &mut ReplaySummary,
    progress: &Progress,
) -> Result<(), AuditError> {
    let bytes = segments::read(path)?;
    let lines = segments::split(&bytes);
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(t) = lines.torn {
        out.torn.push(TornTail {
            file: path.to_path_buf(),
            line: t.line,
            bytes: t.bytes,
        });
    }
    let mut done = 0u64;
    for line in &lines.lines {
        done += 1;
        if done % 256 == 0 {
            progress.records.fetch_add(256, Ordering::Relaxed);
        }
        progress
            .bytes
            .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        let Ok(record) = serde_json::from_slice::<LoggedRecord<'_>>(line) else {
            out.unreadable += 1;
            continue;
        };
        if record.kind != Kind::Exchange {
            continue;
        }
        out.records += 1;
        replay_record(engine, policy, &record, &file, max_examples, out);
    }
    progress.records.fetch_add(done % 256, Ordering::Relaxed);
    Ok(())
}

fn replay_record(
    engine: &Engine,
    policy: &Policy,
    record: &LoggedRecord<'_>,
    file: &str,
    max_examples: usize,
    out: &mut ReplaySummary,
) {
    let (Some(was_assessment), false) = (&record.assessment, record.messages.is_empty()) else {
        out.skipped_no_text += 1;
        return;
    };
    let mut messages = Vec::with_capacity(record.messages.len());
    for m in &record.messages {
        let Some(text) = &m.text else {
            out.skipped_no_text += 1;
            return;
        };
        messages.push(Message::new(m.role.unwrap_or(Role::Other), text.as_ref()));
    }
    if let Some(version) = &record.rules_version {
        *out.logged_rules_versions
            .entry(version.to_string())
            .or_default() += 1;
    }
    out.replayed += 1;
    let assessment = engine.classify(&messages);
    let now: Vec<Violation> = match record.upstream.as_ref().and_then(|u| u.text.as_deref()) {
        Some(reply) => engine.check(&assessment, reply),
        None => Vec::new(),
    };
    let was: Vec<Violation> = record.violations.iter().map(|v| v.to_violation()).collect();
    let mut changes: Vec<(String, String, String)> = Vec::new();
    let was_set: BTreeSet<Criterion> = was.iter().map(|v| v.criterion).collect();
    let now_set: BTreeSet<Criterion> = now.iter().map(|v| v.criterion).collect();
    for c in was_set.symmetric_difference(&now_set) {
        let flips = out.criteria.entry(c.as_str().to_string()).or_default();
        let newly = now_set.contains(c);
        if newly {
            flips.newly += 1;
        } else {
            flips.no_longer += 1;
        }
        let (a, b) = if newly {
            ("not violated", "violated")
        } else {
            ("violated", "not violated")
        };
        changes.push((c.as_str().into(), a.into(), b.into()));
    }
    if was_assessment.crisis != assessment.crisis {
        if assessment.crisis {
            out.crisis.newly += 1;
        } else {
            out.crisis.no_longer += 1;
        }
        changes.push((
            "crisis".into(),
            was_assessment.crisis.to_string(),
            assessment.crisis.to_string(),
        ));
    }
    let was_conditions: Vec<Condition> = was_assessment.conditions.iter().map(|c| c.id).collect();
    let now_conditions: Vec<Condition> =
        assessment.conditions.iter().map(|c| c.condition).collect();
    let was_action = policy.decide(&was, &was_conditions).action;
    let now_action = policy.decide(&now, &now_conditions).action;
    if was_action != now_action {
        *out.actions
            .entry(format!("{}->{}", was_action.as_str(), now_action.as_str()))
            .or_default() += 1;
        changes.push((
            "action".into(),
            was_action.as_str().into(),
            now_action.as_str().into(),
        ));
    }
    if !changes.is_empty() {
        out.changed += 1;
        for (what, was, now) in changes {
            if out.examples.len() < max_examples {
                out.examples.push(Example {
                    record: record.seq,
                    file: file.to_string(),
                    what,
                    was,
                    now,
                });
            }
        }
    }
}

/// A tiny progress bar: bytes done of the total, records and records per second.
#[derive(Debug, Default)]
struct Progress {
    bytes: AtomicU64,
    records: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    fn draw(&self, total: u64) {
        let started = Instant::now();
        let mut stderr = std::io::stderr();
        loop {
            let finished = self.done.load(Ordering::Relaxed);
            let bytes = self.bytes.load(Ordering::Relaxed);
            let records = self.records.load(Ordering::Relaxed);
            let fraction = if total == 0 {
                1.0
            } else {
                (bytes as f64 / total as f64).min(1.0)
            };
            let filled = (fraction * 30.0) as usize;
            let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let _ = write!(
                stderr,
                "\r[{}{}] {:3.0}% {records} records, {rate:.0}/s ",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                fraction * 100.0
            );
            if finished {
                let _ = writeln!(stderr);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
