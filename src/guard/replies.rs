//! Safe replies and crisis lines: data under `rules/` (`safe_replies.toml`, `crisis_lines.toml`),
//! embedded in the binary and overridable with a rules folder.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::engine::pack::{embedded_file, PackError, PackErrors};

/// One crisis line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrisisLine {
    /// ISO 3166-1 alpha-2 region, or `international`.
    pub region: String,
    /// The language this wording is for; `None` is the region's default.
    #[serde(default)]
    pub language: Option<String>,
    /// The service's name.
    pub name: String,
    /// How to reach it, in one line.
    pub how: String,
    /// Its web address.
    pub url: String,
    /// Where the entry was checked.
    pub source: String,
    /// When the entry was last checked (YYYY-MM-DD).
    pub checked: String,
    /// How it was checked.
    pub method: String,
}

impl CrisisLine {
    /// The line as shown to the user: `<name>: <how>`.
    pub fn display(&self) -> String {
        format!("{}: {}", self.name, self.how)
    }
}

/// What a safe text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    /// A whole safe reply.
    Replace,
    /// A short note added to a reply.
    Append,
    /// A system-prompt addition for a re-ask.
    Guidance,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    #[serde(rename = "for")]
    target: String,
    language: String,
    kind: TextKind,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplies {
    reply: Vec<RawReply>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLines {
    line: Vec<CrisisLine>,
}

/// Safe texts and crisis lines, ready to render.
#[derive(Debug, Clone)]
pub struct SafeTexts {
    texts: HashMap<(String, String, TextKind), String>,
    lines: Vec<CrisisLine>,
}

/// A resolved locale: the language and the region whose crisis line applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale {
    /// Lower-case language (`en`, `es`).
    pub language: String,
    /// The region of the crisis line used (`US`, `GB`, ..., `international`): a closed set.
    pub region: String,
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.language, self.region)
    }
}

impl SafeTexts {
    /// Loads `safe_replies.toml` and `crisis_lines.toml` from `dir` when given and present there,
    /// else the embedded copies.
    pub fn load(dir: Option<&Path>) -> Result<Self, PackErrors> {
        let read = |name: &str| -> Result<(String, String), PackErrors> {
            if let Some(dir) = dir {
                let path = dir.join(name);
                if path.exists() {
                    return std::fs::read_to_string(&path)
                        .map(|t| (path.display().to_string(), t))
                        .map_err(|e| {
                            PackErrors(vec![PackError {
                                file: path.display().to_string(),
                                line: 1,
                                col: 1,
                                message: format!("cannot read: {e}"),
                            }])
                        });
                }
            }
            let text = embedded_file(name).unwrap_or_default();
            Ok((format!("rules/{name}"), text.to_string()))
        };
        let (replies_file, replies_text) = read("safe_replies.toml")?;
        let (lines_file, lines_text) = read("crisis_lines.toml")?;
        Self::from_sources(&replies_file, &replies_text, &lines_file, &lines_text)
    }

    /// Parses the two files' texts; every problem is reported as `file:line:col`.
    pub fn from_sources(
        replies_file: &str,
        replies_text: &str,
        lines_file: &str,
        lines_text: &str,
    ) -> Result<Self, PackErrors> {
        let mut errors = Vec::new();
        let replies = toml::from_str::<RawReplies>(replies_text)
            .map_err(|e| errors.push(locate(replies_file, replies_text, &e)))
            .ok();
        let lines = toml::from_str::<RawLines>(lines_text)
            .map_err(|e| errors.push(locate(lines_file, lines_text, &e)))
            .ok();
        let mut texts = HashMap::new();
        if let Some(replies) = replies {
            for r in replies.reply {
                texts.insert((r.target, r.language, r.kind), r.text);
            }
            for kind in [TextKind::Replace, TextKind::Append] {
                if !texts.contains_key(&("default".to_string(), "en".to_string(), kind)) {
                    errors.push(PackError {
                        file: replies_file.to_string(),
                        line: 1,
                        col: 1,
                        message: format!("needs an English \"default\" reply of kind {kind:?}"),
                    });
                }
            }
        }
        let lines = lines.map(|l| l.line).unwrap_or_default();
        if !lines
            .iter()
            .any(|l| l.region == "international" && l.language.is_none())
        {
            errors.push(PackError {
                file: lines_file.to_string(),
                line: 1,
                col: 1,
                message: "needs an \"international\" line without a language (the fallback)".into(),
            });
        }
        if errors.is_empty() {
            Ok(Self { texts, lines })
        } else {
            Err(PackErrors(errors))
        }
    }

    /// Every crisis line.
    pub fn lines(&self) -> &[CrisisLine] {
        &self.lines
    }

