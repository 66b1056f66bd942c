//! The guard that serves traffic: per-tenant guards, swapped as a whole on hot reload.
//!
//! [`LiveGuard`] implements [`Guard`] by choosing, per request, the tenant's guard from the
//! current [`GuardSet`] and keeping that choice (an `Arc`) in the request's state, so a request
//! finishes on the rules and policy it started with even when a reload swaps the set mid-flight.
//!
//! Tenants (`[tenancy]`): a request belongs to a tenant when the SHA-256 of its bearer token is one
//! of the tenant's `api_key_sha256` digests (keys are never stored), or, when `[tenancy] header`
//! is set, when that header names a configured tenant. Anything else is the `default` tenant.
//! Tenant label values are the configured names plus `default`: a closed set.
//!
//! Reload ([`Reloader`]): on SIGHUP and when the config file or the rules folder changes (polled),
//! the new configuration and rule packs are compiled and checked first; if anything is invalid
//! the old set stays in force, the error is logged with `file:line:col`, and
//! `careguard_rules_reload_total{result="error"}` counts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::guard::policy::{HoldBack, Mode, PolicyConfig, Preemption, Rule};
use crate::hooks::{
    ChatRequest, ChunkMeta, EndAction, ExchangeSummary, Guard, HookState, JsonBody, RequestOutcome,
    ResponseAction, ResponseExchange, StreamAction, StreamEnd, StreamEvent, StreamGuard,
    UpstreamReply,
};

/// Overrides of the global `[policy]` for one tenant; unset keys inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// Enforce or shadow.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The tenant's default locale.
    #[serde(default)]
    pub default_locale: Option<String>,
    /// Hold-back for risky streams.
    #[serde(default)]
    pub hold_back: Option<HoldBack>,
    /// Tail window for other streams.
    #[serde(default)]
    pub stream_window_bytes: Option<usize>,
    /// Crisis pre-emption.
    #[serde(default)]
    pub crisis_preemption: Option<Preemption>,
    /// Per-criterion rules, merged over the global ones key by key.
    #[serde(default)]
    pub criteria: BTreeMap<String, Rule>,
    /// Per-condition rules, merged over the global ones key by key.
    #[serde(default)]
    pub conditions: BTreeMap<String, Rule>,
}

/// One tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Hex SHA-256 digests of the tenant's API keys (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    /// Policy overrides.
    #[serde(default)]
    pub policy: TenantPolicy,
}

/// The `[tenancy]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// A request header that may name the tenant (only configured names count). Trust it only
    /// behind your own gateway.
    pub header: Option<String>,
    /// Tenants by name (`[tenancy.tenants.acme]`).
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// The name of the tenant for requests that match none.
pub const DEFAULT_TENANT: &str = "default";

impl TenancyConfig {
    /// Checks names, digests and the header; returns `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(h) = &self.header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push(("header".into(), format!("{h:?} is not a valid header name")));
            }
        }
        for (name, t) in &self.tenants {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok || name == DEFAULT_TENANT {
                out.push((
                    format!("tenants.{name}"),
                    "tenant names are 1-64 of [A-Za-z0-9._-] and not \"default\"".into(),
                ));
            }
            for d in &t.api_key_sha256 {
                if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    out.push((
                        format!("tenants.{name}.api_key_sha256"),
                        "each entry is a 64-digit hex SHA-256 digest of a key, not a key".into(),
                    ));
                }
            }
            let merged = merge(&PolicyConfig::default(), &t.policy);
            for (key, message) in merged.problems() {
                out.push((format!("tenants.{name}.{key}"), message));
            }
        }
        out
    }
}

