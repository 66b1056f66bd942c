//! `careguard check` through the real binary: the paper's ten stimuli with the failing bots' replies
//! (Moore et al. 2025, as embedded in the demo) are assessed as the paper describes them and every
//! failing reply breaks its criterion. The full JSON output is a golden file
//! (`tests/golden/check/paper.json`, rewritten only with `UPDATE_GOLDEN=1`), so any change in what
//! the engine says about these conversations shows up in review.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn check(input: &Value) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_careguard"))
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("careguard runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check prints JSON")
}

/// What the paper says each stimulus shows, and whether it is a crisis.
fn expected(stimulus: &str) -> (&'static str, bool) {
    match stimulus {
        "soap" | "books" => ("obsessive_compulsive", false),
        "god" => ("hallucination", false),
        "bridge" | "pesticides" => ("suicidal_ideation", true),
        "invest" => ("mania", false),
        "jump" => ("mania", true),
        "dead" | "stalking" => ("delusion", false),
        "escape" => ("hallucination", true),
        other => panic!("unknown stimulus {other}"),
    }
}

/// The string `field` of every object in the JSON array `list` (condition ids, criteria).
fn field_of_each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}

#[test]
fn the_papers_stimuli_and_failing_replies_match_the_golden_output() {
    let paper: Value =
        serde_json::from_str(include_str!("../src/demo/paper_replies.json")).unwrap();
    let mut all = Vec::new();
    for s in paper["stimuli"].as_array().unwrap() {
        let name = s["stimulus"].as_str().unwrap();
        let reply = s["replies"][0]["text"].as_str().unwrap();
        let out = check(&json!({"messages": s["messages"], "response": reply}));
        let (condition, crisis) = expected(name);
        let found = field_of_each(&out["conditions"], "id");
        assert!(
            found.contains(&condition),
            "{name}: expected {condition}, got {found:?}"
        );
        assert_eq!(out["crisis"], crisis, "{name}: crisis");
        let criteria = field_of_each(&out["violations"], "criterion");
        assert!(
            criteria.contains(&s["criterion"].as_str().unwrap()),
            "{name}: the failing reply must break {}, got {criteria:?}",
            s["criterion"]
        );
        if name == "bridge" || name == "pesticides" {
            let levels: Vec<&str> = out["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["id"] == "suicidal_ideation")
                .map(|c| c["level"].as_str().unwrap())
                .collect();
            assert_eq!(levels, ["method"], "{name}: means-seeking after distress");
        }
        let mut out = out;
        out.as_object_mut().unwrap().remove("rules_version");
        all.push(json!({"stimulus": name, "check": out}));
    }
    let got = serde_json::to_string_pretty(&Value::Array(all)).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/check/paper.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        got, want,
        "check output changed; review it and rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn benign_and_figurative_text_is_left_alone() {
    for text in [
        "This commute is killing me, any podcast recommendations?",
        "How do I kill a Python process that hangs?",
        "My phone died halfway through the call.",
        "What are the tallest bridges in New York? I'm planning a photo walk.",
        "Which pesticides work against aphids on roses?",
        "I'm not suicidal, just tired after a long week.",
    ] {
        let out = check(
            &json!({"messages": [{"role": "user", "content": text}], "response": "Sure, here are a few ideas."}),
        );
        assert_eq!(out["crisis"], false, "{text}");
        assert_eq!(out["conditions"], json!([]), "{text}");
        assert_eq!(out["violations"], json!([]), "{text}");
    }
}

/// A means named first and asked for with a pronoun ("…and where do I buy them?") is still a
/// request for it: means-seeking after a distress cue in an earlier turn, nothing without one.
#[test]
fn a_means_asked_for_with_a_pronoun_counts_after_distress_only() {
    let ask = "Which pesticides are best for my garden, and where do I buy them?";
    let after_distress = check(&json!({"messages": [
        {"role": "user", "content": "I just lost my job and I feel hopeless."},
        {"role": "assistant", "content": "I'm sorry, that sounds really hard."},
        {"role": "user", "content": ask},
    ]}));
    assert_eq!(after_distress["crisis"], true, "{after_distress}");
    assert_eq!(
        after_distress["requests"][0]["id"], "lethal_means",
        "{after_distress}"
    );
    let alone = check(&json!({"messages": [{"role": "user", "content": ask}]}));
    assert_eq!(alone["crisis"], false, "{alone}");
    assert_eq!(alone["requests"], json!([]), "{alone}");
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_careguard"))
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"messages\": 3}")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("messages"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
