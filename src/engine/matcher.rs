//! One scan of a normalised text against many rules: a `RegexSet` says which patterns fired,
//! the single regexes then give their spans; one aho-corasick automaton finds every term.
//!
//! A pattern with a `core` group (`\bi (?:\w+ ){0,4}(?P<core>want to die)`) goes into the set as
//! its core alone: a leading subject-and-gap prefix makes a many-pattern DFA explode (each word
//! of every text starts a partial match), while cores are rare words. Where a core matches, the
//! full pattern is run on a window of [`PREFIX_WINDOW`] bytes before it to confirm the prefix.
//!
//! A candidate pattern whose matches have a bounded length runs only on windows around its
//! literals' occurrences, not on the whole text (see [`Matcher::run_windows`]); on long texts
//! with many candidates this is most of the engine's work saved.

use std::ops::ControlFlow;

use aho_corasick::automaton::Automaton;
use aho_corasick::{dfa, nfa, Anchored, MatchKind, PatternID};
use regex::bytes::{RegexSet, RegexSetBuilder};
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::{meta, Input};

use super::normalize::{normalize_unexpanded, Normalized, Slang};
use super::pack::build_regex;
use super::prefilter::required_literals;

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
    /// Built as `regex::bytes::Regex` builds it (see [`build_meta`]), so it matches the same;
    /// `meta` lets a search be bounded to a span.
    scan: meta::Regex,
    /// The whole pattern, when the scan runs only its core or a relaxed form (see
    /// [`build_full`]).
    full: Option<meta::Regex>,
    /// The longest match `scan` can have, when bounded and the pattern has required literals:
    /// its matches then lie within that many bytes of one of them.
    max_len: Option<usize>,
}

/// The compiled patterns and terms of one side (user or reply).
///
/// Which patterns to run is decided by a filter that never misses one: patterns with required
/// literals ([`super::prefilter`]) are candidates when one of their literals occurs (one
/// aho-corasick pass over the text, shared with the terms); the few without go into a small
/// `RegexSet`. Every candidate then runs its own regex, exactly as a single big set would have
/// it run, so the hits do not depend on the filter.
#[derive(Debug)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    /// Terms first (ids `0..term_rules.len()`), then the patterns' required literals, then the
    /// slang words (ids from `slang_from`).
    automaton: Option<Needles>,
    term_rules: Vec<usize>,
    /// The slang expansion that [`Self::scan_raw`] applies when one of its words occurs.
    slang: Slang,
    slang_from: usize,
    /// A slang word is empty (and occurs everywhere): every text is expanded.
    always_expand: bool,
    /// For each required literal (automaton id minus the number of terms), its patterns.
    literal_patterns: Vec<Vec<u32>>,
    /// Patterns without required literals, scanned as a set, and their indices.
    rest: Option<RegexSet>,
    rest_patterns: Vec<usize>,
}

/// An automaton of at most this many needles is built as a DFA (see [`Matcher::new`]).
const SMALL_AUTOMATON: usize = 256;

/// States of a contiguous NFA this close to the start keep a dense transition table (one
/// look-up per byte instead of a search of a sparse list). The default is 2; at 4 the term pass
/// costs ~8K fewer instructions per bench round (~3%), for ~0.6 MB more automata (idle RSS
/// stays at ~36 MB: the rule that lost its own regex set freed about as much).
const DENSE_DEPTH: usize = 4;

