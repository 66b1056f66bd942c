//! Rule packs: declarative TOML under `rules/<language>/`, loaded, validated and compiled.
//!
//! A pack file looks like this (every key is checked; unknown keys are errors):
//!
//! ```toml
//! [pack]
//! id = "en.suicide"
//! language = "en"
//! description = "Suicidal ideation on the C-SSRS ladder"
//! provenance = ["Seeded from the construct-tracker suicide-risk lexicon (Apache-2.0)"]
//!
//! [define]            # named fragments, used in patterns as {name}; shared by a language's packs
//! me = '(?:i|im|i am|ive|myself|me)'
//!
//! [slang]             # normalisation: slang -> expansion, on word boundaries (all languages)
//! kms = "kill myself"
//!
//! [negation]          # words that negate a hit when they precede it in the same clause
//! cues = ["not", "never", "no longer"]
//!
//! [[rule]]
//! id = "si.passive.wish-dead"
//! kind = "condition"        # condition | distress | request | context | reply
//! condition = "suicidal_ideation"
//! level = "passive"
//! why = "C-SSRS item 1: a wish to be dead is ideation, however passive"
//! patterns = ['\bwish (?:i was|i were|to be) dead\b']
//! terms = ["better off dead"]
//! match = ["I wish I was dead"]
//! near_miss = ["I wish I was done with this essay"]
//! ```
//!
//! A pattern may name a group `core` (`(?P<core>...)`): negation cues are then looked for in the
//! three words before the core rather than before the whole match, so a subject prefix can be
//! part of the pattern (`\bi (?:\w+ ){0,3}(?P<core>want to die)`) and "i dont want to die" is
//! still negated.
//!
//! Patterns run on normalised text (see [`super::normalize`]) with ASCII classes (`(?-u)`), so `\b`
//! and `\w` are cheap; terms are literal phrases matched on word boundaries by one aho-corasick
//! automaton. Packs are parsed in two phases, raw (with spans) then validated, and every problem
//! is reported at once as `rules/en/suicide.toml:14:9: rule "x": message`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::matcher::Matcher;
use super::normalize::{normalize, Slang};
use super::types::{Condition, ContextKind, Feature, Level, RequestKind};

include!(concat!(env!("OUT_DIR"), "/embedded_packs.rs"));

/// One problem in a rule pack, located as `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackError {
    /// The file, relative to the rules folder for embedded packs.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PackErrors(pub Vec<PackError>);

impl fmt::Display for PackErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What a rule detects, and so how the engine uses its hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A marker of a condition at a level (user side).
    Condition(Condition, Level),
    /// A distress cue: not a condition, but turns a later lethal-means request into means-seeking.
    Distress,
    /// A request a reply could enable (user side).
    Request(RequestKind),
    /// A context that suppresses user-side hits near it.
    Context(ContextKind),
    /// A feature of an assistant reply.
    Reply(Feature),
}

impl RuleKind {
    /// Whether the rule reads the user side (otherwise the assistant reply).
    pub fn is_input(self) -> bool {
        !matches!(self, RuleKind::Reply(_))
    }
}

/// How far a context rule reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The sentence the context appears in.
    Sentence,
    /// The whole message.
    Message,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id, e.g. `si.passive.wish-dead`.
    pub id: Arc<str>,
    /// What it detects.
    pub kind: RuleKind,
    /// The guideline it encodes, in one line.
    pub why: String,
    /// Whether a negation cue before a hit in the same clause cancels the hit.
    pub negatable: bool,
    /// For context rules: how far they reach.
    pub scope: Scope,
    /// The pack's language.
    pub language: Arc<str>,
    /// Where the rule is defined.
    pub location: String,
    /// Texts the rule must match.
    pub must_match: Vec<String>,
    /// Near misses the rule must not match.
    pub near_miss: Vec<String>,
    /// The raw patterns (after `{define}` expansion) and terms, for linting.
    pub patterns: Vec<String>,
    /// The raw terms, for linting.
    pub terms: Vec<String>,
}

/// Summary of one loaded pack.
#[derive(Debug, Clone)]
pub struct PackInfo {
    /// The pack id.
    pub id: String,
    /// Its language.
    pub language: String,
    /// Its file.
    pub file: String,
    /// What the pack covers.
    pub description: String,
    /// Where its lexicons came from.
    pub provenance: Vec<String>,
    /// Number of rules.
    pub rules: usize,
}

