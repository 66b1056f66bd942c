//! Text normalisation: every rule matches normalised text, never the raw message.
//!
//! One pass maps the raw text to a lower-case, accent-free, mostly-ASCII form and remembers, for
//! every output byte, the span of the input it came from, so evidence can point back into the
//! message the user actually wrote. In order:
//!
//! 1. Unicode compatibility decomposition (NFKD: full-width letters, ligatures, styled maths
//!    letters), combining marks dropped (so `á` → `a`, `ñ` → `n`), lower case.
//! 2. Zero-width and format characters removed; confusable letters (Cyrillic and Greek look-alikes
//!    such as `о`, `а`, `е`) mapped to their Latin twins; curly quotes and dashes made ASCII.
//! 3. Apostrophes inside words removed (`I'm` → `im`, `don't` → `dont`), so patterns spell each
//!    contraction one way; runs of white space collapsed to one space.
//! 4. Leetspeak inside words (`d1e` → `die`, `su1c1de` → `suicide`), only in tokens that hold
//!    letters and are not numbers with a unit (`25m`, `2nd`, `500mg` stay as they are).
//! 5. Stretched letters: a run of three or more of the same letter becomes one (`diiie` → `die`,
//!    `killlll` → `kil`): rules that must survive stretching write `l+`-style patterns.
//! 6. Slang and abbreviations from the rule packs' `[slang]` tables, on word boundaries
//!    (`kms` → `kill myself`, `unalive` → `kill`).

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use super::spanmap::SpanMap;

/// Normalised text and the map from each of its bytes back to the original text.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// The normalised text.
    pub text: String,
    /// For each byte of `text`, the byte range of the original text it came from.
    src: SpanMap,
}

impl Normalized {
    /// Maps a byte span of the normalised text back to a byte span of the original text.
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        if self.src.is_empty() || start >= end {
            return (0, 0);
        }
        let last = self.src.len() - 1;
        let s = self.src.get(start.min(last)).0;
        let e = self.src.get((end - 1).min(last)).1;
        (s as usize, e as usize)
    }
}

/// Slang and abbreviation expansion, built from the rule packs' `[slang]` tables.
#[derive(Debug, Clone, Default)]
pub struct Slang {
    automaton: Option<AhoCorasick>,
    keys: Vec<String>,
    replacements: Vec<String>,
}

