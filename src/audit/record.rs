//! The audit record: its JSON schema (written and read) and the hash-chain framing of one line.
//!
//! A line is one JSON object that starts with the previous record's hash and ends with its own:
//!
//! ```text
//! {"prev":"<64 hex>","seq":7,"v":1,"kind":"exchange","time":"2026-11-26T05:22:32.123Z",...,"hash":"<64 hex>"}\n
//! ```
//!
//! `hash` is the SHA-256 of the line's bytes without the `,"hash":"..."` member (that is, of the
//! object as it was before the hash was added), so a reader checks a line without parsing it, and
//! `prev` and `seq` sit at fixed places so the chain is walked without parsing either.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{
    Assessment, Condition, Criterion, Evidence, Level, RequestKind, Role, Violation,
};
use crate::guard::policy::{Action, Decision, Mode, Preemption};

/// The schema version written in every record (`v`).
pub const SCHEMA_VERSION: u32 = 1;

/// The `prev` of the very first record of a log: 64 zeros.
pub const GENESIS: [u8; 32] = [0; 32];

const PREFIX: &[u8] = b"{\"prev\":\"";
const SEQ_KEY: &[u8] = b"\",\"seq\":";
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Bytes of `,"hash":"<64 hex>"}` at the end of a line.
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One chat exchange.
    #[default]
    Exchange,
    /// Exchanges that were not logged because the queue was full (`dropped` holds how many).
    Dropped,
}

/// A text kept per the retention setting: the text itself, or only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Text<'a> {
    /// Who wrote it (messages only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<Role>,
    /// The text (full or redacted retention).
    #[serde(skip_serializing_if = "Option::is_none", default, borrow)]
    pub text: Option<Cow<'a, str>>,
    /// The SHA-256 of the original text, hex (hashed retention).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

/// Whether a crisis line was shown, and which locale's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Referral {
    /// A crisis line was part of what was delivered.
    pub shown: bool,
    /// The region whose crisis line applies (`US`, `GB`, ..., `international`).
    pub region: String,
    /// The language of the wording.
    pub language: String,
}

/// The exchange part of a record, as written.
#[derive(Debug, Serialize)]
pub struct ExchangeOut<'a> {
    /// The request id (also returned to the client as `x-request-id`).
    pub request_id: &'a str,
    /// The configured tenant label.
    pub tenant: &'a str,
    /// The route (`chat_completions`).
    pub route: &'static str,
    /// The model the upstream reported.
    pub upstream_model: Option<&'a str>,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// `completed`, `client_disconnected`, `upstream_failed` or `rejected`.
    pub outcome: &'static str,
    /// Why the upstream failed, for `upstream_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<&'static str>,
    /// Upstream calls made (1 + re-asks; 0 when careguard answered).
    pub upstream_calls: u32,
    /// The rule-pack version that judged the exchange (none when the guard kept no state).
    pub rules_version: Option<&'a str>,
    /// The retention applied to the texts below.
    pub retention: &'static str,
    /// The engine's assessment of the conversation (evidence spans are byte offsets in the
    /// original text, before any redaction).
    pub assessment: Option<&'a Assessment>,
    /// The violations of the first upstream reply.
    pub violations: &'a [Violation],
    /// What careguard decided.
    pub decision: Option<&'a Decision>,
    /// Whether a crisis line was shown.
    pub referral: Option<Referral>,
    /// Re-asks made.
    pub reasks: u32,
    /// Crisis pre-emption applied (`answer` or `inject`).
    pub preempted: Option<Preemption>,
    /// The conversation.
    pub messages: Vec<Text<'a>>,
    /// The first upstream reply.
    pub upstream: Option<Text<'a>>,
    /// What the client received.
    pub delivered: Option<Text<'a>>,
}

#[derive(Serialize)]
struct Out<'a> {
    prev: &'a str,
    seq: u64,
    v: u32,
    kind: Kind,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    exchange: Option<&'a ExchangeOut<'a>>,
}

/// Serializes one record chained to `prev`, with its trailing newline; returns the line and its hash.
pub fn encode(
    prev: &Hash,
    seq: u64,
    time: &str,
    exchange: Option<&ExchangeOut<'_>>,
    dropped: Option<u64>,
) -> Result<(Vec<u8>, Hash), serde_json::Error> {
    let prev_hex = hex::encode(prev);
    let out = Out {
        prev: &prev_hex,
        seq,
        v: SCHEMA_VERSION,
        kind: if exchange.is_some() {
            Kind::Exchange
        } else {
            Kind::Dropped
        },
        time,
        dropped,
        exchange,
    };
    let mut line = serde_json::to_vec(&out)?;
    let hash: Hash = Sha256::digest(&line).into();
    line.pop(); // the closing brace
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hex::encode(hash).as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// What the framing of one line says, before its content is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The `prev` the line claims.
    pub prev: Hash,
    /// The `hash` the line claims.
    pub hash: Hash,
    /// The record's sequence number.
    pub seq: u64,
    /// Whether `hash` is the digest of the line's content.
    pub hash_ok: bool,
}

