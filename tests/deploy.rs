//! deploy/ speaks careguard's language: the dashboard and the alert rules use only metrics (and
//! labels) that careguard exports, the containers and manifests use only flags the binary has, and
//! the Kubernetes configuration validates. `bash deploy/check.sh` checks the files' own formats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use careguard::engine::{Assessment, Condition, ConditionFinding, Level};
use prometheus::proto::MetricType;
use regex::Regex;

/// Labels Prometheus adds to every scraped series (compose: job, instance; Kubernetes: the rest).
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
    "endpoint",
];

/// (metric, label) pairs whose every value careguard creates at start-up, so a label value the
/// dashboard or an alert matches on must be one of them (a typo like `status_class="5XX"` fails).
const CLOSED_AT_START: &[(&str, &str)] = &[
    ("careguard_requests_total", "route"),
    ("careguard_requests_total", "status_class"),
    ("careguard_upstream_errors_total", "kind"),
    ("careguard_unguarded_requests_total", "route"),
    ("careguard_violations_total", "criterion"),
    ("careguard_reask_total", "outcome"),
    ("careguard_rules_reload_total", "result"),
];

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// One exported series name: its label names and the label values seen at start-up.
#[derive(Debug, Default)]
struct Series {
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// The series careguard's /metrics serves, built the way `serve` builds its registry. Label
/// vectors without children are left out of a scrape, so every family is first given one child
/// through the public API, as traffic would.
fn exported() -> BTreeMap<String, Series> {
    let metrics = careguard::metrics::Metrics::new().unwrap();
    let guard = careguard::metrics::GuardMetrics::new(metrics.registry()).unwrap();
    careguard::audit::AuditMetrics::register(metrics.registry()).unwrap();
    guard.assessed(&Assessment {
        crisis: true,
        conditions: vec![ConditionFinding {
            condition: Condition::ALL[0],
            level: Level::ALL[0],
            evidence: Vec::new(),
        }],
        requests: Vec::new(),
    });
    guard.referral("US");
    guard.rules_loaded("0123456789ab");
    guard.tenant_exchange("default");

    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for family in metrics.registry().gather() {
        let name = family.name().to_string();
        let suffixes: &[&str] = match family.get_field_type() {
            MetricType::HISTOGRAM => &["_bucket", "_sum", "_count"],
            MetricType::SUMMARY => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            let series = out.entry(format!("{name}{suffix}")).or_default();
            for m in family.get_metric() {
                for l in m.get_label() {
                    series
                        .labels
                        .entry(l.name().to_string())
                        .or_default()
                        .insert(l.value().to_string());
                }
            }
            if *suffix == "_bucket" {
                series.labels.entry("le".into()).or_default();
            }
        }
    }
    out
}

/// Every PromQL expression in the dashboard: panel targets, annotations, template queries.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/careguard.json")).expect("careguard.json is JSON");
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// The `expr:` of every alert in alerts.yaml, one-line or block (`expr: |`).
fn alert_exprs() -> Vec<String> {
    let text = read("prometheus/alerts.yaml");
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" && rest != ">" && rest != "|-" && rest != ">-" {
            out.push(rest.to_string());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && !next.starts_with(&format!("{indent}  ")) {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        out.push(block);
    }
    out
}

/// The problems of one expression: metrics careguard does not export, label names those metrics
/// lack, and values outside the closed label sets.
fn check_expr(expr: &str, exported: &BTreeMap<String, Series>, problems: &mut Vec<String>) {
    let metric = Regex::new(r"\bcareguard_[a-z0-9_]+").unwrap();
    let matcher = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)""#).unwrap();
    let grouping = Regex::new(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)").unwrap();
    let mut known_labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    for m in metric.find_iter(expr) {
        let name = m.as_str();
        let Some(series) = exported.get(name) else {
            problems.push(format!(
                "`{name}` is not exported by careguard (in `{expr}`)"
            ));
            continue;
        };
        known_labels.extend(series.labels.keys().map(String::as_str));
        let rest = &expr[m.end()..];
        let Some(body) = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(b, _)| b)
        else {
            continue;
        };
        for c in matcher.captures_iter(body) {
            let (label, op, value) = (&c[1], &c[2], &c[3]);
            if TARGET_LABELS.contains(&label) {
                continue;
            }
            let Some(values) = series.labels.get(label) else {
                problems.push(format!("`{name}` has no label `{label}` (in `{expr}`)"));
                continue;
            };
            let closed = CLOSED_AT_START.contains(&(name, label));
            if closed && (op == "=" || op == "!=") && !values.contains(value) {
                problems.push(format!(
                    "`{name}{{{label}=\"{value}\"}}`: careguard's values are {values:?} (in `{expr}`)"
                ));
            }
        }
    }
    for c in grouping.captures_iter(expr) {
        for label in c[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !known_labels.contains(label) {
                problems.push(format!(
                    "grouping label `{label}` is on none of the expression's metrics (in `{expr}`)"
                ));
            }
        }
    }
}

