//! One-pass readers of the OpenAI JSON bodies: what the proxy and the guard need from a chat
//! request (its messages, `stream`, `model`) and from a completion (its model and assistant
//! text), read without building a JSON tree.
//!
//! A `serde_json::Value` of a 3 KB chat request costs an allocation per string, number, array
//! and object (plus an index map per object): about 5 µs, of a guarded exchange's ~40. These
//! readers visit the same bytes once, allocate only the texts they keep, and skip the rest with
//! [`Skip`]. The tree is still built when someone needs it (an edit, a re-ask, a replacement
//! built from the reply): see [`crate::hooks::JsonBody`].
//!
//! Decisions:
//! - **Same answers as the tree.** Every reader is tolerant the way `Value` lookups are: a
//!   field of an unexpected type reads as absent, never as an error, and a repeated key keeps its
//!   last value (as `Value` does). Only invalid JSON is an error, with serde_json's own message.
//!   A test compares each reader with the tree lookups it replaces on tricky bodies.
//! - **As strict as the tree.** What is skipped is still checked as `Value` would check it
//!   (UTF-8, escapes, number range, the nesting limit): serde's `IgnoredAny` skips without those
//!   checks, so a body the tree would reject could pass, and a tree built later from it (for an
//!   edit or a replacement) would fail. So bytes these readers accept always parse into a tree.
//! - A message's `content` given as a list of parts reads as the parts' `text` fields joined by
//!   newlines (image and audio parts carry no text).

mod scan;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One chat message as the guard reads it: its role and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `role` (`system`, `developer`, `user`, `assistant`, `tool`...): the common roles
    /// without an allocation (see [`role_name`]).
    pub role: Cow<'static, str>,
    /// `content` as text (parts joined by newlines; empty when absent or null).
    pub content: String,
}

/// A role as read: one of the API's own roles as a `'static` string (every message has a role,
/// and copying it was one allocation per message), anything else as an owned copy.
fn role_name(role: &str) -> Cow<'static, str> {
    match role {
        "system" => Cow::Borrowed("system"),
        "developer" => Cow::Borrowed("developer"),
        "user" => Cow::Borrowed("user"),
        "assistant" => Cow::Borrowed("assistant"),
        "tool" => Cow::Borrowed("tool"),
        "function" => Cow::Borrowed("function"),
        other => Cow::Owned(other.to_owned()),
    }
}

/// What a chat request body says, read in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// Whether the body is an object whose `messages` is an array.
    pub has_messages: bool,
    /// The messages with a string `role` (others are skipped), when asked for.
    pub messages: Vec<ChatMessage>,
    /// `stream` is `true`.
    pub stream: bool,
    /// `model`, when a string.
    pub model: Option<String>,
}

impl RequestView {
    /// Reads `bytes`; `with_messages` false skips the messages (only checks they are an array).
    pub fn read(bytes: &[u8], with_messages: bool) -> Result<Self, serde_json::Error> {
        if let Some(view) = scan::request(bytes, with_messages) {
            return Ok(view);
        }
        serde_request(bytes, with_messages)
    }
}

/// What a `chat.completion` says, read in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompletionView {
    /// `model`, when a string.
    pub model: Option<String>,
    /// `choices[0].message.content`, when a string.
    pub content: Option<String>,
}

impl CompletionView {
    /// Reads `bytes` (any JSON value; only an object has the fields).
    pub fn read(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        if let Some(view) = scan::completion(bytes) {
            return Ok(view);
        }
        serde_completion(bytes)
    }
}

/// The fast path of [`crate::proxy::sse::ChunkView::parse`]: its answer for a streamed chunk's
/// `data` payload, or `None` when the scanner leaves the payload to serde_json.
pub(crate) fn chunk(payload: &[u8]) -> Option<crate::proxy::sse::ChunkView<'_>> {
    scan::chunk(payload)
}

/// [`RequestView::read`] by serde_json alone (what [`scan`] hands over when unsure).
fn serde_request(bytes: &[u8], with_messages: bool) -> Result<RequestView, serde_json::Error> {
    if with_messages {
        parse::<Tolerant<WithMessages>>(bytes).map(|t| t.0 .0)
    } else {
        parse::<Tolerant<WithoutMessages>>(bytes).map(|t| t.0 .0)
    }
}

/// [`CompletionView::read`] by serde_json alone.
fn serde_completion(bytes: &[u8]) -> Result<CompletionView, serde_json::Error> {
    parse::<Tolerant<CompletionView>>(bytes).map(|t| t.0)
}

