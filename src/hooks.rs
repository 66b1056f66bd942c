//! The hook points the clinical engine plugs into: a [`Guard`] sees every chat request before it
//! goes upstream, every non-streaming reply, every streamed event, and a summary of every exchange.
//!
//! All methods are synchronous: the engine behind them is pure and fast, and the proxy calls them
//! inline on the request path. [`PassThrough`] is the default guard and changes nothing.
//!
//! Per-request state ([`HookState`]) is created by [`Guard::on_request`] and handed back to every
//! later hook of the same exchange, ending in [`ExchangeSummary::state`] for the audit log.

use std::any::Any;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::metrics::{Route, UpstreamErrorKind};
pub use crate::wire::ChatMessage;
use crate::wire::CompletionView;

/// Opaque per-request state owned by the guard (e.g. its assessment); downcast it to use it.
pub type HookState = Box<dyn Any + Send + Sync>;

/// The guard behind the proxy; `server` holds one as `Arc<dyn Guard>`.
pub trait Guard: Send + Sync + 'static {
    /// Sees a parsed chat request before it goes upstream and decides what happens to it.
    fn on_request(&self, request: &mut ChatRequest<'_>) -> RequestOutcome;

    /// Whether [`Guard::on_request`] reads [`ChatRequest::messages`]. When false the proxy only
    /// checks that the body is JSON with a `messages` array and hands the hook no messages (the
    /// body itself is still there, and an edit through [`JsonBody::json_mut`] still applies).
    fn reads_request_body(&self) -> bool {
        true
    }

    /// Sees a whole upstream `chat.completion` (only when the request outcome asked to inspect).
    fn on_response(&self, exchange: &mut ResponseExchange<'_>) -> ResponseAction {
        let _ = exchange;
        ResponseAction::Pass
    }

    /// Creates the per-stream guard for a `stream: true` exchange (`request` is the body sent
    /// upstream, e.g. to build a re-ask); `None` relays events untouched.
    fn on_stream(&self, state: &mut HookState, request: &JsonBody) -> Option<Box<dyn StreamGuard>> {
        let _ = (state, request);
        None
    }

    /// Receives a summary of every chat exchange, also when the client went away mid-stream.
    fn on_complete(&self, summary: ExchangeSummary) {
        let _ = summary;
    }
}

/// The default guard: forwards everything unchanged and inspects nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl Guard for PassThrough {
    fn on_request(&self, _request: &mut ChatRequest<'_>) -> RequestOutcome {
        RequestOutcome::forward()
    }

    fn reads_request_body(&self) -> bool {
        false
    }
}

/// A chat request as the request hook sees it.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    /// The request id (kept from `x-request-id` or generated), returned on the response.
    pub request_id: &'a str,
    /// The client's request headers (e.g. `x-careguard-locale`, `accept-language`).
    pub headers: &'a HeaderMap,
    /// The body; edit it through [`JsonBody::json_mut`] and return
    /// [`RequestAction::ForwardEdited`].
    pub body: &'a mut JsonBody,
    /// The messages with a role, read from the body in one pass (empty when
    /// [`Guard::reads_request_body`] is false); the hook may take them.
    pub messages: Vec<ChatMessage>,
    /// `model`, when the body gives one.
    pub model: Option<String>,
    /// Whether the client asked for `stream: true`.
    pub stream: bool,
}

/// The request header that names the client's locale (see [`ChatRequest::locale`]).
pub const LOCALE_HEADER: HeaderName = HeaderName::from_static("x-careguard-locale");

impl ChatRequest<'_> {
    /// The client's locale: `x-careguard-locale`, else the first `Accept-Language` tag.
    pub fn locale(&self) -> Option<&str> {
        if let Some(v) = self.headers.get(&LOCALE_HEADER) {
            return v.to_str().ok().map(str::trim);
        }
        let v = self
            .headers
            .get(http::header::ACCEPT_LANGUAGE)?
            .to_str()
            .ok()?;
        let first = v.split(',').next()?.split(';').next()?.trim();
        (!first.is_empty() && first != "*").then_some(first)
    }

    /// The requested model, if any.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// A JSON body as it came off the wire: its bytes, and its tree, built only when someone asks
/// for it. Most exchanges never do: the guard reads the messages or the reply text, which the
/// proxy extracts in one pass ([`crate::wire`]); the tree is for edits, re-asks and replies
/// built from the upstream's.
#[derive(Debug)]
pub struct JsonBody {
    bytes: Bytes,
    tree: OnceLock<Value>,
    edited: bool,
}

