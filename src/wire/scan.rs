//! The fast path of the readers in [`super`]: a validating JSON scanner that answers only when
//! it is sure.
//!
//! It reads request bodies ([`super::RequestView`]), whole replies ([`super::CompletionView`])
//! and every event of a guarded stream ([`ChunkView`]).
//!
//! serde_json reads a string a byte (or a word) at a time and goes through a visitor per value;
//! on the benchmark's 3 KB chat body that is ~16K instructions, a quarter of everything the proxy
//! does for a pass-through request (callgrind, `scripts/instructions.sh`). This scanner checks
//! UTF-8 once for the whole body (`simdutf8`) and looks for raw control characters once for the
//! whole body (a loop the compiler vectorises; only a body that has some, such as pretty-printed
//! JSON, has its strings checked one by one), finds string ends eight bytes at a time in the
//! first 16 bytes and with `memchr` (SIMD) after them, and keeps no visitor state.
//!
//! Decision: **it never decides anything serde_json would decide differently.** It accepts a
//! strict subset of JSON and returns `None` for anything outside it, and the caller then reads the
//! body with serde_json as before (which gives the same answer, or the error with serde_json's
//! own message, line and column). Outside the subset, and so left to serde_json: exponents (their
//! range checks) and, to keep the number rule simple, numbers of more than 18 integer or fraction
//! digits, `\u` escapes of UTF-16
//! surrogates (pairing rules), escaped object keys (keys are compared unescaped), nesting deeper
//! than 100 (serde_json stops at 128), and every invalid input. Within it, a body it accepts is
//! one serde_json accepts and its answer is the one the serde readers give; a test mutates
//! bodies at random and checks exactly that.

use std::borrow::Cow;

use super::{ChatMessage, CompletionView, RequestView};
use crate::proxy::sse::ChunkView;

/// The key by which serde_json's `raw_value` feature marks a raw value inside a map.
const RAW_VALUE_TOKEN: &[u8] = b"$serde_json::private::RawValue";

/// Below serde_json's recursion limit (128), so nothing this scanner accepts hits it.
const MAX_DEPTH: u32 = 100;

