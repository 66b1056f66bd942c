//! Server-Sent Events: splitting an upstream byte stream into events without copying, reading an
//! event's `data`, and encoding careguard's own events.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// The `data: [DONE]` terminator careguard always ends a stream with.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Splits a byte stream into complete events (each ending with a blank line).
#[derive(Debug, Default)]
pub struct Splitter {
    partial: BytesMut,
}

impl Splitter {
    /// Feeds `data`; returns the buffer to scan and the byte ranges of complete events in it.
    /// Bytes after the last complete event are kept for the next call.
    pub fn feed(&mut self, data: Bytes, events: &mut Vec<std::ops::Range<usize>>) -> Bytes {
        events.clear();
        let src = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(&data);
            self.partial.split().freeze()
        };
        let mut start = 0;
        let mut line_start = 0;
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &src[pos..]) {
            let nl = pos + i;
            let line = &src[line_start..nl];
            let empty = line.is_empty() || line == b"\r";
            pos = nl + 1;
            line_start = pos;
            if empty {
                events.push(start..pos);
                start = pos;
            }
        }
        if start < src.len() {
            self.partial.extend_from_slice(&src[start..]);
        }
        src
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn has_partial(&self) -> bool {
        self.partial.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// The `data` payload of one event: `None` for events without `data` lines (comments, keep-alives).
pub fn data_of(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    // The usual event, one `data:` line then the blank line, is read without a line loop.
    if let Some(nl) = memchr::memchr(b'\n', event) {
        if matches!(&event[nl + 1..], b"\n" | b"\r\n" | b"") {
            return data_value(strip_cr(&event[..nl])).map(Cow::Borrowed);
        }
    }
    let mut found: Option<Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let Some(value) = data_value(strip_cr(line)) else {
            continue;
        };
        found = Some(match found {
            None => Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    found
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The value of a `data` field line (`data`, `data:value` or `data: value`), else `None`.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    match line.strip_prefix(b"data")? {
        [] => Some(&[]),
        [b':', rest @ ..] => Some(rest.strip_prefix(b" ").unwrap_or(rest)),
        _ => None,
    }
}

/// What the proxy reads from one `data` payload without building a JSON tree:
/// `choices[0].delta.content`, whether `usage` is non-null, and the stream's identity.
///
/// Read by the scanner of [`crate::wire`] when it is sure of the answer (the mock's ~250-byte
/// chunk: ~4.4K instructions instead of serde_json's ~6K, on every event of a guarded stream),
/// else by serde_json (`STREAM=1 scripts/instructions.sh`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkView<'a> {
    /// `choices[0].delta.content`.
    pub content: Option<Cow<'a, str>>,
    /// Whether `usage` is present and not null.
    pub usage: bool,
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) created: Option<u64>,
    pub(crate) system_fingerprint: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkRepr<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    system_fingerprint: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<FirstOf<ChoiceRepr<'a>>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

/// The first element of a JSON array (`None` when empty); the others are skipped, so reading a
/// chunk allocates no vector.
struct FirstOf<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstOf<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = FirstOf<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstOf(first))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ChoiceRepr<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaRepr<'a>>,
}

#[derive(Deserialize)]
struct DeltaRepr<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    content: Option<Cow<'a, str>>,
}

/// A string or null, borrowed from the input unless it has escapes.
fn opt_cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

impl<'a> ChunkView<'a> {
    /// Reads a `data` payload; an error means it is not valid JSON. Fields of an unexpected type
    /// (or a payload that is not an object) read as absent, as `Value` accessors would.
    pub fn parse(payload: &'a [u8]) -> Result<Self, serde_json::Error> {
        if let Some(view) = crate::wire::chunk(payload) {
            return Ok(view);
        }
        Self::parse_with_serde(payload)
    }

    /// [`Self::parse`] by serde_json alone (what the scanner hands over when unsure).
    pub(crate) fn parse_with_serde(payload: &'a [u8]) -> Result<Self, serde_json::Error> {
        // A derived struct would also read a JSON array, field by field: objects only.
        let object = payload.trim_ascii_start().first() == Some(&b'{');
        match serde_json::from_slice::<ChunkRepr<'a>>(if object { payload } else { b"!" }) {
            Ok(c) => Ok(Self {
                content: c
                    .choices
                    .and_then(|c| c.0)
                    .and_then(|c| c.delta)
                    .and_then(|d| d.content),
                usage: c.usage.is_some(),
                id: c.id,
                model: c.model,
                created: c.created,
                system_fingerprint: c.system_fingerprint,
            }),
            // Valid JSON of an unusual shape (or duplicate keys): read it the slow way.
            Err(_) => {
                let v: Value = serde_json::from_slice(payload)?;
                let owned = |v: &Value| v.as_str().map(|s| Cow::Owned(s.to_owned()));
                Ok(Self {
                    content: crate::hooks::delta_content(&v).map(|s| Cow::Owned(s.to_owned())),
                    usage: v.get("usage").is_some_and(|u| !u.is_null()),
                    id: owned(&v["id"]),
                    model: owned(&v["model"]),
                    created: v["created"].as_u64(),
                    system_fingerprint: owned(&v["system_fingerprint"]),
                })
            }
        }
    }

    /// The stream identity carried by this chunk.
    pub fn meta(&self) -> crate::hooks::ChunkMeta {
        crate::hooks::ChunkMeta {
            id: self.id.as_deref().unwrap_or_default().to_owned(),
            model: self.model.as_deref().unwrap_or_default().to_owned(),
            created: self.created.unwrap_or(0),
            system_fingerprint: self.system_fingerprint.as_deref().map(str::to_owned),
        }
    }
}