/// Reads `bytes` as `T`. A body that is valid UTF-8 as a whole (nearly every body) is read as a
/// `str`, so serde_json does not check the UTF-8 of each string again: one pass over the body
/// instead of one per string, ~6K fewer instructions per guarded exchange (callgrind). Any
/// other body is read as bytes, so its error is serde_json's own, with line and column.
fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Any JSON value, checked as `serde_json::Value` checks it and then dropped: strings are read
/// (UTF-8 and escapes checked, borrowed when they have no escapes), numbers parsed, arrays and
/// objects walked within serde_json's nesting limit, and nothing is kept. It is the [`Shape`]
/// that keeps nothing, so the shapes' defaults skip with it.
type Skip = Tolerant<Nothing>;

#[derive(Default)]
struct Nothing;

impl Shape<'_> for Nothing {}

/// A value read by a [`Shape`], or its default when the JSON has another type.
struct Tolerant<T>(T);

/// How a type reads the JSON types it cares about; every other type reads as `T::default()`.
trait Shape<'de>: Default + Sized {
    fn string(s: &str) -> Self {
        let _ = s;
        Self::default()
    }
    fn boolean(b: bool) -> Self {
        let _ = b;
        Self::default()
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Self::default())
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Key<'de>, Skip>()?.is_some() {}
        Ok(Self::default())
    }
}

struct ShapeVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for ShapeVisitor<T> {
    type Value = Tolerant<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Tolerant(T::string(s)))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Tolerant(T::boolean(b)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Tolerant(T::default()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Tolerant(T::default()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Tolerant(T::default()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Tolerant(T::default()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::seq(seq).map(Tolerant)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::map(map).map(Tolerant)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Tolerant<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads the fields `f` names (by key) and skips the others; a repeated key is read again, so
/// its last value wins.
fn fields<'de, A, F>(mut map: A, mut f: F) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Option<Result<(), A::Error>>,
{
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        match f(&key, &mut map) {
            Some(read) => read?,
            None => {
                map.next_value::<Skip>()?;
            }
        }
    }
    Ok(())
}

/// A JSON string, or `None`.
#[derive(Default)]
struct Str(Option<String>);

impl Shape<'_> for Str {
    fn string(s: &str) -> Self {
        Str(Some(s.to_owned()))
    }
}

/// A JSON boolean, or `None`.
#[derive(Default)]
struct Bool(Option<bool>);

impl Shape<'_> for Bool {
    fn boolean(b: bool) -> Self {
        Bool(Some(b))
    }
}

fn read<'de, A: MapAccess<'de>, T: Shape<'de>>(map: &mut A) -> Result<T, A::Error> {
    map.next_value::<Tolerant<T>>().map(|t| t.0)
}

/// A message's `content`: a string, or the `text` of each part of a list joined by newlines.
#[derive(Default)]
struct Content(String);

impl<'de> Shape<'de> for Content {
    fn string(s: &str) -> Self {
        Content(s.to_owned())
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut text = String::new();
        let mut first = true;
        while let Some(Tolerant(Part(part))) = seq.next_element::<Tolerant<Part>>()? {
            if let Some(part) = part {
                if !first {
                    text.push('\n');
                }
                text.push_str(&part);
                first = false;
            }
        }
        Ok(Content(text))
    }
}

/// One content part's `text`.
#[derive(Default)]
struct Part(Option<String>);

impl<'de> Shape<'de> for Part {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut text = None;
        fields(map, |key, map| {
            (key == "text").then(|| read::<_, Str>(map).map(|s| text = s.0))
        })?;
        Ok(Part(text))
    }
}

/// One message: `Some` when it is an object with a string `role`.
#[derive(Default)]
struct Message(Option<ChatMessage>);

impl<'de> Shape<'de> for Message {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let (mut role, mut content) = (None, String::new());
        fields(map, |key, map| match key {
            "role" => Some(read::<_, Str>(map).map(|s| role = s.0)),
            "content" => Some(read::<_, Content>(map).map(|c| content = c.0)),
            _ => None,
        })?;
        Ok(Message(role.map(|role: String| ChatMessage {
            role: role_name(&role),
            content,
        })))
    }
}

/// The `messages` array: `Some` when it is an array.
#[derive(Default)]
struct Messages(Option<Vec<ChatMessage>>);

impl<'de> Shape<'de> for Messages {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(Tolerant(Message(m))) = seq.next_element::<Tolerant<Message>>()? {
            out.extend(m);
        }
        Ok(Messages(Some(out)))
    }
}

