//! Policy: what careguard does about a violation, per criterion and per condition, enforced or in
//! shadow. Pure: [`Policy::decide`] maps an assessment and violations to one [`Decision`].
//!
//! Defaults a clinician would sign (`config/careguard.toml` documents every key):
//!
//! | criterion | harmful reply | reply only lacks support |
//! |---|---|---|
//! | no-suicide-enablement | replace | append (crisis line); replace when a request for means is neither declined nor met with a referral |
//! | no-delusion-collusion | replace | replace (not questioning the belief is collusion) |
//! | no-hallucination-reinforcement | replace | replace |
//! | no-mania-enablement | replace | append |
//! | redirect-client | replace | append |
//! | no-stigma | replace | - |
//!
//! So a reply that enables suicide or colludes with a delusion never reaches the user in enforce
//! mode, and an otherwise good reply to a crisis that forgot the crisis line gets one appended.
//! Append is only for omissions where the reply itself is fine: when a reply has any harmful
//! violation besides an omission, the strongest action (replace) wins; and a reply that leaves a
//! request for lethal means open (neither declines it nor refers) is replaced, because it may
//! answer the request in words no rule knows (a bridge named without the word "bridge").

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{criteria, Condition, Criterion, Violation};

/// What to do about a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through; record it.
    Allow,
    /// Let it through with `x-careguard-*` headers naming the violation.
    Annotate,
    /// Add a short redirect or crisis resources to the reply.
    Append,
    /// Ask the model again with guidance added to the system prompt; re-check; else replace.
    Reask,
    /// Send a safe reply instead.
    Replace,
    /// Send an OpenAI-shaped error instead.
    Block,
}

impl Action {
    /// Every action, for metric labels.
    pub const ALL: [Action; 6] = [
        Action::Allow,
        Action::Annotate,
        Action::Append,
        Action::Reask,
        Action::Replace,
        Action::Block,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Annotate => "annotate",
            Action::Append => "append",
            Action::Reask => "reask",
            Action::Replace => "replace",
            Action::Block => "block",
        }
    }
}

/// Whether careguard acts or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Act.
    #[default]
    Enforce,
    /// Record what would have happened and change nothing.
    Shadow,
}

impl Mode {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// How risky conversations' streams are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HoldBack {
    /// The whole reply is checked before any of it is released.
    #[default]
    Whole,
    /// Released sentence by sentence, each checked (with all before it) before release.
    Sentences,
}

/// Crisis pre-emption: what to do before calling the upstream when the conversation is a crisis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preemption {
    /// Call the upstream as usual (the reply is still checked).
    #[default]
    Off,
    /// Answer with the safe crisis reply without calling the upstream.
    Answer,
    /// Call the upstream with safety guidance added to the system prompt.
    Inject,
}

/// Policy for one criterion or condition; unset keys inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What to do with a harmful reply.
    #[serde(default)]
    pub action: Option<Action>,
    /// What to do when the reply only lacks support (no crisis line, no redirection).
    #[serde(default)]
    pub omission: Option<Action>,
    /// Enforce or shadow, for this criterion or condition.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// The `[policy]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Global mode; per-criterion and per-condition `mode` override it.
    pub mode: Mode,
    /// Locale used when the request names none (`x-careguard-locale`, then `Accept-Language`).
    pub default_locale: String,
    /// How streams of risky conversations are held back.
    pub hold_back: HoldBack,
    /// Bytes of reply text held back at the tail of other streams for the incremental check.
    pub stream_window_bytes: usize,
    /// Crisis pre-emption (off by default).
    pub crisis_preemption: Preemption,
    /// Re-asks allowed per reply before falling back to `replace`.
    pub reask_max_attempts: u32,
    /// Time allowed for each re-ask, in milliseconds.
    pub reask_timeout_ms: u64,
    /// Per criterion (`no-suicide-enablement`, ...).
    pub criteria: BTreeMap<String, Rule>,
    /// Per condition (`suicidal_ideation`, ...): overrides the criterion's policy for violations in
    /// conversations that show the condition.
    pub conditions: BTreeMap<String, Rule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            default_locale: "en-US".into(),
            hold_back: HoldBack::Whole,
            stream_window_bytes: 96,
            crisis_preemption: Preemption::Off,
            reask_max_attempts: 1,
            reask_timeout_ms: 15_000,
            criteria: BTreeMap::new(),
            conditions: BTreeMap::new(),
        }
    }
}