impl Slang {
    /// Builds the expander from `(slang, expansion)` pairs, both given in normalised form.
    pub fn new(pairs: &[(String, String)]) -> Self {
        if pairs.is_empty() {
            return Self::default();
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(k, _)| k.as_str()))
            .ok();
        Self {
            automaton,
            keys: pairs.iter().map(|(k, _)| k.clone()).collect(),
            replacements: pairs.iter().map(|(_, v)| v.clone()).collect(),
        }
    }

    /// The slang words, in normalised form: text where none of them occurs on word boundaries
    /// is left as it is by [`Self::expand`].
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Step 6 on text that has been through steps 1 to 5 ([`normalize_unexpanded`]).
    pub(crate) fn expand(&self, input: Normalized) -> Normalized {
        let Some(ac) = &self.automaton else {
            return input;
        };
        let bytes = input.text.as_bytes();
        let mut out = Normalized {
            text: String::with_capacity(input.text.len() + 16),
            src: SpanMap::default(),
        };
        let mut last = 0;
        for m in ac.find_iter(bytes) {
            if !is_word_boundary(bytes, m.start()) || !is_word_boundary(bytes, m.end()) {
                continue;
            }
            out.text.push_str(&input.text[last..m.start()]);
            out.src.extend_from(&input.src, last, m.start());
            let span = (input.src.get(m.start()).0, input.src.get(m.end() - 1).1);
            let replacement = &self.replacements[m.pattern().as_usize()];
            out.text.push_str(replacement);
            out.src.push_run(span, 0, replacement.len());
            last = m.end();
        }
        if last == 0 {
            return input;
        }
        out.text.push_str(&input.text[last..]);
        out.src.extend_from(&input.src, last, input.src.len());
        out
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_word_boundary(bytes: &[u8], at: usize) -> bool {
    let before = at > 0 && is_word_byte(bytes[at - 1]);
    let after = at < bytes.len() && is_word_byte(bytes[at]);
    before != after || (!before && !after)
}

/// Normalises `raw` (see the module documentation for the steps).
pub fn normalize(raw: &str, slang: &Slang) -> Normalized {
    slang.expand(normalize_unexpanded(raw))
}

/// Steps 1 to 5 of [`normalize`]: all but the slang expansion, which
/// [`super::matcher::Matcher::scan_raw`] applies only when a slang word occurs.
pub(crate) fn normalize_unexpanded(raw: &str) -> Normalized {
    if raw.is_ascii() {
        return normalize_ascii(raw.as_bytes());
    }
    match fold_to_ascii(raw) {
        Some((bytes, src)) => normalize_ascii_spans(bytes, src),
        None => normalize_unicode(raw),
    }
}

/// Step 1 and the character folding of step 2 for text that is ASCII but for a few characters
/// which all fold to ASCII (typographic quotes, no-break spaces, accented letters): the bytes
/// and their spans exactly as [`normalize_unicode`] would push them, so the ASCII steps can
/// finish the job. `None` when some character stays non-ASCII (or folds to an upper-case
/// letter, which the ASCII path would lower), and the text takes the slow path.
///
/// Real messages are often like this (three in five replies of a counselling data set hold a
/// `’` or a no-break space), and the slow path costs ~10x the fast one per byte: it decodes
/// every character into a vector of `(char, u32, u32)` and runs each step over that.
fn fold_to_ascii(raw: &str) -> Option<(Vec<u8>, SpanMap)> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut src = SpanMap::default();
    let mut ok = true;
    for (i, c) in raw.char_indices() {
        let span = (i as u32, (i + c.len_utf8()) as u32);
        if c.is_ascii() {
            bytes.push(c as u8);
            src.push(span);
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        decompose_compatible(c, |d| {
            if !ok || is_combining_mark(d) || is_invisible(d) {
                return;
            }
            for l in d.to_lowercase() {
                let f = fold(l);
                if f.is_whitespace() {
                    bytes.push(b' ');
                } else if f.is_ascii() && !f.is_ascii_uppercase() {
                    bytes.push(f as u8);
                } else {
                    ok = false;
                    return;
                }
                src.push(span);
            }
        });
        if !ok {
            return None;
        }
    }
    Some((bytes, src))
}

/// Steps 1 to 5 for ASCII text (most text), byte by byte: the same output and spans as
/// [`normalize_unicode`], without decoding characters or building a vector of them.
///
/// Ordinary text needs little beyond lower case: double spaces, apostrophes inside words,
/// leetspeak and stretched letters are rare. So the first step is a plain byte map (which the
/// compiler vectorises), and each later step first asks, with a cheap scan, whether it has
/// anything to do; removals then move whole stretches of bytes, not byte after byte.
fn normalize_ascii(raw: &[u8]) -> Normalized {
    normalize_ascii_spans(raw.to_vec(), SpanMap::identity(raw.len()))
}

/// [`normalize_ascii`] on ASCII bytes `b` whose spans in the original text are `src` (one per
/// byte; see [`fold_to_ascii`]). No step looks at a span, it only keeps or merges them.
fn normalize_ascii_spans(mut b: Vec<u8>, mut src: SpanMap) -> Normalized {
    // Step 1: lower case, every white space byte a space; `src[i]` is where byte `i` came from.
    // Without branches, so that the loop vectorises.
    for c in &mut b {
        let space = (*c == b' ') | (c.wrapping_sub(b'\t') <= b'\r' - b'\t');
        let lower = *c | (u8::from(c.wrapping_sub(b'A') < 26) << 5);
        *c = if space { b' ' } else { lower };
    }
    // Runs of white space collapsed: a space at the start or after a space goes.
    if b.first() == Some(&b' ') || any_pair(&b, |x, y| x == b' ' && y == b' ') {
        let doomed: Vec<usize> = (0..b.len())
            .filter(|&k| b[k] == b' ' && (k == 0 || b[k - 1] == b' '))
            .collect();
        remove(&mut b, &mut src, &doomed);
    }
    // Steps 3 and 4: leetspeak inside tokens, then apostrophes between letters.
    leet_ascii(&mut b);
    let doomed: Vec<usize> = memchr::memchr_iter(b'\'', &b)
        .filter(|&k| {
            k > 0
                && k + 1 < b.len()
                && b[k - 1].is_ascii_alphabetic()
                && b[k + 1].is_ascii_alphabetic()
        })
        .collect();
    remove(&mut b, &mut src, &doomed);
    // Step 5: stretched letters, when a run of three equal letters exists at all.
    if has_stretch(&b) {
        unstretch(&mut b, &mut src);
    }
    Normalized {
        text: String::from_utf8(b).expect("ASCII in, ASCII out"),
        src,
    }
}

/// Whether `pred` holds for two neighbouring bytes of `b`. Each chunk is tested whole, without
/// an early exit, so the test vectorises.
fn any_pair(b: &[u8], pred: impl Fn(u8, u8) -> bool) -> bool {
    let Some(rest) = b.get(1..) else {
        return false;
    };
    b.chunks(32)
        .zip(rest.chunks(32))
        .any(|(x, y)| x.iter().zip(y).fold(false, |a, (&p, &q)| a | pred(p, q)))
}

/// Removes the bytes at `doomed` (ascending) from `b` and their spans from `src`, moving the
/// stretches between them in bulk.
fn remove(b: &mut Vec<u8>, src: &mut SpanMap, doomed: &[usize]) {
    let Some(&first) = doomed.first() else {
        return;
    };
    let old = std::mem::take(src);
    src.extend_from(&old, 0, first);
    let mut w = first;
    for (i, &k) in doomed.iter().enumerate() {
        let next = doomed.get(i + 1).copied().unwrap_or(b.len());
        b.copy_within(k + 1..next, w);
        src.extend_from(&old, k + 1, next);
        w += next - k - 1;
    }
    b.truncate(w);
}

/// Whether `b` holds a run of three or more of the same letter.
fn has_stretch(b: &[u8]) -> bool {
    let (Some(one), Some(two)) = (b.get(1..), b.get(2..)) else {
        return false;
    };
    b.chunks(32)
        .zip(one.chunks(32))
        .zip(two.chunks(32))
        .any(|((x, y), z)| {
            x.iter().zip(y).zip(z).fold(false, |a, ((&p, &q), &r)| {
                a | (p == q && q == r && (p | 0x20).wrapping_sub(b'a') < 26)
            })
        })
}

/// Step 5 in place: a run of three or more of one letter keeps its first, whose span then
/// reaches to the end of the run's last.
fn unstretch(b: &mut Vec<u8>, src: &mut SpanMap) {
    let old = std::mem::take(src);
    // `b[..w]` is done; `b[last..k]` is still to be moved down to `w`.
    let (mut w, mut last, mut k) = (0, 0, 0);
    while k < b.len() {
        let c = b[k];
        let j = k + b[k..].iter().take_while(|&&x| x == c).count();
        if j - k >= 3 && c.is_ascii_alphabetic() {
            b.copy_within(last..=k, w);
            w += k + 1 - last;
            src.extend_from(&old, last, k);
            src.push((old.get(k).0, old.get(j - 1).1));
            last = j;
        }
        k = j;
    }
    let n = b.len();
    b.copy_within(last..n, w);
    src.extend_from(&old, last, n);
    b.truncate(w + n - last);
}

fn leet_ascii_byte(c: u8) -> bool {
    matches!(
        c,
        b'0' | b'1' | b'!' | b'|' | b'3' | b'4' | b'@' | b'5' | b'$' | b'7' | b'+' | b'8'
    )
}

/// [`contractions_and_leet`]'s leetspeak step on ASCII bytes.
///
/// Only a token holding a leet byte can change, so the scan jumps from one leet byte to the
/// next and looks at its token alone: ordinary text holds few (numbers, `!`), and most of its
/// tokens are never looked at.
fn leet_ascii(b: &mut [u8]) {
    let is_tok = |c: u8| c.is_ascii_alphanumeric() || leet_ascii_byte(c) || c == b'\'';
    let mut from = 0;
    while let Some(at) = next_leet(b, from) {
        // The token around `at`: every leet byte is a token byte.
        let mut i = at;
        while i > from && is_tok(b[i - 1]) {
            i -= 1;
        }
        let mut j = at + 1;
        while j < b.len() && is_tok(b[j]) {
            j += 1;
        }
        let mut end = j;
        while end > i && matches!(b[end - 1], b'!' | b'|' | b'+' | b'$' | b'@' | b'\'') {
            end -= 1;
        }
        let mut start = i;
        while start < end && matches!(b[start], b'!' | b'|' | b'+' | b'\'') {
            start += 1;
        }
        let token = &b[start..end];
        let letters = token.iter().any(u8::is_ascii_alphabetic);
        let has_leet = token
            .iter()
            .any(|&c| leet_ascii_byte(c) && !c.is_ascii_alphabetic());
        let digits = token.iter().take_while(|c| c.is_ascii_digit()).count();
        let with_unit = digits > 0
            && token.len() - digits <= 3
            && token[digits..].iter().all(u8::is_ascii_alphabetic);
        if letters && has_leet && !with_unit {
            for c in &mut b[start..end] {
                if let Some(l) = leet(*c as char) {
                    *c = l as u8;
                }
            }
        }
        from = j;
    }
}

/// The first leet byte in `b[from..]`. Each chunk is tested whole, without an early exit, so
/// the test vectorises; only the chunk holding one is searched byte by byte.
fn next_leet(b: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    for chunk in b[from..].chunks(32) {
        if chunk.iter().fold(false, |a, &x| a | leet_ascii_byte(x)) {
            return chunk
                .iter()
                .position(|&c| leet_ascii_byte(c))
                .map(|k| at + k);
        }
        at += chunk.len();
    }
    None
}

fn normalize_unicode(raw: &str) -> Normalized {
    let mut chars: Vec<(char, u32, u32)> = Vec::with_capacity(raw.len());
    for (i, c) in raw.char_indices() {
        let span = (i as u32, (i + c.len_utf8()) as u32);
        if c.is_ascii() {
            push_char(&mut chars, c.to_ascii_lowercase(), span);
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        decompose_compatible(c, |d| {
            if is_combining_mark(d) || is_invisible(d) {
                return;
            }
            for l in d.to_lowercase() {
                push_char(&mut chars, fold(l), span);
            }
        });
    }
    let chars = contractions_and_leet(chars);
    let mut out = Normalized {
        text: String::with_capacity(raw.len()),
        src: SpanMap::default(),
    };
    // Stretched letters: a run of three or more of one letter becomes one.
    let mut i = 0;
    while i < chars.len() {
        let (c, s, _) = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j].0 == c {
            j += 1;
        }
        let run = j - i;
        let keep = if run >= 3 && c.is_alphabetic() {
            1
        } else {
            run
        };
        if keep == 1 && run >= 3 {
            push_out(&mut out, c, (s, chars[j - 1].2));
        } else {
            for &(c, s, e) in &chars[i..j] {
                push_out(&mut out, c, (s, e));
            }
        }
        i = j;
    }
    out
}

fn push_char(chars: &mut Vec<(char, u32, u32)>, c: char, span: (u32, u32)) {
    if c.is_whitespace() {
        if matches!(chars.last(), Some((' ', _, _)) | None) {
            return;
        }
        chars.push((' ', span.0, span.1));
    } else {
        chars.push((c, span.0, span.1));
    }
}

fn push_out(out: &mut Normalized, c: char, span: (u32, u32)) {
    out.text.push(c);
    out.src.push_run(span, 0, c.len_utf8());
}

/// Zero-width, bidirectional and other format characters that hide inside words.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}')
}