impl JsonBody {
    /// A body of bytes already checked to be valid JSON (the proxy reads every body with
    /// [`crate::wire`], whose readers reject what the tree would reject).
    pub fn new(bytes: Bytes) -> Self {
        Self {
            bytes,
            tree: OnceLock::new(),
            edited: false,
        }
    }

    /// A body made from a tree.
    pub fn from_value(value: Value) -> Self {
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Self {
            bytes,
            tree: OnceLock::from(value),
            edited: false,
        }
    }

    /// The parsed tree. Bytes that are not JSON (which [`Self::new`] rules out) read as `null`.
    pub fn json(&self) -> &Value {
        self.tree
            .get_or_init(|| match serde_json::from_slice(&self.bytes) {
                Ok(tree) => tree,
                Err(e) => {
                    debug_assert!(false, "JsonBody holds bytes that are not JSON: {e}");
                    Value::Null
                }
            })
    }

    /// The tree, for an edit: [`Self::to_bytes`] then serialises it.
    pub fn json_mut(&mut self) -> &mut Value {
        self.json();
        self.edited = true;
        self.tree.get_mut().expect("initialised above")
    }

    /// Whether [`Self::json_mut`] was called.
    pub fn is_edited(&self) -> bool {
        self.edited
    }

    /// The bytes as received (or as first serialised), whatever was edited since.
    pub fn original(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The bytes to send: the original ones, or the edited tree serialised.
    pub fn to_bytes(&self) -> Bytes {
        match (self.edited, self.tree.get()) {
            (true, Some(tree)) => Bytes::from(serde_json::to_vec(tree).unwrap_or_default()),
            _ => self.bytes.clone(),
        }
    }
}

/// An upstream `chat.completion` as received: its bytes, its model and assistant text read in
/// one pass, and its JSON tree built on first use.
#[derive(Debug)]
pub struct UpstreamCompletion {
    body: JsonBody,
    view: CompletionView,
}

impl UpstreamCompletion {
    /// Reads a completion's bytes; an error, with serde_json's message, when they are not JSON.
    pub fn read(bytes: Bytes) -> Result<Self, serde_json::Error> {
        let view = CompletionView::read(&bytes)?;
        Ok(Self {
            body: JsonBody::new(bytes),
            view,
        })
    }

    /// A completion made from a tree (e.g. a test's).
    pub fn from_value(value: Value) -> Self {
        let view = CompletionView {
            model: value
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned),
            content: message_content(&value).map(str::to_owned),
        };
        Self {
            body: JsonBody::from_value(value),
            view,
        }
    }

    /// `choices[0].message.content`, when a string.
    pub fn content(&self) -> Option<&str> {
        self.view.content.as_deref()
    }

    /// `model`, when a string.
    pub fn model(&self) -> Option<&str> {
        self.view.model.as_deref()
    }

    /// The parsed tree.
    pub fn json(&self) -> &Value {
        self.body.json()
    }

    /// The bytes as received.
    pub fn bytes(&self) -> Bytes {
        self.body.original()
    }
}

/// What the request hook decided, plus what it wants carried through the exchange.
pub struct RequestOutcome {
    /// Forward, forward edited, or answer directly.
    pub action: RequestAction,
    /// State handed to the later hooks and to the summary.
    pub state: HookState,
    /// Headers added to the response (e.g. `x-careguard-action`); for streams, sent before the body.
    pub response_headers: HeaderMap,
    /// Whether to call [`Guard::on_response`] on the upstream reply and collect delivered text.
    pub inspect: bool,
}

impl std::fmt::Debug for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestOutcome")
            .field("action", &self.action)
            .field("response_headers", &self.response_headers)
            .field("inspect", &self.inspect)
            .finish_non_exhaustive()
    }
}

impl RequestOutcome {
    /// Forward unchanged, no state, no inspection.
    pub fn forward() -> Self {
        Self::with_action(RequestAction::Forward)
    }

    /// An outcome with the given action and defaults for the rest.
    pub fn with_action(action: RequestAction) -> Self {
        Self {
            action,
            state: Box::new(()),
            response_headers: HeaderMap::new(),
            inspect: false,
        }
    }

    /// Sets the per-request state.
    pub fn state<S: Any + Send + Sync>(mut self, state: S) -> Self {
        self.state = Box::new(state);
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.response_headers.append(name, value);
        self
    }

    /// Asks for the response hooks and delivered-text collection.
    pub fn inspect(mut self) -> Self {
        self.inspect = true;
        self
    }
}

/// The request hook's decision.
#[derive(Debug)]
pub enum RequestAction {
    /// Send the original bytes upstream untouched.
    Forward,
    /// The hook edited [`ChatRequest::body`]; send the edited body.
    ForwardEdited,
    /// Do not call the upstream; answer with this.
    Respond(Reply),
}

