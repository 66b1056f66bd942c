//! Every power of the hook API, exercised by a test guard: answer directly (JSON and SSE),
//! answer with an error, edit the request, replace a response, re-ask (succeeding and falling
//! back), stop a stream mid-way and replace its tail, hold and release, and the completion
//! summary (also on client disconnect).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use careguard::hooks::{
    self, ChatRequest, ChunkMeta, EndAction, ExchangeOutcome, ExchangeSummary, Guard, GuardError,
    HookState, Reply, RequestAction, RequestOutcome, ResponseAction, ResponseExchange,
    StreamAction, StreamEnd, StreamEvent, StreamGuard, UpstreamReply,
};
use common::*;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// Which power a request exercises, from the `x-test-power` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Power(String);

/// Summaries the guard received.
#[derive(Default)]
struct TestGuard {
    summaries: Mutex<Vec<(ExchangeSummary, String)>>,
    attempts: Mutex<Vec<u32>>,
}

fn action_header(v: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-careguard-action"),
        HeaderValue::from_static(v),
    )
}

impl Guard for TestGuard {
    fn on_request(&self, req: &mut ChatRequest<'_>) -> RequestOutcome {
        let power = req
            .headers
            .get("x-test-power")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let model = req.model().unwrap_or("m").to_owned();
        let outcome = match power.as_str() {
            "answer" => RequestOutcome::with_action(RequestAction::Respond(Reply::Completion(
                hooks::completion(&model, "I'm here with you. You can call or text 988."),
            ))),
            "refuse" => {
                RequestOutcome::with_action(RequestAction::Respond(Reply::Error(GuardError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    message: "blocked by policy".into(),
                    kind: "careguard_policy".into(),
                    code: Some("blocked".into()),
                })))
            }
            "edit" => {
                let messages = req.body.json_mut()["messages"].as_array_mut().unwrap();
                messages.insert(0, json!({"role": "system", "content": "Be safe."}));
                RequestOutcome::with_action(RequestAction::ForwardEdited)
            }
            _ => RequestOutcome::forward(),
        };
        let (name, value) = action_header("observed");
        outcome.state(Power(power)).header(name, value).inspect()
    }

    fn on_response(&self, ex: &mut ResponseExchange<'_>) -> ResponseAction {
        let power = ex.state.downcast_ref::<Power>().unwrap().0.clone();
        self.attempts.lock().unwrap().push(ex.attempt);
        match (power.as_str(), ex.attempt, ex.reply) {
            ("replace", _, UpstreamReply::Completion(c)) => {
                let mut c = c.json().clone();
                c["choices"][0]["message"]["content"] = json!("replaced reply");
                ex.response_headers
                    .insert("x-careguard-action", HeaderValue::from_static("replace"));
                ResponseAction::Replace(c)
            }
            ("reask" | "reask-fails", 0, UpstreamReply::Completion(c)) => {
                assert_eq!(c.content(), Some("bad reply"));
                let mut body = ex.request.json().clone();
                body["messages"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"role": "system", "content": "Try again, safely."}));
                ResponseAction::Reask {
                    body,
                    timeout: Duration::from_secs(5),
                }
            }
            ("reask", 1, UpstreamReply::Completion(c)) => {
                assert_eq!(c.content(), Some("good reply"));
                ResponseAction::Pass
            }
            ("reask-fails", 1, UpstreamReply::Failed(kind)) => {
                assert_eq!(kind, careguard::metrics::UpstreamErrorKind::Status);
                ResponseAction::Replace(hooks::completion("m", "fallback reply"))
            }
            ("reask-forever", _, _) => ResponseAction::Reask {
                body: ex.request.json().clone(),
                timeout: Duration::from_secs(5),
            },
            ("block", _, _) => ResponseAction::Error(GuardError {
                status: StatusCode::BAD_GATEWAY,
                message: "reply withheld".into(),
                kind: "careguard_policy".into(),
                code: Some("reply_blocked".into()),
            }),
            _ => ResponseAction::Pass,
        }
    }

    fn on_stream(
        &self,
        state: &mut HookState,
        request: &hooks::JsonBody,
    ) -> Option<Box<dyn StreamGuard>> {
        let power = state.downcast_ref::<Power>().unwrap().0.clone();
        Some(Box::new(TestStream {
            power,
            text: String::new(),
            request: request.json().clone(),
        }))
    }

    fn on_complete(&self, summary: ExchangeSummary) {
        let power = summary
            .state
            .downcast_ref::<Power>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        self.summaries.lock().unwrap().push((summary, power));
    }
}