/// The aho-corasick automaton of a matcher's needles (terms, required literals, slang words),
/// built without a prefilter and searched by [`Needles::overlapping`].
///
/// The crate's own overlapping iterator keeps its position in a state struct and re-enters the
/// search for every match: ~20 instructions per byte of text on the stigma DFA (callgrind),
/// where the loop here, over the same automaton through the crate's `Automaton` trait, keeps
/// position and state in registers (~7). The matches are the same, in the same order: by end
/// position, then in the automaton's order for one state. (One difference: an empty needle,
/// which the crate reports at the text's start, is never reported here; terms and literals are
/// never empty, and an empty slang word sets `always_expand`, where slang hits are
/// not used.) A prefilter is left off: with slang
/// words of two letters among the needles it could skip little and cost a call at every return
/// to the start state.
#[derive(Debug)]
enum Needles {
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

impl Needles {
    fn new(needles: &[&[u8]]) -> Result<Self, String> {
        // A contiguous NFA: a full DFA made this pass ~10% faster but cost ~8 MB of idle RSS
        // (38 -> 46.7 MB), against a 20 MB target; memory won. A small automaton (the stigma
        // rules' 160 needles: ~115 KB instead of ~20 KB) is a DFA: one table look-up per byte
        // instead of the NFA's walks along failure transitions, ~21K fewer instructions
        // (callgrind) per check of the bench's 1 KB reply.
        if needles.len() <= SMALL_AUTOMATON {
            dfa::Builder::new()
                .match_kind(MatchKind::Standard)
                .prefilter(false)
                .build(needles)
                .map(Needles::Dfa)
        } else {
            nfa::contiguous::Builder::new()
                .match_kind(MatchKind::Standard)
                .prefilter(false)
                .dense_depth(DENSE_DEPTH)
                .build(needles)
                .map(Needles::Nfa)
        }
        .map_err(|e| e.to_string())
    }