    /// Resolves a BCP 47 tag (`es-US`, `en_GB`, `fr`) against the crisis lines: the tag's region if
    /// a line exists for it, else `default_region`'s, else `international`.
    pub fn resolve(&self, tag: Option<&str>, default: &str) -> Locale {
        let parse = |tag: &str| -> (String, Option<String>) {
            let mut parts = tag.split(['-', '_']);
            let language = parts.next().unwrap_or("en").to_ascii_lowercase();
            let region = parts
                .find(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_alphabetic()))
                .map(|p| p.to_ascii_uppercase());
            (language, region)
        };
        let (default_language, default_region) = parse(default);
        let (language, region) = match tag {
            Some(t) if !t.is_empty() => {
                let (l, r) = parse(t);
                // A bare language tag (`es`) keeps the default region (`US` for a US operator).
                (l, r.or_else(|| default_region.clone()))
            }
            _ => (default_language, default_region),
        };
        let region = region
            .filter(|r| self.lines.iter().any(|l| &l.region == r))
            .unwrap_or_else(|| "international".to_string());
        Locale { language, region }
    }

    /// The crisis line for a locale: its language's wording in its region, else the region's default.
    pub fn line(&self, locale: &Locale) -> &CrisisLine {
        let in_region = |l: &&CrisisLine| l.region == locale.region;
        self.lines
            .iter()
            .filter(in_region)
            .find(|l| l.language.as_deref() == Some(locale.language.as_str()))
            .or_else(|| {
                self.lines
                    .iter()
                    .filter(in_region)
                    .find(|l| l.language.is_none())
            })
            .or_else(|| {
                self.lines
                    .iter()
                    .find(|l| l.region == "international" && l.language.is_none())
            })
            .expect("validated: an international line exists")
    }

    /// The text of `kind` for `target` (a condition or criterion id) in the locale's language,
    /// falling back to English, then to the `default` text; `{crisis_line}` filled in. Returns the
    /// text and whether it names a crisis line.
    pub fn text(&self, target: &str, kind: TextKind, locale: &Locale) -> Option<(String, bool)> {
        let lang = locale.language.as_str();
        let raw = [
            (target, lang),
            (target, "en"),
            ("default", lang),
            ("default", "en"),
        ]
        .iter()
        .find_map(|(t, l)| self.texts.get(&(t.to_string(), l.to_string(), kind)))?;
        let referral = raw.contains("{crisis_line}");
        let text = if referral {
            raw.replace("{crisis_line}", &self.line(locale).display())
        } else {
            raw.clone()
        };
        Some((text, referral))
    }

    /// Crisis lines whose `checked` date is more than `days` days before `today` (YYYY-MM-DD).
    pub fn stale_lines(&self, today: &str, days: i64) -> Vec<&CrisisLine> {
        let Some(now) = day_number(today) else {
            return Vec::new();
        };
        self.lines
            .iter()
            .filter(|l| day_number(&l.checked).is_none_or(|d| now - d > days))
            .collect()
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian), for staleness checks.
pub fn day_number(date: &str) -> Option<i64> {
    let mut it = date.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn locate(file: &str, text: &str, e: &toml::de::Error) -> PackError {
    let at = e.span().map_or(0, |s| s.start);
    crate::engine::pack::located(file, text, at, e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> SafeTexts {
        SafeTexts::load(None).expect("embedded safe texts load")
    }

    #[test]
    fn locales_pick_the_regional_line_and_language() {
        let t = texts();
        let us = t.resolve(Some("en-US"), "en-US");
        assert!(t.line(&us).how.contains("988"));
        let es_us = t.resolve(Some("es-US"), "en-US");
        assert!(t.line(&es_us).how.contains("AYUDA"));
        let uk = t.resolve(Some("en-GB"), "en-US");
        assert!(t.line(&uk).how.contains("116 123"));
        let ie = t.resolve(Some("en_IE"), "en-US");
        assert!(t.line(&ie).name.contains("Ireland"));
        let au = t.resolve(Some("en-AU"), "en-US");
        assert!(t.line(&au).how.contains("13 11 14"));
        let ca = t.resolve(Some("fr-CA"), "en-US");
        assert!(t.line(&ca).how.contains("988"));
        let india = t.resolve(Some("hi-IN"), "en-US");
        assert!(t.line(&india).how.contains("14416"));
        let elsewhere = t.resolve(Some("de-DE"), "en-US");
        assert_eq!(elsewhere.region, "international");
        assert!(t.line(&elsewhere).how.contains("findahelpline.com"));
        let bare = t.resolve(Some("es"), "en-US");
        assert_eq!(bare.region, "US");
        assert_eq!(t.resolve(None, "en-GB").region, "GB");
    }

    #[test]
    fn texts_fill_in_the_crisis_line_and_fall_back_to_english() {
        let t = texts();
        let uk = t.resolve(Some("en-GB"), "en-US");
        let (text, referral) = t.text("suicidal_ideation", TextKind::Replace, &uk).unwrap();
        assert!(referral);
        assert!(text.contains("Samaritans: call 116 123"), "{text}");
        assert!(!text.contains('{'));
        let es = t.resolve(Some("es-MX"), "en-US");
        let (text, _) = t.text("suicidal_ideation", TextKind::Replace, &es).unwrap();
        assert!(text.contains("Línea de la Vida"), "{text}");
        let (text, _) = t.text("mania", TextKind::Replace, &es).unwrap();
        assert!(
            text.starts_with("It sounds like"),
            "English fallback: {text}"
        );
    }

    #[test]
    fn stale_lines_are_reported() {
        let t = texts();
        assert!(t.stale_lines("2026-12-01", 365).is_empty());
        assert_eq!(t.stale_lines("2028-01-01", 365).len(), t.lines().len());
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(day_number("2000-03-01"), Some(11_017));
    }
}
