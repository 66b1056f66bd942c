//! One scan of a normalised text against many rules: a `RegexSet` says which patterns fired,
//! the single regexes then give their spans; one aho-corasick automaton finds every term.
//!
//! A pattern with a `core` group (`\bi (?:\w+ ){0,4}(?P<core>want to die)`) goes into the set as
//! its core alone: a leading subject-and-gap prefix makes a many-pattern DFA explode (each word
//! of every text starts a partial match), while cores are rare words. Where a core matches, the
//! full pattern is run on a window of [`PREFIX_WINDOW`] bytes before it to confirm the prefix.

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexSet, RegexSetBuilder};

use super::pack::build_regex;

/// A rule that matched, with its span in the normalised text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Index of the rule in [`super::RuleSet::rules`].
    pub rule: usize,
    /// Start byte in the normalised text.
    pub start: usize,
    /// End byte in the normalised text.
    pub end: usize,
    /// Where the negation window ends: the start of the pattern's `core` group if it has one
    /// (so a subject prefix such as `i ... ` can sit inside the match), otherwise `start`.
    pub core: usize,
}

/// How far before a core match the full pattern's prefix may start.
pub const PREFIX_WINDOW: usize = 200;

/// One pattern: its rule, the regex the set scans for (the core, or the whole pattern), and the
/// whole pattern when it has a core.
#[derive(Debug)]
struct Pattern {
    rule: usize,
    scan: Regex,
    full: Option<Regex>,
}

/// The compiled patterns and terms of one side (user or reply).
#[derive(Debug)]
pub struct Matcher {
    set: Option<RegexSet>,
    patterns: Vec<Pattern>,
    terms: Option<AhoCorasick>,
    term_rules: Vec<usize>,
}

/// At most this many spans per pattern are kept (evidence, not an index).
const MAX_SPANS_PER_PATTERN: usize = 4;

