//! The guard: the clinical engine wired into the proxy's hooks.
//!
//! Request path: the conversation is assessed once ([`crate::engine::Engine::classify`]); the
//! assessment decides the response headers, crisis pre-emption (off by default) and how a stream
//! is guarded. Response path: the reply is checked against the criteria
//! ([`crate::engine::Engine::check`]) and the [`policy::Policy`] turns the violations into one
//! action: allow, annotate, append, reask, replace or block, enforced or in shadow.
//!
//! Streams ([`stream`]): a conversation the engine finds clinically risky is held back and checked
//! before release; other streams pass at once, with a small tail window held back so the
//! checks that apply to every reply (stigma) see each phrase whole before it is released.
//!
//! Everything decided lands in [`ExchangeState`], which the metrics and the audit log read.

pub mod policy;
pub mod replies;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::engine::{Assessment, Condition, Criterion, Engine, Message, Role, Violation};
use crate::hooks::{
    completion, ChatRequest, ExchangeSummary, Guard, GuardError, HookState, JsonBody, Reply,
    RequestAction, RequestOutcome, ResponseAction, ResponseExchange, StreamGuard, UpstreamReply,
};
use crate::metrics::{GuardMetrics, ReaskOutcome};
use policy::{Action, Decision, Mode, Policy, Preemption};
use replies::{Locale, SafeTexts, TextKind};

/// Header naming the conditions found (`suicidal_ideation:method,mania:present` or `none`).
pub const CONDITIONS_HEADER: HeaderName = HeaderName::from_static("x-careguard-conditions");
/// Header naming the action taken (`allow`, `append`, `replace`, ...).
pub const ACTION_HEADER: HeaderName = HeaderName::from_static("x-careguard-action");
/// Header naming the violated criteria, when annotating.
pub const VIOLATIONS_HEADER: HeaderName = HeaderName::from_static("x-careguard-violations");
/// Header naming what shadow mode would have done.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-careguard-shadow-action");

/// Everything the guard decided about one exchange; the audit log and metrics read it.
#[derive(Debug, Clone)]
pub struct ExchangeState {
    /// The conversation (kept for the audit log).
    pub messages: Vec<Message>,
    /// The assessment of the user side.
    pub assessment: Assessment,
    /// The locale whose crisis line and wording apply.
    pub locale: Locale,
    /// The violations of the (first) upstream reply.
    pub violations: Vec<Violation>,
    /// What was done.
    pub decision: Decision,
    /// The upstream reply text as received (first attempt).
    pub upstream_text: Option<String>,
    /// Whether a crisis line was shown to the user in what was delivered.
    pub referral: bool,
    /// Re-asks made.
    pub reasks: u32,
    /// Whether the upstream was skipped or steered because of a crisis.
    pub preempted: Option<Preemption>,
    /// The rule-pack version that judged it.
    pub rules_version: Arc<str>,
}

/// Receives each finished exchange (the audit log implements it).
pub trait ExchangeSink: Send + Sync + 'static {
    /// Called once per chat exchange, off nothing: must not block for long.
    fn record(&self, summary: &ExchangeSummary, state: Option<&ExchangeState>);
}

/// The shared, immutable parts of the guard.
pub(crate) struct Inner {
    pub(crate) engine: Arc<Engine>,
    pub(crate) policy: Policy,
    pub(crate) texts: SafeTexts,
    pub(crate) metrics: GuardMetrics,
    /// The locale of a request that names none (most): the policy's default, resolved once.
    default_locale: Locale,
}

/// The careguard guard: implements [`Guard`] with the engine and the policy.
pub struct CareGuard {
    inner: Arc<Inner>,
    sink: Option<Arc<dyn ExchangeSink>>,
}

impl std::fmt::Debug for CareGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CareGuard").finish_non_exhaustive()
    }
}

impl CareGuard {
    /// Builds the guard.
    pub fn new(
        engine: Arc<Engine>,
        policy: Policy,
        texts: SafeTexts,
        metrics: GuardMetrics,
    ) -> Self {
        let default_locale = texts.resolve(None, &policy.config().default_locale);
        Self {
            inner: Arc::new(Inner {
                engine,
                policy,
                texts,
                metrics,
                default_locale,
            }),
            sink: None,
        }
    }

    /// Sends every finished exchange to `sink` (the audit log).
    pub fn with_sink(mut self, sink: Arc<dyn ExchangeSink>) -> Self {
        self.sink = Some(sink);
        self
    }
}

