//! Every fault gets its exact status and an OpenAI-shaped error; failures after a stream started
//! become an error event followed by `data: [DONE]`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use serde_json::Value;

/// Asserts an OpenAI-shaped error body with this `type` and `code`; returns the message.
async fn assert_error(resp: reqwest::Response, status: u16, kind: &str, code: &str) -> String {
    assert_eq!(resp.status(), status);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(e["code"], code, "{v}");
    e["message"].as_str().expect("message").to_owned()
}

fn post(url: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
}

fn chat_body(stream: bool) -> String {
    serde_json::to_string(&chat_request(stream)).unwrap()
}

fn events(pieces: &[&str], done: bool) -> Vec<Bytes> {
    let pieces: Vec<String> = pieces.iter().map(|s| s.to_string()).collect();
    let mut ev = sse_events("m", &pieces, false);
    if !done {
        ev.pop();
        ev.pop(); // and the finish chunk
    }
    ev.into_iter().map(Bytes::from).collect()
}

/// The last two events of a stream careguard ended after a failure: error, then [DONE].
fn assert_stream_error(body: &[u8], code: &str) {
    let data = sse_data(body);
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], code, "{data:?}");
    assert_eq!(err["error"]["type"], "api_error");
    assert!(err["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let cg = start_careguard_with(
        &format!("http://{addr}/v1"),
        "",
        Arc::new(careguard::hooks::PassThrough),
    )
    .await;
    let resp = post(&cg.chat_url(), chat_body(false)).send().await.unwrap();
    assert_error(resp, 502, "api_error", "upstream_unreachable").await;
    assert_eq!(
        cg.metric("careguard_upstream_errors_total{kind=\"unreachable\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_and_429_are_relayed() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    for (status, body) in [
        (
            500,
            r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
        ),
        (
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
    ] {
        for stream in [false, true] {
            mock.push(MockReply::Status(status, body.to_owned()));
            let resp = post(&cg.chat_url(), chat_body(stream))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()["x-mock-status"], status.to_string().as_str());
            assert_eq!(resp.text().await.unwrap(), body);
        }
    }
    assert_eq!(
        cg.metric("careguard_requests_total{route=\"chat_completions\",status_class=\"5xx\"}")
            .await,
        2.0
    );
    assert_eq!(
        cg.metric("careguard_upstream_errors_total{kind=\"status\"}")
            .await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_mid_stream_ends_with_error_event_and_done() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "[upstream]\nchunk_timeout_ms = 300\n").await;
    mock.push(MockReply::RawSse {
        chunks: events(&["Hello", " there"], false),
        end: SseEnd::Stall,
    });
    let resp = post(&cg.chat_url(), chat_body(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = read_all(resp).await;
    let data = sse_data(&body);
    assert_eq!(data.len(), 5, "role, 2 content, error, [DONE]: {data:?}");
    assert_stream_error(&body, "upstream_chunk_timeout");
    // careguard gave up on the upstream: the mock sees the connection go.
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancels(1))
        .await
        .expect("upstream cancelled");
    assert_eq!(
        cg.metric("careguard_upstream_errors_total{kind=\"chunk_timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_before_first_byte_is_504() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "[upstream]\nfirst_byte_timeout_ms = 300\n").await;
    mock.push(MockReply::StallBeforeHeaders);
    let resp = post(&cg.chat_url(), chat_body(false)).send().await.unwrap();
    assert_error(resp, 504, "api_error", "upstream_first_byte_timeout").await;
    // Headers sent but no first event: still a real status, not a 200 with an error inside.
    mock.push(MockReply::RawSse {
        chunks: vec![],
        end: SseEnd::Stall,
    });
    let resp = post(&cg.chat_url(), chat_body(true)).send().await.unwrap();
    assert_error(resp, 504, "api_error", "upstream_first_byte_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_truncated_streams_end_with_error_event() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let mut chunks = events(&["Hi"], false);
    chunks.push(Bytes::from_static(b"data: {\"id\": \"x\", broken\n\n"));
    chunks.push(Bytes::from_static(b"data: {\"never\":\"sent\"}\n\n"));
    mock.push(MockReply::RawSse {
        chunks,
        end: SseEnd::Close,
    });
    let body = read_all(post(&cg.chat_url(), chat_body(true)).send().await.unwrap()).await;
    assert_stream_error(&body, "upstream_malformed_stream");
    assert!(!String::from_utf8_lossy(&body).contains("never"));
    assert_eq!(sse_data(&body).len(), 4, "role, content, error, [DONE]");

    mock.push(MockReply::RawSse {
        chunks: events(&["Hi"], false),
        end: SseEnd::Close,
    });
    let body = read_all(post(&cg.chat_url(), chat_body(true)).send().await.unwrap()).await;
    assert_stream_error(&body, "upstream_truncated_stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "[proxy]\nmax_body_bytes = 1024\n").await;
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let resp = post(&cg.chat_url(), big.clone()).send().await.unwrap();
    let msg = assert_error(resp, 413, "invalid_request_error", "request_too_large").await;
    assert!(msg.contains("1024"));
    // Chunked upload without Content-Length: caught while reading.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let resp = post(&cg.chat_url(), reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "invalid_request_error", "request_too_large").await;
    assert!(mock.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_and_missing_messages_are_400() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let resp = post(&cg.chat_url(), "{\"model\": ").send().await.unwrap();
    assert_error(resp, 400, "invalid_request_error", "invalid_json").await;
    let resp = post(&cg.chat_url(), r#"{"model":"m","prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request_error", "missing_messages").await;
    let resp = post(&cg.chat_url(), r#"{"model":"m","messages":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request_error", "missing_messages").await;
    assert!(mock.received().is_empty());
    assert_eq!(
        cg.metric("careguard_requests_total{route=\"chat_completions\",status_class=\"4xx\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    mock.push(MockReply::RawSse {
        chunks: events(&["Hello"], false),
        end: SseEnd::Stall,
    });
    let resp = post(&cg.chat_url(), chat_body(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(cg.metric("careguard_streams_in_flight").await, 1.0);
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_cancels(1))
        .await
        .expect("the mock saw the upstream request cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unguarded_routes_are_refused_unless_allowed() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    for route in [
        "responses",
        "assistants",
        "threads/t1/runs",
        "realtime/sessions",
    ] {
        let resp = post(&format!("{}/{route}", cg.base), "{}")
            .send()
            .await
            .unwrap();
        let msg = assert_error(resp, 403, "permission_error", "unguarded_route").await;
        assert!(msg.contains("allow_unguarded_routes"), "{msg}");
    }
    assert!(mock.received().is_empty());

    let cg = start_careguard(&mock, "[proxy]\nallow_unguarded_routes = [\"responses\"]\n").await;
    let resp = post(&format!("{}/responses", cg.base), r#"{"input":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.last().path, "/v1/responses");
    let resp = post(&format!("{}/threads", cg.base), "{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        cg.metric("careguard_unguarded_requests_total{route=\"responses\"}")
            .await,
        1.0
    );
    assert_eq!(
        cg.metric("careguard_unguarded_requests_total{route=\"threads\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_traffic() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    for _ in 0..3 {
        let resp = post(&cg.chat_url(), chat_body(false)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    for _ in 0..2 {
        let body = read_all(post(&cg.chat_url(), chat_body(true)).send().await.unwrap()).await;
        assert_eq!(sse_data(&body).last().unwrap(), "[DONE]");
    }
    let resp = reqwest::get(format!("{}/models", cg.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = cg.metrics().await;
    let m = |s: &str| metric_value(&text, s);
    assert_eq!(
        m("careguard_requests_total{route=\"chat_completions\",status_class=\"2xx\"}"),
        5.0
    );
    assert_eq!(
        m("careguard_requests_total{route=\"models\",status_class=\"2xx\"}"),
        1.0
    );
    assert_eq!(m("careguard_overhead_seconds_count"), 5.0);
    assert_eq!(m("careguard_upstream_duration_seconds_count"), 5.0);
    assert_eq!(m("careguard_streams_in_flight"), 0.0);
    assert!(m("careguard_overhead_seconds_sum") > 0.0);
    for path in ["/healthz", "/readyz"] {
        let resp = reqwest::get(format!("{}{path}", cg.admin)).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// Queues a stream on `mock` that sends its first two events, then waits for the returned gate
/// before the rest; also returns all its events.
fn push_gated_stream(mock: &MockUpstream) -> (Arc<tokio::sync::Notify>, Vec<Bytes>) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let all = events(&["one", "two"], true);
    mock.push(MockReply::Gated {
        first: all[..2].to_vec(),
        rest: all[2..].to_vec(),
        gate: Arc::clone(&gate),
    });
    (gate, all)
}

/// A stream still open when the drain timeout runs out is cut (its connection closed), and
/// shutdown returns instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_streams_left_after_the_drain_timeout() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockUpstream::start().await;
    let mut config = careguard::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.drain_timeout_ms = 200;
    config.server.workers = 2;
    config.upstream.base_url = Some(mock.base_url());
    let server = careguard::server::Server::start(config, Arc::new(careguard::hooks::PassThrough))
        .await
        .unwrap();
    // The gate is never opened: only the drain timeout can end this stream.
    let (_gate, all) = push_gated_stream(&mock);
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let resp = post(&url, chat_body(true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(all[..2].concat().starts_with(&first), "the stream started");
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown returns once the drain timeout has passed");
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            failed |= chunk.is_err();
        }
        failed
    })
    .await
    .expect("the cut stream ends");
    assert!(rest, "the client sees the stream cut, not a clean end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_streams() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let (gate, all) = push_gated_stream(&mock);
    let resp = post(&cg.chat_url(), chat_body(true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    let addr = cg.server.addr;
    let shutdown = tokio::spawn(cg.server.shutdown());
    // New connections are refused once draining started (the listener is closed).
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("listener closed");
    assert!(!shutdown.is_finished());
    gate.notify_one();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        got,
        all.concat(),
        "the in-flight stream completed untouched"
    );
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finished after the drain")
        .unwrap();
}
