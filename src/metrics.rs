//! Every metric careguard exports, with its name and its closed set of label values.
//!
//! A [`Metrics`] owns its own [`prometheus::Registry`] (one per server, so several servers in one
//! process do not clash). Label children are resolved once at start-up, so recording on the hot
//! path is an atomic add. The engine registers its own metrics on [`Metrics::registry`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The route a request was classified to (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/chat/completions`: guarded.
    ChatCompletions,
    /// `POST /v1/completions`: passed through.
    Completions,
    /// `GET /v1/models` and `/v1/models/*`: passed through.
    Models,
    /// `/v1/responses`: unguarded conversation route.
    Responses,
    /// `/v1/assistants`: unguarded conversation route.
    Assistants,
    /// `/v1/threads`: unguarded conversation route.
    Threads,
    /// `/v1/realtime`: unguarded conversation route.
    Realtime,
    /// Any other `/v1/*` path: passed through.
    OtherV1,
    /// Outside `/v1/`: 404.
    NotFound,
}

impl Route {
    /// Every route, in label order.
    pub const ALL: [Route; 9] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Models,
        Route::Responses,
        Route::Assistants,
        Route::Threads,
        Route::Realtime,
        Route::OtherV1,
        Route::NotFound,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Models => "models",
            Route::Responses => "responses",
            Route::Assistants => "assistants",
            Route::Threads => "threads",
            Route::Realtime => "realtime",
            Route::OtherV1 => "other_v1",
            Route::NotFound => "not_found",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Status class of a response (the `status_class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx and 3xx.
    Other,
    /// 2xx.
    Success,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
}

impl StatusClass {
    const ALL: [StatusClass; 4] = [
        StatusClass::Other,
        StatusClass::Success,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// Classifies a status code.
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => StatusClass::Success,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Other => "other",
            StatusClass::Success => "2xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

/// Why an upstream exchange failed (the `kind` label of `careguard_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, DNS, TLS).
    Unreachable,
    /// The connect timeout fired.
    ConnectTimeout,
    /// No response headers or first body byte within the first-byte timeout.
    FirstByteTimeout,
    /// Silence between two body chunks exceeded the chunk timeout.
    ChunkTimeout,
    /// The connection broke or spoke bad HTTP.
    Protocol,
    /// The SSE stream or JSON body could not be parsed.
    Malformed,
    /// The stream ended without `data: [DONE]`.
    Truncated,
    /// The upstream answered with a 4xx or 5xx status (relayed as-is).
    Status,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 8] = [
        UpstreamErrorKind::Unreachable,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::FirstByteTimeout,
        UpstreamErrorKind::ChunkTimeout,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Malformed,
        UpstreamErrorKind::Truncated,
        UpstreamErrorKind::Status,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Unreachable => "unreachable",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::FirstByteTimeout => "first_byte_timeout",
            UpstreamErrorKind::ChunkTimeout => "chunk_timeout",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Malformed => "malformed",
            UpstreamErrorKind::Truncated => "truncated",
            UpstreamErrorKind::Status => "status",
        }
    }
}