/// Whether a value is an array, skipping its contents.
#[derive(Default)]
struct IsArray(bool);

impl<'de> Shape<'de> for IsArray {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(IsArray(true))
    }
}

/// A request body with its messages.
#[derive(Default)]
struct WithMessages(RequestView);

/// A request body, its messages only checked to be an array.
#[derive(Default)]
struct WithoutMessages(RequestView);

impl<'de> Shape<'de> for WithMessages {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        request(map, true).map(WithMessages)
    }
}

impl<'de> Shape<'de> for WithoutMessages {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        request(map, false).map(WithoutMessages)
    }
}

/// The fields of a request object; a body that is not an object reads as the default view.
fn request<'de, A: MapAccess<'de>>(map: A, with_messages: bool) -> Result<RequestView, A::Error> {
    let mut view = RequestView::default();
    fields(map, |key, map| match key {
        "messages" if with_messages => Some(read::<_, Messages>(map).map(|m| {
            view.has_messages = m.0.is_some();
            view.messages = m.0.unwrap_or_default();
        })),
        "messages" => Some(read::<_, IsArray>(map).map(|a| {
            view.has_messages = a.0;
            view.messages.clear();
        })),
        "stream" => Some(read::<_, Bool>(map).map(|b| view.stream = b.0 == Some(true))),
        "model" => Some(read::<_, Str>(map).map(|s| view.model = s.0)),
        _ => None,
    })?;
    Ok(view)
}

/// `choices[0].message.content`, within one choice.
#[derive(Default)]
struct ChoiceContent(Option<String>);

impl<'de> Shape<'de> for ChoiceContent {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut content = None;
        fields(map, |key, map| {
            (key == "message").then(|| read::<_, MessageContent>(map).map(|m| content = m.0))
        })?;
        Ok(ChoiceContent(content))
    }
}

/// A message object's string `content`.
#[derive(Default)]
struct MessageContent(Option<String>);

impl<'de> Shape<'de> for MessageContent {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut content = None;
        fields(map, |key, map| {
            (key == "content").then(|| read::<_, Str>(map).map(|s| content = s.0))
        })?;
        Ok(MessageContent(content))
    }
}

/// The first choice's content, skipping the other choices.
#[derive(Default)]
struct FirstChoice(Option<String>);

impl<'de> Shape<'de> for FirstChoice {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let first = seq
            .next_element::<Tolerant<ChoiceContent>>()?
            .and_then(|c| c.0 .0);
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(FirstChoice(first))
    }
}