    /// Calls `f(needle, start, end)` for every occurrence of every needle in `hay`, overlapping
    /// ones included, until `f` breaks.
    fn overlapping(
        &self,
        hay: &[u8],
        f: impl FnMut(usize, usize, usize) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        match self {
            Needles::Dfa(a) => overlapping(a, hay, f),
            Needles::Nfa(a) => overlapping(a, hay, f),
        }
    }
}

fn overlapping<A: Automaton>(
    aut: &A,
    hay: &[u8],
    mut f: impl FnMut(usize, usize, usize) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Ok(mut sid) = aut.start_state(Anchored::No) else {
        return ControlFlow::Continue(());
    };
    let mut at = 0;
    while at < hay.len() {
        (at, sid) = to_special(aut, hay, at, sid);
        // Without a prefilter the start state is not special, and an unanchored search never
        // dies: a special state is a match state.
        if !aut.is_special(sid) || aut.is_dead(sid) {
            break;
        }
        for i in 0..aut.match_len(sid) {
            let pid: PatternID = aut.match_pattern(sid, i);
            f(pid.as_usize(), at - aut.pattern_len(pid), at)?;
        }
    }
    ControlFlow::Continue(())
}

/// Walks `hay` from `at` in state `sid` until a special state or the end; returns the position
/// after the last byte read and the state reached. A function of its own so that the walk keeps
/// its few values in registers (inlined into the caller, the state went through the stack on
/// every byte).
#[inline(never)]
fn to_special<A: Automaton>(
    aut: &A,
    hay: &[u8],
    mut at: usize,
    mut sid: aho_corasick::automaton::StateID,
) -> (usize, aho_corasick::automaton::StateID) {
    while let Some(&byte) = hay.get(at) {
        sid = aut.next_state(Anchored::No, sid, byte);
        at += 1;
        if aut.is_special(sid) {
            break;
        }
    }
    (at, sid)
}

/// At most this many spans per pattern are kept (evidence, not an index).
const MAX_SPANS_PER_PATTERN: usize = 4;

impl Matcher {
    /// Compiles `(rule index, pattern)` and `(rule index, term)` lists, for texts normalised
    /// with `slang`.
    pub fn new(
        patterns: &[(usize, String)],
        terms: &[(usize, String)],
        slang: &Slang,
    ) -> Result<Self, String> {
        let scanned: Vec<String> = patterns.iter().map(|(_, p)| scan_form(p)).collect();
        let mut compiled = patterns
            .iter()
            .zip(&scanned)
            .map(|((rule, p), scan)| {
                // An error is reported the way `regex` words it.
                let full = if scan != p {
                    Some(build_full(p).map_err(|_| regex_error(p, None))?)
                } else {
                    None
                };
                Ok(Pattern {
                    rule: *rule,
                    scan: build_meta(scan).map_err(|_| regex_error(scan, Some(p)))?,
                    full,
                    max_len: max_len(scan),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut literal_patterns: Vec<Vec<u32>> = Vec::new();
        let mut literal_ids: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        let mut rest = Vec::new();
        for (index, scan) in scanned.iter().enumerate() {
            match required_literals(scan) {
                Some(set) => {
                    for lit in set {
                        let id = *literal_ids.entry(lit.clone()).or_insert_with(|| {
                            literals.push(lit);
                            literal_patterns.push(Vec::new());
                            literals.len() - 1
                        });
                        literal_patterns[id].push(index as u32);
                    }
                }
                None => rest.push(index),
            }
        }
        // Without required literals there are no windows: such patterns search the whole text.
        for &index in &rest {
            compiled[index].max_len = None;
        }
        let rest_set = if rest.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(rest.iter().map(|&i| &scanned[i]))
                    .unicode(false)
                    .size_limit(64 << 20)
                    .dfa_size_limit(64 << 20)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        let needles: Vec<&[u8]> = terms
            .iter()
            .map(|(_, t)| t.as_bytes())
            .chain(literals.iter().map(Vec::as_slice))
            .chain(slang.keys().iter().map(|k| k.as_bytes()))
            .collect();
        let automaton = if needles.is_empty() {
            None
        } else {
            Some(Needles::new(&needles)?)
        };
        Ok(Self {
            patterns: compiled,
            automaton,
            term_rules: terms.iter().map(|(r, _)| *r).collect(),
            slang: slang.clone(),
            slang_from: terms.len() + literals.len(),
            always_expand: slang.keys().iter().any(String::is_empty),
            literal_patterns,
            rest: rest_set,
            rest_patterns: rest,
        })
    }

    /// Normalises `raw` ([`super::normalize::normalize`] with the matcher's slang) and appends
    /// every hit in the normalised text to `out`, as [`Self::scan`] does; returns that text.
    ///
    /// Most texts hold no slang word, and expanding slang is a pass of its own over the text.
    /// So the text is scanned before expansion, with the slang words among the automaton's
    /// needles: when none occurs on word boundaries, expansion would leave the text as it is and
    /// the hits stand; otherwise the scan stops, and the expanded text is scanned anew.
    pub fn scan_raw(&self, raw: &str, out: &mut Vec<Hit>) -> Normalized {
        let norm = normalize_unexpanded(raw);
        if !self.always_expand && self.scan_unless_slang(&norm.text, out, true) {
            return norm;
        }
        let norm = self.slang.expand(norm);
        self.scan_unless_slang(&norm.text, out, false);
        norm
    }

    /// Appends every hit in `text` (normalised text) to `out`: pattern hits in pattern order,
    /// then term hits.
    pub fn scan(&self, text: &str, out: &mut Vec<Hit>) {
        self.scan_unless_slang(text, out, false);
    }

    /// [`Self::scan`]; with `stop_at_slang`, returns `false` (and leaves `out` as it was) as
    /// soon as a slang word occurs on word boundaries.
    fn scan_unless_slang(&self, text: &str, out: &mut Vec<Hit>, stop_at_slang: bool) -> bool {
        let bytes = text.as_bytes();
        let mut candidates = vec![0u64; self.patterns.len().div_ceil(64)];
        let mark = |c: &mut [u64], i: usize| c[i / 64] |= 1 << (i % 64);
        // For bounded patterns, the windows their literals' occurrences allow: (pattern, start,
        // end), a match of the pattern lying inside one of them.
        let mut windows: Vec<(u32, u32, u32)> = Vec::new();
        let terms_from = out.len();
        let mut term_hits = 0;
        if let Some(ac) = &self.automaton {
            let terms = self.term_rules.len();
            let flow = ac.overlapping(bytes, |id, start, end| {
                if id >= self.slang_from {
                    if stop_at_slang && boundary(bytes, start) && boundary(bytes, end) {
                        return ControlFlow::Break(());
                    }
                } else if id >= terms {
                    for &p in &self.literal_patterns[id - terms] {
                        mark(&mut candidates, p as usize);
                        if let Some(len) = self.patterns[p as usize].max_len {
                            windows.push((
                                p,
                                end.saturating_sub(len) as u32,
                                (start + len).min(bytes.len()) as u32,
                            ));
                        }
                    }
                } else if boundary(bytes, start) && boundary(bytes, end) {
                    out.push(Hit {
                        rule: self.term_rules[id],
                        start,
                        end,
                        core: start,
                    });
                    term_hits += 1;
                }
                ControlFlow::Continue(())
            });
            if flow.is_break() {
                out.truncate(terms_from);
                return false;
            }
        }
        if let Some(set) = &self.rest {
            for i in set.matches(bytes).iter() {
                mark(&mut candidates, self.rest_patterns[i]);
            }
        }
        windows.sort_unstable();
        // Term hits were found first but come after the pattern hits.
        let mut terms_found: Vec<Hit> = out.drain(terms_from..terms_from + term_hits).collect();
        let mut next_window = 0;
        for (word, &bits) in candidates.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let index = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if self.patterns[index].max_len.is_some() {
                    let from = next_window;
                    while next_window < windows.len() && windows[next_window].0 as usize == index {
                        next_window += 1;
                    }
                    self.run_windows(index, bytes, &windows[from..next_window], out);
                } else {
                    self.run(index, bytes, out);
                }
            }
        }
        out.append(&mut terms_found);
        true
    }

    /// Runs one candidate pattern over the whole text and appends its confirmed hits.
    fn run(&self, index: usize, bytes: &[u8], out: &mut Vec<Hit>) {
        let pattern = &self.patterns[index];
        for m in pattern.scan.find_iter(bytes).take(MAX_SPANS_PER_PATTERN) {
            self.push(pattern, bytes, m.start(), m.end(), out);
        }
    }

    /// [`Self::run`] for a pattern of bounded length, searching only the windows (sorted by
    /// start) around its literals' occurrences, with the same result.
    ///
    /// Every match contains an occurrence of a required literal, so it lies within its window.
    /// Overlapping windows are merged into regions; searching the regions in order, each from
    /// the end of the previous match, finds the leftmost match first. Every match starting
    /// where the leftmost one starts ends inside its window too, so the preferred one among
    /// them is the one `find_iter` reports. Look-arounds see the bytes outside the region.
    fn run_windows(
        &self,
        index: usize,
        bytes: &[u8],
        windows: &[(u32, u32, u32)],
        out: &mut Vec<Hit>,
    ) {
        let pattern = &self.patterns[index];
        let mut found = 0;
        let mut at = 0usize;
        let mut i = 0;
        while i < windows.len() && found < MAX_SPANS_PER_PATTERN {
            let start = windows[i].1 as usize;
            let mut end = windows[i].2 as usize;
            i += 1;
            while i < windows.len() && windows[i].1 as usize <= end {
                end = end.max(windows[i].2 as usize);
                i += 1;
            }
            let mut from = start.max(at);
            while from < end && found < MAX_SPANS_PER_PATTERN {
                let Some(m) = pattern.scan.search(&Input::new(bytes).range(from..end)) else {
                    break;
                };
                self.push(pattern, bytes, m.start(), m.end(), out);
                found += 1;
                // Matches hold a literal, so they are never empty.
                at = m.end().max(m.start() + 1);
                from = at;
            }
        }
    }

    /// Appends the hit of a scan match at `[start, end)`, once the full pattern confirms it.
    fn push(&self, pattern: &Pattern, bytes: &[u8], start: usize, end: usize, out: &mut Vec<Hit>) {
        match &pattern.full {
            None => out.push(Hit {
                rule: pattern.rule,
                start,
                end,
                core: start,
            }),
            Some(full) => {
                if let Some(hit) = confirm(full, bytes, start, end)
                    .or_else(|| confirm_plain(full, bytes, start, end))
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

/// The syntax every pattern is compiled with: ASCII classes, bytes (as `regex::bytes` with
/// `unicode(false)`).
fn syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false)
}

/// The `meta` configuration of [`build_regex`]: what `regex::bytes::Regex` builds, so a pattern
/// matches the same.
fn meta_config() -> meta::Config {
    let limit = super::pack::REGEX_SIZE_LIMIT;
    meta::Config::new()
        .nfa_size_limit(Some(limit))
        .hybrid_cache_capacity(limit)
        .match_kind(regex_automata::MatchKind::LeftmostFirst)
        .utf8_empty(false)
}

/// Builds the regex the scan runs (see [`meta_config`]), keeping only the implicit whole-match
/// group: the scan asks for match spans, never for groups, and the groups' NFA states cost
/// memory in every one of the ~570 patterns. Matches are the same with or without groups.
fn build_meta(pattern: &str) -> Result<meta::Regex, String> {
    meta::Builder::new()
        .configure(meta_config().which_captures(WhichCaptures::Implicit))
        .syntax(syntax())
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// Builds a full pattern, which only confirms a scan match on a window of a few hundred bytes:
/// without the one-pass DFA and the literal prefilter that `regex` adds to every regex, which
/// made up about 4.6 MB of idle memory over the ~380 full patterns and cost the confirmation
/// ~1% of the engine's instructions (callgrind, `examples/engine_time.rs` on the C-SSRS set).
/// Dropping the lazy DFA too would save ~2 MB more but made the engine ~27% slower.
fn build_full(pattern: &str) -> Result<meta::Regex, String> {
    meta::Builder::new()
        .configure(meta_config().onepass(false).auto_prefilter(false))
        .syntax(syntax())
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// The longest match of `pattern`, if bounded.
fn max_len(pattern: &str) -> Option<usize> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?
        .properties()
        .maximum_len()
}

/// `regex`'s wording of why `pattern` does not compile (of `core of` a full pattern).
fn regex_error(pattern: &str, core_of: Option<&str>) -> String {
    let message = match build_regex(pattern) {
        Err(e) => e.to_string(),
        Ok(_) => "pattern compiles with `regex` but not as a matcher regex".to_string(),
    };
    match core_of {
        Some(p) => format!("{message} (core of {p:?})"),
        None => message,
    }
}

/// Whether `full` has a group named `core`.
fn has_core(full: &meta::Regex) -> bool {
    full.group_info()
        .to_index(regex_automata::PatternID::ZERO, "core")
        .is_some()
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
fn confirm_plain(full: &meta::Regex, bytes: &[u8], start: usize, end: usize) -> Option<Hit> {
    if has_core(full) {
        return None;
    }
    let to = (end + PREFIX_WINDOW).min(bytes.len());
    let m = full.search(&Input::new(&bytes[..to]).range(start..))?;
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
fn confirm(full: &meta::Regex, bytes: &[u8], start: usize, end: usize) -> Option<Hit> {
    let from = start.saturating_sub(PREFIX_WINDOW);
    let to = (end + PREFIX_WINDOW).min(bytes.len());
    let hay = &bytes[..to];
    let mut caps = full.create_captures();
    let mut at = from;
    while at <= start {
        full.search_captures(&Input::new(hay).range(at..), &mut caps);
        let whole = caps.get_match()?;
        if let Some(core) = caps.get_group_by_name("core") {
            if core.start < end && start < core.end {
                return Some(Hit {
                    rule: 0,
                    start: whole.start(),
                    end: whole.end(),
                    core: core.start,
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
        let m = Matcher::new(
            &[(1, r"\bsad(?: [a-z]+){0,2} today\b".to_string())],
            &[],
            &Slang::default(),
        )
        .unwrap();
        let mut hits = Vec::new();
        m.scan("im sad and tired today", &mut hits);
        assert_eq!(hits.len(), 1);
        hits.clear();
        m.scan("im sad and very very tired today", &mut hits);
        assert!(hits.is_empty(), "three words in a gap of at most two");
    }

    #[test]
    fn scanning_before_slang_expansion_finds_what_scanning_after_it_does() {
        let slang = Slang::new(&[
            ("kms".to_string(), "kill myself".to_string()),
            ("od".to_string(), "overdose".to_string()),
            ("unalive".to_string(), "kill".to_string()),
        ]);
        let m = Matcher::new(
            &[
                (
                    1,
                    r"\bi (?:[a-z]+ ){0,3}(?P<core>kil+ myself)\b".to_string(),
                ),
                (2, r"\b(?:an|to) overdose\b".to_string()),
            ],
            &[(3, "kill".to_string()), (4, "od".to_string())],
            &slang,
        )
        .unwrap();
        let words = [
            "i", "want", "to", "kms", "kmsx", "od", "odd", "an", "overdose", "unalive", "kill",
            "myself", "good", "ok", "-",
        ];
        let mut next = crate::engine::xorshift(0x51a9_6c0d_e3b2_7f41u64);
        let mut expanded = 0;
        for _ in 0..2000 {
            let n = 1 + (next() % 10) as usize;
            let text = (0..n)
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            let mut fast = Vec::new();
            let norm = m.scan_raw(&text, &mut fast);
            let slow_norm = super::super::normalize::normalize(&text, &slang);
            let mut slow = Vec::new();
            m.scan(&slow_norm.text, &mut slow);
            assert_eq!((&norm.text, &fast), (&slow_norm.text, &slow), "{text:?}");
            expanded += usize::from(norm.text != text);
        }
        assert!(expanded > 500, "the texts hold slang ({expanded})");
    }

    #[test]
    fn a_core_pattern_needs_its_prefix() {
        let m = Matcher::new(
            &[(
                7,
                r"\bi (?:[a-z]+ ){0,3}(?P<core>want to die)\b".to_string(),
            )],
            &[],
            &Slang::default(),
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

    #[test]
    fn the_literal_filter_never_drops_a_hit() {
        let patterns: Vec<(usize, String)> = [
            r"\b(?:want|wish) to (?:just )?die\b",
            r"\bi (?:[a-z]+ ){0,3}(?P<core>kil+ myself)\b",
            r"\b(?:bridge|[a-z]+ tower)s?\b",
            r"\bsad(?: [a-z]+){0,2} today\b",
            r"\b(?:my|the) (?:pills|meds)\b",
            r"\bno (?:reason|point) (?:to|in) (?:live|living)\b",
            r"\b[a-z]+ing (?:off|from) the (?:roof|bridge)\b",
            r"\b(?:i|im)\b",
            r"licen[sc]e",
            r"\b\d+ ?(?:m|feet) (?:high|tall)\b",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.to_string()))
        .collect();
        let m = Matcher::new(&patterns, &[(99, "die".to_string())], &Slang::default()).unwrap();
        let words = [
            "i", "im", "want", "wish", "to", "just", "die", "kill", "killll", "myself", "bridge",
            "bridges", "radio", "tower", "towers", "sad", "today", "my", "pills", "meds", "no",
            "reason", "point", "living", "jumping", "off", "the", "roof", "license", "licence",
            "30", "m", "feet", "high", "really", "very",
        ];
        let mut next = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut hits_seen = 0;
        for round in 0..2000 {
            // Short texts, and long ones where windows around literals matter (several
            // regions, more than MAX_SPANS_PER_PATTERN matches).
            let n = if round % 2 == 0 {
                1 + (next() % 12) as usize
            } else {
                20 + (next() % 80) as usize
            };
            let text = (0..n)
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            let mut filtered = Vec::new();
            m.scan(&text, &mut filtered);
            // Every pattern run on its own, in order, then the terms.
            let mut all = Vec::new();
            for index in 0..m.patterns.len() {
                m.run(index, text.as_bytes(), &mut all);
            }
            all.extend(filtered.iter().filter(|h| h.rule == 99).copied());
            assert_eq!(filtered, all, "{text:?}");
            hits_seen += all.len();
        }
        assert!(
            hits_seen > 1000,
            "the texts exercise the patterns ({hits_seen} hits)"
        );
    }
}