/// A guard-made answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole `chat.completion` object (see [`completion`]); rendered as SSE chunks for streams.
    Completion(Value),
    /// An OpenAI-shaped error with its status.
    Error(GuardError),
}

/// An OpenAI-shaped error chosen by the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardError {
    /// HTTP status (non-streaming) of the answer.
    pub status: StatusCode,
    /// `error.message`.
    pub message: String,
    /// `error.type`.
    pub kind: String,
    /// `error.code`.
    pub code: Option<String>,
}

/// The non-streaming response hook's view of one upstream reply.
pub struct ResponseExchange<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// 0 for the first upstream reply, n for the n-th re-ask.
    pub attempt: u32,
    /// The body sent upstream for this attempt.
    pub request: &'a JsonBody,
    /// The reply (a re-ask can fail; the first attempt always has a completion).
    pub reply: UpstreamReply<'a>,
    /// The state from [`RequestOutcome::state`].
    pub state: &'a mut HookState,
    /// Headers to add to the response.
    pub response_headers: &'a mut HeaderMap,
}

/// What came back from the upstream for one attempt.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamReply<'a> {
    /// A `chat.completion`.
    Completion(&'a UpstreamCompletion),
    /// A re-ask failed (network, timeout, non-2xx or unparsable reply).
    Failed(UpstreamErrorKind),
}

/// The response hook's decision.
#[derive(Debug, Clone)]
pub enum ResponseAction {
    /// Deliver the latest completion the hook saw as it is (after a failed re-ask: the previous one).
    Pass,
    /// Deliver this `chat.completion` instead.
    Replace(Value),
    /// Deliver an error instead.
    Error(GuardError),
    /// Call the upstream again with this body, within `timeout`, then call the hook again.
    Reask {
        /// The full request body for the new call.
        body: Value,
        /// Time allowed for the new call.
        timeout: Duration,
    },
}

/// Identity of a stream, for building chunks in the same format (same id, model, created).
#[derive(Debug, Clone, Default)]
pub struct ChunkMeta {
    /// `id` of the upstream chunks.
    pub id: String,
    /// `model` of the upstream chunks.
    pub model: String,
    /// `created` of the upstream chunks.
    pub created: u64,
    /// `system_fingerprint`, when the upstream sent one.
    pub system_fingerprint: Option<String>,
}

impl ChunkMeta {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if let Some(fp) = &self.system_fingerprint {
            v["system_fingerprint"] = Value::String(fp.clone());
        }
        v
    }

    /// A `chat.completion.chunk` carrying `text` as assistant content.
    pub fn content_chunk(&self, text: &str) -> Value {
        self.chunk(json!({"content": text}), Value::Null)
    }

    /// The first chunk of a stream: the assistant role with empty content.
    pub fn role_chunk(&self) -> Value {
        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    /// A final chunk with an empty delta and `finish_reason`.
    pub fn finish_chunk(&self, finish_reason: &str) -> Value {
        self.chunk(json!({}), Value::String(finish_reason.to_owned()))
    }
}

/// One upstream SSE event as the stream hook sees it.
///
/// The proxy reads only what every event needs (the assistant text, whether it carries usage);
/// the full JSON tree is built on the first call to [`StreamEvent::json`].
#[derive(Debug)]
pub struct StreamEvent<'a> {
    /// The event's bytes exactly as the upstream sent them (forwarded untouched on `Forward`).
    pub raw: &'a [u8],
    /// Identity of this stream, for building replacement chunks.
    pub meta: &'a ChunkMeta,
    payload: &'a [u8],
    content: Option<&'a str>,
    usage: bool,
    json: std::cell::OnceCell<Value>,
}

impl<'a> StreamEvent<'a> {
    /// An event whose `data` payload is `payload` (valid JSON), with its assistant text
    /// (`choices[0].delta.content`) and whether it carries a non-null `usage`, as read by the proxy.
    pub fn new(
        raw: &'a [u8],
        payload: &'a [u8],
        content: Option<&'a str>,
        usage: bool,
        meta: &'a ChunkMeta,
    ) -> Self {
        Self {
            raw,
            meta,
            payload,
            content,
            usage,
            json: std::cell::OnceCell::new(),
        }
    }

    /// The assistant text in this chunk (`choices[0].delta.content`), if any.
    pub fn content(&self) -> Option<&str> {
        self.content
    }

    /// Whether the chunk carries a non-null `usage` (the upstream's usage chunk).
    pub fn has_usage(&self) -> bool {
        self.usage
    }

