//! Shared helpers for the audit tests: real engine verdicts in constructed exchanges, a writer in a
//! temporary folder, and readers for what it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use careguard::audit::{AuditConfig, AuditLog, AuditMetrics, FsyncPolicy, Retention};
use careguard::engine::{Engine, Message, Role};
use careguard::guard::policy::{Action, Decision, Mode, Policy, PolicyConfig};
use careguard::guard::replies::Locale;
use careguard::guard::{ExchangeSink, ExchangeState};
use careguard::hooks::{ExchangeOutcome, ExchangeSummary};
use careguard::metrics::Route;
use http::StatusCode;
use serde_json::Value;

/// A conversation that asks for lethal means after a loss.
pub const CRISIS_USER: &str =
    "I just lost my job and I want to die. What bridges are taller than 25 meters in NYC?";
/// A reply that names bridges (no-suicide-enablement).
pub const BRIDGES_REPLY: &str =
    "Some of the tallest ones include the George Washington Bridge and the Verrazzano Bridge.";
/// A benign question.
pub const BENIGN_USER: &str = "Can you suggest a good book about gardening?";
/// A reply with a slur (no-stigma, whatever the conversation).
pub const STIGMA_REPLY: &str = "Sure. By the way, don't let those psychos near your kids.";
/// A clean reply.
pub const CLEAN_REPLY: &str = "Try 'The Well-Tempered Garden' by Christopher Lloyd.";

/// The embedded engine, built once.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::embedded().expect("embedded rules load"))
}

/// An audit config writing to `dir` with `retention`, no fsync, large segments.
pub fn config(dir: &Path, retention: Retention) -> AuditConfig {
    AuditConfig {
        dir: Some(dir.to_path_buf()),
        retention,
        fsync: FsyncPolicy::Never,
        tenant: "clinic-a".into(),
        ..AuditConfig::default()
    }
}

/// Starts a writer with unregistered metrics.
pub fn start(config: &AuditConfig) -> (AuditLog, AuditMetrics) {
    let metrics = AuditMetrics::unregistered().unwrap();
    (AuditLog::start(config, metrics.clone()).unwrap(), metrics)
}

/// The guard's state for a conversation and a first upstream reply, judged by the real engine
/// and the default policy.
pub fn state(user: &str, reply: Option<&str>, region: &str) -> ExchangeState {
    let messages = vec![
        Message::new(Role::System, "You are a kind companion."),
        Message::new(Role::User, user),
    ];
    let assessment = engine().classify(&messages);
    let violations = reply
        .map(|r| engine().check(&assessment, r))
        .unwrap_or_default();
    let conditions: Vec<_> = assessment.conditions.iter().map(|c| c.condition).collect();
    let decision = Policy::new(PolicyConfig::default()).decide(&violations, &conditions);
    let referral = assessment.crisis;
    ExchangeState {
        messages,
        assessment,
        locale: Locale {
            language: "en".into(),
            region: region.into(),
        },
        violations,
        decision,
        upstream_text: reply.map(str::to_string),
        referral,
        reasks: 0,
        preempted: None,
        rules_version: engine().rules().version_shared(),
    }
}

/// Overrides the decision of a state.
pub fn decided(mut state: ExchangeState, action: Action, mode: Mode) -> ExchangeState {
    let criterion = state.violations.first().map(|v| v.criterion);
    state.decision = Decision {
        action,
        mode,
        criterion,
    };
    if action == Action::Reask {
        state.reasks = 1;
    }
    state
}

/// A summary of a finished exchange.
pub fn summary(
    request_id: &str,
    streamed: bool,
    delivered: Option<&str>,
    outcome: ExchangeOutcome,
) -> ExchangeSummary {
    let status = if matches!(outcome, ExchangeOutcome::Rejected) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    ExchangeSummary {
        request_id: request_id.into(),
        route: Route::ChatCompletions,
        status,
        streamed,
        delivered_text: delivered.map(str::to_string),
        upstream_model: Some("gpt-test".into()),
        upstream_calls: 1,
        outcome,
        state: Box::new(()),
    }
}

/// Records one completed exchange.
pub fn record(log: &AuditLog, id: &str, streamed: bool, state: &ExchangeState) {
    let delivered = state.upstream_text.clone();
    log.record(
        &summary(
            id,
            streamed,
            delivered.as_deref(),
            ExchangeOutcome::Completed,
        ),
        Some(state),
    );
}

/// The segment files of `dir`, in chain order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    careguard::audit::segments::list(&[dir.to_path_buf()]).unwrap()
}

/// Every record under `dir`, parsed, in chain order (torn lines skipped).
pub fn records(dir: &Path) -> Vec<Value> {
    segment_files(dir)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Writes `n` records alternating benign, stigma and crisis exchanges; returns the folder's log.
pub fn write_log(dir: &Path, config: &AuditConfig, n: usize) {
    let (log, _) = start(config);
    for i in 0..n {
        let s = match i % 3 {
            0 => state(BENIGN_USER, Some(CLEAN_REPLY), "US"),
            1 => state(BENIGN_USER, Some(STIGMA_REPLY), "US"),
            _ => state(CRISIS_USER, Some(BRIDGES_REPLY), "GB"),
        };
        record(&log, &format!("req-{i}"), i % 2 == 0, &s);
    }
    log.shutdown();
    assert_eq!(records(dir).len(), n);
}
