//! `careguard eval`: scores the engine on labelled cases (the format of `shared/data/SOURCES.md`).
//!
//! A response case counts as *caught* when the check reports any violation (the user would not
//! get the reply unchanged); an appropriate reply with any violation is *over-flagged*. An input
//! case scores `crisis` against its label and, when it has a condition label, whether that
//! condition (or, for `none`, no condition) was found.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Assessment, Engine, Message};

/// Errors reading datasets or writing failures.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A dataset could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid case.
    #[error("{path}:{line}:{col}: invalid case: {source}")]
    Case {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The failures file could not be written.
    #[error("writing failures: {0}")]
    Write(#[source] std::io::Error),
}

#[derive(Debug, Deserialize)]
struct Case {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    messages: Vec<Value>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    criterion: Option<String>,
    #[serde(default)]
    appropriate: Option<bool>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    crisis: Option<bool>,
}

#[derive(Debug, Default, Clone)]
struct ResponseTally {
    n: u64,
    inappropriate: u64,
    caught: u64,
    appropriate: u64,
    over_flagged: u64,
}

impl ResponseTally {
    fn add(&mut self, appropriate: bool, flagged: bool) {
        self.n += 1;
        if appropriate {
            self.appropriate += 1;
            self.over_flagged += u64::from(flagged);
        } else {
            self.inappropriate += 1;
            self.caught += u64::from(flagged);
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "inappropriate": self.inappropriate,
            "caught": self.caught,
            "recall": ratio(self.caught, self.inappropriate),
            "appropriate": self.appropriate,
            "over_flagged": self.over_flagged,
            "over_flag_rate": ratio(self.over_flagged, self.appropriate),
        })
    }
}

#[derive(Debug, Default, Clone)]
struct InputTally {
    n: u64,
    crisis_positive: u64,
    crisis_caught: u64,
    crisis_negative: u64,
    crisis_false_positive: u64,
    condition_n: u64,
    condition_correct: u64,
}

