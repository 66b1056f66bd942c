//! Required literals: for a pattern, a small set of byte strings such that every match of the
//! pattern contains at least one of them. [`super::matcher::Matcher`] finds them all with one
//! aho-corasick pass and runs only the patterns whose literals occur, so the cost of a scan
//! follows the text's length plus the few candidates, not the number of patterns.
//!
//! The analysis walks the pattern's syntax tree once. Each node reports its whole language when
//! it is small and finite (`exact`), the literals every match starts or ends with, and the best
//! required set found inside it. A concatenation glues neighbouring exact parts into longer
//! literals (`(?:want|wish) to (?:just )?die` gives `want to just die`, `want to die`, ...), an
//! alternation needs a required set from each branch, and a repetition of at least one copy keeps
//! its body's sets. Look-arounds (`\b`, `^`, `$`) match the empty string.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of literals; `""` in a set means "anything" (no constraint).
type Set = Vec<Vec<u8>>;

/// At most this many literals in a glued (cross-product) set.
const MAX_PRODUCT: usize = 64;
/// At most this many literals in the union of an alternation.
const MAX_UNION: usize = 256;
/// A class of at most this many bytes is spelled out as literals.
const MAX_CLASS: usize = 8;
/// A required set whose shortest literal is shorter than this is too common to be useful.
pub(crate) const MIN_LITERAL: usize = 3;

#[derive(Debug, Default)]
struct Info {
    /// The node's whole language, when small and finite.
    exact: Option<Set>,
    /// Every match starts with one of these.
    prefix: Option<Set>,
    /// Every match ends with one of these.
    suffix: Option<Set>,
    /// Every match contains one of these (the best such set found).
    required: Option<Set>,
}

impl Info {
    fn exact(set: Set) -> Self {
        Info {
            prefix: Some(set.clone()),
            suffix: Some(set.clone()),
            required: useful(&set).then(|| set.clone()),
            exact: Some(set),
        }
    }

    fn prefix(&self) -> Option<&Set> {
        self.exact.as_ref().or(self.prefix.as_ref())
    }

    fn suffix(&self) -> Option<&Set> {
        self.exact.as_ref().or(self.suffix.as_ref())
    }
}

/// Parses `pattern` as the matcher compiles it (ASCII classes, bytes) and returns its required
/// literals, or `None` when no set of useful literals is required (the pattern then needs a
/// regex set of its own).
pub(crate) fn required_literals(pattern: &str) -> Option<Set> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let set = analyse(&hir).required?;
    if score(&set) < MIN_LITERAL {
        return None;
    }
    let mut set: Set = set.iter().map(|l| rarest_window(l).to_vec()).collect();
    set.sort();
    set.dedup();
    Some(set)
}

/// Literals longer than this are cut to their rarest stretch: any part of a required literal is
/// required too, and short literals keep the automaton small.
const MAX_LITERAL: usize = 12;

/// The stretch of at most [`MAX_LITERAL`] bytes of `lit`, starting at a word, that is rarest.
fn rarest_window(lit: &[u8]) -> &[u8] {
    if lit.len() <= MAX_LITERAL {
        return lit;
    }
    let mut best = &lit[..MAX_LITERAL];
    let mut best_rarity = rarity(best);
    for start in 1..lit.len() {
        if lit[start - 1].is_ascii_alphanumeric() || !lit[start].is_ascii_alphanumeric() {
            continue;
        }
        let window = &lit[start..(start + MAX_LITERAL).min(lit.len())];
        let r = rarity(window);
        if r > best_rarity && window.len() >= MIN_LITERAL {
            best = window;
            best_rarity = r;
        }
    }
    best
}

/// A set is useful as a filter when it is non-empty and holds no empty string.
fn useful(set: &Set) -> bool {
    !set.is_empty() && set.iter().all(|s| !s.is_empty())
}

/// The shortest literal of a set: longer literals are rarer, so a higher score filters better.
fn score(set: &Set) -> usize {
    if !useful(set) {
        return 0;
    }
    set.iter().map(Vec::len).min().unwrap_or(0)
}

/// Words so common that a literal made of them alone filters almost nothing (English and
/// Spanish function words).
const COMMON: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "being", "but", "by", "can", "could", "did", "do", "does", "dont", "for", "from",
    "get", "got", "had", "has", "have", "he", "her", "him", "his", "how", "i", "if", "im", "in",
    "into", "is", "it", "its", "ive", "just", "like", "me", "more", "most", "my", "no", "not",
    "now", "of", "on", "one", "or", "our", "out", "she", "so", "some", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "up", "was", "we",
    "were", "what", "when", "where", "which", "who", "will", "with", "would", "you", "your",
    // Spanish.
    "al", "como", "con", "de", "del", "el", "en", "es", "esa", "ese", "eso", "esta", "este", "la",
    "las", "le", "lo", "los", "mas", "mi", "mis", "muy", "para", "pero", "por", "que", "se", "si",
    "su", "te", "tu", "un", "una", "y", "ya", "yo",
];