impl PolicyConfig {
    /// Checks keys that serde cannot: criterion and condition names, the locale, bounds.
    /// Returns `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in self.criteria.keys() {
            if Criterion::parse(name).is_none() {
                let all: Vec<&str> = Criterion::ALL.iter().map(|c| c.as_str()).collect();
                out.push((
                    format!("policy.criteria.{name}"),
                    format!("unknown criterion (one of: {})", all.join(", ")),
                ));
            }
        }
        for name in self.conditions.keys() {
            if Condition::parse(name).is_none() {
                let all: Vec<&str> = Condition::ALL.iter().map(|c| c.as_str()).collect();
                out.push((
                    format!("policy.conditions.{name}"),
                    format!("unknown condition (one of: {})", all.join(", ")),
                ));
            }
        }
        if self.default_locale.trim().is_empty() {
            out.push((
                "policy.default_locale".into(),
                "must not be empty (e.g. \"en-US\")".into(),
            ));
        }
        if self.stream_window_bytes > 64 * 1024 {
            out.push(("policy.stream_window_bytes".into(), "at most 65536".into()));
        }
        if self.reask_max_attempts > 3 {
            out.push((
                "policy.reask_max_attempts".into(),
                "at most 3 (each re-ask is a full upstream call)".into(),
            ));
        }
        out
    }

    /// The re-ask timeout.
    pub fn reask_timeout(&self) -> Duration {
        Duration::from_millis(self.reask_timeout_ms)
    }
}

/// The built-in action for a harmful reply under `criterion`.
fn default_action(_criterion: Criterion) -> Action {
    Action::Replace
}

/// The built-in action for an omission. A reply that neither questions a delusion nor points to
/// anyone goes along with it (the paper's judge counts it as collusion), and a reply to voices
/// that points to no one leaves the person alone with them (naming them a hallucination is not
/// enough), so both are replaced; so is a reply that leaves a request for lethal means open (neither declines nor
/// refers); a reply that only lacks a crisis line or a redirection gets one appended.
fn default_omission(violation: &Violation) -> Action {
    match violation.criterion {
        Criterion::NoDelusionCollusion | Criterion::NoHallucinationReinforcement => Action::Replace,
        _ if criteria::leaves_means_request_open(violation) => Action::Replace,
        _ => Action::Append,
    }
}

/// What careguard decided for one reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The action, or `allow` when nothing was violated.
    pub action: Action,
    /// Whether it is carried out or only recorded.
    pub mode: Mode,
    /// The criterion that drove the action (the violation with the strongest action).
    pub criterion: Option<Criterion>,
}

impl Decision {
    /// No violation: let it through.
    pub fn allow(mode: Mode) -> Self {
        Self {
            action: Action::Allow,
            mode,
            criterion: None,
        }
    }
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
}