/// All rule packs, compiled: what the engine runs.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) input: Matcher,
    pub(crate) reply: Matcher,
    /// The reply rules of the [`Feature::Stigma`] feature alone, again: the only criterion that
    /// applies when the conversation shows no condition (see [`super::criteria::check`]), so most
    /// replies need only this small matcher. A copy rather than a split of `reply`, so a full
    /// scan stays one scan and finds its features in the same order as before (~0.1 MB).
    pub(crate) reply_stigma: Matcher,
    pub(crate) slang: Slang,
    pub(crate) negation: Option<regex::bytes::Regex>,
    packs: Vec<PackInfo>,
    version: Arc<str>,
}

impl RuleSet {
    /// Loads the packs embedded in the binary.
    pub fn embedded() -> Result<Self, PackErrors> {
        let sources: Vec<(String, String)> = EMBEDDED_PACKS
            .iter()
            .filter(|(path, _)| is_pack_path(path))
            .map(|(p, s)| (format!("rules/{p}"), (*s).to_string()))
            .collect();
        Self::from_sources(&sources)
    }

    /// Loads every pack under `dir/<language>/*.toml`.
    pub fn from_dir(dir: &Path) -> Result<Self, PackErrors> {
        let mut files = Vec::new();
        collect_toml(dir, dir, &mut files).map_err(|e| {
            PackErrors(vec![PackError {
                file: dir.display().to_string(),
                line: 1,
                col: 1,
                message: format!("cannot read the rules folder: {e}"),
            }])
        })?;
        files.sort();
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for (rel, path) in files {
            if !is_pack_path(&rel) {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) => errors.push(PackError {
                    file: path.display().to_string(),
                    line: 1,
                    col: 1,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(PackErrors(errors));
        }
        if sources.is_empty() {
            return Err(PackErrors(vec![PackError {
                file: dir.display().to_string(),
                line: 1,
                col: 1,
                message: "no rule packs found (expected <language>/*.toml)".into(),
            }]));
        }
        Self::from_sources(&sources)
    }

    /// Loads packs from `(file name, TOML text)` pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, PackErrors> {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for (file, text) in sources {
            match toml::from_str::<RawPack>(text) {
                Ok(pack) => parsed.push((file.as_str(), text.as_str(), pack)),
                Err(e) => {
                    let at = e.span().map(|s| s.start).unwrap_or(0);
                    errors.push(located(file, text, at, e.message().to_string()));
                }
            }
        }
        let compiled = compile(&parsed, &mut errors);
        if !errors.is_empty() {
            return Err(PackErrors(errors));
        }
        let mut hasher = Sha256::new();
        for (file, text) in sources {
            let name = file.rsplit_once("rules/").map(|(_, n)| n).unwrap_or(file);
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        let version = hex::encode(&hasher.finalize()[..6]);
        let (rules, input, reply, reply_stigma, slang, negation, packs) =
            compiled.expect("no errors means compiled");
        Ok(Self {
            rules,
            input,
            reply,
            reply_stigma,
            slang,
            negation,
            packs,
            version: version.into(),
        })
    }

    /// Every rule, in pack order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The loaded packs.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// A content hash of the packs (12 hex digits): changes whenever any pack changes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// [`Self::version`], shared: what each exchange records without a copy.
    pub fn version_shared(&self) -> Arc<str> {
        Arc::clone(&self.version)
    }

    /// The slang table used by normalisation.
    pub fn slang(&self) -> &Slang {
        &self.slang
    }
}

/// A data file shipped under `rules/` and embedded in the binary (e.g. `crisis_lines.toml`).
pub fn embedded_file(rel: &str) -> Option<&'static str> {
    EMBEDDED_PACKS
        .iter()
        .find(|(p, _)| *p == rel)
        .map(|(_, s)| *s)
}