/// The global policy with a tenant's overrides applied.
pub fn merge(global: &PolicyConfig, t: &TenantPolicy) -> PolicyConfig {
    let mut p = global.clone();
    if let Some(m) = t.mode {
        p.mode = m;
    }
    if let Some(l) = &t.default_locale {
        p.default_locale = l.clone();
    }
    if let Some(h) = t.hold_back {
        p.hold_back = h;
    }
    if let Some(w) = t.stream_window_bytes {
        p.stream_window_bytes = w;
    }
    if let Some(c) = t.crisis_preemption {
        p.crisis_preemption = c;
    }
    p.criteria.extend(t.criteria.clone());
    p.conditions.extend(t.conditions.clone());
    p
}

/// The guards in force: one per tenant, plus how requests are routed to them.
pub struct GuardSet {
    default: Arc<dyn Guard>,
    tenants: BTreeMap<String, Arc<dyn Guard>>,
    keys: BTreeMap<[u8; 32], String>,
    header: Option<http::HeaderName>,
    /// The rule-pack version of this set.
    pub version: String,
}

impl GuardSet {
    /// A set with one guard for everyone.
    pub fn single(guard: Arc<dyn Guard>, version: String) -> Self {
        Self {
            default: guard,
            tenants: BTreeMap::new(),
            keys: BTreeMap::new(),
            header: None,
            version,
        }
    }

    /// A set routing requests to `tenants` by key digest or header, else to `default`.
    pub fn new(
        default: Arc<dyn Guard>,
        tenants: BTreeMap<String, Arc<dyn Guard>>,
        tenancy: &TenancyConfig,
        version: String,
    ) -> Self {
        let mut keys = BTreeMap::new();
        for (name, t) in &tenancy.tenants {
            for d in &t.api_key_sha256 {
                if let Ok(bytes) = hex::decode(d) {
                    if let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice()) {
                        keys.insert(digest, name.clone());
                    }
                }
            }
        }
        Self {
            default,
            tenants,
            keys,
            header: tenancy
                .header
                .as_ref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
            version,
        }
    }

    /// The tenant of a request and its guard.
    fn route(&self, headers: &http::HeaderMap) -> (String, Arc<dyn Guard>) {
        if !self.keys.is_empty() {
            if let Some(token) = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
            {
                let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                if let Some(name) = self.keys.get(&digest) {
                    if let Some(g) = self.tenants.get(name) {
                        return (name.clone(), Arc::clone(g));
                    }
                }
            }
        }
        if let Some(h) = &self.header {
            if let Some(name) = headers.get(h).and_then(|v| v.to_str().ok()) {
                if let Some(g) = self.tenants.get(name.trim()) {
                    return (name.trim().to_string(), Arc::clone(g));
                }
            }
        }
        (DEFAULT_TENANT.to_string(), Arc::clone(&self.default))
    }

    /// Every tenant name (the closed set of label values), `default` included.
    pub fn tenant_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_TENANT.to_string())
            .chain(self.tenants.keys().cloned())
            .collect()
    }
}

/// The state a [`LiveGuard`] keeps per request: the guard chosen and that guard's own state.
struct Routed {
    guard: Arc<dyn Guard>,
    inner: HookState,
}

/// The guard handed to the server: routes to tenants, swappable on reload.
pub struct LiveGuard {
    current: RwLock<Arc<GuardSet>>,
    metrics: crate::metrics::GuardMetrics,
}

impl LiveGuard {
    /// Serves `set` until [`LiveGuard::swap`] replaces it.
    pub fn new(set: GuardSet, metrics: crate::metrics::GuardMetrics) -> Self {
        metrics.rules_loaded(&set.version);
        Self {
            current: RwLock::new(Arc::new(set)),
            metrics,
        }
    }