/// The conditions header: `suicidal_ideation:method,mania:present`, or `none` (most
/// conversations, answered without formatting anything).
fn conditions_header(assessment: &Assessment) -> HeaderValue {
    if assessment.conditions.is_empty() {
        return HeaderValue::from_static("none");
    }
    let label = assessment
        .conditions
        .iter()
        .map(|c| format!("{}:{}", c.condition, c.level))
        .collect::<Vec<_>>()
        .join(",");
    header(&label)
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl Inner {
    /// The condition whose safe texts answer a violation of `criterion` (or a crisis).
    fn text_target(&self, assessment: &Assessment, criterion: Option<Criterion>) -> &'static str {
        let has = |c| assessment.has(c);
        let suicide = || {
            if has(Condition::SuicidalIdeation) || !has(Condition::SelfHarm) {
                "suicidal_ideation"
            } else {
                "self_harm"
            }
        };
        match criterion {
            Some(Criterion::NoSuicideEnablement) => suicide(),
            Some(Criterion::NoDelusionCollusion) => "delusion",
            Some(Criterion::NoHallucinationReinforcement) => "hallucination",
            Some(Criterion::NoManiaEnablement) => "mania",
            Some(Criterion::RedirectClient) if has(Condition::EatingDisorder) => "eating_disorder",
            Some(Criterion::RedirectClient) => "obsessive_compulsive",
            Some(Criterion::NoStigma) => "no-stigma",
            None if assessment.crisis => suicide(),
            None => "default",
        }
    }

    /// The safe replacement reply for a decision; a crisis always gets the crisis wording.
    pub(crate) fn replacement(
        &self,
        state: &ExchangeState,
        criterion: Option<Criterion>,
    ) -> (String, bool) {
        let suicidal = state.assessment.has(Condition::SuicidalIdeation)
            || state.assessment.has(Condition::SelfHarm);
        let target = if suicidal {
            self.text_target(&state.assessment, None)
        } else {
            self.text_target(&state.assessment, criterion)
        };
        let (mut text, mut referral) = self
            .texts
            .text(target, TextKind::Replace, &state.locale)
            .unwrap_or_default();
        if state.assessment.crisis && !referral {
            if let Some((note, r)) =
                self.texts
                    .text("suicidal_ideation", TextKind::Append, &state.locale)
            {
                text.push_str("\n\n");
                text.push_str(&note);
                referral = r;
            }
        }
        (text, referral)
    }

    /// The note appended to a reply that only lacks support.
    pub(crate) fn append_note(&self, state: &ExchangeState) -> (String, bool) {
        let target = if state.assessment.crisis {
            "suicidal_ideation"
        } else {
            "default"
        };
        self.texts
            .text(target, TextKind::Append, &state.locale)
            .unwrap_or_default()
    }

    /// Checks a reply and records the time it took.
    pub(crate) fn check(&self, assessment: &Assessment, reply: &str) -> Vec<Violation> {
        let started = Instant::now();
        let violations = self.engine.check(assessment, reply);
        self.metrics.check_duration(started.elapsed());
        violations
    }

    pub(crate) fn conditions(assessment: &Assessment) -> Vec<Condition> {
        assessment.conditions.iter().map(|c| c.condition).collect()
    }

    /// Records a final decision in the metrics.
    pub(crate) fn record_decision(&self, state: &ExchangeState) {
        for v in &state.violations {
            self.metrics.violation(v.criterion);
        }
        self.metrics.action(
            state.decision.action,
            state.decision.criterion,
            state.decision.mode,
        );
        if state.referral {
            self.metrics.referral(&state.locale.region);
        }
    }

    /// The system-prompt guidance for a re-ask about `criterion`.
    fn guidance(&self, state: &ExchangeState, criterion: Option<Criterion>) -> String {
        let target = criterion.map_or("no-suicide-enablement", Criterion::as_str);
        self.texts
            .text(target, TextKind::Guidance, &state.locale)
            .map(|(t, _)| t)
            .unwrap_or_default()
    }
}

/// Returns `body` with `guidance` added as the first system message.
pub fn with_guidance(body: &Value, guidance: &str) -> Value {
    let mut body = body.clone();
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        messages.insert(0, json!({"role": "system", "content": guidance}));
    }
    body
}