/// Pack files live in a language folder named by a BCP 47 style code: `en/suicide.toml`,
/// `es/crisis.toml`, `pt-br/x.toml`. Other files under `rules/` (crisis lines, safe replies) are
/// data, not packs.
fn is_pack_path(rel: &str) -> bool {
    let Some((dir, rest)) = rel.split_once('/') else {
        return false;
    };
    let (lang, region) = dir.split_once('-').unwrap_or((dir, ""));
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok = region.is_empty()
        || ((2..=4).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    lang_ok && region_ok && !rest.contains('/') && rest.ends_with(".toml")
}

fn collect_toml(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_toml(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

pub(crate) fn located(file: &str, text: &str, at: usize, message: String) -> PackError {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    PackError {
        file: file.to_string(),
        line,
        col,
        message,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    pack: RawHeader,
    #[serde(default)]
    define: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    slang: BTreeMap<String, String>,
    #[serde(default)]
    negation: Option<RawNegation>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: String,
    language: Spanned<String>,
    description: String,
    #[serde(default)]
    provenance: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNegation {
    cues: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    kind: Spanned<String>,
    condition: Option<Spanned<String>>,
    level: Option<Spanned<String>>,
    request: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    feature: Option<Spanned<String>>,
    why: Option<String>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    #[serde(default)]
    terms: Vec<Spanned<String>>,
    negatable: Option<bool>,
    scope: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    must_match: Vec<String>,
    #[serde(default)]
    near_miss: Vec<String>,
}

type Compiled = (
    Vec<Rule>,
    Matcher,
    Matcher,
    Matcher,
    Slang,
    Option<regex::bytes::Regex>,
    Vec<PackInfo>,
);

/// Size limit for one compiled pattern and for each regex set; generous but bounded on purpose.
pub(crate) const REGEX_SIZE_LIMIT: usize = 32 << 20;

pub(crate) fn build_regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn compile(parsed: &[(&str, &str, RawPack)], errors: &mut Vec<PackError>) -> Option<Compiled> {
    // Phase 1: language-wide tables (defines, slang, negation cues).
    let mut defines: HashMap<(String, String), String> = HashMap::new();
    let mut slang_pairs: Vec<(String, String)> = Vec::new();
    let mut cues: Vec<String> = Vec::new();
    let mut pack_ids = HashSet::new();
    for (file, text, pack) in parsed {
        if !pack_ids.insert(pack.pack.id.clone()) {
            errors.push(located(
                file,
                text,
                0,
                format!("duplicate pack id {:?}", pack.pack.id),
            ));
        }
        let language = pack.pack.language.get_ref().clone();
        for (name, value) in &pack.define {
            let key = (language.clone(), name.clone());
            if defines.insert(key, value.get_ref().clone()).is_some() {
                errors.push(located(
                    file,
                    text,
                    value.span().start,
                    format!("define {name:?} is defined twice for language {language:?}"),
                ));
            }
        }
        let plain = Slang::new(&[]);
        for (k, v) in &pack.slang {
            slang_pairs.push((normalize(k, &plain).text, normalize(v, &plain).text));
        }
        if let Some(neg) = &pack.negation {
            cues.extend(neg.cues.iter().map(|c| normalize(c, &plain).text));
        }
    }
    let slang = Slang::new(&slang_pairs);
    let negation = if cues.is_empty() {
        None
    } else {
        let alternation = cues
            .iter()
            .map(|c| regex::escape(c))
            .collect::<Vec<_>>()
            .join("|");
        build_regex(&format!(r"\b(?:{alternation})\b")).ok()
    };

    // Phase 2: rules.
    let mut rules = Vec::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut input_patterns: Vec<(usize, String)> = Vec::new();
    let mut reply_patterns: Vec<(usize, String)> = Vec::new();
    let mut input_terms: Vec<(usize, String)> = Vec::new();
    let mut reply_terms: Vec<(usize, String)> = Vec::new();
    let mut packs = Vec::new();
    for (file, text, pack) in parsed {
        let language = pack.pack.language.get_ref().clone();
        packs.push(PackInfo {
            id: pack.pack.id.clone(),
            language: language.clone(),
            file: file.to_string(),
            description: pack.pack.description.clone(),
            provenance: pack.pack.provenance.clone(),
            rules: pack.rules.len(),
        });
        let lang: Arc<str> = Arc::from(language.as_str());
        for raw in &pack.rules {
            let at =
                |span: std::ops::Range<usize>, msg: String| located(file, text, span.start, msg);
            let id = raw.id.get_ref().clone();
            let here = at(raw.id.span(), String::new());
            let location = format!("{}:{}:{}", here.file, here.line, here.col);
            if let Some(first) = ids.insert(id.clone(), location.clone()) {
                errors.push(at(
                    raw.id.span(),
                    format!("rule {id:?}: duplicate id (first at {first})"),
                ));
            }
            let kind = match rule_kind(raw) {
                Ok(k) => k,
                Err((span, msg)) => {
                    errors.push(at(span, format!("rule {id:?}: {msg}")));
                    continue;
                }
            };
            if raw.why.as_deref().is_none_or(|w| w.trim().is_empty()) {
                errors.push(at(
                    raw.id.span(),
                    format!("rule {id:?}: missing `why` (the guideline it encodes)"),
                ));
            }
            if raw.patterns.is_empty() && raw.terms.is_empty() {
                errors.push(at(
                    raw.id.span(),
                    format!("rule {id:?}: needs `patterns` or `terms`"),
                ));
            }
            let scope = match raw.scope.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("sentence") => Scope::Sentence,
                Some("message") => Scope::Message,
                Some(other) => {
                    let span = raw.scope.as_ref().map(|s| s.span()).unwrap_or_default();
                    errors.push(at(
                        span,
                        format!("rule {id:?}: unknown scope {other:?} (sentence | message)"),
                    ));
                    Scope::Sentence
                }
            };
            let index = rules.len();
            let mut expanded_patterns = Vec::new();
            for p in &raw.patterns {
                match expand_defines(p.get_ref(), &language, &defines) {
                    Ok(expanded) => match build_regex(&expanded) {
                        Ok(_) => {
                            let target = if kind.is_input() {
                                &mut input_patterns
                            } else {
                                &mut reply_patterns
                            };
                            target.push((index, expanded.clone()));
                            expanded_patterns.push(expanded);
                        }
                        Err(e) => errors.push(at(
                            p.span(),
                            format!("rule {id:?}: invalid regex: {}", one_line(&e.to_string())),
                        )),
                    },
                    Err(msg) => errors.push(at(p.span(), format!("rule {id:?}: {msg}"))),
                }
            }
            let plain = Slang::new(&[]);
            let mut terms = Vec::new();
            for t in &raw.terms {
                let normalized = normalize(t.get_ref(), &plain).text;
                if normalized.trim().is_empty() {
                    errors.push(at(t.span(), format!("rule {id:?}: empty term")));
                    continue;
                }
                let target = if kind.is_input() {
                    &mut input_terms
                } else {
                    &mut reply_terms
                };
                target.push((index, normalized.clone()));
                terms.push(normalized);
            }
            rules.push(Rule {
                id: Arc::from(id.as_str()),
                kind,
                why: raw.why.clone().unwrap_or_default(),
                negatable: raw
                    .negatable
                    .unwrap_or(!matches!(kind, RuleKind::Context(_) | RuleKind::Reply(_))),
                scope,
                language: lang.clone(),
                location,
                must_match: raw.must_match.clone(),
                near_miss: raw.near_miss.clone(),
                patterns: expanded_patterns,
                terms,
            });
        }
    }
    if !errors.is_empty() {
        return None;
    }
    let input = match Matcher::new(&input_patterns, &input_terms, &slang) {
        Ok(m) => m,
        Err(e) => {
            errors.push(PackError {
                file: "rules".into(),
                line: 1,
                col: 1,
                message: format!("input rules: {e}"),
            });
            return None;
        }
    };
    let reply = match Matcher::new(&reply_patterns, &reply_terms, &slang) {
        Ok(m) => m,
        Err(e) => {
            errors.push(PackError {
                file: "rules".into(),
                line: 1,
                col: 1,
                message: format!("reply rules: {e}"),
            });
            return None;
        }
    };
    // The stigma rules compiled into `reply` already, so this cannot fail where that did not.
    let stigma = |list: &[(usize, String)]| -> Vec<(usize, String)> {
        list.iter()
            .filter(|(rule, _)| rules[*rule].kind == RuleKind::Reply(Feature::Stigma))
            .cloned()
            .collect()
    };
    let reply_stigma = Matcher::new(&stigma(&reply_patterns), &stigma(&reply_terms), &slang)
        .expect("a subset of the reply rules compiles");
    Some((rules, input, reply, reply_stigma, slang, negation, packs))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

type SpanMsg = (std::ops::Range<usize>, String);

fn rule_kind(raw: &RawRule) -> Result<RuleKind, SpanMsg> {
    fn need<'a>(
        raw: &RawRule,
        field: &'a Option<Spanned<String>>,
        name: &str,
    ) -> Result<&'a Spanned<String>, SpanMsg> {
        field.as_ref().ok_or_else(|| {
            (
                raw.kind.span(),
                format!("kind {:?} needs `{name}`", raw.kind.get_ref()),
            )
        })
    }
    fn parse<T>(
        field: &Spanned<String>,
        parse: fn(&str) -> Option<T>,
        all: &[&str],
    ) -> Result<T, SpanMsg> {
        parse(field.get_ref()).ok_or_else(|| {
            (
                field.span(),
                format!(
                    "unknown value {:?} (expected one of: {})",
                    field.get_ref(),
                    all.join(", ")
                ),
            )
        })
    }
    fn names<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|x| f(*x)).collect()
    }
    let extra = |fields: &[(&Option<Spanned<String>>, &str)]| -> Result<(), SpanMsg> {
        for (f, name) in fields {
            if let Some(f) = f {
                return Err((
                    f.span(),
                    format!("`{name}` does not apply to kind {:?}", raw.kind.get_ref()),
                ));
            }
        }
        Ok(())
    };
    match raw.kind.get_ref().as_str() {
        "condition" => {
            extra(&[
                (&raw.request, "request"),
                (&raw.context, "context"),
                (&raw.feature, "feature"),
            ])?;
            let c = parse(
                need(raw, &raw.condition, "condition")?,
                Condition::parse,
                &names(Condition::ALL, Condition::as_str),
            )?;
            let l = parse(
                need(raw, &raw.level, "level")?,
                Level::parse,
                &names(Level::ALL, Level::as_str),
            )?;
            let si_level = matches!(
                l,
                Level::Passive | Level::Active | Level::Method | Level::Plan
            );
            if (c == Condition::SuicidalIdeation) != si_level {
                let span = raw.level.as_ref().map(|s| s.span()).unwrap_or_default();
                return Err((span, "suicidal_ideation takes passive | active | method | plan; other conditions take present | acute".into()));
            }
            Ok(RuleKind::Condition(c, l))
        }
        "distress" => {
            extra(&[
                (&raw.condition, "condition"),
                (&raw.level, "level"),
                (&raw.request, "request"),
                (&raw.context, "context"),
                (&raw.feature, "feature"),
            ])?;
            Ok(RuleKind::Distress)
        }
        "request" => {
            extra(&[
                (&raw.condition, "condition"),
                (&raw.level, "level"),
                (&raw.context, "context"),
                (&raw.feature, "feature"),
            ])?;
            let r = parse(
                need(raw, &raw.request, "request")?,
                RequestKind::parse,
                &names(RequestKind::ALL, RequestKind::as_str),
            )?;
            Ok(RuleKind::Request(r))
        }
        "context" => {
            extra(&[
                (&raw.condition, "condition"),
                (&raw.level, "level"),
                (&raw.request, "request"),
                (&raw.feature, "feature"),
            ])?;
            let c = parse(
                need(raw, &raw.context, "context")?,
                ContextKind::parse,
                &names(ContextKind::ALL, ContextKind::as_str),
            )?;
            Ok(RuleKind::Context(c))
        }
        "reply" => {
            extra(&[
                (&raw.condition, "condition"),
                (&raw.level, "level"),
                (&raw.request, "request"),
                (&raw.context, "context"),
            ])?;
            let f = parse(
                need(raw, &raw.feature, "feature")?,
                Feature::parse,
                &names(Feature::ALL, Feature::as_str),
            )?;
            Ok(RuleKind::Reply(f))
        }
        other => Err((
            raw.kind.span(),
            format!("unknown kind {other:?} (condition | distress | request | context | reply)"),
        )),
    }
}

/// Replaces `{name}` with the language's define `name` (recursively, bounded depth).
fn expand_defines(
    pattern: &str,
    language: &str,
    defines: &HashMap<(String, String), String>,
) -> Result<String, String> {
    let mut out = pattern.to_string();
    for _ in 0..8 {
        let mut changed = false;
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}');
            let name = close.map(|c| &after[..c]);
            match name {
                Some(n)
                    if !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
                {
                    let value = defines
                        .get(&(language.to_string(), n.to_string()))
                        .ok_or_else(|| {
                            format!("unknown define {{{n}}} for language {language:?}")
                        })?;
                    result.push_str(&rest[..open]);
                    result.push_str(value);
                    rest = &after[n.len() + 1..];
                    changed = true;
                }
                _ => {
                    result.push_str(&rest[..=open]);
                    rest = after;
                }
            }
        }
        result.push_str(rest);
        out = result;
        if !changed {
            return Ok(out);
        }
    }
    Err("defines nest too deeply (a define refers to itself?)".into())
}
