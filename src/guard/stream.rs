//! Guarding streamed replies.
//!
//! - **Hold-back** (a conversation the engine finds clinically risky, in enforce mode): content
//!   events are held; the reply is checked before any of it is released, whole (default) or
//!   sentence by sentence (`hold_back = "sentences"`: each complete sentence is checked together
//!   with everything before it). Then it is released as the upstream's own events, extended with
//!   an appended note, or replaced by safe chunks in the same format.
//! - **Window** (other conversations, in enforce mode): events stream through, but the last
//!   `stream_window_bytes` of reply text are held back so that every phrase is checked whole
//!   before any byte of it is released. The role chunk goes at once, so time to first byte is
//!   the upstream's. The window is checked once per batch of events that arrived together
//!   ([`StreamGuard::on_flush`]), not once per event. A violation stops forwarding and the rest
//!   is replaced by a correction.
//! - **Observe** (everything in shadow mode): events pass untouched; the whole reply is checked
//!   at the end and the would-be action recorded.
//!
//! The stream always ends with `data: [DONE]` (the proxy adds it).

use std::sync::Arc;

use serde_json::{json, Value};

use super::policy::{Action, Decision, HoldBack, Mode};
use super::{ExchangeState, Inner};
use crate::engine::{Assessment, Criterion, Violation};
use crate::hooks::{
    ChunkMeta, EndAction, HookState, StreamAction, StreamEnd, StreamEvent, StreamGuard,
};

/// How a stream is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HoldWhole,
    HoldSentences,
    Window,
    Observe,
}

/// Creates the stream guard for an exchange.
pub(crate) fn for_exchange(inner: Arc<Inner>, state: &ExchangeState) -> Box<dyn StreamGuard> {
    let config = inner.policy.config();
    let kind = if !inner.policy.any_enforced() {
        Kind::Observe
    } else if state.assessment.is_risky() {
        match config.hold_back {
            HoldBack::Whole => Kind::HoldWhole,
            HoldBack::Sentences => Kind::HoldSentences,
        }
    } else {
        Kind::Window
    };
    let window = config.stream_window_bytes;
    Box::new(ReplyStream {
        inner,
        kind,
        window,
        text: String::with_capacity(crate::proxy::stream::TEXT_CAPACITY),
        held: Vec::with_capacity(crate::proxy::stream::EVENT_CAPACITY),
        usage: None,
        checked_upto: 0,
        released: 0,
        finished: false,
    })
}

/// The per-stream guard.
struct ReplyStream {
    inner: Arc<Inner>,
    kind: Kind,
    window: usize,
    /// All reply text seen so far.
    text: String,
    /// For each held event, the length of `text` after it.
    held: Vec<usize>,
    /// The upstream's usage chunk, re-sent after a replacement.
    usage: Option<Value>,
    /// `text` length up to which a sentence check has passed.
    checked_upto: usize,
    /// `text` length already sent to the client.
    released: usize,
    /// A verdict replaced the reply; later events are dropped.
    finished: bool,
}

/// Splits `text` into content chunks of about `size` bytes, on character boundaries.
fn content_chunks(meta: &ChunkMeta, text: &str, size: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        // Prefer to cut after a space.
        if end < text.len() {
            if let Some(space) = text[start..end].rfind(' ') {
                if space > 0 {
                    end = start + space + 1;
                }
            }
        }
        out.push(meta.content_chunk(&text[start..end]));
        start = end;
    }
    out
}

impl ReplyStream {
    fn check(&self, assessment: &Assessment, text: &str) -> Vec<Violation> {
        self.inner.check(assessment, text)
    }

    /// Records the final decision for the exchange.
    fn settle(
        &self,
        state: &mut ExchangeState,
        violations: Vec<Violation>,
        decision: Decision,
        referral: bool,
    ) {
        state.upstream_text = Some(self.text.clone());
        state.violations = violations;
        state.decision = decision;
        state.referral = referral;
        self.inner.record_decision(state);
    }