/// Maps confusable letters and typographic punctuation to ASCII.
fn fold(c: char) -> char {
    match c {
        // Cyrillic look-alikes.
        'а' => 'a',
        'в' => 'b',
        'с' => 'c',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'ѕ' => 's',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'ԁ' => 'd',
        'ɡ' => 'g',
        'ԛ' => 'q',
        'ԝ' => 'w',
        // Greek look-alikes.
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        // Other Latin variants.
        'ı' => 'i',
        'ł' => 'l',
        'ø' => 'o',
        'đ' => 'd',
        'ß' => 's',
        // Punctuation.
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '`'
        | '\u{00B4}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
        | '\u{00BB}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        '\u{00A1}' => '!',
        '\u{00BF}' => '?',
        other => other,
    }
}

fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        _ => return None,
    })
}

/// Removes apostrophes inside words and undoes leetspeak inside word-like tokens.
fn contractions_and_leet(mut chars: Vec<(char, u32, u32)>) -> Vec<(char, u32, u32)> {
    let is_tok = |c: char| c.is_alphanumeric() || leet(c).is_some() || c == '\'';
    let mut i = 0;
    while i < chars.len() {
        if !is_tok(chars[i].0) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && is_tok(chars[j].0) {
            j += 1;
        }
        // Trailing leet-able punctuation ("help!") is punctuation, not a letter.
        let mut end = j;
        while end > i && matches!(chars[end - 1].0, '!' | '|' | '+' | '$' | '@' | '\'') {
            end -= 1;
        }
        let mut start = i;
        while start < end && matches!(chars[start].0, '!' | '|' | '+' | '\'') {
            start += 1;
        }
        let token = &chars[start..end];
        let letters = token.iter().filter(|(c, _, _)| c.is_alphabetic()).count();
        let has_leet = token
            .iter()
            .any(|(c, _, _)| leet(*c).is_some() && !c.is_alphabetic());
        if letters >= 1 && has_leet && !is_number_with_unit(token) {
            for ch in &mut chars[start..end] {
                if let Some(l) = leet(ch.0) {
                    ch.0 = l;
                }
            }
        }
        i = j;
    }
    // Apostrophes between two letters go: "i'm" -> "im".
    let mut out = Vec::with_capacity(chars.len());
    for k in 0..chars.len() {
        let c = chars[k].0;
        if c == '\''
            && k > 0
            && k + 1 < chars.len()
            && chars[k - 1].0.is_alphabetic()
            && chars[k + 1].0.is_alphabetic()
        {
            continue;
        }
        out.push(chars[k]);
    }
    out
}