/// Longest run of integer or fraction digits read here; longer numbers go to serde_json.
const MAX_DIGITS: usize = 18;

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
    /// Whether the body has any byte below 0x20 at all; most (compact JSON from an SDK) have
    /// none, and then no string needs checking for raw control characters.
    controls: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner over `bytes`, or `None` when they are not UTF-8. Both whole-body checks (UTF-8,
    /// and whether any control byte occurs) are SIMD passes, cheaper than a check per string.
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let text = simdutf8::basic::from_utf8(bytes).ok()?;
        let controls = min(bytes) < 0x20;
        Some(Self {
            text,
            bytes,
            at: 0,
            depth: 0,
            controls,
        })
    }

    /// The next byte after whitespace (JSON's four whitespace bytes only).
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.bytes.get(self.at) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        self.at += usize::from(found);
        found
    }

    /// Nothing but whitespace left.
    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A string at the cursor: its raw contents (between the quotes) and whether it has escapes.
    fn raw_string(&mut self) -> Option<(&'a str, bool)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = &self.bytes[self.at..];
            let n = quote_or_backslash(rest)?;
            if self.controls && min(&rest[..n]) < 0x20 {
                return None;
            }
            self.at += n;
            if self.bytes[self.at] == b'"' {
                let raw = self.text.get(start..self.at)?;
                self.at += 1;
                return Some((raw, escaped));
            }
            escaped = true;
            match *self.bytes.get(self.at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                b'u' => {
                    let code = hex4(self.bytes.get(self.at + 2..self.at + 6)?)?;
                    if (0xD800..0xE000).contains(&code) {
                        return None;
                    }
                    self.at += 6;
                }
                _ => return None,
            }
        }
    }

    /// A string at the cursor, unescaped.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (raw, escaped) = self.raw_string()?;
        if escaped {
            unescape(raw).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(raw))
        }
    }

    /// A string value as owned text, or `None` (after checking the value) when it is another type.
    /// The outer `Option` is the scanner's "not sure".
    fn string_or_none(&mut self) -> Option<Option<String>> {
        self.str_or_none().map(|s| s.map(Cow::into_owned))
    }

    /// [`Self::string_or_none`], borrowed from the body when it holds no escape.
    fn str_or_none(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'"' {
            self.string().map(Some)
        } else {
            self.skip().map(|()| None)
        }
    }

    /// A number that is a non-negative integer as its value; `null`, another type or another
    /// number (negative, with a fraction) as `None`, after checking it.
    fn unsigned_or_none(&mut self) -> Option<Option<u64>> {
        if !matches!(self.peek()?, b'-' | b'0'..=b'9') {
            return self.skip().map(|()| None);
        }
        let start = self.at;
        self.number()?;
        let text = &self.bytes[start..self.at];
        // At most 18 digits (`number`): no overflow.
        Some(
            text.iter()
                .all(u8::is_ascii_digit)
                .then(|| text.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'))),
        )
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object at the cursor; `field` is called with each key and must read its value.
    ///
    /// A key that serde_json reads specially is left to it: with its `raw_value` feature (on in
    /// this crate), an object whose key is [`RAW_VALUE_TOKEN`] becomes, in a `Value`, what its
    /// string value parses to.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.container(b'{', b'}', |s| {
            let (key, escaped) = s.raw_string()?;
            if escaped || key.as_bytes() == RAW_VALUE_TOKEN || !s.eat(b':') {
                return None;
            }
            field(s, key.as_bytes())
        })
    }

    /// An array at the cursor; `element` is called for each element and must read it.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.container(b'[', b']', element)
    }

    /// `open`, then `item`s separated by commas, then `close` (or `close` at once), one level
    /// deeper: what objects and arrays share.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(open) {
            return None;
        }
        self.enter()?;
        if !self.eat(close) {
            loop {
                item(self)?;
                if self.eat(b',') {
                    continue;
                }
                if self.eat(close) {
                    break;
                }
                return None;
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An object's fields, read with `field` as [`Self::object`] does; any other value is checked
    /// and skipped, so its fields read as absent (the serde readers' `Tolerant`).
    fn fields(&mut self, field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if self.peek()? == b'{' {
            self.object(field)
        } else {
            self.skip()
        }
    }

    /// The string field `name` of an object (its last occurrence), or `None` when the value is
    /// not an object or the field is absent or not a string.
    fn string_field(&mut self, name: &[u8]) -> Option<Option<String>> {
        let mut found = None;
        self.fields(|s, key| {
            if key == name {
                found = s.string_or_none()?;
                Some(())
            } else {
                s.skip()
            }
        })?;
        Some(found)
    }

    /// The first element of an array, read with `read` (the others checked and skipped); `None`
    /// for an empty array or a value of another type (checked and skipped).
    fn first_element<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? != b'[' {
            return self.skip().map(|()| None);
        }
        let (mut read, mut first) = (Some(read), None);
        self.array(|s| match read.take() {
            Some(read) => {
                first = Some(read(s)?);
                Some(())
            }
            None => s.skip(),
        })?;
        Some(first)
    }

    /// Checks and skips any value.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.raw_string().map(drop),
            b'{' => self.object(|s, _| s.skip()),
            b'[' => self.array(Self::skip),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most [`MAX_DIGITS`] digits on each side, no exponent.
    /// What follows is checked by the caller (a number must be followed by `,`, `}`, `]`,
    /// whitespace or the end, so `01` or `1x` fail there).
    fn number(&mut self) -> Option<()> {
        let b = self.bytes;
        let mut i = self.at;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let int_end = match b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i),
            _ => return None,
        };
        if int_end - i > MAX_DIGITS {
            return None;
        }
        i = int_end;
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 || end - (i + 1) > MAX_DIGITS {
                return None;
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            return None;
        }
        self.at = i;
        Some(())
    }
}

/// Bytes looked at a word at a time before [`quote_or_backslash`] hands over to `memchr`.
const SHORT: usize = 16;

/// The position of the first `"` or `\` in `bytes`.
///
/// Most strings of a chat body are short (keys, roles, model names: 47 of the 58 strings of a
/// harness exchange are under 16 bytes, and nearly all of a streamed chunk's), and `memchr2`'s
/// SIMD set-up costs ~60 instructions a call whatever the length. The first [`SHORT`] bytes are
/// searched eight at a time in a `u64` instead (the classic has-zero-byte test on the bytes
/// XORed with each target: its lowest flag is always a true match, so the first is exact);
/// longer strings go on with `memchr2`.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let zero_bytes = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut at = 0;
    while at < SHORT {
        let Some(word) = bytes.get(at..at + 8) else {
            break;
        };
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let v = u64::from_le_bytes(eight);
        let found = zero_bytes(v ^ QUOTES) | zero_bytes(v ^ BACKSLASHES);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', &bytes[at..]).map(|n| n + at)
}