    /// The parsed `data` payload (a `chat.completion.chunk`, or an upstream `{"error":...}`),
    /// parsed on first use.
    pub fn json(&self) -> &Value {
        self.json
            .get_or_init(|| serde_json::from_slice(self.payload).unwrap_or(Value::Null))
    }
}

/// `choices[0].delta.content` of a chunk.
pub fn delta_content(chunk: &Value) -> Option<&str> {
    chunk
        .get("choices")?
        .get(0)?
        .get("delta")?
        .get("content")?
        .as_str()
}

/// The stream hook's decision about one event.
#[derive(Debug, Clone)]
pub enum StreamAction {
    /// Send any held events, then this one.
    Forward,
    /// Keep this event back (after any already held).
    Hold,
    /// Keep this event back, then send the oldest held events so that at most `keep` stay held:
    /// a sliding window over the reply.
    HoldWindow {
        /// How many events may stay held.
        keep: usize,
    },
    /// Discard this event.
    Drop,
    /// Discard held events and this one, send these chunks instead, and go on.
    Emit(Vec<Value>),
    /// Discard held events and this one, send these chunks, stop the upstream and end the stream.
    Replace(Vec<Value>),
}

/// How the upstream stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]` arrived.
    Done,
    /// It failed; the client gets an error event after what the hook emits.
    Failed(UpstreamErrorKind),
}

/// The stream hook's decision at the end of the upstream stream (or after a re-ask).
#[derive(Debug, Clone)]
pub enum EndAction {
    /// Send the held events.
    Release,
    /// Send the held events, then these chunks (e.g. an appended note; to put it before the
    /// finish chunk, drop or hold the upstream's finish chunk and emit your own).
    ReleaseThen(Vec<Value>),
    /// Discard the held events.
    Discard,
    /// Discard the held events and send these chunks.
    Replace(Vec<Value>),
    /// Keep the held events for now and call the upstream again, non-streaming (careguard sets
    /// `stream: false` and removes `stream_options`), within `timeout`; then
    /// [`StreamGuard::on_reask`] decides. Bounded by `[proxy] max_reasks`.
    Reask {
        /// The full request body for the new call.
        body: Value,
        /// Time allowed for the new call.
        timeout: Duration,
    },
}

/// Per-stream guard created by [`Guard::on_stream`]; called for each event as it passes.
pub trait StreamGuard: Send {
    /// Decides about one upstream event.
    fn on_event(&mut self, state: &mut HookState, event: &StreamEvent<'_>) -> StreamAction;

    /// Called when the events that arrived together have all been seen by
    /// [`StreamGuard::on_event`] and some are held, before what is ready goes to the client: the
    /// place to check a batch of events at once instead of one by one. The proxy calls it at
    /// least every 16 KiB of upstream events. `Forward` releases every held event, `HoldWindow`
    /// the oldest ones down to `keep`, `Emit` and `Replace` act as in `on_event`; `Hold` and
    /// `Drop` keep what is held (the default).
    fn on_flush(&mut self, state: &mut HookState, meta: &ChunkMeta) -> StreamAction {
        let _ = (state, meta);
        StreamAction::Hold
    }

    /// Called once when the upstream stream ends (not after a `Replace`). The proxy then sends
    /// an error event if the upstream failed, and always `data: [DONE]`.
    fn on_end(&mut self, state: &mut HookState, end: StreamEnd, meta: &ChunkMeta) -> EndAction;

    /// Decides after a re-ask asked by [`EndAction::Reask`] (`attempt` counts from 1). The
    /// default delivers the new completion as chunks of this stream, or discards the held reply
    /// when the re-ask failed.
    fn on_reask(
        &mut self,
        state: &mut HookState,
        attempt: u32,
        reply: UpstreamReply<'_>,
        meta: &ChunkMeta,
    ) -> EndAction {
        let _ = (state, attempt);
        match reply {
            UpstreamReply::Completion(c) => EndAction::Replace(completion_chunks(meta, c.json())),
            UpstreamReply::Failed(_) => EndAction::Discard,
        }
    }
}

/// Renders a `chat.completion` as chunks of the stream `meta` (role, content, finish).
pub fn completion_chunks(meta: &ChunkMeta, completion: &Value) -> Vec<Value> {
    let content = message_content(completion).unwrap_or_default();
    let finish = completion["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or("stop");
    let mut chunks = vec![meta.role_chunk()];
    if !content.is_empty() {
        chunks.push(meta.content_chunk(content));
    }
    chunks.push(meta.finish_chunk(finish));
    chunks
}

/// How an exchange ended, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// The response was delivered in full.
    Completed,
    /// The client went away before the end of the stream.
    ClientDisconnected,
    /// The upstream failed (the client got an error, possibly mid-stream).
    UpstreamFailed(UpstreamErrorKind),
    /// The request was refused before reaching the upstream (400, 413, guard error).
    Rejected,
}

/// Summary of one chat exchange, handed to [`Guard::on_complete`].
pub struct ExchangeSummary {
    /// The request id.
    pub request_id: String,
    /// The route (always chat completions for now).
    pub route: Route,
    /// The status sent to the client.
    pub status: StatusCode,
    /// Whether it was an SSE response.
    pub streamed: bool,
    /// Assistant text delivered to the client (collected when the request outcome inspects).
    pub delivered_text: Option<String>,
    /// The `model` the upstream reported.
    pub upstream_model: Option<String>,
    /// Upstream calls made (1 + re-asks; 0 when answered directly).
    pub upstream_calls: u32,
    /// How it ended.
    pub outcome: ExchangeOutcome,
    /// The guard's state.
    pub state: HookState,
}

impl std::fmt::Debug for ExchangeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeSummary")
            .field("request_id", &self.request_id)
            .field("route", &self.route)
            .field("status", &self.status)
            .field("streamed", &self.streamed)
            .field("upstream_model", &self.upstream_model)
            .field("upstream_calls", &self.upstream_calls)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// Builds a `chat.completion` with one assistant message, for [`Reply::Completion`].
pub fn completion(model: &str, content: &str) -> Value {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": format!("chatcmpl-careguard-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
    })
}

