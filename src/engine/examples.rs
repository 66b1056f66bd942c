//! `careguard rules test` and `careguard rules lint`: every rule carries its own examples.

use super::classify::{raw_hits, scan_text};
use super::criteria::features;
use super::normalize::{normalize, Slang};
use super::pack::{build_regex, RuleKind, RuleSet};

/// One failed example or lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where the rule is defined (`file:line:col`).
    pub location: String,
    /// The rule id.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: rule {:?}: {}",
            self.location, self.rule, self.message
        )
    }
}

/// Whether rule `index` fires on `text`, the way the engine would use it (after negation and
/// context checks for user-side rules).
pub fn fires(rules: &RuleSet, index: usize, text: &str) -> bool {
    let rule = &rules.rules()[index];
    match rule.kind {
        RuleKind::Reply(_) => features(rules, text)
            .all()
            .iter()
            .any(|(_, e)| *e.rule == *rule.id),
        RuleKind::Context(_) => raw_hits(rules, text, false).contains(&index),
        _ => scan_text(rules, text).iter().any(|(r, _)| *r == index),
    }
}

/// Runs every rule's examples; returns the failures and the number of examples run.
pub fn test(rules: &RuleSet) -> (Vec<Finding>, usize) {
    let mut failures = Vec::new();
    let mut run = 0;
    for (index, rule) in rules.rules().iter().enumerate() {
        for text in &rule.must_match {
            run += 1;
            if !fires(rules, index, text) {
                failures.push(Finding {
                    location: rule.location.clone(),
                    rule: rule.id.to_string(),
                    message: format!("does not match its example {text:?}"),
                });
            }
        }
        for text in &rule.near_miss {
            run += 1;
            if fires(rules, index, text) {
                failures.push(Finding {
                    location: rule.location.clone(),
                    rule: rule.id.to_string(),
                    message: format!("matches its near miss {text:?}"),
                });
            }
        }
    }
    (failures, run)
}

/// Flags rules without both kinds of examples and patterns or terms that none of the rule's
/// examples exercise (dead patterns).
pub fn lint(rules: &RuleSet) -> Vec<Finding> {
    let mut out = Vec::new();
    let plain = Slang::new(&[]);
    for rule in rules.rules() {
        let mut flag = |message: String| {
            out.push(Finding {
                location: rule.location.clone(),
                rule: rule.id.to_string(),
                message,
            })
        };
        if rule.must_match.is_empty() {
            flag("no example it must match (`match`)".into());
        }
        if rule.near_miss.is_empty() {
            flag("no near miss it must not match (`near_miss`)".into());
        }
        let examples: Vec<String> = rule
            .must_match
            .iter()
            .map(|t| normalize(t, rules.slang()).text)
            .collect();
        for pattern in &rule.patterns {
            let Ok(re) = build_regex(pattern) else {
                continue;
            };
            if !examples.iter().any(|e| re.is_match(e.as_bytes())) {
                flag(format!("dead pattern: no example matches {pattern:?}"));
            }
        }
        for term in &rule.terms {
            let term = normalize(term, &plain).text;
            let bounded = format!(r"\b{}\b", regex::escape(&term));
            let Ok(re) = build_regex(&bounded) else {
                continue;
            };
            if !examples.iter().any(|e| re.is_match(e.as_bytes())) {
                flag(format!("dead term: no example contains {term:?}"));
            }
        }
    }
    out
}
