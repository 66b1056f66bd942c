//! Command-line glue for `careguard audit verify`, `careguard replay` and `careguard report`:
//! clap argument structs and `run_*` functions that print to stdout and return the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::replay::{ReplayOptions, ReplaySummary};
use super::verify::Verification;
use super::{replay, report, verify, AuditError};

/// Arguments of `careguard audit verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Segment files or folders holding them (`careguard-audit-*.jsonl`), walked in segment order.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `careguard replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Segment files or folders holding them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Replay with the rule packs in this folder instead of the embedded ones.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exit with 1 when any verdict changed.
    #[arg(long)]
    pub fail_on_change: bool,
    /// How many changed verdicts to show as examples.
    #[arg(long, default_value_t = 10)]
    pub examples: usize,
}

/// Output format of `careguard report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown tables.
    #[default]
    Md,
    /// One JSON object.
    Json,
    /// CSV, one figure a row: `section,period,tenant,metric,key,value`.
    Csv,
}

/// Arguments of `careguard report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Segment files or folders holding them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// First day to include (UTC), `YYYY-MM-DD`.
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last day to include (UTC), `YYYY-MM-DD`.
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
}

fn print(text: &str) -> Result<(), AuditError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(AuditError::Output)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, AuditError> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| AuditError::Output(e.into()))?;
    s.push('\n');
    Ok(s)
}

/// Runs `careguard audit verify`: exit 0 when the chain is intact, 1 at the first broken record,
/// 2 when intact but a segment ends in a torn (crash-cut) line.
pub fn run_verify(args: VerifyArgs) -> Result<ExitCode, AuditError> {
    let v = verify::verify(&args.paths)?;
    print(&if args.json {
        json(&v)?
    } else {
        verify_text(&v)
    })?;
    Ok(ExitCode::from(v.exit_code()))
}

/// The human-readable verdict of `audit verify`.
pub fn verify_text(v: &Verification) -> String {
    let mut s = String::new();
    for t in &v.torn {
        s.push_str(&format!(
            "torn tail: {}:{}: {} bytes cut short by a crash (skipped; the chain continues from the record before it)\n",
            t.file.display(),
            t.line,
            t.bytes
        ));
    }
    match &v.broken {
        Some(b) => s.push_str(&format!(
            "BROKEN: {}:{}: {}: {}\n{} records intact before it\n",
            b.file.display(),
            b.line,
            b.kind.as_str(),
            b.detail,
            v.records
        )),
        None => s.push_str(&format!(
            "intact: {} records in {} segment(s), from record {}; last hash {}\n",
            v.records,
            v.segments,
            v.first_seq.map_or("-".into(), |s| s.to_string()),
            v.last_hash.as_deref().unwrap_or("-")
        )),
    }
    s
}

/// Runs `careguard replay`: exit 1 with `--fail-on-change` when any verdict changed, else 0.
pub fn run_replay(args: ReplayArgs) -> Result<ExitCode, AuditError> {
    let options = ReplayOptions {
        rules: args.rules.clone(),
        examples: args.examples,
        progress: !args.json,
    };
    let summary = replay::replay(&args.paths, &options)?;
    print(&if args.json {
        json(&summary)?
    } else {
        replay_text(&summary)
    })?;
    Ok(if args.fail_on_change && summary.any_change() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The human-readable result of `replay`.
pub fn replay_text(r: &ReplaySummary) -> String {
    let mut s = format!(
        "replayed {} of {} exchange records with rules {} ({} kept no text, {} unreadable lines)\n",
        r.replayed, r.records, r.rules_version, r.skipped_no_text, r.unreadable
    );
    for (version, n) in &r.logged_rules_versions {
        s.push_str(&format!("  logged with rules {version}: {n} records\n"));
    }
    s.push_str(&format!("changed: {} records\n", r.changed));
    if !r.criteria.is_empty() {
        s.push_str("\ncriterion                          now violated  no longer violated\n");
        for (c, f) in &r.criteria {
            s.push_str(&format!("{c:<34} {:>12}  {:>18}\n", f.newly, f.no_longer));
        }
    }
    if r.crisis.newly + r.crisis.no_longer > 0 {
        s.push_str(&format!(
            "\ncrisis: {} now detected, {} no longer detected\n",
            r.crisis.newly, r.crisis.no_longer
        ));
    }
    if !r.actions.is_empty() {
        s.push_str("\naction (default policy)   records\n");
        for (pair, n) in &r.actions {
            s.push_str(&format!("{:<25} {n:>8}\n", pair.replace("->", " -> ")));
        }
    }
    if !r.examples.is_empty() {
        s.push_str("\nexamples:\n");
        for e in &r.examples {
            s.push_str(&format!(
                "  record {} ({}): {}: {} -> {}\n",
                e.record, e.file, e.what, e.was, e.now
            ));
        }
    }
    for t in &r.torn {
        s.push_str(&format!(
            "torn tail skipped: {}:{} ({} bytes)\n",
            t.file.display(),
            t.line,
            t.bytes
        ));
    }
    s
}

/// Runs `careguard report`.
pub fn run_report(args: ReportArgs) -> Result<ExitCode, AuditError> {
    let from = args
        .from
        .as_deref()
        .map(|d| report::parse_date("--from", d))
        .transpose()?;
    let to = args
        .to
        .as_deref()
        .map(|d| report::parse_date("--to", d))
        .transpose()?;
    let r = report::report(&args.paths, from.as_deref(), to.as_deref())?;
    let text = match args.format {
        ReportFormat::Md => report::markdown(&r),
        ReportFormat::Json => json(&r)?,
        ReportFormat::Csv => report::csv(&r),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}
