//! `careguard rules test` and `rules lint` as part of `cargo test`: every shipped rule matches its
//! examples, misses its near misses, and has both kinds.

use careguard::engine::{examples, RuleSet};

#[test]
fn every_embedded_rule_passes_its_examples() {
    let rules = RuleSet::embedded().expect("embedded packs load");
    let (failures, run) = examples::test(&rules);
    let listed: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} of {run} examples fail:\n{}",
        failures.len(),
        listed.join("\n")
    );
    assert!(
        run >= 2 * rules.rules().len(),
        "every rule runs at least two examples"
    );
}

#[test]
fn every_embedded_rule_is_lint_clean() {
    let rules = RuleSet::embedded().expect("embedded packs load");
    let findings = examples::lint(&rules);
    let listed: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(findings.is_empty(), "lint findings:\n{}", listed.join("\n"));
}

#[test]
fn the_rules_folder_and_the_embedded_packs_are_the_same_set() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let from_dir = RuleSet::from_dir(&dir).expect("rules/ loads");
    let embedded = RuleSet::embedded().expect("embedded packs load");
    assert_eq!(from_dir.version(), embedded.version());
    assert_eq!(from_dir.rules().len(), embedded.rules().len());
}

#[test]
fn a_broken_pack_reports_every_problem_with_file_line_and_column() {
    let text = r#"[pack]
id = "xx.broken"
language = "en"
description = "broken on purpose"

[[rule]]
id = "a"
kind = "condition"
condition = "suicidal_ideation"
level = "present"
why = "test"
patterns = ['\bfine\b']
match = ["fine"]
near_miss = ["ok"]

[[rule]]
id = "b"
kind = "request"
request = "lethal_means"
why = "test"
patterns = ['(unclosed']
match = ["x"]
near_miss = ["y"]

[[rule]]
id = "b"
kind = "reply"
feature = "no_such_feature"
why = "test"
terms = ["x"]
"#;
    let err = RuleSet::from_sources(&[("rules/en/broken.toml".into(), text.into())]).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem:\n{shown}");
    assert!(
        lines[0].starts_with("rules/en/broken.toml:10:9: rule \"a\": suicidal_ideation takes"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("rules/en/broken.toml:21:13: rule \"b\": invalid regex"),
        "{shown}"
    );
    assert!(lines[2].starts_with("rules/en/broken.toml:26:6: rule \"b\": duplicate id (first at rules/en/broken.toml:17:6)"), "{shown}");
    assert!(
        lines[3].starts_with(
            "rules/en/broken.toml:28:11: rule \"b\": unknown value \"no_such_feature\""
        ),
        "{shown}"
    );
}

#[test]
fn a_toml_syntax_error_is_located() {
    let err =
        RuleSet::from_sources(&[("rules/en/x.toml".into(), "[pack]\nid = \n".into())]).unwrap_err();
    assert!(err.to_string().starts_with("rules/en/x.toml:2:"), "{err}");
}
