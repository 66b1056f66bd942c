//! Server-Sent Events: splitting an upstream byte stream into events without copying, reading an
//! event's `data`, and encoding careguard's own events.

use bytes::{Bytes, BytesMut};
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
        while let Some(i) = src[pos..].iter().position(|&b| b == b'\n') {
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
pub fn data_of(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut found: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match value {
            [] => value,
            [b':', rest @ ..] => rest.strip_prefix(b" ").unwrap_or(rest),
            _ => continue,
        };
        found = Some(match found {
            None => std::borrow::Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                std::borrow::Cow::Owned(joined)
            }
        });
    }
    found
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
