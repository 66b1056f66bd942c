//! `careguard report`: compliance figures from the log, by month and tenant, with the SB 243
//! annual figures (California's companion-chatbot law asks operators to report, each year, how
//! many crisis-referral notifications they issued) in their own section.
//!
//! The output holds counts only: no request ids, no text, no record numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::record::{Kind, LoggedRecord};
use super::segments;
use super::AuditError;

/// Figures for one month and tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonthRow {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The tenant label.
    pub tenant: String,
    /// Chat exchanges logged.
    pub exchanges: u64,
    /// Exchanges the engine assessed as a crisis.
    pub crisis_detections: u64,
    /// Exchanges where a crisis line was shown to the user.
    pub crisis_referrals: u64,
    /// Crisis lines shown, by the region of the line.
    pub crisis_referrals_by_region: BTreeMap<String, u64>,
    /// Violations of the first upstream reply, by criterion.
    pub violations: BTreeMap<String, u64>,
    /// Decisions, by `action/mode` (`replace/enforce`, `block/shadow`, ...).
    pub actions: BTreeMap<String, u64>,
}

/// The SB 243 figures for one year and tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct YearRow {
    /// The calendar year (UTC).
    pub year: String,
    /// The tenant label.
    pub tenant: String,
    /// Crisis-referral notifications issued (exchanges where a crisis line was shown).
    pub crisis_referral_notifications: u64,
    /// The same, by the region of the crisis line.
    pub by_region: BTreeMap<String, u64>,
    /// Exchanges assessed as a crisis (for context: detections without a referral shown).
    pub crisis_detections: u64,
    /// Exchanges logged.
    pub exchanges: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// First day included (`YYYY-MM-DD`), if limited.
    pub from: Option<String>,
    /// Last day included (`YYYY-MM-DD`), if limited.
    pub to: Option<String>,
    /// By month, then tenant.
    pub months: Vec<MonthRow>,
    /// SB 243: by year, then tenant.
    pub sb243: Vec<YearRow>,
    /// Exchanges the log could not take (queue full), from `dropped` records: the figures above
    /// are lower bounds when this is not zero.
    pub exchanges_not_logged: u64,
    /// Lines that were not readable records (torn tails included).
    pub unreadable_lines: u64,
}

/// Checks a `YYYY-MM-DD` date argument.
pub fn parse_date(what: &'static str, text: &str) -> Result<String, AuditError> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10);
    let month: u32 = text.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(0);
    let day: u32 = text.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(0);
    if !ok || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(AuditError::Argument {
            what,
            message: format!("{text:?} is not a date like 2026-01-31"),
        });
    }
    Ok(text.to_string())
}

/// Counts the records under `paths` whose day (UTC) is within `from..=to`.
pub fn report(
    paths: &[PathBuf],
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Report, AuditError> {
    let mut months: BTreeMap<(String, String), MonthRow> = BTreeMap::new();
    let mut years: BTreeMap<(String, String), YearRow> = BTreeMap::new();
    let mut out = Report {
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        ..Report::default()
    };
    for path in segments::list(paths)? {
        let bytes = segments::read(&path)?;
        let lines = segments::split(&bytes);
        out.unreadable_lines += u64::from(lines.torn.is_some());
        for line in lines.lines {
            let Ok(r) = serde_json::from_slice::<LoggedRecord<'_>>(line) else {
                out.unreadable_lines += 1;
                continue;
            };
            let Some(day) = r.time.get(..10) else {
                out.unreadable_lines += 1;
                continue;
            };
            if from.is_some_and(|f| day < f) || to.is_some_and(|t| day > t) {
                continue;
            }
            if r.kind == Kind::Dropped {
                out.exchanges_not_logged += r.dropped.unwrap_or(0);
                continue;
            }
            let tenant = r.tenant.to_string();
            let m = months
                .entry((day[..7].to_string(), tenant.clone()))
                .or_insert_with(|| MonthRow {
                    month: day[..7].to_string(),
                    tenant: tenant.clone(),
                    ..MonthRow::default()
                });
            let y = years
                .entry((day[..4].to_string(), tenant.clone()))
                .or_insert_with(|| YearRow {
                    year: day[..4].to_string(),
                    tenant,
                    ..YearRow::default()
                });
            m.exchanges += 1;
            y.exchanges += 1;
            if r.assessment.as_ref().is_some_and(|a| a.crisis) {
                m.crisis_detections += 1;
                y.crisis_detections += 1;
            }
            if let Some(referral) = r.referral.as_ref().filter(|r| r.shown) {
                m.crisis_referrals += 1;
                *m.crisis_referrals_by_region
                    .entry(referral.region.clone())
                    .or_default() += 1;
                y.crisis_referral_notifications += 1;
                *y.by_region.entry(referral.region.clone()).or_default() += 1;
            }
            for v in &r.violations {
                *m.violations
                    .entry(v.criterion.as_str().to_string())
                    .or_default() += 1;
            }
            if let Some(d) = r.decision {
                *m.actions
                    .entry(format!("{}/{}", d.action.as_str(), d.mode.as_str()))
                    .or_default() += 1;
            }
        }
    }
    out.months = months.into_values().collect();
    out.sb243 = years.into_values().collect();
    Ok(out)
}