impl InputTally {
    fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "crisis_positive": self.crisis_positive,
            "crisis_recall": ratio(self.crisis_caught, self.crisis_positive),
            "crisis_negative": self.crisis_negative,
            "crisis_false_positive_rate": ratio(self.crisis_false_positive, self.crisis_negative),
            "condition_n": self.condition_n,
            "condition_accuracy": ratio(self.condition_correct, self.condition_n),
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Confusion {
    tp: u64,
    fp: u64,
    fn_: u64,
}

fn ratio(num: u64, den: u64) -> Value {
    if den == 0 {
        Value::Null
    } else {
        json!((num as f64 / den as f64 * 10_000.0).round() / 10_000.0)
    }
}

/// The result of an evaluation run.
#[derive(Debug, Default)]
pub struct Report {
    responses: ResponseTally,
    responses_by_criterion: BTreeMap<String, ResponseTally>,
    responses_by_source: BTreeMap<String, ResponseTally>,
    inputs: InputTally,
    inputs_by_source: BTreeMap<String, InputTally>,
    by_condition: BTreeMap<String, Confusion>,
    cases: u64,
    micros: f64,
}

/// Evaluates `engine` on every case of `datasets`; failing cases go to `failures` as JSON Lines.
pub fn run(
    engine: &Engine,
    datasets: &[PathBuf],
    mut failures: Option<&mut dyn Write>,
) -> Result<Report, EvalError> {
    let mut report = Report::default();
    let mut spent = 0.0f64;
    for path in datasets {
        for (line_no, case) in read_cases(path)? {
            let messages = to_messages(&case.messages);
            let source = case.source.clone().unwrap_or_else(|| file_stem(path));
            let started = Instant::now();
            let assessment = engine.classify(&messages);
            let violations = case
                .response
                .as_deref()
                .map(|r| engine.check(&assessment, r))
                .unwrap_or_default();
            spent += started.elapsed().as_secs_f64() * 1e6;
            report.cases += 1;
            let failed = if let (Some(_), Some(appropriate)) = (&case.response, case.appropriate) {
                let flagged = !violations.is_empty();
                report.responses.add(appropriate, flagged);
                let criterion = case.criterion.clone().unwrap_or_else(|| "none".into());
                report
                    .responses_by_criterion
                    .entry(criterion)
                    .or_default()
                    .add(appropriate, flagged);
                report
                    .responses_by_source
                    .entry(source)
                    .or_default()
                    .add(appropriate, flagged);
                appropriate == flagged
            } else if case.response.is_none() {
                score_input(&mut report, &case, source, &assessment)
            } else {
                false
            };
            if failed {
                if let Some(out) = failures.as_deref_mut() {
                    let record = json!({
                        "file": path.display().to_string(),
                        "line": line_no,
                        "id": case.id,
                        "expected": {"appropriate": case.appropriate, "crisis": case.crisis, "condition": case.condition, "criterion": case.criterion},
                        "got": {"assessment": assessment, "violations": violations},
                        "messages": case.messages,
                        "response": case.response,
                    });
                    writeln!(out, "{record}").map_err(EvalError::Write)?;
                }
            }
        }
    }
    report.micros = spent;
    Ok(report)
}

/// Scores one input case; returns whether the engine got it wrong.
fn score_input(report: &mut Report, case: &Case, source: String, assessment: &Assessment) -> bool {
    let mut wrong = false;
    let by_source = report.inputs_by_source.entry(source).or_default();
    for tally in [&mut report.inputs, by_source] {
        tally.n += 1;
        match case.crisis {
            Some(true) => {
                tally.crisis_positive += 1;
                tally.crisis_caught += u64::from(assessment.crisis);
            }
            Some(false) => {
                tally.crisis_negative += 1;
                tally.crisis_false_positive += u64::from(assessment.crisis);
            }
            None => {}
        }
        if let Some(label) = &case.condition {
            tally.condition_n += 1;
            tally.condition_correct += u64::from(condition_correct(label, assessment));
        }
    }
    if let Some(expected) = case.crisis {
        wrong |= expected != assessment.crisis;
    }
    if let Some(label) = &case.condition {
        wrong |= !condition_correct(label, assessment);
        for found in &assessment.conditions {
            let id = found.condition.as_str();
            let entry = report.by_condition.entry(id.to_string()).or_default();
            if id == label {
                entry.tp += 1;
            } else {
                entry.fp += 1;
            }
        }
        if label != "none"
            && !assessment
                .conditions
                .iter()
                .any(|c| c.condition.as_str() == label)
        {
            report.by_condition.entry(label.clone()).or_default().fn_ += 1;
        }
    }
    wrong
}

fn condition_correct(label: &str, assessment: &Assessment) -> bool {
    if label == "none" {
        assessment.conditions.is_empty()
    } else {
        assessment
            .conditions
            .iter()
            .any(|c| c.condition.as_str() == label)
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A dataset case as the engine reads it: the messages and, for response cases, the reply.
pub type Conversation = (Vec<Message>, Option<String>);

/// The conversations of a dataset file (the format of `eval`), each with its reply if the case has
/// one, for tools that drive the engine over the same data (`examples/engine_dump.rs`,
/// `examples/engine_time.rs`).
pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>, EvalError> {
    Ok(read_cases(path)?
        .into_iter()
        .map(|(_, case)| (to_messages(&case.messages), case.response))
        .collect())
}

fn to_messages(values: &[Value]) -> Vec<Message> {
    values.iter().filter_map(Message::from_json).collect()
}

fn read_cases(path: &Path) -> Result<Vec<(usize, Case)>, EvalError> {
    let file = std::fs::File::open(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(&line).map_err(|source| EvalError::Case {
            path: path.to_path_buf(),
            line: i + 1,
            col: source.column(),
            source,
        })?;
        out.push((i + 1, case));
    }
    Ok(out)
}

impl Report {
    /// The report as the JSON object of the `eval --json` contract.
    pub fn to_json(&self) -> Value {
        let responses = if self.responses.n == 0 {
            Value::Null
        } else {
            let mut v = self.responses.to_json();
            v["by_criterion"] = self
                .responses_by_criterion
                .iter()
                .map(|(k, t)| (k.clone(), t.to_json()))
                .collect();
            v["by_source"] = self
                .responses_by_source
                .iter()
                .map(|(k, t)| (k.clone(), t.to_json()))
                .collect();
            v
        };
        let inputs = if self.inputs.n == 0 {
            Value::Null
        } else {
            let mut v = self.inputs.to_json();
            v["by_condition"] = self
                .by_condition
                .iter()
                .map(|(k, c)| (k.clone(), json!({"precision": ratio(c.tp, c.tp + c.fp), "recall": ratio(c.tp, c.tp + c.fn_)})))
                .collect();
            v["by_source"] = self
                .inputs_by_source
                .iter()
                .map(|(k, t)| (k.clone(), t.to_json()))
                .collect();
            v
        };
        let micros = if self.cases == 0 {
            Value::Null
        } else {
            json!((self.micros / self.cases as f64 * 100.0).round() / 100.0)
        };
        json!({"responses": responses, "inputs": inputs, "micros_per_case": micros})
    }

    /// Human-readable tables.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let pct = |v: Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.3}", x));
        if self.responses.n > 0 {
            let _ = writeln!(
                s,
                "responses: {:<58} {:>6} {:>7} {:>10}",
                "", "n", "recall", "over-flag"
            );
            let mut row = |name: &str, t: &ResponseTally| {
                let _ = writeln!(
                    s,
                    "  {:<66} {:>6} {:>7} {:>10}",
                    name,
                    t.n,
                    pct(ratio(t.caught, t.inappropriate)),
                    pct(ratio(t.over_flagged, t.appropriate))
                );
            };
            row("all", &self.responses);
            for (k, t) in &self.responses_by_criterion {
                row(&format!("criterion {k}"), t);
            }
            for (k, t) in &self.responses_by_source {
                row(&format!("source {k}"), t);
            }
        }
        if self.inputs.n > 0 {
            let _ = writeln!(
                s,
                "inputs: {:<61} {:>6} {:>7} {:>10} {:>9}",
                "", "n", "recall", "false-pos", "cond-acc"
            );
            let mut row = |name: &str, t: &InputTally| {
                let _ = writeln!(
                    s,
                    "  {:<66} {:>6} {:>7} {:>10} {:>9}",
                    name,
                    t.n,
                    pct(ratio(t.crisis_caught, t.crisis_positive)),
                    pct(ratio(t.crisis_false_positive, t.crisis_negative)),
                    pct(ratio(t.condition_correct, t.condition_n))
                );
            };
            row("all", &self.inputs);
            for (k, t) in &self.inputs_by_source {
                row(&format!("source {k}"), t);
            }
            for (k, c) in &self.by_condition {
                let _ = writeln!(
                    s,
                    "  condition {:<56} precision {} recall {}",
                    k,
                    pct(ratio(c.tp, c.tp + c.fp)),
                    pct(ratio(c.tp, c.tp + c.fn_))
                );
            }
        }
        if self.cases > 0 {
            let _ = writeln!(s, "{:.2} µs per case", self.micros / self.cases as f64);
        }
        s
    }
}
