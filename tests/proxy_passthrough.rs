//! careguard with the pass-through guard is invisible: a real OpenAI client gets exactly what the
//! upstream sent, streaming and not, unknown fields included.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_completion_arrives_identical() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let client = openai_client(&cg.base);
    let got: Value = client
        .chat()
        .create_byot(chat_request(false))
        .await
        .expect("completion");
    assert_eq!(got, chat_completion("gpt-4o-mini", DEFAULT_CONTENT));
    // The upstream got the client's body with unknown fields intact, under the base URL prefix.
    let seen = mock.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.json(), chat_request(false));
    assert_eq!(
        seen.headers["authorization"], "Bearer sk-test-careguard",
        "Authorization is forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bytes_are_untouched() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    // Odd spacing and key order: careguard must forward the original bytes, not a re-encoding.
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"hi \\u00e9\"} ],\n \"model\":\"m\", \"zzz\": 1.50 }";
    let resp = reqwest::Client::new()
        .post(cg.chat_url())
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-request-id", "req-123")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    assert_eq!(resp.headers()["openai-processing-ms"], "42");
    let text = resp.text().await.unwrap();
    assert_eq!(
        text,
        serde_json::to_string(&chat_completion("m", DEFAULT_CONTENT)).unwrap()
    );
    let seen = mock.last();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["x-request-id"], "req-123");
    assert!(
        !seen.headers.contains_key("x-hop"),
        "hop-by-hop header dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_when_missing() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let resp = reqwest::Client::new()
        .post(cg.chat_url())
        .body(r#"{"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(mock.last().headers["x-request-id"], id.as_str());
    // Errors carry it too.
    let resp = reqwest::Client::new()
        .post(cg.chat_url())
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completion_arrives_identical() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let client = openai_client(&cg.base);
    let mut request = chat_request(true);
    request["stream_options"] = json!({"include_usage": true});
    let mut stream = client
        .chat()
        .create_stream_byot::<Value, Value>(request)
        .await
        .expect("stream");
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.push(chunk.expect("chunk"));
    }
    let pieces = split_chars(DEFAULT_CONTENT, 7);
    let expected: Vec<Value> = sse_events("gpt-4o-mini", &pieces, true)
        .iter()
        .filter(|e| !e.contains("[DONE]"))
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap().trim()).unwrap())
        .collect();
    assert_eq!(
        got, expected,
        "ids, deltas, finish reason, usage, unknown fields"
    );
    assert_eq!(got.last().unwrap()["usage"]["prompt_tokens"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_bytes_are_identical_for_any_chunking() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let events = sse_events("m", &split_chars(DEFAULT_CONTENT, 1), false);
    let all = events.concat();
    // Re-chunk the upstream bytes at awkward places: single bytes, mid-line, mid-event.
    for size in [1usize, 5, 64, 1000] {
        let chunks = all
            .as_bytes()
            .chunks(size)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        mock.push(MockReply::RawSse {
            chunks,
            end: SseEnd::Close,
        });
        let resp = reqwest::Client::new()
            .post(cg.chat_url())
            .json(&chat_request(true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let body = read_all(resp).await;
        assert_eq!(body, all.as_bytes(), "chunk size {size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_routes_pass_through() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let client = openai_client(&cg.base);
    let models = client.models().list().await.expect("models");
    assert_eq!(models.data[0].id, "gpt-4o-mini");
    assert_eq!(mock.last().path, "/v1/models");

    let resp = reqwest::Client::new()
        .post(format!("{}/completions?x=1", cg.base))
        .body(r#"{"model":"m","prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.path, "/v1/completions?x=1");
    assert_eq!(seen.body, r#"{"model":"m","prompt":"hi"}"#.as_bytes());

    let resp = reqwest::Client::new()
        .post(format!("{}/embeddings", cg.base))
        .body(r#"{"input":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.last().path, "/v1/embeddings");

    let resp = reqwest::get(format!("http://{}/metrics", cg.server.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "metrics never on the main listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_h2c() {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(cg.chat_url())
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&chat_request(false)).unwrap(),
        )))
        .unwrap();
    let resp = client.request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, chat_completion("gpt-4o-mini", DEFAULT_CONTENT));
}
