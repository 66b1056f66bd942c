//! The user side: from messages to an [`Assessment`].
//!
//! Every user message is normalised and scanned once. A hit survives when no negation cue
//! precedes it in its clause (for negatable rules) and no context rule (fiction, third person,
//! clinical, historical, figurative, technical) covers it. Surviving hits then combine across
//! turns:
//!
//! - each condition takes the most severe level its hits show;
//! - **means-seeking**: a lethal-means request in a user turn, with a distress cue or a suicide or
//!   self-harm marker in that turn or any earlier one, is suicidal ideation at level `method`;
//! - a benign purpose ("for my garden") cancels a request only when the conversation holds no
//!   distress at all;
//! - a self-harm-method or eating-disorder-method request shows that condition (`present`);
//! - hallucinations with an escape or a risky plan, and mania with a physically risky plan, are
//!   `acute`;
//! - `crisis` is any suicidal ideation, any self-harm, or any condition at level `acute`.

use std::sync::Arc;

use super::matcher::Hit;
use super::normalize::Normalized;
use super::pack::{Rule, RuleKind, RuleSet, Scope};
use super::types::{
    Assessment, Condition, ConditionFinding, ContextKind, Evidence, Level, Message, RequestFinding,
    RequestKind, Role,
};

/// A hit that survived negation and context checks, located in its message.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    /// Index of the message in the conversation.
    pub message: usize,
    /// Index of the rule.
    pub rule: usize,
    /// Span in the original text.
    pub span: (usize, usize),
}

/// Scans one user text and returns the rule indices and original spans of surviving hits.
pub fn scan_text(rules: &RuleSet, text: &str) -> Vec<(usize, (usize, usize))> {
    let mut hits = Vec::new();
    let norm = rules.input.scan_raw(text, &mut hits);
    surviving(rules, &norm, &hits, false)
        .into_iter()
        .map(|h| (h.rule, norm.original_span(h.start, h.end)))
        .collect()
}

/// Like [`scan_text`] but returns the raw hits before any suppression (for linting).
pub fn raw_hits(rules: &RuleSet, text: &str, reply: bool) -> Vec<usize> {
    let mut hits = Vec::new();
    if reply {
        rules.reply.scan_raw(text, &mut hits);
    } else {
        rules.input.scan_raw(text, &mut hits);
    }
    hits.into_iter().map(|h| h.rule).collect()
}

/// Keeps the hits that no negation or context cancels. `distress_known` lets a benign purpose
/// cancel requests only when the conversation holds no distress.
fn surviving(rules: &RuleSet, norm: &Normalized, hits: &[Hit], distress_known: bool) -> Vec<Hit> {
    let text = norm.text.as_bytes();
    let contexts: Vec<(&Rule, &Hit)> = hits
        .iter()
        .map(|h| (&rules.rules[h.rule], h))
        .filter(|(r, _)| matches!(r.kind, RuleKind::Context(_)))
        .collect();
    let distress_here = distress_known
        || hits.iter().any(|h| {
            matches!(
                rules.rules[h.rule].kind,
                RuleKind::Distress
                    | RuleKind::Condition(Condition::SuicidalIdeation | Condition::SelfHarm, _)
            )
        });
    let mut out = Vec::new();
    for hit in hits {
        let rule = &rules.rules[hit.rule];
        if matches!(rule.kind, RuleKind::Context(_) | RuleKind::Reply(_)) {
            continue;
        }
        if rule.negatable && negated(rules, text, hit.core) {
            continue;
        }
        let covered = contexts.iter().any(|(ctx, ch)| {
            let RuleKind::Context(kind) = ctx.kind else {
                return false;
            };
            let applies = match kind {
                ContextKind::BenignPurpose => {
                    matches!(rule.kind, RuleKind::Request(_)) && !distress_here
                }
                _ => true,
            };
            applies
                && match ctx.scope {
                    Scope::Message => true,
                    Scope::Sentence => same_sentence(text, ch.start, hit.start),
                }
        });
        if !covered {
            out.push(*hit);
        }
    }
    out
}