fn map_cell(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::from("# careguard audit report\n\n");
    let range = format!(
        "{} to {}",
        r.from.as_deref().unwrap_or("the first record"),
        r.to.as_deref().unwrap_or("the last record")
    );
    let _ = writeln!(
        s,
        "Period: {range} (UTC). Counts only: no request ids, no text.\n"
    );
    s.push_str("## By month and tenant\n\n");
    s.push_str("| month | tenant | exchanges | crisis detections | crisis referrals shown | referrals by region | violations by criterion | actions (action/mode) |\n");
    s.push_str("|---|---|---:|---:|---:|---|---|---|\n");
    for m in &r.months {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.month,
            m.tenant,
            m.exchanges,
            m.crisis_detections,
            m.crisis_referrals,
            map_cell(&m.crisis_referrals_by_region),
            map_cell(&m.violations),
            map_cell(&m.actions)
        );
    }
    s.push_str("\n## SB 243 annual figures\n\n");
    s.push_str("Crisis-referral notifications issued: exchanges in which a crisis line was shown to the user.\n\n");
    s.push_str("| year | tenant | crisis-referral notifications | by region | crisis detections | exchanges |\n");
    s.push_str("|---|---|---:|---|---:|---:|\n");
    for y in &r.sb243 {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            y.year,
            y.tenant,
            y.crisis_referral_notifications,
            map_cell(&y.by_region),
            y.crisis_detections,
            y.exchanges
        );
    }
    let _ = writeln!(
        s,
        "\nExchanges not logged (audit queue full): {}. Unreadable lines: {}.",
        r.exchanges_not_logged, r.unreadable_lines
    );
    if r.exchanges_not_logged > 0 {
        s.push_str("The figures above are lower bounds.\n");
    }
    s
}

/// The report as CSV in long form: `section,period,tenant,metric,key,value`.
pub fn csv(r: &Report) -> String {
    let mut s = String::from("section,period,tenant,metric,key,value\n");
    let mut row =
        |section: &str, period: &str, tenant: &str, metric: &str, key: &str, value: u64| {
            let _ = writeln!(
                s,
                "{section},{period},{},{metric},{key},{value}",
                csv_field(tenant)
            );
        };
    for m in &r.months {
        row("month", &m.month, &m.tenant, "exchanges", "", m.exchanges);
        row(
            "month",
            &m.month,
            &m.tenant,
            "crisis_detections",
            "",
            m.crisis_detections,
        );
        row(
            "month",
            &m.month,
            &m.tenant,
            "crisis_referrals",
            "",
            m.crisis_referrals,
        );
        for (k, v) in &m.crisis_referrals_by_region {
            row(
                "month",
                &m.month,
                &m.tenant,
                "crisis_referrals_by_region",
                &csv_field(k),
                *v,
            );
        }
        for (k, v) in &m.violations {
            row("month", &m.month, &m.tenant, "violations", k, *v);
        }
        for (k, v) in &m.actions {
            row("month", &m.month, &m.tenant, "actions", k, *v);
        }
    }
    for y in &r.sb243 {
        row(
            "sb243",
            &y.year,
            &y.tenant,
            "crisis_referral_notifications",
            "",
            y.crisis_referral_notifications,
        );
        for (k, v) in &y.by_region {
            row(
                "sb243",
                &y.year,
                &y.tenant,
                "crisis_referral_notifications_by_region",
                &csv_field(k),
                *v,
            );
        }
        row(
            "sb243",
            &y.year,
            &y.tenant,
            "crisis_detections",
            "",
            y.crisis_detections,
        );
        row("sb243", &y.year, &y.tenant, "exchanges", "", y.exchanges);
    }
    row(
        "log",
        "",
        "",
        "exchanges_not_logged",
        "",
        r.exchanges_not_logged,
    );
    row("log", "", "", "unreadable_lines", "", r.unreadable_lines);
    s
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked() {
        assert!(parse_date("--from", "2026-01-31").is_ok());
        assert!(parse_date("--from", "2026-13-01").is_err());
        assert!(parse_date("--from", "26-01-01").is_err());
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