/// careguard's proxy metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    requests: Vec<[IntCounter; 4]>,
    /// `careguard_upstream_duration_seconds`: from sending a request upstream to its last byte.
    pub upstream_duration: Histogram,
    /// `careguard_overhead_seconds`: time spent inside careguard, upstream waits excluded.
    pub overhead: Histogram,
    upstream_errors: Vec<IntCounter>,
    /// `careguard_streams_in_flight`: SSE responses currently being relayed.
    pub streams_in_flight: IntGauge,
    unguarded: Vec<IntCounter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "careguard_requests_total",
                "Requests answered, by route and status class.",
            ),
            &["route", "status_class"],
        )?;
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "careguard_upstream_duration_seconds",
                "Time from sending a request upstream to receiving its last byte.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0,
            ]),
        )?;
        let overhead = Histogram::with_opts(
            HistogramOpts::new(
                "careguard_overhead_seconds",
                "Time spent in careguard per request, excluding waits on the upstream.",
            )
            .buckets(vec![
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.0025, 0.005, 0.01, 0.025, 0.1,
            ]),
        )?;
        let errors_vec = IntCounterVec::new(
            Opts::new(
                "careguard_upstream_errors_total",
                "Failed upstream exchanges, by kind.",
            ),
            &["kind"],
        )?;
        let streams_in_flight = IntGauge::new(
            "careguard_streams_in_flight",
            "SSE responses currently being relayed.",
        )?;
        let unguarded_vec = IntCounterVec::new(
            Opts::new(
                "careguard_unguarded_requests_total",
                "Requests let through unguarded on conversation routes careguard does not guard yet.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(errors_vec.clone()))?;
        registry.register(Box::new(streams_in_flight.clone()))?;
        registry.register(Box::new(unguarded_vec.clone()))?;
        let requests = Route::ALL
            .iter()
            .map(|r| {
                StatusClass::ALL.map(|c| requests_vec.with_label_values(&[r.as_str(), c.as_str()]))
            })
            .collect();
        let upstream_errors = UpstreamErrorKind::ALL
            .iter()
            .map(|k| errors_vec.with_label_values(&[k.as_str()]))
            .collect();
        let unguarded = Route::ALL
            .iter()
            .map(|r| unguarded_vec.with_label_values(&[r.as_str()]))
            .collect();
        Ok(Self {
            registry,
            requests,
            upstream_duration,
            overhead,
            upstream_errors,
            streams_in_flight,
            unguarded,
        })
    }

    /// The registry, for the engine (and others) to register more metrics on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request.
    pub fn request(&self, route: Route, status: http::StatusCode) {
        self.requests[route.index()][StatusClass::of(status) as usize].inc();
    }

    /// Counts one failed upstream exchange.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Counts one request let through on an unguarded conversation route.
    pub fn unguarded(&self, route: Route) {
        self.unguarded[route.index()].inc();
    }

    /// Renders every registered metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Outcome of a re-ask (the `outcome` label of `careguard_reask_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaskOutcome {
    /// The new reply passed.
    Succeeded,
    /// The new reply still broke a criterion: replaced.
    StillViolating,
    /// The re-ask call failed: replaced.
    Failed,
    /// The policy wanted another re-ask but the attempts were used up: replaced.
    Exhausted,
}

impl ReaskOutcome {
    /// Every outcome, in label order.
    pub const ALL: [ReaskOutcome; 4] = [
        ReaskOutcome::Succeeded,
        ReaskOutcome::StillViolating,
        ReaskOutcome::Failed,
        ReaskOutcome::Exhausted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaskOutcome::Succeeded => "succeeded",
            ReaskOutcome::StillViolating => "still_violating",
            ReaskOutcome::Failed => "failed",
            ReaskOutcome::Exhausted => "exhausted",
        }
    }
}

/// The guard's metrics: assessments, violations, actions, referrals, re-asks, check time.
/// Label values come from the engine's closed enums and the crisis-line table's regions.
#[derive(Clone)]
pub struct GuardMetrics {
    assessments: IntCounterVec,
    crisis: IntCounter,
    violations: IntCounterVec,
    actions: IntCounterVec,
    referrals: IntCounterVec,
    reasks: IntCounterVec,
    check_duration: Histogram,
    reloads: IntCounterVec,
    rules_info: prometheus::IntGaugeVec,
    tenants: IntCounterVec,
}

impl std::fmt::Debug for GuardMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardMetrics").finish_non_exhaustive()
    }
}