/// `choices[0].message.content` of a completion.
pub fn message_content(completion: &Value) -> Option<&str> {
    completion
        .get("choices")?
        .get(0)?
        .get("message")?
        .get("content")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_prefers_explicit_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept-language",
            HeaderValue::from_static("de-CH, en;q=0.5"),
        );
        let mut body = JsonBody::from_value(json!({"messages": []}));
        let req = ChatRequest {
            request_id: "r",
            headers: &headers,
            body: &mut body,
            messages: Vec::new(),
            model: None,
            stream: false,
        };
        assert_eq!(req.locale(), Some("de-CH"));
        headers.insert("x-careguard-locale", HeaderValue::from_static("fr"));
        let req = ChatRequest {
            request_id: "r",
            headers: &headers,
            body: &mut body,
            messages: Vec::new(),
            model: None,
            stream: false,
        };
        assert_eq!(req.locale(), Some("fr"));
    }

    #[test]
    fn a_body_is_sent_as_received_until_edited() {
        // Spacing and key order the tree would not reproduce: unedited, the bytes go as they came.
        let raw = r#"{ "model" : "m",  "messages":[{"role":"user","content":"hi"}], "x": 1.50 }"#;
        let mut body = JsonBody::new(Bytes::from_static(raw.as_bytes()));
        assert_eq!(body.json()["model"], "m");
        assert_eq!(body.to_bytes(), raw.as_bytes());
        assert!(!body.is_edited());
        body.json_mut()["model"] = json!("n");
        let sent: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(sent["model"], "n");
        assert_eq!(sent["x"], json!(1.5));
        assert_eq!(sent["messages"][0]["content"], "hi");
        // `RequestAction::Forward` sends these, edit or not.
        assert_eq!(body.original(), raw.as_bytes());
    }

    #[test]
    fn an_upstream_completion_reads_its_text_without_the_tree() {
        let raw = r#"{"model":"gpt","choices":[{"message":{"content":"hello"}}],"z":{}}"#;
        let c = UpstreamCompletion::read(Bytes::from_static(raw.as_bytes())).unwrap();
        assert_eq!((c.model(), c.content()), (Some("gpt"), Some("hello")));
        assert_eq!(c.bytes(), raw.as_bytes());
        assert_eq!(message_content(c.json()), Some("hello"));
        assert!(UpstreamCompletion::read(Bytes::from_static(b"{\"choices\"")).is_err());
        let made = UpstreamCompletion::from_value(json!({"choices":[{"message":{"content":"x"}}]}));
        assert_eq!((made.model(), made.content()), (None, Some("x")));
    }

    #[test]
    fn chunks_keep_stream_identity() {
        let meta = ChunkMeta {
            id: "c1".into(),
            model: "m".into(),
            created: 7,
            system_fingerprint: Some("fp".into()),
        };
        let c = meta.content_chunk("hi");
        assert_eq!(c["id"], "c1");
        assert_eq!(c["system_fingerprint"], "fp");
        assert_eq!(delta_content(&c), Some("hi"));
        assert_eq!(
            meta.finish_chunk("stop")["choices"][0]["finish_reason"],
            "stop"
        );
    }
}