#[test]
fn the_dashboard_and_alerts_use_only_exported_metrics_and_labels() {
    let exported = exported();
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(
        dashboard.len() >= 20,
        "found only {} dashboard queries",
        dashboard.len()
    );
    assert!(
        alerts.len() >= 8,
        "found only {} alert expressions",
        alerts.len()
    );
    let mut problems = Vec::new();
    for expr in dashboard.iter().chain(&alerts) {
        check_expr(expr, &exported, &mut problems);
    }
    // Names in prose and in the alert unit tests' input series must be real too.
    let name = Regex::new(r"\bcareguard_[a-z0-9_]+").unwrap();
    for rel in [
        "grafana/careguard.json",
        "prometheus/alerts.yaml",
        "prometheus/alerts_test.yaml",
    ] {
        for m in name.find_iter(&read(rel)) {
            // Prose may name a histogram by its family name.
            let family = format!("{}_bucket", m.as_str());
            if !exported.contains_key(m.as_str()) && !exported.contains_key(&family) {
                problems.push(format!("deploy/{rel}: `{}` is not exported", m.as_str()));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_metric_check_catches_what_careguard_does_not_export() {
    let exported = exported();
    let mut problems = Vec::new();
    for expr in [
        "sum(rate(careguard_request_total[5m]))",
        "sum(rate(careguard_requests_total{status=\"5xx\"}[5m]))",
        "sum(rate(careguard_requests_total{status_class=\"5XX\"}[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(careguard_overhead_bucket[5m])))",
        "sum by (criterion) (rate(careguard_crisis_total[5m]))",
    ] {
        let before = problems.len();
        check_expr(expr, &exported, &mut problems);
        assert!(problems.len() > before, "no problem found in `{expr}`");
    }
    let mut none = Vec::new();
    check_expr(
        "histogram_quantile(0.99, sum by (le) (rate(careguard_overhead_seconds_bucket{instance=~\"$instance\"}[5m])))",
        &exported,
        &mut none,
    );
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn every_family_careguard_registers_is_on_the_dashboard() {
    let used: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|e| {
            Regex::new(r"\bcareguard_[a-z0-9_]+")
                .unwrap()
                .find_iter(e)
                .map(|m| m.as_str().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let exported = exported();
    let missing: Vec<&String> = exported
        .keys()
        .filter(|name| {
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            !used.iter().any(|u| u.starts_with(base))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "exported but on no dashboard panel: {missing:?}"
    );
}

#[test]
fn the_reload_metrics_exist() {
    let exported = exported();
    let reload = exported
        .get("careguard_rules_reload_total")
        .expect("careguard_rules_reload_total is exported");
    assert!(reload.labels.contains_key("result"));
    let info = exported
        .get("careguard_rules_info")
        .expect("careguard_rules_info is exported");
    assert!(info.labels.contains_key("version"));
}

/// The argv in the JSON array after `anchor` on one line (`CMD [...]`, `command: [...]`).
fn argv_after(text: &str, anchor: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(anchor))
        .unwrap_or_else(|| panic!("no line starting with {anchor:?}"));
    let json = line.trim_start()[anchor.len()..].trim();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{anchor} {json}: {e}"))
}

/// The block list under `args:` (replay-job.yaml).
fn block_args(text: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let Some(item) = line.trim_start().strip_prefix("- ") else {
            break;
        };
        out.push(item.trim().to_string());
    }
    out
}

#[test]
fn containers_use_only_flags_careguard_has() {
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let runs = [
        ("Dockerfile CMD", argv_after(&dockerfile, "CMD")),
        (
            "compose.yaml bot",
            argv_after(&read("compose.yaml"), "command:"),
        ),
        (
            "kubernetes/deployment.yaml",
            argv_after(&read("kubernetes/deployment.yaml"), "args:"),
        ),
        (
            "kubernetes/replay-job.yaml",
            block_args(&read("kubernetes/replay-job.yaml")),
        ),
    ];
    let mut problems = Vec::new();
    for (origin, argv) in &runs {
        assert!(argv.len() > 1, "{origin}: no arguments found");
        let output = Command::new(env!("CARGO_BIN_EXE_careguard"))
            .args([argv[0].as_str(), "--help"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{origin}: `careguard {} --help` failed",
            argv[0]
        );
        let help = String::from_utf8_lossy(&output.stdout);
        for flag in argv.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            let known =
                Regex::new(&format!(r"(?m)(^|[\s,]){}([\s=,]|$)", regex::escape(flag))).unwrap();
            if !known.is_match(&help) {
                problems.push(format!(
                    "{origin}: `careguard {} {flag}`: no such flag",
                    argv[0]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_kubernetes_config_validates_and_listens_on_the_pod_ports() {
    let path = deploy("kubernetes/careguard.toml");
    let config = careguard::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.server.listen.ip().is_unspecified());
    assert_eq!(config.server.listen.port(), 8080);
    assert!(config.server.admin_listen.ip().is_unspecified());
    assert_eq!(config.server.admin_listen.port(), 9090);
    assert_eq!(
        config.audit.dir.as_deref(),
        Some(Path::new("/var/lib/careguard/audit"))
    );
    let deployment = read("kubernetes/deployment.yaml");
    for needle in [
        "containerPort: 8080",
        "containerPort: 9090",
        "mountPath: /var/lib/careguard/audit",
        "mountPath: /etc/careguard/config",
        "/etc/careguard/config/careguard.toml",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle:?}"
        );
    }
    let rules = config.rules.dir.expect("[rules] dir is set");
    assert!(deployment.contains(&format!("mountPath: {}", rules.display())));
}
