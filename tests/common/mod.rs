//! Shared test harness: an in-process mock OpenAI upstream speaking the real wire format, and a
//! helper to start careguard in front of it. Reused by every integration test file.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use careguard::config::Config;
use careguard::hooks::{Guard, PassThrough};
use careguard::server::Server;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// The assistant text the default mock reply carries.
pub const DEFAULT_CONTENT: &str =
    "It sounds like a lot is on your mind. Would you like to talk about what happened today?";

/// A scripted upstream reply.
#[derive(Debug, Clone)]
pub enum MockReply {
    /// Non-streaming: JSON `chat.completion` with this content; streaming: chunks of it, split
    /// every `chunk_chars` characters (usage chunk when `stream_options.include_usage`).
    Auto {
        /// Assistant text.
        content: String,
        /// Characters per content chunk when streamed.
        chunk_chars: usize,
    },
    /// Exactly this JSON body with status 200.
    Json(Value),
    /// This status and body (e.g. 500, 429).
    Status(u16, String),
    /// SSE with these raw byte chunks, written one by one; then `end`.
    RawSse {
        /// Byte chunks of the body, sent as separate writes.
        chunks: Vec<Bytes>,
        /// What happens after the last chunk.
        end: SseEnd,
    },
    /// Never sends response headers (until the client gives up).
    StallBeforeHeaders,
    /// Reads the request, waits `after`, then drops every open connection without answering:
    /// an upstream that dies (or resets) with the request in hand.
    DropConnection {
        /// How long after the request arrived.
        after: Duration,
    },
    /// SSE: sends `first`, waits for `gate.notify_one()`, then sends `rest` and ends.
    Gated {
        /// Sent at once.
        first: Vec<Bytes>,
        /// Sent after the gate opens.
        rest: Vec<Bytes>,
        /// Opened by the test.
        gate: Arc<Notify>,
    },
}

/// How a [`MockReply::RawSse`] body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEnd {
    /// The body ends normally.
    Close,
    /// The body stalls until the client goes away (which the mock records as a cancel).
    Stall,
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

#[derive(Default)]
struct MockState {
    script: Mutex<VecDeque<MockReply>>,
    default: Mutex<Option<MockReply>>,
    received: Mutex<Vec<Received>>,
    received_notify: Notify,
    cancels: AtomicUsize,
    cancel_notify: Notify,
    /// Connections accepted so far, and open now.
    accepted: AtomicUsize,
    open: AtomicUsize,
    open_notify: Notify,
    /// Woken to drop every open connection at once, without a `Connection: close`.
    close_all: Notify,
}

/// An in-process mock OpenAI-compatible upstream on 127.0.0.1:0.
#[derive(Clone)]
pub struct MockUpstream {
    /// Bound address.
    pub addr: SocketAddr,
    state: Arc<MockState>,
}