/// How rare a literal is likely to be: its bytes outside the commonest words.
fn rarity(lit: &[u8]) -> usize {
    lit.split(|b| !b.is_ascii_alphanumeric())
        .filter(|w| !COMMON.iter().any(|c| c.as_bytes() == *w))
        .map(<[u8]>::len)
        .sum()
}

/// A required set's worth as a filter: the rarity of its commonest literal, capped (beyond a
/// few rare bytes every literal is rare enough).
fn worth(set: &Set) -> usize {
    if !useful(set) {
        return 0;
    }
    set.iter().map(|l| rarity(l)).min().unwrap_or(0).min(6)
}

/// Keeps the better of two required sets: one whose literals are all long enough to filter
/// ([`MIN_LITERAL`]), then the rarer commonest literal, then the longer shortest literal, then
/// the fewer literals.
///
/// A set with a literal shorter than [`MIN_LITERAL`] can never be the pattern's filter (a
/// required set is only kept or united with others further up, never glued longer), so it must
/// not push out a usable one: `(?:after|since) (?:a|the) (?:od|overdose)` keeps `after a `, ...,
/// rather than the rarer but too short `od`, and gets a filter instead of a regex set of its own
/// (which cost ~9% of the bench's instructions for this one pattern).
fn better(a: Option<Set>, b: Option<Set>) -> Option<Set> {
    match (a, b) {
        (None, x) | (x, None) => x.filter(useful),
        (Some(a), Some(b)) => {
            let key = |s: &Set| (score(s) >= MIN_LITERAL, worth(s), score(s).min(8));
            let (sa, sb) = (key(&a), key(&b));
            if sb > sa || (sb == sa && b.len() < a.len()) {
                Some(b)
            } else {
                Some(a)
            }
        }
    }
}