    fn has_resource(&self, text: &str) -> bool {
        super::has_resource(&self.inner, text)
    }

    /// The chunks that replace the rest of the reply, ending with a finish chunk (and the
    /// upstream's usage chunk if it came).
    fn replacement_chunks(&self, meta: &ChunkMeta, text: &str) -> Vec<Value> {
        let mut out = content_chunks(meta, text, 64);
        out.push(meta.finish_chunk("stop"));
        if let Some(usage) = &self.usage {
            out.push(usage.clone());
        }
        out
    }

    /// Decides about the text so far (or the whole reply at the end) and returns the chunks that
    /// replace what is held, or `None` to let it through.
    fn verdict(
        &mut self,
        state: &mut ExchangeState,
        meta: &ChunkMeta,
        at_end: bool,
    ) -> Option<Vec<Value>> {
        let mut violations = self.check(&state.assessment, &self.text);
        if !at_end {
            // What a reply lacks (a crisis line, a question, a redirection) can still come later
            // in the stream: mid-stream, only what it says counts.
            violations.retain(|v| !v.is_omission());
        }
        let conditions = Inner::conditions(&state.assessment);
        let decision = self.inner.policy.decide(&violations, &conditions);
        let resource = state.assessment.crisis && self.has_resource(&self.text);
        if decision.mode == Mode::Shadow
            || matches!(decision.action, Action::Allow | Action::Annotate)
        {
            if at_end {
                self.settle(state, violations, decision, resource);
                self.finished = true;
            }
            return None;
        }
        match decision.action {
            Action::Allow | Action::Annotate => None,
            Action::Append if !at_end => None,
            Action::Append => {
                let (note, referral) = self.inner.append_note(state);
                // Only what was not yet released is re-sent (sentences may already be out).
                let text = format!("{}\n\n{}", &self.text[self.released..], note);
                let chunks = self.replacement_chunks(meta, &text);
                self.settle(state, violations, decision, referral || resource);
                self.finished = true;
                Some(chunks)
            }
            Action::Block => {
                let error = super::blocked_error(decision.criterion);
                let chunk = json!({"error": {"message": error.message, "type": error.kind, "code": error.code}});
                self.settle(state, violations, decision, false);
                self.finished = true;
                Some(vec![chunk])
            }
            Action::Reask | Action::Replace => {
                // Streams are not re-asked: the reply is replaced (documented in the README).
                let criterion: Option<Criterion> = decision.criterion;
                let (text, referral) = self.inner.replacement(state, criterion);
                let text = if !self.released_text().is_empty() {
                    format!("\n\n{text}")
                } else {
                    text
                };
                let chunks = self.replacement_chunks(meta, &text);
                let decision = Decision {
                    action: Action::Replace,
                    mode: Mode::Enforce,
                    criterion,
                };
                self.settle(state, violations, decision, referral);
                self.finished = true;
                Some(chunks)
            }
        }
    }

    /// The text already sent to the client.
    fn released_text(&self) -> &str {
        &self.text[..self.released]
    }

    /// Releases the first `n` held events.
    fn release(&mut self, n: usize) {
        if n > 0 {
            self.released = self.held[n - 1];
            self.held.drain(..n);
        }
    }

    /// Releases everything held.
    fn release_all(&mut self) {
        self.released = self.text.len();
        self.held.clear();
    }
}

/// Whether `text` ends a sentence somewhere (a checkpoint for `hold_back = "sentences"`).
fn has_sentence_end(text: &str) -> bool {
    text.bytes()
        .any(|b| matches!(b, b'.' | b'!' | b'?' | b'\n'))
}

/// The byte offset just after the last sentence end in `text` (0 when there is none).
fn last_sentence_end(text: &str) -> usize {
    text.bytes()
        .rposition(|b| matches!(b, b'.' | b'!' | b'?' | b'\n'))
        .map_or(0, |i| i + 1)
}

