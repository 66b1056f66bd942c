//! [`AuditLog`]: the guard's [`ExchangeSink`], a bounded queue in front of one writer thread that
//! appends hash-chained records to rotating segment files.
//!
//! The request path only copies the exchange into the queue. The writer thread serializes,
//! redacts or hashes the texts, chains and appends each record, rotates segments by size and
//! age, and flushes or fsyncs per the configured policy. It never reopens an existing segment:
//! after a restart (or a failed write) it starts a new one whose first record links to the last
//! complete record on disk, so a torn tail stays where the crash left it and is reported by
//! readers instead of being written over.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::queue::{PushError, Queue};
use super::record::{self, ExchangeOut, Hash, Referral, Text};
use super::{
    redact, segments, AuditConfig, AuditError, AuditMetrics, FsyncPolicy, OnFull, Retention,
};
use crate::guard::{ExchangeSink, ExchangeState};
use crate::hooks::{ExchangeOutcome, ExchangeSummary};
use crate::metrics::Route;

/// One exchange waiting to be written: an owned copy of what the guard handed over.
#[derive(Debug)]
struct Pending {
    time: SystemTime,
    request_id: String,
    route: Route,
    status: u16,
    streamed: bool,
    delivered: Option<String>,
    upstream_model: Option<String>,
    upstream_calls: u32,
    outcome: ExchangeOutcome,
    state: Option<ExchangeState>,
    /// The tenant, when the guard knows it; else the configured `[audit] tenant`.
    tenant: Option<String>,
}