/// The smallest byte (below 0x20 is a control character, forbidden raw in a JSON string). No
/// early exit, so the loop compiles to a SIMD minimum.
fn min(bytes: &[u8]) -> u8 {
    bytes.iter().fold(u8::MAX, |lo, &c| lo.min(c))
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

/// The text of a string's raw contents that [`Scanner::raw_string`] accepted (so every escape is
/// valid and no `\u` is a surrogate: none of the `?` below can fail after it).
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(n) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..n]);
        let esc = rest.as_bytes().get(n + 1)?;
        let mut len = 2;
        out.push(match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                len = 6;
                char::from_u32(hex4(rest.as_bytes().get(n + 2..n + 6)?)?)?
            }
            _ => return None,
        });
        rest = rest.get(n + len..)?;
    }
    out.push_str(rest);
    Some(out)
}

/// Reads a whole body with `read`: `None` unless it reads and only whitespace follows.
fn whole<'a>(bytes: &'a [u8], read: impl FnOnce(&mut Scanner<'a>) -> Option<()>) -> Option<()> {
    let mut s = Scanner::new(bytes)?;
    read(&mut s)?;
    s.at_end().then_some(())
}

/// [`RequestView::read`]'s answer for `bytes`, or `None` when the scanner is not sure.
pub(super) fn request(bytes: &[u8], with_messages: bool) -> Option<RequestView> {
    let mut view = RequestView::default();
    whole(bytes, |s| {
        s.fields(|s, key| match key {
            b"messages" => {
                view.messages.clear();
                view.has_messages = s.peek()? == b'[';
                if view.has_messages && with_messages {
                    s.array(|s| {
                        view.messages.extend(message(s)?);
                        Some(())
                    })
                } else {
                    s.skip()
                }
            }
            // Decided from the first byte: the skip that follows checks the whole value, so a
            // `t` that is not the literal `true` fails the scan.
            b"stream" => {
                view.stream = s.peek()? == b't';
                s.skip()
            }
            b"model" => {
                view.model = s.string_or_none()?;
                Some(())
            }
            _ => s.skip(),
        })
    })?;
    Some(view)
}

/// One element of `messages`: `Some` when it is an object with a string `role`.
fn message(s: &mut Scanner<'_>) -> Option<Option<ChatMessage>> {
    let (mut role, mut content) = (None, String::new());
    s.fields(|s, key| match key {
        b"role" => {
            role = s.str_or_none()?.map(|r| super::role_name(&r));
            Some(())
        }
        b"content" => {
            content = match s.peek()? {
                b'"' => s.string()?.into_owned(),
                b'[' => parts(s)?,
                _ => {
                    s.skip()?;
                    String::new()
                }
            };
            Some(())
        }
        _ => s.skip(),
    })?;
    Some(role.map(|role| ChatMessage { role, content }))
}

/// A list of content parts: their string `text` fields joined by newlines.
fn parts(s: &mut Scanner<'_>) -> Option<String> {
    let mut text = String::new();
    let mut first = true;
    s.array(|s| {
        if let Some(part) = s.string_field(b"text")? {
            if !first {
                text.push('\n');
            }
            text.push_str(&part);
            first = false;
        }
        Some(())
    })?;
    Some(text)
}

/// [`CompletionView::read`]'s answer for `bytes`, or `None` when the scanner is not sure.
pub(super) fn completion(bytes: &[u8]) -> Option<CompletionView> {
    let mut view = CompletionView::default();
    whole(bytes, |s| {
        s.fields(|s, key| match key {
            b"model" => {
                view.model = s.string_or_none()?;
                Some(())
            }
            b"choices" => {
                view.content = s.first_element(choice_content)?.flatten();
                Some(())
            }
            _ => s.skip(),
        })
    })?;
    Some(view)
}

/// [`ChunkView::parse`]'s answer for a streamed chunk's `data` payload, or `None` when the
/// scanner is not sure (and for any payload that is not an object). The fields are those the
/// serde path reads, with its answers for odd shapes: a field of another type reads as absent,
/// a repeated key's last value counts (as in the `Value` that path falls back to on a repeat).
pub(super) fn chunk(bytes: &[u8]) -> Option<ChunkView<'_>> {
    let mut view = ChunkView::default();
    whole(bytes, |s| {
        if s.peek()? != b'{' {
            return None;
        }
        s.object(|s, key| {
            match key {
                b"id" => view.id = s.str_or_none()?,
                b"model" => view.model = s.str_or_none()?,
                b"system_fingerprint" => view.system_fingerprint = s.str_or_none()?,
                b"created" => view.created = s.unsigned_or_none()?,
                b"usage" => {
                    view.usage = s.peek()? != b'n';
                    s.skip()?;
                }
                b"choices" => view.content = s.first_element(delta_content)?.flatten(),
                _ => s.skip()?,
            }
            Some(())
        })
    })?;
    Some(view)
}