/// Encodes a JSON value as one `data:` event.
pub fn encode(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a Value to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Renders a `chat.completion` as the chunks a streaming client expects: role, content, finish.
pub fn completion_to_chunks(completion: &Value) -> Vec<Value> {
    let meta = crate::hooks::ChunkMeta {
        id: completion["id"]
            .as_str()
            .unwrap_or("chatcmpl-careguard")
            .to_owned(),
        model: completion["model"].as_str().unwrap_or_default().to_owned(),
        created: completion["created"].as_u64().unwrap_or(0),
        system_fingerprint: completion["system_fingerprint"].as_str().map(str::to_owned),
    };
    crate::hooks::completion_chunks(&meta, completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_arbitrary_boundaries() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\n\r\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = Splitter::default();
            let mut evs = Vec::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                let src = s.feed(Bytes::copy_from_slice(part), &mut evs);
                got.extend(evs.iter().map(|r| src[r.clone()].to_vec()));
            }
            assert_eq!(got.concat(), stream.to_vec(), "cut {cut}");
            assert_eq!(got.len(), 4);
            assert!(!s.has_partial());
        }
    }

    #[test]
    fn reads_data() {
        assert_eq!(data_of(b"data: {}\n\n").unwrap().as_ref(), b"{}");
        assert_eq!(data_of(b"data:x\ndata: y\n\n").unwrap().as_ref(), b"x\ny");
        assert!(data_of(b": comment\n\n").is_none());
        assert!(data_of(b"database: 1\n\n").is_none());
        assert_eq!(data_of(b"data: x\r\n\r\n").unwrap().as_ref(), b"x");
        assert_eq!(data_of(b"data\n\n").unwrap().as_ref(), b"");
        assert_eq!(data_of(b"data:  two\n\n").unwrap().as_ref(), b" two");
        assert_eq!(data_of(b"id: 1\ndata: x\n\n").unwrap().as_ref(), b"x");
        assert_eq!(data_of(b"data: x\nid: 1\n\n").unwrap().as_ref(), b"x");
        assert!(data_of(b"\n").is_none());
    }

    #[test]
    fn chunk_view_reads_what_value_reads() {
        let cases: &[&[u8]] = &[
            br#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"a\nb \u00e9"},"finish_reason":null}]}"#,
            br#"{"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}],"usage":null}"#,
            br#"{"id":"c1","choices":[],"usage":{"total_tokens":3}}"#,
            br#"{"choices":[{"delta":{"content":5}}],"created":-1,"model":null}"#,
            br#"{"id":"a","id":"b","choices":[{"delta":{"content":"x"}},{"delta":{"content":"y"}}]}"#,
            br#"{"error":{"message":"boom"}}"#,
            br#"[1,2]"#,
            br#"["a","b"]"#,
            br#""text""#,
        ];
        for case in cases {
            let v: Value = serde_json::from_slice(case).unwrap();
            let view = ChunkView::parse(case).unwrap();
            assert_eq!(view.content.as_deref(), crate::hooks::delta_content(&v));
            assert_eq!(view.usage, v.get("usage").is_some_and(|u| !u.is_null()));
            let meta = view.meta();
            assert_eq!(meta.id, v["id"].as_str().unwrap_or_default());
            assert_eq!(meta.model, v["model"].as_str().unwrap_or_default());
            assert_eq!(meta.created, v["created"].as_u64().unwrap_or(0));
        }
        assert!(ChunkView::parse(b"{\"choices\": [").is_err());
        assert!(ChunkView::parse(b"{} x").is_err());
        let borrowed = ChunkView::parse(br#"{"choices":[{"delta":{"content":"plain"}}]}"#).unwrap();
        assert!(matches!(borrowed.content, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn completion_becomes_chunks() {
        let c = crate::hooks::completion("m", "hello");
        let chunks = completion_to_chunks(&c);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "hello");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    }
}