fn product(a: &Set, b: &Set) -> Option<Set> {
    if a.len() * b.len() > MAX_PRODUCT {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            out.push(s);
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

fn union<'a>(sets: impl Iterator<Item = Option<&'a Set>>, limit: usize) -> Option<Set> {
    let mut out = Vec::new();
    for s in sets {
        out.extend(s?.iter().cloned());
        if out.len() > limit {
            return None;
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

fn analyse(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(vec![Vec::new()]),
        HirKind::Literal(lit) => Info::exact(vec![lit.0.to_vec()]),
        HirKind::Class(class) => match class_bytes(class) {
            Some(bytes) => Info::exact(bytes.into_iter().map(|b| vec![b]).collect()),
            None => Info::default(),
        },
        HirKind::Capture(cap) => analyse(&cap.sub),
        HirKind::Repetition(rep) => {
            let sub = analyse(&rep.sub);
            match (rep.min, rep.max) {
                (1, Some(1)) => sub,
                (0, Some(1)) => match &sub.exact {
                    Some(e) => {
                        let mut set = e.clone();
                        set.push(Vec::new());
                        Info::exact(set)
                    }
                    None => Info::default(),
                },
                (0, _) => Info::default(),
                _ => Info {
                    exact: None,
                    prefix: sub.prefix().cloned(),
                    suffix: sub.suffix().cloned(),
                    required: better(sub.required, sub.exact),
                },
            }
        }
        HirKind::Alternation(alts) => {
            let infos: Vec<Info> = alts.iter().map(analyse).collect();
            if let Some(exact) = union(infos.iter().map(|i| i.exact.as_ref()), MAX_UNION) {
                return Info::exact(exact);
            }
            Info {
                exact: None,
                prefix: union(infos.iter().map(Info::prefix), MAX_UNION),
                suffix: union(infos.iter().map(Info::suffix), MAX_UNION),
                required: union(infos.iter().map(|i| i.required.as_ref()), MAX_UNION)
                    .filter(useful),
            }
        }
        HirKind::Concat(parts) => concat(&parts.iter().map(analyse).collect::<Vec<_>>()),
    }
}

/// Glues neighbouring exact parts of a concatenation into longer literals.
fn concat(parts: &[Info]) -> Info {
    let mut required: Option<Set> = None;
    // The literals matched by the current stretch of exact parts (ending at the last part).
    let mut run: Option<Set> = Some(vec![Vec::new()]);
    // Whether every part so far was exact, and glued without giving up (so `run` is a prefix).
    let mut leading = true;
    let mut prefix: Option<Set> = None;
    for part in parts {
        if let Some(e) = &part.exact {
            run = match run.as_ref().and_then(|r| product(r, e)) {
                Some(p) => Some(p),
                None => {
                    if leading {
                        prefix = run.clone();
                        leading = false;
                    }
                    required = better(required, run);
                    Some(e.clone())
                }
            };
            continue;
        }
        let glued = match (&run, part.prefix()) {
            (Some(r), Some(p)) => product(r, p).or_else(|| Some(r.clone())),
            (r, _) => r.clone(),
        };
        if leading {
            prefix = glued.clone();
            leading = false;
        }
        required = better(required, glued);
        required = better(required, part.required.clone());
        run = part.suffix().cloned();
    }
    if leading {
        return Info::exact(run.unwrap_or_default());
    }
    required = better(required, run.clone());
    Info {
        exact: None,
        prefix,
        suffix: suffix_of(parts),
        required,
    }
}

/// The literals every match of a concatenation ends with: the trailing exact parts glued onto
/// the suffix of the last part that is not exact.
fn suffix_of(parts: &[Info]) -> Option<Set> {
    let mut run: Set = vec![Vec::new()];
    for part in parts.iter().rev() {
        match &part.exact {
            Some(e) => match product(e, &run) {
                Some(p) => run = p,
                None => return Some(run),
            },
            None => {
                return Some(match part.suffix() {
                    Some(s) => product(s, &run).unwrap_or(run),
                    None => run,
                })
            }
        }
    }
    Some(run)
}

/// The bytes of a small class, or `None` when it is too large to spell out.
fn class_bytes(class: &Class) -> Option<Vec<u8>> {
    match class {
        Class::Bytes(c) => {
            let n: usize = c.ranges().iter().map(|r| r.len()).sum();
            (n <= MAX_CLASS).then(|| {
                c.ranges()
                    .iter()
                    .flat_map(|r| r.start()..=r.end())
                    .collect()
            })
        }
        Class::Unicode(c) => {
            let n: usize = c
                .ranges()
                .iter()
                .map(|r| r.end() as usize - r.start() as usize + 1)
                .sum();
            if n > MAX_CLASS || c.ranges().iter().any(|r| !r.end().is_ascii()) {
                return None;
            }
            Some(
                c.ranges()
                    .iter()
                    .flat_map(|r| r.start() as u8..=r.end() as u8)
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|s| {
            s.into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect()
        })
    }

    #[test]
    fn neighbouring_exact_parts_are_glued() {
        assert_eq!(
            lits(r"\b(?:cut|burn) (?:my )?arm\b").unwrap(),
            ["burn arm", "burn my arm", "cut arm", "cut my arm"]
        );
    }

    #[test]
    fn long_literals_keep_their_rarest_stretch() {
        assert_eq!(
            rarest_window(b"i have to advise you against"),
            b"you against"
        );
        assert_eq!(rarest_window(b"short one"), b"short one");
    }

    #[test]
    fn a_repetition_keeps_its_first_and_last_copy() {
        // `kil+ myself`: "kil" before the run of l's, "l myself" after it.
        let l = lits(r"\bkil+ myself\b").unwrap();
        assert!(l == ["l myself"] || l == ["kil"], "{l:?}");
        assert_eq!(lits(r"\bsad(?: [a-z]+)* today\b").unwrap(), [" today"]);
    }

    #[test]
    fn every_branch_of_an_alternation_needs_a_literal() {
        assert_eq!(
            lits(r"(?:bridge|[a-z]+ tower)s?").unwrap(),
            [" tower", "bridge"]
        );
        assert_eq!(lits(r"(?:bridge|[a-z]+)"), None);
        assert_eq!(
            lits(r"\b(?:i|me)\b"),
            None,
            "literals shorter than three bytes filter nothing"
        );
        assert_eq!(lits(r"[a-z]+ing").unwrap(), ["ing"]);
        assert_eq!(lits(r"[a-z]+in"), None);
    }

    #[test]
    fn a_set_too_short_to_filter_does_not_push_out_a_usable_one() {
        // Too many spellings to glue whole (3 x 4 x 3 x 3 > MAX_PRODUCT): the words before
        // `od` make the filter.
        let l = lits(
            r"(?:survived|after|since) (?:an|my|a|the) (?:intentional |deliberate )?(?:od|overdose|attempt)\b",
        )
        .expect("a filter");
        assert!(l.iter().all(|l| l.len() >= MIN_LITERAL), "{l:?}");
    }

    #[test]
    fn rare_words_beat_common_ones() {
        assert_eq!(rarity(b"what are the "), 0);
        assert_eq!(rarity(b"which household"), 9);
        assert_eq!(
            lits(r"\bwhat are the (?:[a-z]+ )*(?:bleach|cyanide)").unwrap(),
            ["bleach", "cyanide"]
        );
    }

    #[test]
    fn small_classes_are_spelled_out() {
        assert_eq!(lits(r"licen[sc]e").unwrap(), ["licence", "license"]);
    }
}