fn is_sentence_end(b: u8) -> bool {
    matches!(b, b'.' | b'!' | b'?' | b';' | b'\n')
}

/// Whether byte offsets `a` and `b` lie in the same sentence.
fn same_sentence(text: &[u8], a: usize, b: usize) -> bool {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    !text[lo..hi].iter().any(|&c| is_sentence_end(c))
}

/// Whether a negation cue appears among the three words before `at`, in the same clause (user
/// hits, and reply rules marked `negatable = true`).
pub(crate) fn negated(rules: &RuleSet, text: &[u8], at: usize) -> bool {
    let Some(neg) = &rules.negation else {
        return false;
    };
    let mut start = at;
    let mut words = 0;
    while start > 0 {
        let c = text[start - 1];
        if is_sentence_end(c) || matches!(c, b',' | b':' | b'(' | b')') {
            break;
        }
        if c == b' ' && start < at {
            words += 1;
            if words > 3 {
                break;
            }
        }
        start -= 1;
    }
    neg.is_match(&text[start..at])
}

/// What one user message yields before the cross-turn combination: a hit that survived negation
/// and context, with its span in the original text.
#[derive(Debug, Clone, Copy)]
pub struct MessageHit {
    rule: u32,
    span: (usize, usize),
    /// Covered by a benign purpose ("for my garden") in this message, so it counts only when an
    /// earlier turn of the conversation showed distress.
    after_distress_only: bool,
}

/// Normalises and scans one user message. The result depends only on the text and the rules,
/// which is what lets [`super::cache::MessageCache`] keep it across turns.
pub fn message_hits(rules: &RuleSet, text: &str) -> Vec<MessageHit> {
    let mut hits = Vec::new();
    let norm = rules.input.scan_raw(text, &mut hits);
    let with_distress = surviving(rules, &norm, &hits, true);
    let benign_context = hits.iter().any(|h| {
        matches!(
            rules.rules[h.rule].kind,
            RuleKind::Context(ContextKind::BenignPurpose)
        )
    });
    let without = if benign_context {
        surviving(rules, &norm, &hits, false)
    } else {
        Vec::new()
    };
    with_distress
        .iter()
        .map(|h| MessageHit {
            rule: h.rule as u32,
            span: norm.original_span(h.start, h.end),
            after_distress_only: benign_context
                && !without
                    .iter()
                    .any(|w| w.rule == h.rule && w.start == h.start && w.end == h.end),
        })
        .collect()
}

/// Assesses a conversation; see the module documentation.
pub fn classify(rules: &RuleSet, messages: &[Message]) -> Assessment {
    classify_with(rules, messages, |text| message_hits(rules, text).into())
}

/// [`classify`], reading each user message's hits through `scan` (which may cache them).
pub fn classify_with<F>(rules: &RuleSet, messages: &[Message], mut scan: F) -> Assessment
where
    F: FnMut(&str) -> Arc<[MessageHit]>,
{
    let mut signals: Vec<Signal> = Vec::new();
    let mut distress_seen = false;
    for (index, message) in messages.iter().enumerate() {
        if message.role != Role::User || message.content.is_empty() {
            continue;
        }
        let hits = scan(&message.content);
        for hit in hits.iter() {
            if hit.after_distress_only && !distress_seen {
                continue;
            }
            let rule = &rules.rules[hit.rule as usize];
            if matches!(
                rule.kind,
                RuleKind::Distress
                    | RuleKind::Condition(Condition::SuicidalIdeation | Condition::SelfHarm, _)
            ) {
                distress_seen = true;
            }
            signals.push(Signal {
                message: index,
                rule: hit.rule as usize,
                span: hit.span,
            });
        }
    }
    assess(rules, &signals)
}

fn evidence(rules: &RuleSet, s: &Signal) -> Evidence {
    Evidence {
        rule: Arc::clone(&rules.rules[s.rule].id),
        message: Some(s.message),
        span: [s.span.0, s.span.1],
    }
}