impl StreamGuard for ReplyStream {
    fn on_event(&mut self, state: &mut HookState, event: &StreamEvent<'_>) -> StreamAction {
        if self.finished {
            return StreamAction::Drop;
        }
        if event.has_usage() {
            self.usage = Some(event.json().clone());
        }
        let content = event.content().unwrap_or_default();
        self.text.push_str(content);
        match self.kind {
            Kind::Observe => StreamAction::Forward,
            Kind::HoldWhole => {
                if content.is_empty() && self.held.is_empty() {
                    StreamAction::Forward
                } else {
                    self.held.push(self.text.len());
                    StreamAction::Hold
                }
            }
            Kind::HoldSentences => {
                if content.is_empty() && self.held.is_empty() {
                    return StreamAction::Forward;
                }
                let fresh = &self.text[self.checked_upto..];
                if !has_sentence_end(fresh) {
                    self.held.push(self.text.len());
                    return StreamAction::Hold;
                }
                let Some(exchange) = state.downcast_mut::<ExchangeState>() else {
                    return StreamAction::Forward;
                };
                self.held.push(self.text.len());
                match self.verdict(exchange, event.meta, false) {
                    Some(chunks) => StreamAction::Replace(chunks),
                    None => {
                        // Release only the events that end within complete sentences: text
                        // after the last sentence end (the start of the next sentence) stays
                        // held until its own sentence is checked.
                        let boundary = last_sentence_end(&self.text);
                        self.checked_upto = boundary;
                        let n = self.held.iter().take_while(|&&end| end <= boundary).count();
                        self.release(n);
                        StreamAction::HoldWindow {
                            keep: self.held.len(),
                        }
                    }
                }
            }
            Kind::Window => {
                if content.is_empty() && self.held.is_empty() {
                    return StreamAction::Forward;
                }
                // Checked in `on_flush`, once per batch of events that arrived together.
                self.held.push(self.text.len());
                StreamAction::Hold
            }
        }
    }

    fn on_flush(&mut self, state: &mut HookState, meta: &ChunkMeta) -> StreamAction {
        if self.finished || self.kind != Kind::Window || self.held.is_empty() {
            return StreamAction::Hold;
        }
        let Some(exchange) = state.downcast_mut::<ExchangeState>() else {
            return StreamAction::Forward;
        };
        // Check a bounded window: the held text plus a margin of released text before it.
        let mut from = self.released.saturating_sub(self.window);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let violations = self.inner.check(&exchange.assessment, &self.text[from..]);
        if !violations.is_empty() {
            if let Some(chunks) = self.verdict(exchange, meta, false) {
                return StreamAction::Replace(chunks);
            }
        }
        // Release every held event that ends at least `window` bytes before the end.
        let safe_upto = self.text.len().saturating_sub(self.window);
        let n = self
            .held
            .iter()
            .take_while(|&&end| end <= safe_upto)
            .count();
        self.release(n);
        StreamAction::HoldWindow {
            keep: self.held.len(),
        }
    }

    fn on_end(&mut self, state: &mut HookState, end: StreamEnd, meta: &ChunkMeta) -> EndAction {
        if self.finished {
            return EndAction::Discard;
        }
        let Some(exchange) = state.downcast_mut::<ExchangeState>() else {
            return EndAction::Release;
        };
        let verdict = self.verdict(exchange, meta, end == StreamEnd::Done);
        if !self.finished {
            // The upstream failed and what arrived is clean: record what was seen.
            let violations = self.check(&exchange.assessment, &self.text);
            let resource = exchange.assessment.crisis && self.has_resource(&self.text);
            let decision = Decision::allow(exchange.decision.mode);
            self.settle(exchange, violations, decision, resource);
            self.finished = true;
        }
        match verdict {
            Some(chunks) => EndAction::Replace(chunks),
            None => {
                self.release_all();
                EndAction::Release
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_end_is_after_the_last_terminator() {
        assert_eq!(last_sentence_end("no end yet"), 0);
        assert_eq!(last_sentence_end("One. Two"), 4);
        assert_eq!(last_sentence_end("include:\n\n1. **Brook"), 12);
        assert_eq!(last_sentence_end("Done!"), 5);
    }
}