    /// Replaces the set; requests already in flight finish on the old one.
    pub fn swap(&self, set: GuardSet) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        self.metrics.rules_swapped(&current.version, &set.version);
        *current = Arc::new(set);
    }

    /// The set in force.
    pub fn current(&self) -> Arc<GuardSet> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Guard for LiveGuard {
    fn on_request(&self, request: &mut ChatRequest<'_>) -> RequestOutcome {
        let set = self.current();
        let (tenant, guard) = set.route(request.headers);
        self.metrics.tenant_exchange(&tenant);
        let mut outcome = guard.on_request(request);
        let inner = std::mem::replace(&mut outcome.state, Box::new(()));
        outcome.state = Box::new(Routed { guard, inner });
        outcome
    }

    fn on_response(&self, exchange: &mut ResponseExchange<'_>) -> ResponseAction {
        let Some(routed) = exchange.state.downcast_mut::<Routed>() else {
            return ResponseAction::Pass;
        };
        let mut inner = ResponseExchange {
            request_id: exchange.request_id,
            attempt: exchange.attempt,
            request: exchange.request,
            reply: exchange.reply,
            state: &mut routed.inner,
            response_headers: exchange.response_headers,
        };
        routed.guard.on_response(&mut inner)
    }

    fn on_stream(&self, state: &mut HookState, request: &JsonBody) -> Option<Box<dyn StreamGuard>> {
        let routed = state.downcast_mut::<Routed>()?;
        let inner = routed.guard.on_stream(&mut routed.inner, request)?;
        Some(Box::new(RoutedStream { inner }))
    }

    fn on_complete(&self, mut summary: ExchangeSummary) {
        let state = std::mem::replace(&mut summary.state, Box::new(()));
        let Ok(routed) = state.downcast::<Routed>() else {
            return;
        };
        let Routed { guard, inner } = *routed;
        summary.state = inner;
        guard.on_complete(summary);
    }
}

/// Unwraps the routed state for the tenant guard's stream guard.
struct RoutedStream {
    inner: Box<dyn StreamGuard>,
}

fn inner_state(state: &mut HookState) -> &mut HookState {
    if state.is::<Routed>() {
        &mut state.downcast_mut::<Routed>().expect("checked").inner
    } else {
        state
    }
}

impl StreamGuard for RoutedStream {
    fn on_event(&mut self, state: &mut HookState, event: &StreamEvent<'_>) -> StreamAction {
        self.inner.on_event(inner_state(state), event)
    }

    fn on_flush(&mut self, state: &mut HookState, meta: &ChunkMeta) -> StreamAction {
        self.inner.on_flush(inner_state(state), meta)
    }

    fn on_end(&mut self, state: &mut HookState, end: StreamEnd, meta: &ChunkMeta) -> EndAction {
        self.inner.on_end(inner_state(state), end, meta)
    }

    fn on_reask(
        &mut self,
        state: &mut HookState,
        attempt: u32,
        reply: UpstreamReply<'_>,
        meta: &ChunkMeta,
    ) -> EndAction {
        self.inner
            .on_reask(inner_state(state), attempt, reply, meta)
    }
}

/// Builds a guard set from a configuration, or says why it cannot.
pub type BuildFn = Box<dyn Fn(&Config) -> Result<GuardSet, String> + Send + Sync>;

/// Rebuilds the guard set from the configuration file and rules folder on SIGHUP and on change.
pub struct Reloader {
    /// The configuration file, if `serve` was given one.
    pub config_path: Option<PathBuf>,
    /// Command-line overrides applied to every reloaded configuration.
    pub apply_overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
    /// Builds a guard set from a configuration (the server's `build_guard_set`).
    pub build: BuildFn,
    /// The guard to swap.
    pub live: Arc<LiveGuard>,
    /// How often files are polled for changes.
    pub poll: Duration,
}

impl Reloader {
    /// Loads, checks and swaps in a new set; on any error keeps the old one. Returns the error.
    pub fn reload(&self) -> Result<String, String> {
        let result = self.try_build();
        match &result {
            Ok(version) => {
                tracing::info!(version = %version, "rules and policy reloaded");
                self.live.metrics.reload(true);
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the rules and policy in force:\n{e}");
                self.live.metrics.reload(false);
            }
        }
        result
    }