struct TestStream {
    power: String,
    text: String,
    request: Value,
}

impl StreamGuard for TestStream {
    fn on_event(&mut self, _state: &mut HookState, event: &StreamEvent<'_>) -> StreamAction {
        if let Some(t) = event.content() {
            self.text.push_str(t);
        }
        match self.power.as_str() {
            // Stop as soon as the accumulated text contains the trigger, wherever chunks split it.
            "stop" if self.text.contains("bridge") => StreamAction::Replace(vec![
                event
                    .meta
                    .content_chunk(" [careguard: the rest was replaced]"),
                event.meta.finish_chunk("stop"),
            ]),
            "hold" | "hold-replace" | "hold-reask" | "hold-reask-fails" => StreamAction::Hold,
            "window" => StreamAction::HoldWindow { keep: 2 },
            "emit" if event.content() == Some("B") => {
                StreamAction::Emit(vec![event.meta.content_chunk("b")])
            }
            _ => StreamAction::Forward,
        }
    }

    fn on_end(&mut self, _state: &mut HookState, end: StreamEnd, meta: &ChunkMeta) -> EndAction {
        assert_eq!(end, StreamEnd::Done);
        match self.power.as_str() {
            "hold-replace" => EndAction::Replace(vec![
                meta.content_chunk("a safer reply"),
                meta.finish_chunk("stop"),
            ]),
            "hold-reask" | "hold-reask-fails" => {
                let mut body = self.request.clone();
                body["messages"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"role": "system", "content": "Try again, safely."}));
                EndAction::Reask {
                    body,
                    timeout: Duration::from_secs(5),
                }
            }
            "window" => EndAction::ReleaseThen(vec![meta.content_chunk(" (note)")]),
            _ => EndAction::Release,
        }
    }

    fn on_reask(
        &mut self,
        _state: &mut HookState,
        attempt: u32,
        reply: UpstreamReply<'_>,
        meta: &ChunkMeta,
    ) -> EndAction {
        assert_eq!(attempt, 1);
        match reply {
            UpstreamReply::Completion(c) => {
                EndAction::Replace(hooks::completion_chunks(meta, c.json()))
            }
            UpstreamReply::Failed(_) => EndAction::Replace(vec![
                meta.content_chunk("fallback reply"),
                meta.finish_chunk("stop"),
            ]),
        }
    }
}

async fn setup() -> (MockUpstream, Careguard, Arc<TestGuard>) {
    let mock = MockUpstream::start().await;
    let guard = Arc::new(TestGuard::default());
    let cg = start_careguard_with(&mock.base_url(), "", guard.clone()).await;
    (mock, cg, guard)
}

