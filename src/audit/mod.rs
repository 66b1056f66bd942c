//! The audit trail: a tamper-evident JSON Lines log of every chat exchange, and the commands that
//! read it (`audit verify`, `replay`, `report`).
//!
//! Request path: the guard hands each finished exchange to [`AuditLog`] (an
//! [`crate::guard::ExchangeSink`]), which copies it into a bounded queue and returns. One writer
//! thread ([`writer`]) turns queued exchanges into [`record`]s, applies the retention setting
//! ([`redact`] for `redacted`), chains each record to the one before it by SHA-256 and appends it
//! to the current segment file, rotating segments by size and age.
//!
//! Reading: [`segments`] lists and orders segment files and splits them into lines, flagging a
//! torn last line left by a crash; [`verify`] walks the hash chain, [`replay`] re-runs the engine
//! over logged conversations, [`report`] counts what happened for compliance reports.
//! [`commands`] holds the command-line glue.

pub mod commands;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod redact;
pub mod replay;
pub mod report;
pub mod segments;
pub mod verify;
pub mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use metrics::AuditMetrics;
pub use writer::AuditLog;

/// How much of the conversation text the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// The messages, the upstream reply and the delivered reply as they were.
    Full,
    /// The text with direct identifiers (emails, phone and card numbers, addresses, ...) replaced.
    #[default]
    Redacted,
    /// SHA-256 digests of the texts only; `replay` cannot use these records.
    Hashed,
}

impl Retention {
    /// The value used in the config and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Retention::Full => "full",
            Retention::Redacted => "redacted",
            Retention::Hashed => "hashed",
        }
    }
}

/// When the writer asks the operating system to put records on disk (`fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Never: records reach the OS when the queue runs empty; the OS writes them when it likes.
    Never,
    /// Every `fsync_interval_ms` while records are being written.
    #[default]
    Interval,
    /// After every record (slowest, loses nothing that was written on power loss).
    EveryRecord,
}

/// What [`AuditLog`] does with an exchange when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Wait for room for at most `block_timeout_ms`, then drop (counted and logged).
    #[default]
    Block,
    /// Drop at once (counted and logged).
    Drop,
}

/// The `[audit]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Folder of the segment files; the log is off when unset (and no `--audit-dir` is given).
    pub dir: Option<PathBuf>,
    /// How much text the records keep: `full`, `redacted` or `hashed`.
    pub retention: Retention,
    /// A segment is closed and a new one started once it reaches this many bytes.
    pub segment_max_bytes: u64,
    /// A segment is closed and a new one started once it is this many seconds old.
    pub segment_max_age_secs: u64,
    /// When to fsync: `never`, `interval` or `every_record`.
    pub fsync: FsyncPolicy,
    /// The fsync interval in milliseconds, for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Exchanges waiting to be written at most; beyond that `on_full` applies.
    pub queue_capacity: usize,
    /// When the queue is full: `block` (for at most `block_timeout_ms`) or `drop`.
    pub on_full: OnFull,
    /// The longest a request waits for room in the queue, for `on_full = "block"`.
    pub block_timeout_ms: u64,
    /// The tenant label written in every record (and grouped by in `report`).
    pub tenant: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: None,
            retention: Retention::Redacted,
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_age_secs: 86_400,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1_000,
            queue_capacity: 8_192,
            on_full: OnFull::Block,
            block_timeout_ms: 5,
            tenant: "default".into(),
        }
    }
}

impl AuditConfig {
    /// Checks what serde cannot: bounds and the tenant label. Returns `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut problem =
            |key: &str, message: &str| out.push((format!("audit.{key}"), message.to_string()));
        if self.segment_max_bytes < 4096 {
            problem("segment_max_bytes", "at least 4096");
        }
        if self.segment_max_age_secs == 0 {
            problem("segment_max_age_secs", "at least 1");
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            problem(
                "fsync_interval_ms",
                "at least 1 (or set fsync = \"every_record\")",
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > 1_000_000 {
            problem("queue_capacity", "between 1 and 1000000");
        }
        if self.block_timeout_ms > 1_000 {
            problem(
                "block_timeout_ms",
                "at most 1000 (a request waits this long for the log)",
            );
        }
        let tenant_ok = !self.tenant.is_empty()
            && self.tenant.len() <= 64
            && self
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !tenant_ok {
            problem("tenant", "1 to 64 characters from [A-Za-z0-9._-]");
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            problem(
                "dir",
                "must not be empty (leave it unset to turn the log off)",
            );
        }
        out
    }
}

/// Everything that can go wrong in the audit log and its commands.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file or folder could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The audit metrics could not be registered.
    #[error("cannot register the audit metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The configuration has problems (as `(key, message)` pairs).
    #[error("invalid [audit] configuration: {}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Config(Vec<(String, String)>),
    /// A rule folder given to `replay` does not load.
    #[error("cannot load the rules for replay:\n{0}")]
    Rules(#[source] crate::engine::PackErrors),
    /// No segment files were found under the given paths.
    #[error("no audit segments (careguard-audit-*.jsonl) found in {0}")]
    NoSegments(String),
    /// A command-line value is malformed.
    #[error("{what}: {message}")]
    Argument {
        /// The argument.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Writing a command's output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl AuditError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(AuditConfig::default().problems().is_empty());
        let bad = AuditConfig {
            queue_capacity: 0,
            tenant: "a b".into(),
            fsync_interval_ms: 0,
            ..AuditConfig::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "audit.fsync_interval_ms",
                "audit.queue_capacity",
                "audit.tenant"
            ]
        );
    }

    #[test]
    fn toml_uses_the_documented_names() {
        let c: AuditConfig = toml::from_str(
            "dir = \"/var/log/careguard\"\nretention = \"hashed\"\nfsync = \"every_record\"\non_full = \"drop\"\n",
        )
        .unwrap();
        assert_eq!(c.retention, Retention::Hashed);
        assert_eq!(c.fsync, FsyncPolicy::EveryRecord);
        assert_eq!(c.on_full, OnFull::Drop);
        assert!(toml::from_str::<AuditConfig>("nope = 1").is_err());
    }
}