/// The audit log: enqueue exchanges with [`ExchangeSink::record`], stop with [`AuditLog::shutdown`].
#[derive(Debug)]
pub struct AuditLog {
    queue: Arc<Queue<Pending>>,
    on_full: OnFull,
    block_timeout: Duration,
    metrics: AuditMetrics,
    /// Exchanges dropped and not yet noted in the log by a `dropped` record.
    unnoted_drops: Arc<AtomicU64>,
    started: Instant,
    last_warn_ms: AtomicU64,
    dir: PathBuf,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Validates `config`, creates `config.dir` if needed, finds where the chain on disk ends and
    /// starts the writer thread. Errors when `config.dir` is unset (the log is off then).
    pub fn start(config: &AuditConfig, metrics: AuditMetrics) -> Result<Self, AuditError> {
        let problems = config.problems();
        let Some(dir) = config.dir.clone() else {
            return Err(AuditError::Config(vec![(
                "audit.dir".into(),
                "not set: the audit log is off".into(),
            )]));
        };
        if !problems.is_empty() {
            return Err(AuditError::Config(problems));
        }
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let (prev, next_seq, next_segment) = chain_end(&dir)?;
        let queue = Arc::new(Queue::new(config.queue_capacity));
        let unnoted_drops = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            dir: dir.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            file: None,
            segment_path: PathBuf::new(),
            segment_opened: Instant::now(),
            segment_bytes: 0,
            next_segment,
            prev,
            next_seq,
            unsynced: false,
            last_sync: Instant::now(),
        };
        let thread = {
            let queue = queue.clone();
            let drops = unnoted_drops.clone();
            std::thread::Builder::new()
                .name("careguard-audit".into())
                .spawn(move || writer.run(&queue, &drops))
                .map_err(AuditError::Thread)?
        };
        Ok(Self {
            queue,
            on_full: config.on_full,
            block_timeout: Duration::from_millis(config.block_timeout_ms),
            metrics,
            unnoted_drops,
            started: Instant::now(),
            last_warn_ms: AtomicU64::new(0),
            dir,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The folder the segments are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops taking exchanges, writes everything queued, flushes, fsyncs (unless `fsync = "never"`)
    /// and waits for the writer thread. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.queue.close();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
    }

    fn dropped(&self, why: &'static str) {
        self.metrics.records_dropped.inc();
        self.unnoted_drops.fetch_add(1, Ordering::Relaxed);
        // Warn at most once a second: a full queue under load must not flood the logs too.
        let now = self.started.elapsed().as_millis() as u64 + 1_000;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason = why,
                dropped_total = self.metrics.records_dropped.get(),
                "audit record dropped: the exchange is not in the audit log"
            );
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl AuditLog {
    /// Records an exchange of `tenant` (the per-tenant guards of [`crate::runtime`] call this).
    pub fn record_as(
        &self,
        tenant: Option<&str>,
        summary: &ExchangeSummary,
        state: Option<&ExchangeState>,
    ) {
        let pending = Pending {
            time: SystemTime::now(),
            request_id: summary.request_id.clone(),
            route: summary.route,
            status: summary.status.as_u16(),
            streamed: summary.streamed,
            delivered: summary.delivered_text.clone(),
            upstream_model: summary.upstream_model.clone(),
            upstream_calls: summary.upstream_calls,
            outcome: summary.outcome,
            state: state.cloned(),
            tenant: tenant.map(str::to_owned),
        };
        let wait = match self.on_full {
            OnFull::Block => self.block_timeout,
            OnFull::Drop => Duration::ZERO,
        };
        match self.queue.push(pending, wait) {
            Ok(depth) => self.metrics.queue_depth.set(depth as i64),
            Err(PushError::Full(_)) => self.dropped("queue full"),
            Err(PushError::Closed(_)) => self.dropped("audit log shut down"),
        }
    }
}

impl ExchangeSink for AuditLog {
    fn record(&self, summary: &ExchangeSummary, state: Option<&ExchangeState>) {
        self.record_as(None, summary, state);
    }
}

/// An audit sink that stamps every record with one tenant.
#[derive(Debug)]
pub struct TenantSink {
    /// The log.
    pub log: Arc<AuditLog>,
    /// The tenant's name.
    pub tenant: String,
}

impl ExchangeSink for TenantSink {
    fn record(&self, summary: &ExchangeSummary, state: Option<&ExchangeState>) {
        self.log.record_as(Some(&self.tenant), summary, state);
    }
}

/// Where the chain on disk ends: the last complete record's hash, the next record number and the
/// next segment number.
fn chain_end(dir: &Path) -> Result<(Hash, u64, u64), AuditError> {
    let Ok(paths) = segments::list(&[dir.to_path_buf()]) else {
        return Ok((record::GENESIS, 0, 0));
    };
    let next_segment = paths
        .iter()
        .filter_map(|p| p.file_name()?.to_str().and_then(segments::segment_seq))
        .max()
        .map_or(0, |s| s + 1);
    // The newest segment with a complete record holds the end of the chain.
    for path in paths.iter().rev() {
        let bytes = segments::read(path)?;
        if let Some((frame, _)) = segments::last_record(&bytes) {
            return Ok((frame.hash, frame.seq + 1, next_segment));
        }
    }
    Ok((record::GENESIS, 0, next_segment))
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    config: AuditConfig,
    metrics: AuditMetrics,
    file: Option<BufWriter<File>>,
    segment_path: PathBuf,
    segment_opened: Instant,
    segment_bytes: u64,
    next_segment: u64,
    prev: Hash,
    next_seq: u64,
    unsynced: bool,
    last_sync: Instant,
}

impl Writer {
    fn run(&mut self, queue: &Queue<Pending>, drops: &AtomicU64) {
        let mut batch = Vec::new();
        let interval = Duration::from_millis(self.config.fsync_interval_ms.max(1));
        loop {
            let open = queue.pop_all(&mut batch, interval);
            self.metrics.queue_depth.set(queue.len() as i64);
            let dropped = drops.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                self.append(SystemTime::now(), None, Some(dropped));
            }
            for pending in batch.drain(..) {
                let retention = self.config.retention;
                let tenant = pending
                    .tenant
                    .clone()
                    .unwrap_or_else(|| self.config.tenant.clone());
                let out = exchange_out(&pending, &tenant, retention);
                self.append(pending.time, Some(&out), None);
            }
            // The queue ran empty: hand what is buffered to the OS, fsync when it is time.
            self.flush(
                self.config.fsync == FsyncPolicy::Interval && self.last_sync.elapsed() >= interval,
            );
            if !open {
                break;
            }
        }
        self.close_segment();
    }

    fn append(
        &mut self,
        time: SystemTime,
        exchange: Option<&ExchangeOut<'_>>,
        dropped: Option<u64>,
    ) {
        let time = record::rfc3339(time);
        let (line, hash) = match record::encode(&self.prev, self.next_seq, &time, exchange, dropped)
        {
            Ok(encoded) => encoded,
            Err(e) => return self.error("serialize", &e),
        };
        if let Err(e) = self.ensure_segment(line.len() as u64) {
            return self.error("open segment", &e);
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(&line) {
            return self.error("write", &e);
        }
        if self.config.fsync == FsyncPolicy::EveryRecord {
            if let Err(e) = file.flush().and_then(|()| file.get_ref().sync_data()) {
                return self.error("fsync", &e);
            }
        } else {
            self.unsynced = true;
        }
        self.prev = hash;
        self.next_seq += 1;
        self.segment_bytes += line.len() as u64;
        self.metrics.records_written.inc();
        self.metrics.bytes_written.inc_by(line.len() as u64);
    }

    /// Counts and logs a failure; the segment is abandoned so the next record starts a new one
    /// (any partial line stays behind as that segment's torn tail).
    fn error(&mut self, what: &'static str, error: &dyn std::fmt::Display) {
        self.metrics.write_errors.inc();
        tracing::warn!(
            operation = what,
            segment = %self.segment_path.display(),
            error = %error,
            "audit write failed: the record is lost"
        );
        self.file = None;
    }

    /// Opens a segment when none is open, or rotates when the next line would pass the size limit
    /// or the segment is too old.
    fn ensure_segment(&mut self, next_line: u64) -> std::io::Result<()> {
        let full = self.segment_bytes > 0
            && self.segment_bytes + next_line > self.config.segment_max_bytes;
        let old =
            self.segment_opened.elapsed() >= Duration::from_secs(self.config.segment_max_age_secs);
        if self.file.is_some() && !full && !old {
            return Ok(());
        }
        self.close_segment();
        let path = self
            .dir
            .join(segments::segment_name(SystemTime::now(), self.next_segment));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        if self.config.fsync != FsyncPolicy::Never {
            // Make the new file's directory entry durable too.
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
        }
        self.next_segment += 1;
        self.segment_path = path;
        self.segment_opened = Instant::now();
        self.segment_bytes = 0;
        self.file = Some(BufWriter::with_capacity(256 * 1024, file));
        Ok(())
    }

    fn flush(&mut self, sync: bool) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.flush() {
            return self.error("flush", &e);
        }
        if sync && self.unsynced {
            if let Err(e) = file.get_ref().sync_data() {
                return self.error("fsync", &e);
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
    }

    fn close_segment(&mut self) {
        self.flush(self.config.fsync != FsyncPolicy::Never);
        self.file = None;
    }
}

/// A text kept per the retention setting.
fn keep(text: &str, retention: Retention) -> Text<'_> {
    match retention {
        Retention::Full => Text {
            text: Some(text.into()),
            ..Text::default()
        },
        Retention::Redacted => Text {
            text: Some(redact::redact(text)),
            ..Text::default()
        },
        Retention::Hashed => Text {
            sha256: Some(record::digest_hex(text)),
            ..Text::default()
        },
    }
}

/// The record body for one exchange.
fn exchange_out<'a>(p: &'a Pending, tenant: &'a str, retention: Retention) -> ExchangeOut<'a> {
    let (outcome, upstream_error) = match p.outcome {
        ExchangeOutcome::Completed => ("completed", None),
        ExchangeOutcome::ClientDisconnected => ("client_disconnected", None),
        ExchangeOutcome::UpstreamFailed(kind) => ("upstream_failed", Some(kind.as_str())),
        ExchangeOutcome::Rejected => ("rejected", None),
    };
    let state = p.state.as_ref();
    ExchangeOut {
        request_id: &p.request_id,
        tenant,
        route: p.route.as_str(),
        upstream_model: p.upstream_model.as_deref(),
        streamed: p.streamed,
        status: p.status,
        outcome,
        upstream_error,
        upstream_calls: p.upstream_calls,
        rules_version: state.map(|s| &*s.rules_version),
        retention: retention.as_str(),
        assessment: state.map(|s| &s.assessment),
        violations: state.map_or(&[], |s| s.violations.as_slice()),
        decision: state.map(|s| &s.decision),
        referral: state.map(|s| Referral {
            shown: s.referral,
            region: s.locale.region.clone(),
            language: s.locale.language.clone(),
        }),
        reasks: state.map_or(0, |s| s.reasks),
        preempted: state.and_then(|s| s.preempted),
        messages: state.map_or_else(Vec::new, |s| {
            s.messages
                .iter()
                .map(|m| Text {
                    role: Some(m.role),
                    ..keep(&m.content, retention)
                })
                .collect()
        }),
        upstream: state
            .and_then(|s| s.upstream_text.as_deref())
            .map(|t| keep(t, retention)),
        delivered: p.delivered.as_deref().map(|t| keep(t, retention)),
    }
}