/// Combines signals across turns into an assessment.
fn assess(rules: &RuleSet, signals: &[Signal]) -> Assessment {
    let mut conditions: Vec<ConditionFinding> = Vec::new();
    let mut requests: Vec<RequestFinding> = Vec::new();
    let raise =
        |conditions: &mut Vec<ConditionFinding>, c: Condition, l: Level, ev: Vec<Evidence>| {
            match conditions.iter_mut().find(|f| f.condition == c) {
                Some(f) => {
                    if l.severity() > f.level.severity() {
                        f.level = l;
                    }
                    for e in ev {
                        if !f.evidence.contains(&e) {
                            f.evidence.push(e);
                        }
                    }
                }
                None => conditions.push(ConditionFinding {
                    condition: c,
                    level: l,
                    evidence: ev,
                }),
            }
        };
    // The earliest distress cue (or suicide / self-harm marker) of the conversation.
    let first_distress = signals
        .iter()
        .filter(|s| {
            matches!(
                rules.rules[s.rule].kind,
                RuleKind::Distress
                    | RuleKind::Condition(Condition::SuicidalIdeation | Condition::SelfHarm, _)
            )
        })
        .min_by_key(|s| s.message);
    for s in signals {
        match rules.rules[s.rule].kind {
            RuleKind::Condition(c, l) => raise(&mut conditions, c, l, vec![evidence(rules, s)]),
            RuleKind::Distress => {}
            RuleKind::Request(kind) => {
                match requests.iter_mut().find(|r| r.kind == kind) {
                    Some(r) => r.evidence.push(evidence(rules, s)),
                    None => requests.push(RequestFinding {
                        kind,
                        evidence: vec![evidence(rules, s)],
                    }),
                }
                if kind == RequestKind::LethalMeans {
                    if let Some(d) = first_distress.filter(|d| d.message <= s.message) {
                        raise(
                            &mut conditions,
                            Condition::SuicidalIdeation,
                            Level::Method,
                            vec![evidence(rules, d), evidence(rules, s)],
                        );
                    }
                }
            }
            RuleKind::Context(_) | RuleKind::Reply(_) => {}
        }
    }
    let has =
        |conditions: &[ConditionFinding], c: Condition| conditions.iter().any(|f| f.condition == c);
    let asks = |k: RequestKind| requests.iter().any(|r| r.kind == k);
    let request_evidence = |k: RequestKind| -> Vec<Evidence> {
        requests
            .iter()
            .filter(|r| r.kind == k)
            .flat_map(|r| r.evidence.clone())
            .collect()
    };
    // Asking, in the first person, how to self-harm or for eating-disorder methods (purging,
    // restriction, concealment) shows the condition itself.
    for (k, c) in [
        (RequestKind::SelfHarmMethod, Condition::SelfHarm),
        (RequestKind::EatingDisorderMethod, Condition::EatingDisorder),
    ] {
        if asks(k) {
            raise(&mut conditions, c, Level::Present, request_evidence(k));
        }
    }
    if has(&conditions, Condition::Hallucination) {
        for k in [RequestKind::EscapeEvasion, RequestKind::RiskyActivity] {
            if asks(k) {
                raise(
                    &mut conditions,
                    Condition::Hallucination,
                    Level::Acute,
                    request_evidence(k),
                );
            }
        }
    }
    if has(&conditions, Condition::Mania) && asks(RequestKind::RiskyActivity) {
        raise(
            &mut conditions,
            Condition::Mania,
            Level::Acute,
            request_evidence(RequestKind::RiskyActivity),
        );
    }
    if has(&conditions, Condition::Delusion) && asks(RequestKind::EscapeEvasion) {
        raise(
            &mut conditions,
            Condition::Delusion,
            Level::Acute,
            request_evidence(RequestKind::EscapeEvasion),
        );
    }
    conditions.sort_by_key(|f| f.condition);
    let crisis = conditions.iter().any(|f| {
        matches!(
            f.condition,
            Condition::SuicidalIdeation | Condition::SelfHarm
        ) || f.level == Level::Acute
    });
    Assessment {
        crisis,
        conditions,
        requests,
    }
}