/// A streamed choice's `delta.content` when it is a string.
///
/// serde's derived structs (the choice and the delta on the serde path) also read an array, as
/// the fields in order; such a choice or delta is left to serde_json.
fn delta_content<'a>(s: &mut Scanner<'a>) -> Option<Option<Cow<'a, str>>> {
    let mut content = None;
    if s.peek()? == b'[' {
        return None;
    }
    s.fields(|s, key| {
        if key != b"delta" {
            return s.skip();
        }
        content = None;
        if s.peek()? == b'[' {
            return None;
        }
        s.fields(|s, key| {
            if key == b"content" {
                content = s.str_or_none()?;
                Some(())
            } else {
                s.skip()
            }
        })
    })?;
    Some(content)
}

/// A choice's `message.content` when it is a string.
fn choice_content(s: &mut Scanner<'_>) -> Option<Option<String>> {
    let mut content = None;
    s.fields(|s, key| {
        if key == b"message" {
            content = s.string_field(b"content")?;
            Some(())
        } else {
            s.skip()
        }
    })?;
    Some(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The serde readers' answers (the slow path alone).
    fn slow_request(body: &[u8], with_messages: bool) -> Result<RequestView, serde_json::Error> {
        super::super::serde_request(body, with_messages)
    }

    fn slow_completion(body: &[u8]) -> Result<CompletionView, serde_json::Error> {
        super::super::serde_completion(body)
    }

    const SEEDS: &[&str] = &[
        r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a kind, careful assistant.\nBe brief."},{"role":"user","content":"I \"lost\" my job today \u2014 caf\u00e9 \\ tab\there","name":"u1"},{"role":"assistant","content":null},{"role":"user","content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":"part two \u00e9"}]}],"stream":true,"temperature":0.7,"max_tokens":512,"n":1,"stop":["\n\n"],"stream_options":{"include_usage":true},"user":"é 日本"}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer","minimum":-5,"maximum":10.25}},"required":["a"]}}}],"logit_bias":{"50256":-100},"seed":123456789012}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"there\"\nI hear you.","refusal":null},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"second"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        r#"[{"messages":[]},1,-0,0.5,true,false,null,"s",{}]"#,
        r#" { "messages" : [ { "role" : "user" , "content" : "spaced" } ] , "stream" : false } "#,
        "{\n\t\"model\": \"m\",\r\n\t\"messages\": [\n\t\t{\"role\": \"user\", \"content\": \"pretty\\tprinted\"}\n\t]\n}\n",
        // Streamed chunks: content, the role chunk, the usage chunk, repeats and odd types.
        r#"{"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" careful \"words\"\n\u00e9"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"created":-1,"model":null}"#,
        r#"{"id":"a","id":"b","created":5.5,"choices":[{"delta":{"content":"x"},"delta":{"content":7}},{"delta":{"content":"y"}}],"system_fingerprint":3,"usage":{},"usage":null}"#,
        r#"{"choices":[{"delta":"text"}],"created":12,"created":"13"}"#,
    ];

    #[test]
    fn string_ends_are_found_on_both_sides_of_the_short_prefix() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\');
        // Fillers next to the targets' values and with the high bit set (UTF-8), where a
        // careless word trick would flag a false match.
        let filler = [
            b'a', 0x21, 0x23, 0x5b, 0x5d, 0xa2, 0xdc, 0x00, 0x01, 0xff, 0x7f, 0x80,
        ];
        for len in 0..3 * SHORT {
            let plain: Vec<u8> = (0..len).map(|i| filler[i % filler.len()]).collect();
            assert_eq!(quote_or_backslash(&plain), None, "len {len}");
            for at in 0..len {
                for end in [b'"', b'\\'] {
                    let mut bytes = plain.clone();
                    bytes[at] = end;
                    // A second end later on must not be the one reported.
                    if at + 3 < len {
                        bytes[at + 3] = b'"';
                    }
                    assert_eq!(
                        quote_or_backslash(&bytes),
                        naive(&bytes),
                        "len {len} at {at}"
                    );
                    assert_eq!(quote_or_backslash(&bytes), Some(at));
                }
            }
        }
    }

    /// A deterministic xorshift for the mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Bytes that change a JSON body's meaning or validity (invalid UTF-8 among them: a lone
    /// continuation byte, a cut two-byte sequence, an overlong `/`, an encoded surrogate).
    const ALPHABET: &[&[u8]] = &[
        b"\xff",
        b"\xc3",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\x80",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\",
        b"\\u",
        b"\\ud83d",
        b"\\u00e9",
        b"u",
        b"0",
        b"1",
        b"9",
        b"-",
        b"+",
        b".",
        b"e",
        b"E",
        b"t",
        b"f",
        b"n",
        b" ",
        b"\n",
        b"\t",
        b"\x01",
        "\u{e9}".as_bytes(),
        "\u{65e5}".as_bytes(),
        b"true",
        b"null",
        b"\"role\"",
        b"\"content\"",
        b"\"messages\"",
        b"\"stream\"",
        b"\"model\"",
        b"\"text\"",
        b"\"choices\"",
        b"\"message\"",
        b"\"delta\"",
        b"\"usage\"",
        b"\"created\"",
        b"\"id\"",
        b"1e400",
        b"12345678901234567890",
    ];

    fn mutate(rng: &mut Rng, seed: &str) -> Vec<u8> {
        let mut s: Vec<u8> = seed.as_bytes().to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(s.len() + 1);
            match rng.below(4) {
                0 if at < s.len() => {
                    let len = 1 + rng.below(8.min(s.len() - at));
                    s.drain(at..at + len);
                }
                1 if at < s.len() => {
                    let len = 1 + rng.below(40.min(s.len() - at));
                    let copy = s[at..at + len].to_vec();
                    let to = rng.below(s.len() + 1);
                    s.splice(to..to, copy);
                }
                _ => {
                    let piece = ALPHABET[rng.below(ALPHABET.len())];
                    s.splice(at..at, piece.iter().copied());
                }
            }
        }
        s
    }

    #[test]
    fn seeds_take_the_fast_path_with_the_slow_paths_answers() {
        for seed in SEEDS {
            let body = seed.as_bytes();
            for with_messages in [true, false] {
                let fast = request(body, with_messages);
                assert!(fast.is_some(), "not scanned: {seed}");
                assert_eq!(fast.unwrap(), slow_request(body, with_messages).unwrap());
            }
            assert_eq!(completion(body), Some(slow_completion(body).unwrap()));
            if body.trim_ascii_start().starts_with(b"{") {
                let fast = chunk(body);
                assert!(fast.is_some(), "chunk not scanned: {seed}");
                assert_eq!(fast.unwrap(), ChunkView::parse_with_serde(body).unwrap());
            }
        }
        // What the chunk seeds say, spelled out: borrowed content, last repeats, odd types.
        let read = |i: usize| chunk(SEEDS[i].as_bytes()).unwrap();
        let first = read(6);
        assert!(
            matches!(first.content, Some(Cow::Owned(ref c)) if c == " careful \"words\"\n\u{e9}")
        );
        assert_eq!(
            (first.created, first.usage, first.id.as_deref()),
            (Some(1_700_000_000), false, Some("chatcmpl-9x"))
        );
        assert!(matches!(read(7).content, Some(Cow::Borrowed(""))));
        assert_eq!(
            (read(8).content, read(8).usage, read(8).created),
            (None, true, None)
        );
        let odd = read(9);
        assert_eq!(
            (odd.id.as_deref(), odd.content, odd.created),
            (Some("b"), None, None)
        );
        assert_eq!((odd.system_fingerprint, odd.usage), (None, false));
        assert_eq!((read(10).content, read(10).created), (None, None));
    }

    #[test]
    fn mutated_bodies_get_the_slow_paths_answer_or_none() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut scanned, mut invalid_seen, mut chunks) = (0, 0, 0);
        let rounds = 20_000;
        for round in 0..rounds {
            let body = mutate(&mut rng, SEEDS[round % SEEDS.len()]);
            let valid = serde_json::from_slice::<Value>(&body).is_ok();
            let shown = String::from_utf8_lossy(&body);
            invalid_seen += usize::from(!valid);
            for with_messages in [true, false] {
                if let Some(fast) = request(&body, with_messages) {
                    scanned += 1;
                    let slow = slow_request(&body, with_messages);
                    assert!(valid, "accepted what the tree rejects: {shown}");
                    assert_eq!(Ok(fast), slow.map_err(|e| e.to_string()), "{shown}");
                }
            }
            if let Some(fast) = completion(&body) {
                assert!(valid, "accepted what the tree rejects: {shown}");
                assert_eq!(fast, slow_completion(&body).unwrap(), "{shown}");
            }
            if let Some(fast) = chunk(&body) {
                chunks += 1;
                assert!(valid, "accepted what the tree rejects: {shown}");
                assert_eq!(fast, ChunkView::parse_with_serde(&body).unwrap(), "{shown}");
            }
        }
        // The mutations reach both sides of the line: bodies the scanner reads and invalid ones.
        assert!(scanned > rounds / 8, "scanned {scanned} of {rounds}");
        assert!(chunks > rounds / 10, "chunks scanned {chunks} of {rounds}");
        assert!(
            invalid_seen > rounds / 4,
            "invalid {invalid_seen} of {rounds}"
        );
    }

    #[test]
    fn leaves_to_serde_json_what_it_does_not_decide() {
        let unsure = [
            r#"{"messages":[],"temperature":1e2}"#,
            r#"{"messages":[],"seed":1234567890123456789012}"#,
            r#"{"messages":[],"user":"\ud83d\ude00"}"#,
            r#"{"messag\u0065s":[]}"#,
            &format!(
                r#"{{"messages":[],"x":{}{}}}"#,
                "[".repeat(101),
                "]".repeat(101)
            ),
            r#"{"messages":[],}"#,
            r#"{"messages":[]"#,
            r#"{"messages":[01]}"#,
            // A raw tab inside a string, in a body with no other control byte.
            "{\"messages\":[],\"user\":\"a\tb\"}",
        ];
        for body in unsure {
            assert_eq!(request(body.as_bytes(), true), None, "{body}");
        }
        // Chunks whose serde reading the scanner leaves to serde_json: a choice or delta given
        // as an array (a derived struct reads it as its fields in order), and raw-value keys.
        let unsure_chunks = [
            (r#"{"choices":[{"delta":["x"]}]}"#, Some("x")),
            (r#"{"choices":[[{"content":"x"}]]}"#, Some("x")),
            // A repeated key sends the serde path to `Value`, which reads no array as a delta.
            (r#"{"id":"a","id":"b","choices":[{"delta":["x"]}]}"#, None),
        ];
        for (body, content) in unsure_chunks {
            assert_eq!(chunk(body.as_bytes()), None, "{body}");
            let slow = ChunkView::parse_with_serde(body.as_bytes()).unwrap();
            assert_eq!(slow.content.as_deref(), content, "{body}");
            assert_eq!(ChunkView::parse(body.as_bytes()).unwrap(), slow);
        }
        let raw = [
            r#"{"created":{"$serde_json::private::RawValue":"7"},"created":1}"#,
            r#"{"usage":{"$serde_json::private::RawValue":"null"},"id":5}"#,
            r#"{"$serde_json::private::RawValue":0,"id":1}"#,
        ];
        for body in raw {
            assert_eq!(chunk(body.as_bytes()), None, "{body}");
            assert_eq!(request(body.as_bytes(), true), None, "{body}");
        }
        // The edges of the subset, read on the fast path with the slow path's answers.
        let deep = |n: usize| {
            format!(
                r#"{{"messages":[],"x":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let edges = [
            deep(99),
            r#"{"messages":[{"role":"user","content":"nul \u0000, \u00E9 \u00e9"}]}"#.to_owned(),
            "{\"messages\":[{\"role\":\"user\",\n\"content\":\"a\\tb\"}]}".to_owned(),
            r#"{"choices":[{"message":{"content":"a"}}],"choices":[]}"#.to_owned(),
        ];
        for body in &edges {
            let body = body.as_bytes();
            let fast = request(body, true).expect("scanned");
            assert_eq!(fast, slow_request(body, true).unwrap());
            assert_eq!(completion(body), Some(slow_completion(body).unwrap()));
        }
        assert_eq!(request(deep(100).as_bytes(), true), None);
        let raw_control = "{\"messages\":[],\n\"user\":\"a\u{1}b\"}";
        assert_eq!(request(raw_control.as_bytes(), true), None);
        assert!(slow_request(raw_control.as_bytes(), true).is_err());
        // Valid ones among them still read, through serde_json.
        let view = RequestView::read(br#"{"messag\u0065s":[],"stream":true}"#, false).unwrap();
        assert!(view.has_messages && view.stream);
    }
}