async fn send(cg: &Careguard, power: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(cg.chat_url())
        .header("x-test-power", power)
        .bearer_auth("sk-client")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn summaries(
    guard: &TestGuard,
) -> Vec<(
    String,
    StatusCode,
    bool,
    Option<String>,
    ExchangeOutcome,
    u32,
)> {
    guard
        .summaries
        .lock()
        .unwrap()
        .iter()
        .map(|(s, p)| {
            (
                p.clone(),
                s.status,
                s.streamed,
                s.delivered_text.clone(),
                s.outcome,
                s.upstream_calls,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_directly_as_json_and_as_sse() {
    let (mock, cg, guard) = setup().await;
    let resp = send(&cg, "answer", &chat_request(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-careguard-action"], "observed");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "I'm here with you. You can call or text 988."
    );

    // Streaming clients get the answer as chunks.
    let resp = send(&cg, "answer", &chat_request(true)).await;
    assert_eq!(resp.headers()["x-careguard-action"], "observed");
    let data = sse_data(&read_all(resp).await);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| hooks::delta_content(&c).map(str::to_owned))
        .collect();
    assert_eq!(text, "I'm here with you. You can call or text 988.");
    assert!(mock.received().is_empty(), "the upstream was never called");
    let s = summaries(&guard);
    assert_eq!(s.len(), 2);
    assert!(s[1].2);
    assert_eq!(
        s[1].3.as_deref(),
        Some("I'm here with you. You can call or text 988.")
    );
    assert_eq!(s[1].5, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_with_an_error() {
    let (mock, cg, _guard) = setup().await;
    let resp = send(&cg, "refuse", &chat_request(true)).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["x-careguard-action"], "observed");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "careguard_policy");
    assert_eq!(v["error"]["code"], "blocked");
    assert_eq!(v["error"]["message"], "blocked by policy");
    assert!(mock.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_the_request() {
    let (mock, cg, _guard) = setup().await;
    let resp = send(&cg, "edit", &chat_request(false)).await;
    assert_eq!(resp.status(), 200);
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be safe."})
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 5);
    assert_eq!(
        sent["x_client_extension"],
        chat_request(false)["x_client_extension"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_or_block_a_response() {
    let (_mock, cg, guard) = setup().await;
    let mut req = chat_request(false);
    req["x"] = json!(1);
    let resp = send(&cg, "replace", &req).await;
    assert_eq!(resp.headers()["x-careguard-action"], "replace");
    let v: Value = resp.json().await.unwrap();
    let mut expected = chat_completion("gpt-4o-mini", "replaced reply");
    expected["x_vendor_extension"] = chat_completion("m", "")["x_vendor_extension"].clone();
    assert_eq!(v, expected, "only the content changed");
    let resp = send(&cg, "block", &req).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "reply_blocked");
    let s = summaries(&guard);
    assert_eq!(s[0].3.as_deref(), Some("replaced reply"));
    assert_eq!(s[0].4, ExchangeOutcome::Completed);
    assert_eq!(s[1].1, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reask_succeeds() {
    let (mock, cg, guard) = setup().await;
    mock.push(MockReply::Json(chat_completion("m", "bad reply")));
    mock.push(MockReply::Json(chat_completion("m", "good reply")));
    let resp = send(&cg, "reask", &chat_request(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(hooks::message_content(&v), Some("good reply"));
    let seen = mock.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].json()["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"],
        "Try again, safely."
    );
    assert_eq!(
        seen[1].headers["authorization"],
        seen[0].headers["authorization"]
    );
    assert_eq!(*guard.attempts.lock().unwrap(), vec![0, 1]);
    assert_eq!(summaries(&guard)[0].5, 2, "two upstream calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reask_falls_back_when_the_upstream_fails() {
    let (mock, cg, _guard) = setup().await;
    mock.push(MockReply::Json(chat_completion("m", "bad reply")));
    mock.push(MockReply::Status(500, "{}".into()));
    let resp = send(&cg, "reask-fails", &chat_request(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(hooks::message_content(&v), Some("fallback reply"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasks_are_bounded() {
    let (mock, cg, _guard) = setup().await;
    let resp = send(&cg, "reask-forever", &chat_request(false)).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "guard_reask_limit");
    assert_eq!(mock.received().len(), 3, "1 call + max_reasks (2)");
}

/// One-character chunks, trigger word split across chunks, upstream still sending afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_a_stream_midway_and_replace_its_tail() {
    let (mock, cg, guard) = setup().await;
    let pieces = split_chars("Sure. The bridge on Main St is tall.", 1);
    // The upstream would go on after the trigger (and never finish): careguard must cut it off.
    mock.push(MockReply::RawSse {
        chunks: sse_events("m", &pieces, false)
            .into_iter()
            .take(pieces.len() - 1)
            .map(Bytes::from)
            .collect(),
        end: SseEnd::Stall,
    });
    let resp = send(&cg, "stop", &chat_request(true)).await;
    let body = read_all(resp).await;
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| hooks::delta_content(c).map(str::to_owned))
        .collect();
    assert_eq!(text, "Sure. The bridg [careguard: the rest was replaced]");
    assert!(
        chunks.iter().all(|c| c["id"] == "chatcmpl-stream-7f3a"),
        "same stream id"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancels(1))
        .await
        .expect("upstream cancelled after the replacement");
    let s = summaries(&guard);
    let stop = s.iter().find(|s| s.0 == "stop").unwrap();
    assert_eq!(
        stop.3.as_deref(),
        Some("Sure. The bridg [careguard: the rest was replaced]")
    );
    assert!(stop.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_then_release_is_byte_identical() {
    let (mock, cg, _guard) = setup().await;
    let expected = sse_events("gpt-4o-mini", &split_chars(DEFAULT_CONTENT, 7), false).concat();
    let resp = send(&cg, "hold", &chat_request(true)).await;
    assert_eq!(read_all(resp).await, expected.as_bytes());
    let _ = mock;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_then_replace_at_the_end() {
    let (_mock, cg, guard) = setup().await;
    let resp = send(&cg, "hold-replace", &chat_request(true)).await;
    let data = sse_data(&read_all(resp).await);
    assert_eq!(
        data.len(),
        3,
        "replacement content, finish, [DONE]: {data:?}"
    );
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(hooks::delta_content(&first), Some("a safer reply"));
    assert_eq!(first["id"], "chatcmpl-stream-7f3a");
    let s = summaries(&guard);
    assert_eq!(s[0].3.as_deref(), Some("a safer reply"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_rewrites_one_event_and_goes_on() {
    let (mock, cg, _guard) = setup().await;
    mock.push(MockReply::Auto {
        content: "ABC".into(),
        chunk_chars: 1,
    });
    let resp = send(&cg, "emit", &chat_request(true)).await;
    let data = sse_data(&read_all(resp).await);
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| hooks::delta_content(&c).map(str::to_owned))
        .collect();
    assert_eq!(text, "AbC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_written_when_the_client_goes_away() {
    let (mock, cg, guard) = setup().await;
    mock.push(MockReply::RawSse {
        chunks: sse_events("m", &split_chars("Hello", 5), false)
            .into_iter()
            .take(2)
            .map(Bytes::from)
            .collect(),
        end: SseEnd::Stall,
    });
    let resp = send(&cg, "none", &chat_request(true)).await;
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("Hello") {
        got.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancels(1))
        .await
        .unwrap();
    // The summary is written as the body is dropped, which happens before the upstream closes.
    let s = summaries(&guard);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].4, ExchangeOutcome::ClientDisconnected);
    assert_eq!(s[0].3.as_deref(), Some("Hello"));
}

fn stream_text(body: &[u8]) -> (String, Vec<Value>) {
    let data = sse_data(body);
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| hooks::delta_content(c).map(str::to_owned))
        .collect();
    (text, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_stream_is_reasked_and_replaced() {
    let (mock, cg, guard) = setup().await;
    mock.push(MockReply::Auto {
        content: "bad reply".into(),
        chunk_chars: 3,
    });
    mock.push(MockReply::Json(chat_completion("m", "good reply")));
    let mut req = chat_request(true);
    req["stream_options"] = json!({"include_usage": true});
    let body = read_all(send(&cg, "hold-reask", &req).await).await;
    let (text, chunks) = stream_text(&body);
    assert_eq!(text, "good reply");
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-stream-7f3a"));
    let seen = mock.received();
    assert_eq!(seen.len(), 2);
    let reask = seen[1].json();
    assert_eq!(reask["stream"], false);
    assert!(reask.get("stream_options").is_none());
    assert_eq!(reask["messages"].as_array().unwrap().len(), 5);
    let s = summaries(&guard);
    assert_eq!(s[0].3.as_deref(), Some("good reply"));
    assert_eq!(s[0].5, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_stream_reask_falls_back() {
    let (mock, cg, _guard) = setup().await;
    mock.push(MockReply::Auto {
        content: "bad reply".into(),
        chunk_chars: 3,
    });
    mock.push(MockReply::Status(503, "{}".into()));
    let body = read_all(send(&cg, "hold-reask-fails", &chat_request(true)).await).await;
    let (text, _) = stream_text(&body);
    assert_eq!(text, "fallback reply");
    assert!(!String::from_utf8_lossy(&body).contains("bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_keeps_order_and_appends() {
    let (mock, cg, _guard) = setup().await;
    mock.push(MockReply::Auto {
        content: "abcdef".into(),
        chunk_chars: 1,
    });
    let body = read_all(send(&cg, "window", &chat_request(true)).await).await;
    let (text, chunks) = stream_text(&body);
    assert_eq!(text, "abcdef (note)");
    // role chunk, 6 content chunks, finish chunk, then the appended note.
    assert_eq!(chunks.len(), 9);
    assert_eq!(chunks[7]["choices"][0]["finish_reason"], "stop");
}