/// `25m`, `2nd`, `500mg`, `10pm`, `3x`: digits followed by a short unit, or a digit-led token.
fn is_number_with_unit(token: &[(char, u32, u32)]) -> bool {
    let digits = token
        .iter()
        .take_while(|(c, _, _)| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return false;
    }
    let rest = token.len() - digits;
    rest <= 3 && token[digits..].iter().all(|(c, _, _)| c.is_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let slang = Slang::new(&[
            ("kms".to_string(), "kill myself".to_string()),
            ("unalive".to_string(), "kill".to_string()),
        ]);
        normalize(s, &slang).text
    }

    #[test]
    fn folds_case_accents_and_compatibility_forms() {
        assert_eq!(norm("I WANT TO DIE"), "i want to die");
        assert_eq!(norm("Quiero morir, ¿sí?"), "quiero morir, ?si?");
        assert_eq!(norm("ｋｉｌｌ ｍｙｓｅｌｆ"), "kill myself");
        assert_eq!(norm("𝐝𝐢𝐞"), "die");
    }

    #[test]
    fn removes_zero_width_and_maps_confusables() {
        assert_eq!(norm("su\u{200B}ic\u{200D}ide"), "suicide");
        // Cyrillic а, е and о in an otherwise Latin word.
        assert_eq!(norm("dеаd and gоne"), "dead and gone");
        assert_eq!(norm("it\u{2019}s over"), "its over");
    }

    #[test]
    fn undoes_leetspeak_and_stretching_but_keeps_numbers() {
        assert_eq!(norm("i want to d1e"), "i want to die");
        assert_eq!(norm("su1c1d3"), "suicide");
        assert_eq!(norm("i want to diiiie"), "i want to die");
        assert_eq!(norm("taller than 25 meters"), "taller than 25 meters");
        assert_eq!(norm("took 500mg at 10pm"), "took 500mg at 10pm");
        assert_eq!(norm("help!"), "help!");
    }

    #[test]
    fn expands_slang_on_word_boundaries_only() {
        assert_eq!(norm("i might kms tonight"), "i might kill myself tonight");
        assert_eq!(norm("want to unalive myself"), "want to kill myself");
        assert_eq!(norm("the kmsx file"), "the kmsx file");
    }

    #[test]
    fn the_ascii_path_matches_the_general_path() {
        // A small generator over the bytes every step cares about.
        let alphabet = b"aAbeIlmst  \t\n\r\x0b\x0c\x1c'`013457!|@$+8.,-xyzoOoo";
        let mut next = crate::engine::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut fixed: Vec<String> = [
            "I'm sooo done!!! d1e now",
            "  500mg at 10pm  ",
            "su1c1d3 isn't 2nd",
            "help!",
            "'tis",
            "aaa''bbb",
            "kil l l lll",
            "x\ty\r\nz",
            "!!!1",
            "d0n't",
            "it's 4am",
            "$ave @ll",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..3000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect();
            fixed.push(s);
        }
        for s in &fixed {
            let fast = slang_free(normalize_ascii(s.as_bytes()));
            let slow = slang_free(normalize_unicode(s));
            assert_eq!(fast, slow, "{s:?}");
        }
    }

    #[test]
    fn folded_text_takes_the_ascii_path_with_the_same_result() {
        let pieces = [
            "I\u{2019}m",
            "don\u{2019}t",
            "\u{00A0}",
            " ",
            "  ",
            "\u{201C}",
            "\u{201D}",
            "caf\u{00E9}",
            "\u{00C9}T\u{00C9}",
            "\u{2014}",
            "d1e",
            "kiiiill",
            "\u{00E9}\u{00E9}\u{00E9}",
            "\u{200B}",
            "\u{0441}\u{043E}",
            "\u{00BD}",
            "\u{1F622}",
            "\u{FB01}ne",
            "\u{FF21}",
            "\n",
            "'",
            "`",
            "x",
            "\u{00A0}\u{00A0}",
            "\u{2009}",
            "\u{0301}",
            "n\u{0303}",
            "$ave",
            "4am",
            "\u{1FEF}",
        ];
        let mut next = crate::engine::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut folded = 0;
        for _ in 0..5000 {
            let len = (next() % 10) as usize;
            let s: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let slow = slang_free(normalize_unicode(&s));
            if let Some((bytes, src)) = fold_to_ascii(&s) {
                assert_eq!(slang_free(normalize_ascii_spans(bytes, src)), slow, "{s:?}");
                folded += 1;
            }
        }
        assert!(folded > 1000, "the texts exercise the fold ({folded})");
    }

    fn slang_free(n: Normalized) -> (String, Vec<(u32, u32)>) {
        (n.text, n.src.to_vec())
    }

    #[test]
    fn spans_point_back_into_the_original_text() {
        let raw = "Well… I want to d1e";
        let n = normalize(raw, &Slang::new(&[]));
        let at = n.text.find("die").unwrap();
        let (s, e) = n.original_span(at, at + 3);
        assert_eq!(&raw[s..e], "d1e");
        let slang = Slang::new(&[("kms".to_string(), "kill myself".to_string())]);
        let raw = "ok  KMS now";
        let n = normalize(raw, &slang);
        let at = n.text.find("kill myself").unwrap();
        let (s, e) = n.original_span(at, at + "kill myself".len());
        assert_eq!(&raw[s..e], "KMS");
    }
}