/// Returns `completion` with its first choice's content replaced by `text`.
pub fn with_content(completion: &Value, text: &str) -> Value {
    let mut out = completion.clone();
    if let Some(message) = out
        .pointer_mut("/choices/0/message")
        .and_then(Value::as_object_mut)
    {
        message.insert("content".into(), Value::String(text.to_string()));
        message.remove("tool_calls");
        message.remove("function_call");
        message.insert("refusal".into(), Value::Null);
    }
    if let Some(choice) = out.pointer_mut("/choices/0").and_then(Value::as_object_mut) {
        choice.insert("finish_reason".into(), Value::String("stop".into()));
    }
    out
}

fn state_mut(state: &mut HookState) -> Option<&mut ExchangeState> {
    state.downcast_mut::<ExchangeState>()
}

/// The error a `block` action answers with: 400, like an upstream content filter.
pub fn blocked_error(criterion: Option<Criterion>) -> GuardError {
    GuardError {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "careguard withheld the model's reply: it breaks the {} criterion. The conversation may need a human response.",
            criterion.map_or("safety", Criterion::as_str)
        ),
        kind: "careguard_blocked".into(),
        code: Some("content_filter".into()),
    }
}

impl Guard for CareGuard {
    fn on_request(&self, request: &mut ChatRequest<'_>) -> RequestOutcome {
        let inner = &self.inner;
        let messages: Vec<Message> = std::mem::take(&mut request.messages)
            .into_iter()
            .map(engine_message)
            .collect();
        let started = Instant::now();
        let assessment = inner.engine.classify(&messages);
        inner.metrics.check_duration(started.elapsed());
        inner.metrics.assessed(&assessment);
        let locale = match request.locale() {
            Some(tag) => inner
                .texts
                .resolve(Some(tag), &inner.policy.config().default_locale),
            None => inner.default_locale.clone(),
        };
        let mut state = ExchangeState {
            messages,
            assessment,
            locale,
            violations: Vec::new(),
            decision: Decision::allow(inner.policy.config().mode),
            upstream_text: None,
            referral: false,
            reasks: 0,
            preempted: None,
            rules_version: inner.engine.rules().version_shared(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONDITIONS_HEADER, conditions_header(&state.assessment));
        let preemption = inner.policy.config().crisis_preemption;
        let action = if state.assessment.crisis && preemption != Preemption::Off {
            state.preempted = Some(preemption);
            let enforce = inner.policy.config().mode == Mode::Enforce;
            match (preemption, enforce) {
                (Preemption::Answer, true) => {
                    let (text, referral) = inner.replacement(&state, None);
                    state.referral = referral;
                    state.decision = Decision {
                        action: Action::Replace,
                        mode: Mode::Enforce,
                        criterion: Some(Criterion::NoSuicideEnablement),
                    };
                    inner.record_decision(&state);
                    headers.insert(ACTION_HEADER, HeaderValue::from_static("replace"));
                    let model = request.model().unwrap_or("careguard").to_string();
                    RequestAction::Respond(Reply::Completion(completion(&model, &text)))
                }
                (Preemption::Inject, true) => {
                    let guidance = inner.guidance(&state, Some(Criterion::NoSuicideEnablement));
                    let edited = with_guidance(request.body.json(), &guidance);
                    *request.body.json_mut() = edited;
                    RequestAction::ForwardEdited
                }
                _ => RequestAction::Forward,
            }
        } else {
            RequestAction::Forward
        };
        let mut outcome = RequestOutcome::with_action(action).inspect();
        outcome.response_headers = headers;
        outcome.state(state)
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) -> ResponseAction {
        let inner = &self.inner;
        let Some(state) = state_mut(exchange.state) else {
            return ResponseAction::Pass;
        };
        let completion = match exchange.reply {
            UpstreamReply::Completion(c) => c,
            UpstreamReply::Failed(_) => {
                // A re-ask failed: never fall back to the reply that was rejected.
                inner.metrics.reask(ReaskOutcome::Failed);
                return finish_replace(inner, state, exchange.response_headers, None, None);
            }
        };
        let content = completion.content().unwrap_or_default().to_string();
        let violations = inner.check(&state.assessment, &content);
        if exchange.attempt == 0 {
            state.upstream_text = Some(content.clone());
            state.violations = violations.clone();
        }
        let conditions = Inner::conditions(&state.assessment);
        let decision = inner.policy.decide(&violations, &conditions);
        if exchange.attempt > 0 {
            let clean = violations.iter().all(Violation::is_omission);
            inner.metrics.reask(if clean {
                ReaskOutcome::Succeeded
            } else {
                ReaskOutcome::StillViolating
            });
            if !clean {
                return finish_replace(
                    inner,
                    state,
                    exchange.response_headers,
                    decision.criterion,
                    Some(completion.json()),
                );
            }
        }
        let headers = &mut *exchange.response_headers;
        if decision.mode == Mode::Shadow {
            headers.insert(SHADOW_HEADER, header(decision.action.as_str()));
            headers.insert(ACTION_HEADER, HeaderValue::from_static("allow"));
            state.decision = decision;
            state.referral = state.assessment.crisis && has_resource(inner, &content);
            inner.record_decision(state);
            return ResponseAction::Pass;
        }
        match decision.action {
            Action::Allow | Action::Annotate => {
                if decision.action == Action::Annotate {
                    let list: Vec<&str> = violations.iter().map(|v| v.criterion.as_str()).collect();
                    headers.insert(VIOLATIONS_HEADER, header(&list.join(",")));
                }
                headers.insert(
                    ACTION_HEADER,
                    header(if exchange.attempt > 0 {
                        "reask"
                    } else {
                        decision.action.as_str()
                    }),
                );
                if exchange.attempt > 0 {
                    state.decision = Decision {
                        action: Action::Reask,
                        mode: Mode::Enforce,
                        criterion: state.decision.criterion,
                    };
                } else {
                    state.decision = decision;
                }
                state.referral = state.assessment.crisis && has_resource(inner, &content);
                inner.record_decision(state);
                ResponseAction::Pass
            }
            Action::Append => {
                let (note, referral) = inner.append_note(state);
                let text = if content.is_empty() {
                    note
                } else {
                    format!("{content}\n\n{note}")
                };
                state.referral =
                    referral || (state.assessment.crisis && has_resource(inner, &content));
                state.decision = if exchange.attempt > 0 {
                    Decision {
                        action: Action::Reask,
                        mode: Mode::Enforce,
                        criterion: state.decision.criterion,
                    }
                } else {
                    decision
                };
                headers.insert(ACTION_HEADER, header(state.decision.action.as_str()));
                inner.record_decision(state);
                ResponseAction::Replace(with_content(completion.json(), &text))
            }
            Action::Reask if exchange.attempt < inner.policy.config().reask_max_attempts => {
                state.reasks += 1;
                state.decision = decision.clone();
                let guidance = inner.guidance(state, decision.criterion);
                ResponseAction::Reask {
                    body: with_guidance(exchange.request.json(), &guidance),
                    timeout: inner.policy.config().reask_timeout(),
                }
            }
            Action::Reask | Action::Replace => {
                if decision.action == Action::Reask {
                    inner.metrics.reask(ReaskOutcome::Exhausted);
                }
                finish_replace(
                    inner,
                    state,
                    headers,
                    decision.criterion,
                    Some(completion.json()),
                )
            }
            Action::Block => {
                state.decision = decision;
                headers.insert(ACTION_HEADER, HeaderValue::from_static("block"));
                inner.record_decision(state);
                ResponseAction::Error(blocked_error(state.decision.criterion))
            }
        }
    }

    fn on_stream(
        &self,
        state: &mut HookState,
        _request: &JsonBody,
    ) -> Option<Box<dyn StreamGuard>> {
        let state = state_mut(state)?;
        Some(stream::for_exchange(Arc::clone(&self.inner), state))
    }

    fn on_complete(&self, summary: ExchangeSummary) {
        if let Some(sink) = &self.sink {
            let state = summary.state.downcast_ref::<ExchangeState>();
            sink.record(&summary, state);
        }
    }
}

/// The engine's view of a chat message.
fn engine_message(m: crate::hooks::ChatMessage) -> Message {
    Message::new(Role::from_openai(&m.role), m.content)
}

/// Whether `text` already names a crisis resource.
fn has_resource(inner: &Inner, text: &str) -> bool {
    crate::engine::criteria::features(inner.engine.rules(), text)
        .has(crate::engine::Feature::CrisisResource)
}

/// Replaces the reply with the safe text for `criterion`.
fn finish_replace(
    inner: &Inner,
    state: &mut ExchangeState,
    headers: &mut HeaderMap,
    criterion: Option<Criterion>,
    base: Option<&Value>,
) -> ResponseAction {
    let criterion = criterion.or(state.decision.criterion);
    let (text, referral) = inner.replacement(state, criterion);
    state.referral = referral;
    state.decision = Decision {
        action: Action::Replace,
        mode: Mode::Enforce,
        criterion,
    };
    headers.insert(ACTION_HEADER, HeaderValue::from_static("replace"));
    inner.record_decision(state);
    ResponseAction::Replace(match base {
        Some(upstream) => with_content(upstream, &text),
        None => completion("careguard", &text),
    })
}