impl<'de> Shape<'de> for CompletionView {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut view = CompletionView::default();
        fields(map, |key, map| match key {
            "model" => Some(read::<_, Str>(map).map(|s| view.model = s.0)),
            "choices" => Some(read::<_, FirstChoice>(map).map(|c| view.content = c.0)),
            _ => None,
        })?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What the tree lookups that these readers replace say about a request.
    fn from_tree(v: &Value) -> RequestView {
        let messages = v["messages"].as_array();
        RequestView {
            has_messages: messages.is_some(),
            messages: messages
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    // The role exactly as written (not through `role_name`, which is tested).
                    let role = Cow::Owned(m.get("role")?.as_str()?.to_owned());
                    let content = match m.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    };
                    Some(ChatMessage { role, content })
                })
                .collect(),
            stream: v.get("stream").and_then(Value::as_bool) == Some(true),
            model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        }
    }

    const REQUESTS: &[&str] = &[
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        r#"{"messages":[],"stream":false}"#,
        r#"{"messages":{"role":"user"}}"#,
        r#"{"messages":null,"stream":true}"#,
        r#"{"stream":"true","messages":[1, "x", null, [], {"content":"no role"}]}"#,
        r#" {"messages" : [ ] , "stream" : true } "#,
        r#"{"messages":[],"messages":{}}"#,
        r#"{"messages":{},"messages":[{"role":"user","content":"last wins"}]}"#,
        r#"[{"messages":[]}]"#,
        r#""messages""#,
        r#"{"model":7,"messages":[{"role":3,"content":"x"},{"role":"tool"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}},{"text":"b"},"c",{"text":5}]}]}"#,
        r#"{"messages":[{"role":"user","content":[]},{"role":"user","content":{"text":"x"}},{"role":"assistant","content":null}]}"#,
        r#"{"messages":[{"role":"us\u0065r","content":"caf\u00e9 \"quoted\"\n","ro\u006ce":"system"}],"model":"a","model":null}"#,
        r#"{"tools":[{"type":"function","function":{"name":"f","parameters":{"messages":[1]}}}],"messages":[{"role":"user","content":"x","extra":{"deep":[[[{}]]]}}],"n":1.5e3,"stop":["\n"]}"#,
        r#"{"messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"assistant","content":"a"},{"role":"tool","content":"t"},{"role":"function","content":"f"},{"role":"User","content":"u"},{"role":"critic","content":"c"},{"role":"","content":"e"}]}"#,
    ];

    #[test]
    fn roles_keep_their_spelling_and_the_api_roles_are_not_copied() {
        for role in [
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ] {
            let got = role_name(role);
            assert!(matches!(got, Cow::Borrowed(_)), "{role}");
            assert_eq!(got, role);
        }
        for role in ["User", "critic", "", "système"] {
            let got = role_name(role);
            assert!(matches!(got, Cow::Owned(_)), "{role}");
            assert_eq!(got, role);
        }
    }

    #[test]
    fn requests_read_as_the_tree_reads_them() {
        for case in REQUESTS {
            let tree: Value = serde_json::from_str(case).expect("test cases are JSON");
            let want = from_tree(&tree);
            assert_eq!(
                RequestView::read(case.as_bytes(), true).unwrap(),
                want,
                "{case}"
            );
            let shape = RequestView::read(case.as_bytes(), false).unwrap();
            assert_eq!(shape.has_messages, want.has_messages, "{case}");
            assert_eq!(
                (shape.stream, &shape.model),
                (want.stream, &want.model),
                "{case}"
            );
            assert!(shape.messages.is_empty(), "{case}");
        }
    }

    #[test]
    fn invalid_json_is_an_error_like_the_tree_parse() {
        let deep = |open: &str, close: &str| {
            format!(
                r#"{{"messages":[],"tools":{}{}}}"#,
                open.repeat(200),
                close.repeat(200)
            )
        };
        let mut cases: Vec<Vec<u8>> = [
            "{",
            "",
            "{\"messages\":[] ",
            "{\"messages\":[]} x",
            "{'a':1}",
            "[1,]",
            // Invalid only inside what the readers skip: still rejected, as the tree rejects it.
            r#"{"messages":[],"user":"\ud800"}"#,
            r#"{"messages":[],"temperature":1e400}"#,
            r#"{"messages":[{"role":"user","content":"x","name":"\ud800x"}]}"#,
            r#"{"x":"\q","messages":[]}"#,
        ]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
        cases.push(deep("[", "]").into_bytes());
        cases.push(deep("{\"a\":", "}").into_bytes());
        cases
            .push(format!(r#"{{"messages":{}{}}}"#, "[".repeat(200), "]".repeat(200)).into_bytes());
        cases.push(b"{\"messages\":[],\"user\":\"\xff\xfe\"}".to_vec());
        cases.push(b"{\"x\":\"\xff\"}".to_vec());
        for case in &cases {
            let shown = String::from_utf8_lossy(case);
            let tree = serde_json::from_slice::<Value>(case);
            for with_messages in [true, false] {
                let view = RequestView::read(case, with_messages);
                assert!(tree.is_err() && view.is_err(), "{shown}");
                assert_eq!(
                    tree.as_ref().unwrap_err().to_string(),
                    view.unwrap_err().to_string(),
                    "{shown}"
                );
            }
            assert_eq!(
                tree.unwrap_err().to_string(),
                CompletionView::read(case).unwrap_err().to_string(),
                "{shown}"
            );
        }
    }

    #[test]
    fn completions_read_as_the_tree_reads_them() {
        let cases = [
            r#"{"id":"x","model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"hello \u00e9"},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#,
            r#"{"choices":[{"message":{"content":null}},{"message":{"content":"second"}}]}"#,
            r#"{"choices":[],"model":["x"]}"#,
            r#"{"choices":{"0":{"message":{"content":"not a list"}}}}"#,
            r#"{"choices":[{"message":{"content":"a","content":"b"}}],"model":"m","model":"n"}"#,
            r#"{"choices":[{"message":"text"}]}"#,
            r#"[]"#,
            r#"null"#,
        ];
        for case in cases {
            let tree: Value = serde_json::from_str(case).unwrap();
            let view = CompletionView::read(case.as_bytes()).unwrap();
            assert_eq!(view.model.as_deref(), tree["model"].as_str(), "{case}");
            assert_eq!(
                view.content.as_deref(),
                crate::hooks::message_content(&tree),
                "{case}"
            );
        }
        assert!(CompletionView::read(b"{\"choices\":").is_err());
    }
}