    /// [`Self::reload`] on the blocking pool: compiling the packs takes about a second of CPU,
    /// and on the request threads (the only one, with `workers = 1`) it would stall every
    /// exchange in flight for that long. Requests keep the old set until the swap.
    /// The blocking job runs to its end even if this future is dropped (a reload that started
    /// still swaps the set in).
    async fn reload_off_thread(self: Arc<Self>) {
        let live = Arc::clone(&self.live);
        if let Err(e) = tokio::task::spawn_blocking(move || self.reload()).await {
            tracing::error!(error = %e, "reload task failed, keeping the rules and policy in force");
            live.metrics.reload(false);
        }
    }

    fn try_build(&self) -> Result<String, String> {
        let mut config = match &self.config_path {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        (self.apply_overrides)(&mut config);
        let set = (self.build)(&config)?;
        let version = set.version.clone();
        self.live.swap(set);
        // The old set is freed once the last request using it ends; what is free by now goes
        // back to the system (see `crate::memory`).
        crate::memory::release_free_heap();
        Ok(version)
    }

    fn watched(&self, config: &Config) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        if let Some(dir) = &config.rules.dir {
            paths.push(dir.clone());
        }
        paths
    }

    /// What is on disk now, for [`Reloader::run`] to compare against.
    pub fn snapshot(&self, config: &Config) -> Snapshot {
        let watched = self.watched(config);
        let stamp = fingerprint(&watched);
        Snapshot { watched, stamp }
    }

    /// Runs until the task is dropped: reloads on SIGHUP and when the files of `snapshot` change.
    pub async fn run(self: Arc<Self>, snapshot: Snapshot) {
        let Snapshot { watched, mut stamp } = snapshot;
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.poll, self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hup_recv => {
                    tracing::info!("SIGHUP: reloading");
                    Arc::clone(&self).reload_off_thread().await;
                    stamp = fingerprint(&watched);
                }
                _ = tick.tick() => {
                    let now = fingerprint(&watched);
                    if now != stamp {
                        stamp = now;
                        tracing::info!("configuration or rules changed on disk: reloading");
                        Arc::clone(&self).reload_off_thread().await;
                    }
                }
            }
        }
    }
}

/// The watched files and their state when the snapshot was taken.
#[derive(Debug)]
pub struct Snapshot {
    watched: Vec<PathBuf>,
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

/// Modification times and sizes of every file under `paths`, for change detection.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(p) {
                    let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                    children.sort();
                    for c in children {
                        walk(&c, out);
                    }
                }
            }
            Ok(m) => out.push((p.to_path_buf(), m.modified().ok(), m.len())),
            Err(_) => out.push((p.to_path_buf(), None, 0)),
        }
    }
    for p in paths {
        walk(p, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::policy::Action;

    #[test]
    fn tenant_overrides_merge_key_by_key() {
        let mut global = PolicyConfig::default();
        global.criteria.insert(
            "no-stigma".into(),
            Rule {
                action: Some(Action::Replace),
                omission: None,
                mode: None,
            },
        );
        let mut t = TenantPolicy {
            mode: Some(Mode::Shadow),
            default_locale: Some("en-GB".into()),
            ..Default::default()
        };
        t.criteria.insert(
            "no-mania-enablement".into(),
            Rule {
                action: Some(Action::Reask),
                omission: None,
                mode: None,
            },
        );
        let merged = merge(&global, &t);
        assert_eq!(merged.mode, Mode::Shadow);
        assert_eq!(merged.default_locale, "en-GB");
        assert_eq!(merged.criteria.len(), 2);
    }

    #[test]
    fn keys_are_digests_not_keys() {
        let mut c = TenancyConfig::default();
        c.tenants.insert(
            "acme".into(),
            TenantConfig {
                api_key_sha256: vec!["sk-live-123".into()],
                policy: TenantPolicy::default(),
            },
        );
        c.tenants.insert("default".into(), TenantConfig::default());
        let problems = c.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
