//! The redactor behind `retention = "redacted"`: replaces direct identifiers with placeholders
//! (`[email]`, `[phone]`, `[card]`, `[ssn]`, `[ip]`, `[url]`, `[address]`) and keeps the rest of
//! the text, so a redacted log can still be replayed.
//!
//! It errs towards redacting: a false positive costs a few words of context, a false negative
//! leaks an identifier into the log. Card numbers must pass the Luhn check, so order numbers and
//! long digit runs that are not cards fall through to the phone pattern or stay.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// One kind of identifier: its pattern, its placeholder and an optional check on the match.
struct Pattern {
    regex: Regex,
    placeholder: &'static str,
    valid: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// The patterns in the order they apply: the longest, most specific identifiers first. The first
/// needs a URL with a query, the second an `@`, every other one a digit ([`redact`] relies on it).
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |re: &str, placeholder, valid| Pattern {
        regex: Regex::new(re).expect("redaction patterns are valid"),
        placeholder,
        valid,
    };
    vec![
        // URLs carrying a query string (tokens, ids, emails in parameters).
        p(
            r#"(?i)\b(?:https?://|www\.)[^\s<>"'?]*\?[^\s<>"']+"#,
            "[url]",
            always,
        ),
        p(
            r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
            "[email]",
            always,
        ),
        p(r"\b[0-9](?:[ -]?[0-9]){12,18}\b", "[card]", luhn),
        p(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", "[ssn]", always),
        p(
            r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
            "[ip]",
            always,
        ),
        p(
            r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*\b",
            "[ip]",
            always,
        ),
        // International (+44 20 7946 0958), North American ((555) 123-4567, 1-800-273-8255) and
        // European national (020 7946 0958, 612 345 678) formats.
        p(
            r"\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}\b",
            "[phone]",
            always,
        ),
        p(
            r"(?:\b1[ .-]?)?(?:\([0-9]{3}\)|\b[0-9]{3})[ .-]?[0-9]{3}[ .-]?[0-9]{4}\b",
            "[phone]",
            always,
        ),
        p(
            r"\b0[0-9]{2,4}[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}\b",
            "[phone]",
            always,
        ),
        p(
            r"\b[6-9][0-9]{2}[ .][0-9]{3}[ .][0-9]{3}\b",
            "[phone]",
            always,
        ),
        // Street addresses: "42 Baker Street", "1600 Pennsylvania Ave NW", "Calle Mayor 5".
        p(
            r"(?i)\b[0-9]{1,6}[a-z]?,?\s+(?:[\p{L}'-]+\.?\s+){1,4}(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|close|crescent|gardens)\b\.?(?:\s+(?:n|s|e|w|ne|nw|se|sw)\b)?",
            "[address]",
            always,
        ),
        p(
            r"(?i)\b(?:calle|c/|avenida|avda\.?|av\.|plaza|pza\.|paseo|carrera|rua|rue)\s+(?:[\p{L}'-]+\s+){0,4}[0-9]{1,5}\b",
            "[address]",
            always,
        ),
    ]
});

/// Replaces the direct identifiers in `text`; borrows when there are none.
pub fn redact(text: &str) -> Cow<'_, str> {
    // Cheap facts first: every pattern needs a digit, an `@`, or a URL with a query, and most
    // messages have few of those, so most patterns never run (this is the audit writer's hot path).
    let bytes = text.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let has_at = bytes.contains(&b'@');
    let has_query = bytes.contains(&b'?') && (text.contains("://") || text.contains("www."));
    let mut out = Cow::Borrowed(text);
    for (i, pattern) in PATTERNS.iter().enumerate() {
        let possible = match i {
            0 => has_query,
            1 => has_at,
            _ => has_digit,
        };
        if !possible || !pattern.regex.is_match(&out) {
            continue;
        }
        let replaced = pattern.regex.replace_all(&out, |caps: &Captures<'_>| {
            let m = &caps[0];
            if (pattern.valid)(m) {
                pattern.placeholder.to_string()
            } else {
                m.to_string()
            }
        });
        // A match that failed its check is put back unchanged: keep borrowing then.
        if let Cow::Owned(s) = replaced {
            if s != *out {
                out = Cow::Owned(s);
            }
        }
    }
    out
}

/// Whether a run of digits (with spaces or dashes) passes the Luhn check of card numbers.
fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "input: {input}");
    }

    #[test]
    fn replaces_each_kind_of_identifier() {
        check(
            "mail me at jane.doe+x@example.co.uk please",
            "mail me at [email] please",
        );
        check("my card is 4111 1111 1111 1111.", "my card is [card].");
        check("card 4111-1111-1111-1111", "card [card]");
        check("ssn 123-45-6789 ok", "ssn [ssn] ok");
        check(
            "call (555) 123-4567 or 555.123.4567",
            "call [phone] or [phone]",
        );
        check(
            "US 1-800-273-8255, UK +44 20 7946 0958",
            "US [phone], UK [phone]",
        );
        check("mi móvil es 612 345 678", "mi móvil es [phone]");
        check(
            "from 192.168.1.20 and 2001:db8::8a2e:370:7334",
            "from [ip] and [ip]",
        );
        check(
            "see https://x.example/reset?token=abc123&u=9 now",
            "see [url] now",
        );
        check(
            "I live at 42 Baker Street, London",
            "I live at [address], London",
        );
        check("1600 Pennsylvania Ave NW is big", "[address] is big");
        check(
            "vivo en la Calle Mayor 5, Madrid",
            "vivo en la [address], Madrid",
        );
    }

    #[test]
    fn keeps_what_is_not_an_identifier() {
        let kept = [
            "I feel hopeless and I can't sleep since 2019.",
            "Call or text 988 any time, or see https://988lifeline.org",
            "It is 12:30:45 and I took 2 pills at 10.",
            "order 1234567890123 arrived", // 13 digits, not Luhn-valid
            "I want to walk away",
        ];
        for text in kept {
            assert!(
                matches!(redact(text), Cow::Borrowed(_)),
                "changed: {text} -> {}",
                redact(text)
            );
        }
    }

    #[test]
    fn luhn_accepts_cards_and_rejects_near_misses() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500 0000 0000 0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("411111111111"));
    }
}