/// Reads the framing of one line (without its newline); `None` when it is not a record line.
pub fn frame(line: &[u8]) -> Option<Frame> {
    if line.len() < PREFIX.len() + 64 + SEQ_KEY.len() + 1 + SUFFIX_LEN || !line.starts_with(PREFIX)
    {
        return None;
    }
    let prev = parse_hex(&line[PREFIX.len()..PREFIX.len() + 64])?;
    let rest = &line[PREFIX.len() + 64..];
    let digits = rest.strip_prefix(SEQ_KEY)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    let seq = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    let body_end = line.len() - SUFFIX_LEN;
    let suffix = &line[body_end..];
    if !suffix.starts_with(HASH_KEY) || !suffix.ends_with(b"\"}") {
        return None;
    }
    let hash = parse_hex(&suffix[HASH_KEY.len()..HASH_KEY.len() + 64])?;
    let mut hasher = Sha256::new();
    hasher.update(&line[..body_end]);
    hasher.update(b"}");
    let actual: Hash = hasher.finalize().into();
    Some(Frame {
        prev,
        hash,
        seq,
        hash_ok: actual == hash,
    })
}

fn parse_hex(text: &[u8]) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// SHA-256 of a text, hex.
pub fn digest_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One evidence span as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedEvidence {
    /// The rule id.
    pub rule: String,
    /// The message index, or none for the reply.
    #[serde(default)]
    pub message: Option<usize>,
    /// Byte offsets in the original text.
    pub span: [usize; 2],
}

/// A condition as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedCondition {
    /// The condition.
    pub id: Condition,
    /// Its level.
    pub level: Level,
}

/// A request as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedRequest {
    /// What was asked for.
    pub id: RequestKind,
}

/// An assessment as read back (evidence left out).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct LoggedAssessment {
    /// Crisis.
    #[serde(default)]
    pub crisis: bool,
    /// The conditions with levels.
    #[serde(default)]
    pub conditions: Vec<LoggedCondition>,
    /// The requests.
    #[serde(default)]
    pub requests: Vec<LoggedRequest>,
}

/// A violation as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedViolation {
    /// The criterion broken.
    pub criterion: Criterion,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Where.
    #[serde(default)]
    pub evidence: Vec<LoggedEvidence>,
}

impl LoggedViolation {
    /// The engine's violation, for [`crate::guard::policy::Policy::decide`] (reason left out).
    pub fn to_violation(&self) -> Violation {
        Violation {
            criterion: self.criterion,
            reason: "logged",
            evidence: self
                .evidence
                .iter()
                .map(|e| Evidence {
                    rule: e.rule.as_str().into(),
                    message: e.message,
                    span: e.span,
                })
                .collect(),
        }
    }
}

/// A decision as read back.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoggedDecision {
    /// The action.
    pub action: Action,
    /// Enforced or shadow.
    pub mode: Mode,
    /// The criterion that drove it.
    #[serde(default)]
    pub criterion: Option<Criterion>,
}

/// A record as read back by `replay` and `report` (unknown fields are ignored).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct LoggedRecord<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Schema version.
    pub v: u32,
    /// What the record is about.
    pub kind: Kind,
    /// RFC 3339 UTC time.
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// For `dropped` records: how many exchanges were lost.
    pub dropped: Option<u64>,
    /// Tenant label.
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    /// Whether it was streamed.
    pub streamed: bool,
    /// Status sent.
    pub status: u16,
    /// Retention applied.
    pub retention: Option<super::Retention>,
    /// The rule-pack version that judged the exchange.
    #[serde(borrow)]
    pub rules_version: Option<Cow<'a, str>>,
    /// The assessment.
    pub assessment: Option<LoggedAssessment>,
    /// The violations of the first upstream reply.
    pub violations: Vec<LoggedViolation>,
    /// The decision.
    pub decision: Option<LoggedDecision>,
    /// The referral.
    pub referral: Option<Referral>,
    /// The conversation.
    #[serde(borrow)]
    pub messages: Vec<Text<'a>>,
    /// The first upstream reply.
    #[serde(borrow)]
    pub upstream: Option<Text<'a>>,
}

/// Formats a time as RFC 3339 UTC with milliseconds: `2026-11-26T05:22:32.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, da, h, mi, s) = civil(d.as_secs());
    format!(
        "{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// Formats a time for segment file names: `20261126T052232Z`.
pub fn stamp(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, da, h, mi, s) = civil(d.as_secs());
    format!("{y:04}{mo:02}{da:02}T{h:02}{mi:02}{s:02}Z")
}

/// Seconds since the epoch to (year, month, day, hour, minute, second), UTC
/// (Howard Hinnant's `civil_from_days`).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_670_552_123);
        assert_eq!(rfc3339(t), "2026-11-26T05:22:32.123Z");
        assert_eq!(stamp(t), "20261126T052232Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn a_line_frames_and_detects_edits() {
        let (line, hash) = encode(&GENESIS, 3, "2026-01-01T00:00:00.000Z", None, Some(2)).unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"prev\":\"0000"), "{text}");
        assert!(text.ends_with("\"}\n"));
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["dropped"], 2);
        assert_eq!(value["hash"], hex::encode(hash));
        let f = frame(&line[..line.len() - 1]).unwrap();
        assert_eq!((f.prev, f.hash, f.seq, f.hash_ok), (GENESIS, hash, 3, true));
        let edited = text.replace("\"dropped\":2", "\"dropped\":3");
        assert!(
            !frame(&edited.as_bytes()[..edited.len() - 1])
                .unwrap()
                .hash_ok
        );
        assert!(frame(b"{\"prev\":\"00").is_none());
    }
}
