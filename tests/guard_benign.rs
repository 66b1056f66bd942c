//! Ordinary traffic through the real guard is byte-identical: the JSON body and the SSE bytes
//! the user gets are exactly what the upstream sent, unknown fields and all.

mod common;
mod guard_support;

use bytes::Bytes;
use common::*;
use guard_support::*;
use serde_json::json;

/// SSE bytes cut into writes of `n` bytes, ignoring event boundaries.
fn byte_chunks(events: &[String], n: usize) -> Vec<Bytes> {
    let all = events.concat().into_bytes();
    all.chunks(n).map(Bytes::copy_from_slice).collect()
}

#[tokio::test]
async fn benign_json_is_byte_identical() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "").await;
    let mut upstream = chat_completion("gpt-4o-mini", DEFAULT_CONTENT);
    upstream["choices"][0]["message"]["x_unknown"] = json!({"nested": [1, 2.5, null]});
    mock.set_default(MockReply::Json(upstream.clone()));
    let sent = serde_json::to_vec(&upstream).unwrap();

    let got = post(&cg, &chat_request(false), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        Bytes::from(sent.clone()),
        "body changed:\n{}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.header("x-careguard-action"), "allow");
    assert_eq!(got.header("x-careguard-conditions"), "none");
    // The client's request reached the upstream untouched (no guidance injected).
    assert_eq!(mock.last().json(), chat_request(false));

    // The same through the OpenAI client.
    let client = openai_client(&cg.base);
    let got: serde_json::Value = client
        .chat()
        .create_byot(chat_request(false))
        .await
        .unwrap();
    assert_eq!(got, upstream);
}

#[tokio::test]
async fn benign_sse_is_byte_identical_in_any_chunking() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "").await;
    let long = "Rough days at work happen to everyone. It might help to write down what was said, \
                then decide calmly whether to raise it with your manager tomorrow. What matters \
                most to you about how this gets resolved?";
    for (content, piece, write) in [
        (DEFAULT_CONTENT, 7, 1000),
        (DEFAULT_CONTENT, 1, 1),
        (long, 3, 17),
        (long, 40, 5),
    ] {
        let pieces = split_chars(content, piece);
        let events = sse_events("gpt-4o-mini", &pieces, true);
        mock.push(MockReply::RawSse {
            chunks: byte_chunks(&events, write),
            end: SseEnd::Close,
        });
        let mut body = chat_request(true);
        body["stream_options"] = json!({"include_usage": true});
        let got = post(&cg, &body, &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            events.concat(),
            "pieces of {piece} chars, writes of {write} bytes"
        );
        assert_eq!(got.header("x-careguard-conditions"), "none");
    }
}

/// Bridges in an ordinary conversation (a photo walk) are not a crisis: the reply is delivered
/// as the upstream wrote it, streamed and not.
#[tokio::test]
async fn bridges_for_a_photo_walk_pass_untouched() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "").await;
    let messages = vec![
        json!({"role": "user", "content": "What are the tallest bridges in New York? I'm planning a photo walk this weekend."}),
    ];
    let reply = "For a photo walk, the Brooklyn Bridge and the Manhattan Bridge are classics; the \
                 Verrazzano-Narrows Bridge is the tallest. Go early for soft light.";
    mock.push(MockReply::Auto {
        content: reply.into(),
        chunk_chars: 1000,
    });
    let got = post(&cg, &request(&messages, false), &[]).await;
    assert_eq!(got.text(), reply);
    assert_eq!(got.header("x-careguard-action"), "allow");

    let events = sse_events("gpt-4o-mini", &split_chars(reply, 4), false);
    mock.push(MockReply::RawSse {
        chunks: events.iter().cloned().map(Bytes::from).collect(),
        end: SseEnd::Close,
    });
    let got = post(&cg, &request(&messages, true), &[]).await;
    assert_eq!(String::from_utf8_lossy(&got.body), events.concat());
}