impl Policy {
    /// Builds the policy from validated configuration.
    pub fn new(config: PolicyConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Whether any criterion or condition could act in enforce mode (otherwise streams need no
    /// holding back).
    pub fn any_enforced(&self) -> bool {
        self.config.mode == Mode::Enforce
            || self
                .config
                .criteria
                .values()
                .chain(self.config.conditions.values())
                .any(|r| r.mode == Some(Mode::Enforce))
    }

    /// The action and mode for one violation in a conversation showing `conditions`.
    pub fn for_violation(&self, violation: &Violation, conditions: &[Condition]) -> (Action, Mode) {
        let criterion_rule = self.config.criteria.get(violation.criterion.as_str());
        let condition_rule = conditions
            .iter()
            .filter_map(|c| self.config.conditions.get(c.as_str()))
            .next();
        let omission = violation.is_omission();
        let pick = |r: Option<&Rule>| -> Option<Action> {
            r.and_then(|r| if omission { r.omission } else { r.action })
        };
        let action = pick(condition_rule)
            .or_else(|| pick(criterion_rule))
            .unwrap_or_else(|| {
                if omission {
                    default_omission(violation)
                } else {
                    default_action(violation.criterion)
                }
            });
        let mode = condition_rule
            .and_then(|r| r.mode)
            .or_else(|| criterion_rule.and_then(|r| r.mode))
            .unwrap_or(self.config.mode);
        (action, mode)
    }

    /// One decision for all the violations of a reply: the strongest enforced action wins; when
    /// every violation is in shadow mode, the strongest shadow action is recorded.
    pub fn decide(&self, violations: &[Violation], conditions: &[Condition]) -> Decision {
        let mut best_enforced: Option<(Action, Criterion)> = None;
        let mut best_shadow: Option<(Action, Criterion)> = None;
        for v in violations {
            let (action, mode) = self.for_violation(v, conditions);
            let slot = match mode {
                Mode::Enforce => &mut best_enforced,
                Mode::Shadow => &mut best_shadow,
            };
            if slot.is_none_or(|(a, _)| action > a) {
                *slot = Some((action, v.criterion));
            }
        }
        match (best_enforced, best_shadow) {
            (Some((action, criterion)), _) => Decision {
                action,
                mode: Mode::Enforce,
                criterion: Some(criterion),
            },
            (None, Some((action, criterion))) => Decision {
                action,
                mode: Mode::Shadow,
                criterion: Some(criterion),
            },
            (None, None) => Decision::allow(self.config.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Evidence;
    use std::sync::Arc;

    fn violation(criterion: Criterion, omission: bool) -> Violation {
        Violation {
            criterion,
            reason: "test",
            evidence: if omission {
                Vec::new()
            } else {
                vec![Evidence {
                    rule: Arc::from("r"),
                    message: None,
                    span: [0, 1],
                }]
            },
        }
    }

    #[test]
    fn defaults_replace_harm_and_append_to_omissions() {
        let p = Policy::new(PolicyConfig::default());
        let d = p.decide(&[violation(Criterion::NoSuicideEnablement, false)], &[]);
        assert_eq!((d.action, d.mode), (Action::Replace, Mode::Enforce));
        let d = p.decide(&[violation(Criterion::NoSuicideEnablement, true)], &[]);
        assert_eq!(d.action, Action::Append);
        assert_eq!(p.decide(&[], &[]).action, Action::Allow);
    }

    #[test]
    fn an_omission_never_softens_a_harmful_reply() {
        let p = Policy::new(PolicyConfig::default());
        let d = p.decide(
            &[
                violation(Criterion::NoSuicideEnablement, true),
                violation(Criterion::NoManiaEnablement, false),
            ],
            &[Condition::SuicidalIdeation, Condition::Mania],
        );
        assert_eq!(
            (d.action, d.criterion),
            (Action::Replace, Some(Criterion::NoManiaEnablement))
        );
    }

    #[test]
    fn a_means_request_left_open_is_replaced_unless_configured_otherwise() {
        let open = Violation {
            criterion: Criterion::NoSuicideEnablement,
            reason: criteria::MEANS_REQUEST_LEFT_OPEN,
            evidence: Vec::new(),
        };
        let conditions = [Condition::SuicidalIdeation];
        let p = Policy::new(PolicyConfig::default());
        assert_eq!(
            p.decide(std::slice::from_ref(&open), &conditions).action,
            Action::Replace
        );
        let mut c = PolicyConfig::default();
        c.criteria.insert(
            "no-suicide-enablement".into(),
            Rule {
                action: None,
                omission: Some(Action::Append),
                mode: None,
            },
        );
        let p = Policy::new(c);
        assert_eq!(
            p.decide(std::slice::from_ref(&open), &conditions).action,
            Action::Append,
            "an explicit omission action applies to every omission of the criterion"
        );
    }

    #[test]
    fn condition_overrides_criterion_and_shadow_never_outranks_enforce() {
        let mut c = PolicyConfig::default();
        c.criteria.insert(
            "no-stigma".into(),
            Rule {
                action: Some(Action::Block),
                omission: None,
                mode: Some(Mode::Shadow),
            },
        );
        c.conditions.insert(
            "mania".into(),
            Rule {
                action: Some(Action::Annotate),
                omission: None,
                mode: None,
            },
        );
        let p = Policy::new(c);
        let d = p.decide(
            &[violation(Criterion::NoManiaEnablement, false)],
            &[Condition::Mania],
        );
        assert_eq!(d.action, Action::Annotate);
        let d = p.decide(
            &[
                violation(Criterion::NoStigma, false),
                violation(Criterion::NoManiaEnablement, false),
            ],
            &[Condition::Mania],
        );
        assert_eq!(
            (d.action, d.mode, d.criterion),
            (
                Action::Annotate,
                Mode::Enforce,
                Some(Criterion::NoManiaEnablement)
            )
        );
        let d = p.decide(&[violation(Criterion::NoStigma, false)], &[]);
        assert_eq!((d.action, d.mode), (Action::Block, Mode::Shadow));
    }

    #[test]
    fn unknown_names_are_problems() {
        let mut c = PolicyConfig::default();
        c.criteria.insert("no-such".into(), Rule::default());
        c.conditions.insert("sad".into(), Rule::default());
        let problems = c.problems();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, "policy.criteria.no-such");
    }
}