impl MockUpstream {
    /// Starts the mock; by default it answers [`MockReply::Auto`] with [`DEFAULT_CONTENT`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                st.accepted.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let conn_state = Arc::clone(&st);
                    let svc = hyper::service::service_fn(move |req| {
                        let st = Arc::clone(&conn_state);
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = st.close_all.notified() => {}
                    }
                    st.open.fetch_sub(1, Ordering::SeqCst);
                    st.open_notify.notify_waiters();
                });
            }
        });
        Self { addr, state }
    }

    /// Base URL with the `/v1` prefix, as careguard's `[upstream] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a reply for the next request (FIFO); then the default applies again.
    pub fn push(&self, reply: MockReply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    /// Sets the reply used when nothing is queued.
    pub fn set_default(&self, reply: MockReply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Received {
        self.received().pop().expect("a request reached the mock")
    }

    /// How many streamed replies were cut off by the client going away.
    pub fn cancels(&self) -> usize {
        self.state.cancels.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` cancels were observed (no timeout: wrap it in one).
    pub async fn wait_cancels(&self, n: usize) {
        loop {
            let notified = self.state.cancel_notify.notified();
            if self.cancels() >= n {
                return;
            }
            notified.await;
        }
    }

    /// How many connections the mock has accepted.
    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now.
    pub fn connections_open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Waits until at most `n` connections are open (no timeout: wrap it in one).
    pub async fn wait_open_at_most(&self, n: usize) {
        loop {
            let notified = self.state.open_notify.notified();
            if self.connections_open() <= n {
                return;
            }
            notified.await;
        }
    }

    /// Drops every open connection, as an upstream whose keep-alive timeout expired does: the
    /// socket closes without a `Connection: close` having announced it.
    pub fn close_connections(&self) {
        self.state.close_all.notify_waiters();
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_received(&self, n: usize) {
        loop {
            let notified = self.state.received_notify.notified();
            if self.state.received.lock().unwrap().len() >= n {
                return;
            }
            notified.await;
        }
    }
}

type MockBody = BoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> MockBody {
    Full::new(body.into()).boxed()
}

async fn handle(st: Arc<MockState>, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    st.received.lock().unwrap().push(Received {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    st.received_notify.notify_waiters();

    if path.ends_with("/models") {
        return json_response(200, models());
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = st.script.lock().unwrap().pop_front().unwrap_or_else(|| {
        st.default
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(MockReply::Auto {
                content: DEFAULT_CONTENT.to_owned(),
                chunk_chars: 7,
            })
    });
    let model = request["model"]
        .as_str()
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    match reply {
        MockReply::Auto {
            content,
            chunk_chars,
        } => {
            if request["stream"] == json!(true) {
                let usage = request["stream_options"]["include_usage"] == json!(true);
                let pieces = split_chars(&content, chunk_chars);
                let events = sse_events(&model, &pieces, usage);
                sse_response(
                    st,
                    events.into_iter().map(Bytes::from).collect(),
                    SseEnd::Close,
                )
            } else {
                json_response(200, chat_completion(&model, &content))
            }
        }
        MockReply::Json(v) => json_response(200, v),
        MockReply::Status(code, body) => {
            let mut r = Response::new(full(body));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("x-mock-status", code.to_string().parse().unwrap());
            r
        }
        MockReply::RawSse { chunks, end } => sse_response(st, chunks, end),
        MockReply::Gated { first, rest, gate } => gated_response(first, rest, gate),
        MockReply::StallBeforeHeaders => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            json_response(200, json!({}))
        }
        MockReply::DropConnection { after } => {
            tokio::time::sleep(after).await;
            st.close_all.notify_waiters();
            std::future::pending().await
        }
    }
}

fn json_response(status: u16, v: Value) -> Response<MockBody> {
    let mut r = Response::new(full(serde_json::to_vec(&v).unwrap()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("openai-processing-ms", "42".parse().unwrap());
    r
}

/// Writes `chunks` one by one through a bounded channel; records a cancel when the client goes
/// away before the body is complete.
fn sse_response(st: Arc<MockState>, chunks: Vec<Bytes>, end: SseEnd) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                st.cancels.fetch_add(1, Ordering::SeqCst);
                st.cancel_notify.notify_waiters();
                return;
            }
        }
        if end == SseEnd::Stall {
            tx.closed().await;
            st.cancels.fetch_add(1, Ordering::SeqCst);
            st.cancel_notify.notify_waiters();
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    r.headers_mut()
        .insert("x-mock-stream", "1".parse().unwrap());
    r
}

fn gated_response(first: Vec<Bytes>, rest: Vec<Bytes>, gate: Arc<Notify>) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for c in first {
            let _ = tx.send(c).await;
        }
        gate.notified().await;
        for c in rest {
            let _ = tx.send(c).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// Splits `text` into pieces of `n` characters (never splitting a character).
pub fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// A realistic `chat.completion`, with an unknown extra field.
pub fn chat_completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1_741_570_283u64,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 1117,
            "completion_tokens": 46,
            "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "x_vendor_extension": {"trace": "abc", "score": 0.25}
    })
}

/// Realistic `chat.completion.chunk` SSE events for `pieces` of content: role chunk, one chunk
/// per piece, finish chunk, optional usage chunk, `[DONE]`.
pub fn sse_events(model: &str, pieces: &[String], usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-stream-7f3a",
            "object": "chat.completion.chunk",
            "created": 1_741_570_283u64,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "x_vendor_extension": {"seq": 1}
        })
    };
    let mut out = Vec::new();
    let mut push = |v: Value| out.push(format!("data: {}\n\n", serde_json::to_string(&v).unwrap()));
    push(chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    ));
    for p in pieces {
        push(chunk(json!({"content": p}), Value::Null));
    }
    push(chunk(json!({}), json!("stop")));
    if usage {
        push(json!({
            "id": "chatcmpl-stream-7f3a",
            "object": "chat.completion.chunk",
            "created": 1_741_570_283u64,
            "model": model,
            "system_fingerprint": "fp_fc9f1d7035",
            "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": pieces.len(), "total_tokens": 20 + pieces.len()}
        }));
    }
    out.push("data: [DONE]\n\n".to_owned());
    out
}

fn models() -> Value {
    json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_717u64, "owned_by": "system"}
    ]})
}

/// A running careguard in front of a mock.
pub struct Careguard {
    /// The server (drop or `shutdown` it at the end).
    pub server: Server,
    /// `http://addr/v1`, the client's base URL.
    pub base: String,
    /// `http://admin_addr`.
    pub admin: String,
}

impl Careguard {
    /// `http://addr/v1/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!("{}/chat/completions", self.base)
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }
}

/// Reads `sample`'s value out of Prometheus text (0 when absent).
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Starts careguard with `toml` (listen addresses forced to 127.0.0.1:0) and `guard`, pointed at `upstream`.
pub async fn start_careguard_with(upstream: &str, toml: &str, guard: Arc<dyn Guard>) -> Careguard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        Config::from_str(toml, std::path::Path::new("test.toml")).expect("valid test config");
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.drain_timeout_ms = 5_000;
    config.upstream.base_url = Some(upstream.to_owned());
    let server = Server::start(config, guard)
        .await
        .expect("careguard starts");
    let base = format!("http://{}/v1", server.addr);
    let admin = format!("http://{}", server.admin_addr);
    Careguard {
        server,
        base,
        admin,
    }
}

/// Starts careguard with the pass-through guard in front of `mock`.
pub async fn start_careguard(mock: &MockUpstream, toml: &str) -> Careguard {
    start_careguard_with(&mock.base_url(), toml, Arc::new(PassThrough)).await
}

/// An async-openai client pointed at careguard.
pub fn openai_client(base: &str) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = async_openai::config::OpenAIConfig::new()
        .with_api_base(base)
        .with_api_key("sk-test-careguard");
    async_openai::Client::with_config(config)
}

/// A small multi-turn chat request.
pub fn chat_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a supportive companion."},
            {"role": "user", "content": "I had a rough day at work."},
            {"role": "assistant", "content": "I'm sorry to hear that. What happened?"},
            {"role": "user", "content": "My manager criticised me in front of everyone."}
        ],
        "temperature": 0.7,
        "stream": stream,
        "x_client_extension": {"keep": ["me", 1, null]}
    })
}

/// Reads an SSE response body to the end, returning the raw bytes.
pub async fn read_all(resp: reqwest::Response) -> Bytes {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    Bytes::from(out)
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}