impl GuardMetrics {
    /// Creates the guard's metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        use crate::engine::{Condition, Criterion, Level};
        use crate::guard::policy::{Action, Mode};
        let assessments = IntCounterVec::new(
            Opts::new(
                "careguard_assessments_total",
                "Conversations showing a condition, by condition and level.",
            ),
            &["condition", "level"],
        )?;
        let crisis = IntCounter::new(
            "careguard_crisis_total",
            "Conversations assessed as a crisis (safety handling and a crisis referral due).",
        )?;
        let violations = IntCounterVec::new(
            Opts::new(
                "careguard_violations_total",
                "Model replies that broke a criterion, by criterion.",
            ),
            &["criterion"],
        )?;
        let actions = IntCounterVec::new(
            Opts::new(
                "careguard_actions_total",
                "Decisions about model replies, by action, the criterion behind it (none when nothing was violated) and mode.",
            ),
            &["action", "criterion", "mode"],
        )?;
        let referrals = IntCounterVec::new(
            Opts::new(
                "careguard_crisis_referrals_total",
                "Replies delivered with a crisis line in a crisis conversation, by the crisis line's region.",
            ),
            &["locale"],
        )?;
        let reasks = IntCounterVec::new(
            Opts::new("careguard_reask_total", "Re-asks of the model, by outcome."),
            &["outcome"],
        )?;
        let check_duration = Histogram::with_opts(
            HistogramOpts::new(
                "careguard_check_duration_seconds",
                "Time the engine spends classifying a conversation or checking a reply.",
            )
            .buckets(vec![
                0.000_001,
                0.000_002_5,
                0.000_005,
                0.000_01,
                0.000_025,
                0.000_05,
                0.000_1,
                0.000_25,
                0.000_5,
                0.001,
                0.005,
            ]),
        )?;
        registry.register(Box::new(assessments.clone()))?;
        registry.register(Box::new(crisis.clone()))?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(actions.clone()))?;
        registry.register(Box::new(referrals.clone()))?;
        registry.register(Box::new(reasks.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "careguard_rules_reload_total",
                "Reloads of rules and policy (SIGHUP or file change), by result: success or error (the old set stays in force).",
            ),
            &["result"],
        )?;
        let rules_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "careguard_rules_info",
                "The rule-pack version in force (a content hash of rules/): 1 for the current version.",
            ),
            &["version"],
        )?;
        let tenants = IntCounterVec::new(
            Opts::new(
                "careguard_tenant_exchanges_total",
                "Guarded chat exchanges by tenant (configured tenants and \"default\").",
            ),
            &["tenant"],
        )?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(rules_info.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        for r in ["success", "error"] {
            reloads.with_label_values(&[r]);
        }
        // Touch every closed label set once so dashboards see zeros, not gaps.
        for c in Criterion::ALL {
            violations.with_label_values(&[c.as_str()]);
        }
        for o in ReaskOutcome::ALL {
            reasks.with_label_values(&[o.as_str()]);
        }
        for m in [Mode::Enforce, Mode::Shadow] {
            actions.with_label_values(&[Action::Allow.as_str(), "none", m.as_str()]);
        }
        let _ = (Condition::ALL, Level::ALL);
        Ok(Self {
            assessments,
            crisis,
            violations,
            actions,
            referrals,
            reasks,
            check_duration,
            reloads,
            rules_info,
            tenants,
        })
    }

    /// Marks `version` as the rule-pack version in force.
    pub fn rules_loaded(&self, version: &str) {
        self.rules_info.with_label_values(&[version]).set(1);
    }

    /// Moves the version in force from `old` to `new`.
    pub fn rules_swapped(&self, old: &str, new: &str) {
        if old != new {
            let _ = self.rules_info.remove_label_values(&[old]);
        }
        self.rules_info.with_label_values(&[new]).set(1);
    }

    /// Counts one reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
    }

    /// Counts one exchange of `tenant` (a configured tenant name or "default": a closed set).
    pub fn tenant_exchange(&self, tenant: &str) {
        self.tenants.with_label_values(&[tenant]).inc();
    }

    /// Counts the conditions of one assessment and whether it is a crisis.
    pub fn assessed(&self, assessment: &crate::engine::Assessment) {
        for c in &assessment.conditions {
            self.assessments
                .with_label_values(&[c.condition.as_str(), c.level.as_str()])
                .inc();
        }
        if assessment.crisis {
            self.crisis.inc();
        }
    }

    /// Counts one violation.
    pub fn violation(&self, criterion: crate::engine::Criterion) {
        self.violations
            .with_label_values(&[criterion.as_str()])
            .inc();
    }

    /// Counts one decision.
    pub fn action(
        &self,
        action: crate::guard::policy::Action,
        criterion: Option<crate::engine::Criterion>,
        mode: crate::guard::policy::Mode,
    ) {
        let criterion = criterion.map_or("none", |c| c.as_str());
        self.actions
            .with_label_values(&[action.as_str(), criterion, mode.as_str()])
            .inc();
    }

    /// Counts one crisis referral shown; `region` comes from the crisis-line table (a closed set).
    pub fn referral(&self, region: &str) {
        self.referrals.with_label_values(&[region]).inc();
    }

    /// Counts one re-ask outcome.
    pub fn reask(&self, outcome: ReaskOutcome) {
        self.reasks.with_label_values(&[outcome.as_str()]).inc();
    }

    /// Observes the time of one classify or check.
    pub fn check_duration(&self, elapsed: std::time::Duration) {
        self.check_duration.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_on_the_right_labels() {
        let m = Metrics::new().unwrap();
        m.request(Route::ChatCompletions, http::StatusCode::BAD_GATEWAY);
        m.upstream_error(UpstreamErrorKind::ChunkTimeout);
        m.unguarded(Route::Threads);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "careguard_requests_total{route=\"chat_completions\",status_class=\"5xx\"} 1"
        ));
        assert!(text.contains("careguard_upstream_errors_total{kind=\"chunk_timeout\"} 1"));
        assert!(text.contains("careguard_unguarded_requests_total{route=\"threads\"} 1"));
    }
}