impl Matcher {
    /// Compiles `(rule index, pattern)` and `(rule index, term)` lists.
    pub fn new(patterns: &[(usize, String)], terms: &[(usize, String)]) -> Result<Self, String> {
        let scanned: Vec<String> = patterns.iter().map(|(_, p)| scan_form(p)).collect();
        let set = if patterns.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(scanned.iter())
                    .unicode(false)
                    .size_limit(64 << 20)
                    .dfa_size_limit(64 << 20)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        let compiled = patterns
            .iter()
            .zip(&scanned)
            .map(|((rule, p), scan)| {
                let full = if scan != p {
                    Some(build_regex(p).map_err(|e| e.to_string())?)
                } else {
                    None
                };
                Ok(Pattern {
                    rule: *rule,
                    scan: build_regex(scan).map_err(|e| format!("{e} (core of {p:?})"))?,
                    full,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let automaton = if terms.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(terms.iter().map(|(_, t)| t.as_str()))
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Self {
            set,
            patterns: compiled,
            terms: automaton,
            term_rules: terms.iter().map(|(r, _)| *r).collect(),
        })
    }

    /// Appends every hit in `text` to `out`.
    pub fn scan(&self, text: &str, out: &mut Vec<Hit>) {
        let bytes = text.as_bytes();
        if let Some(set) = &self.set {
            for index in set.matches(bytes).iter() {
                let pattern = &self.patterns[index];
                for m in pattern.scan.find_iter(bytes).take(MAX_SPANS_PER_PATTERN) {
                    match &pattern.full {
                        None => out.push(Hit {
                            rule: pattern.rule,
                            start: m.start(),
                            end: m.end(),
                            core: m.start(),
                        }),
                        Some(full) => {
                            if let Some(hit) = confirm(full, bytes, m.start(), m.end())
                                .or_else(|| confirm_plain(full, bytes, m.start(), m.end()))
                            {
                                out.push(Hit {
                                    rule: pattern.rule,
                                    ..hit
                                });
                            }
                        }
                    }
                }
            }
        }
        if let Some(ac) = &self.terms {
            for m in ac.find_overlapping_iter(bytes) {
                if boundary(bytes, m.start()) && boundary(bytes, m.end()) {
                    out.push(Hit {
                        rule: self.term_rules[m.pattern().as_usize()],
                        start: m.start(),
                        end: m.end(),
                        core: m.start(),
                    });
                }
            }
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Terms match whole words: no word character may touch either end.
fn boundary(bytes: &[u8], at: usize) -> bool {
    let before = at > 0 && is_word(bytes[at - 1]);
    let after = at < bytes.len() && is_word(bytes[at]);
    !(before && after)
}

/// For a pattern without a core whose scan form relaxed a bounded gap: a full match that starts
/// within the scan match confirms it.
fn confirm_plain(full: &Regex, bytes: &[u8], start: usize, end: usize) -> Option<Hit> {
    if full.capture_names().any(|n| n == Some("core")) {
        return None;
    }
    let to = (end + PREFIX_WINDOW).min(bytes.len());
    let m = full.find_at(&bytes[..to], start)?;
    (m.start() < end).then_some(Hit {
        rule: 0,
        start: m.start(),
        end: m.end(),
        core: m.start(),
    })
}

/// What the regex set scans for a pattern: its core if it has one, with every bounded repetition
/// `{m,n}` (n >= 2) relaxed to `{m,}`, `*` or `+`. Counting repetitions multiply the states of a
/// many-pattern lazy DFA (each position of each gap is a state); the relaxed form matches a
/// superset, and the full pattern confirms every hit.
pub(crate) fn scan_form(pattern: &str) -> String {
    let base = core_of(pattern).unwrap_or_else(|| pattern.to_string());
    relax_counts(&base)
}

fn relax_counts(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' => {
                let next = pattern[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&pattern[i..i + 1 + next]);
                i += 1 + next;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'{' if !in_class => {
                if let Some(close) = pattern[i..].find('}') {
                    let inner = &pattern[i + 1..i + close];
                    if let Some((lo, hi)) = inner.split_once(',') {
                        if let (Ok(lo), Ok(hi)) =
                            (lo.trim().parse::<u32>(), hi.trim().parse::<u32>())
                        {
                            if hi >= 2 {
                                out.push_str(&match lo {
                                    0 => "*".to_string(),
                                    1 => "+".to_string(),
                                    n => format!("{{{n},}}"),
                                });
                                i += close + 1;
                                continue;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        let len = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + len]);
        i += len;
    }
    out
}

/// Runs the full pattern around a core match at `[start, end)`: a match whose `core` group
/// overlaps the core match confirms it.
fn confirm(full: &Regex, bytes: &[u8], start: usize, end: usize) -> Option<Hit> {
    let from = start.saturating_sub(PREFIX_WINDOW);
    let to = (end + PREFIX_WINDOW).min(bytes.len());
    let hay = &bytes[..to];
    let mut at = from;
    while at <= start {
        let caps = full.captures_at(hay, at)?;
        let whole = caps.get(0)?;
        if let Some(core) = caps.name("core") {
            if core.start() < end && start < core.end() {
                return Some(Hit {
                    rule: 0,
                    start: whole.start(),
                    end: whole.end(),
                    core: core.start(),
                });
            }
        }
        at = whole.start() + 1;
    }
    None
}

/// The source of the `(?P<core>...)` (or `(?<core>...)`) group of a pattern, if it has one.
pub(crate) fn core_of(pattern: &str) -> Option<String> {
    let open = pattern
        .find("(?P<core>")
        .map(|i| (i, "(?P<core>".len()))
        .or_else(|| pattern.find("(?<core>").map(|i| (i, "(?<core>".len())))?;
    let body_start = open.0 + open.1;
    let bytes = pattern.as_bytes();
    let mut depth = 1usize;
    let mut i = body_start;
    let mut in_class = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(pattern[body_start..i].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_groups_are_extracted_with_nesting_escapes_and_classes() {
        assert_eq!(
            core_of(r"\bi (?P<core>want (?:to|2) die)\b").as_deref(),
            Some("want (?:to|2) die")
        );
        assert_eq!(
            core_of(r"x(?<core>a\)[)(]b)c").as_deref(),
            Some(r"a\)[)(]b")
        );
        assert_eq!(core_of(r"no core here"), None);
    }

    #[test]
    fn bounded_gaps_are_relaxed_outside_classes_and_escapes() {
        assert_eq!(
            relax_counts(r"a(?:[a-z]+ ){0,4}b[a-z ]{0,20}c"),
            r"a(?:[a-z]+ )*b[a-z ]*c"
        );
        assert_eq!(
            relax_counts(r"x{1,3}y{2,5}z{0,1}\{0,3\}[{0,3}]"),
            r"x+y{2,}z{0,1}\{0,3\}[{0,3}]"
        );
    }

    #[test]
    fn a_relaxed_pattern_still_needs_its_bounds() {
        let m = Matcher::new(&[(1, r"\bsad(?: [a-z]+){0,2} today\b".to_string())], &[]).unwrap();
        let mut hits = Vec::new();
        m.scan("im sad and tired today", &mut hits);
        assert_eq!(hits.len(), 1);
        hits.clear();
        m.scan("im sad and very very tired today", &mut hits);
        assert!(hits.is_empty(), "three words in a gap of at most two");
    }

    #[test]
    fn a_core_pattern_needs_its_prefix() {
        let m = Matcher::new(
            &[(
                7,
                r"\bi (?:[a-z]+ ){0,3}(?P<core>want to die)\b".to_string(),
            )],
            &[],
        )
        .unwrap();
        let mut hits = Vec::new();
        m.scan("honestly i really want to die now", &mut hits);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].rule, hits[0].start, hits[0].core), (7, 9, 18));
        hits.clear();
        m.scan("she said they want to die", &mut hits);
        assert!(hits.is_empty());
    }
}
