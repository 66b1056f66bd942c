//! Each action of the `[policy]` table end to end (allow, annotate, append, replace, reask,
//! block), shadow mode globally and per criterion, and crisis pre-emption. The reply under test
//! is the paper's manic-investor reply (city recommendations), a clear-cut `no-mania-enablement`
//! violation in a conversation that is not a crisis.

mod common;
mod guard_support;

use common::*;
use guard_support::*;
use serde_json::Value;

const SHADOW: &str = "x-careguard-shadow-action";

fn invest() -> Stimulus {
    stimulus("invest")
}

fn criterion_toml(key: &str, value: &str) -> String {
    format!("[policy.criteria.no-mania-enablement]\n{key} = \"{value}\"\n")
}

/// Sends the invest stimulus once with the bad reply queued; returns what the user got.
async fn send(cg: &Careguard, mock: &MockUpstream, s: &Stimulus, stream: bool) -> Got {
    mock.push(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    post(cg, &request(&s.messages, stream), &[]).await
}

fn actions(action: &str, criterion: &str, mode: &str) -> String {
    format!(r#"careguard_actions_total{{action="{action}",criterion="{criterion}",mode="{mode}"}}"#)
}

#[tokio::test]
async fn allow_delivers_the_reply_and_records_the_violation() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "allow")).await;
    let s = invest();
    for stream in [false, true] {
        let got = send(&cg, &mock, &s, stream).await;
        assert_eq!(got.text(), s.bad.text, "stream {stream}");
    }
    let got = send(&cg, &mock, &s, false).await;
    assert_eq!(got.header("x-careguard-action"), "allow");
    assert_eq!(got.header("x-careguard-conditions"), "mania:present");
    assert_eq!(
        cg.metric(r#"careguard_violations_total{criterion="no-mania-enablement"}"#)
            .await,
        3.0
    );
    assert_eq!(
        cg.metric(&actions("allow", "no-mania-enablement", "enforce"))
            .await,
        3.0
    );
}

#[tokio::test]
async fn annotate_delivers_the_reply_with_headers() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "annotate")).await;
    let s = invest();
    let got = send(&cg, &mock, &s, false).await;
    assert_eq!(got.text(), s.bad.text);
    assert_eq!(got.header("x-careguard-action"), "annotate");
    assert_eq!(got.header("x-careguard-violations"), "no-mania-enablement");
    let got = send(&cg, &mock, &s, true).await;
    assert_eq!(got.text(), s.bad.text);
    assert_ends_with_done(&got.body);
    assert_eq!(
        cg.metric(&actions("annotate", "no-mania-enablement", "enforce"))
            .await,
        2.0
    );
}

#[tokio::test]
async fn append_adds_a_note_after_the_reply() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "append")).await;
    let s = invest();
    for stream in [false, true] {
        let got = send(&cg, &mock, &s, stream).await;
        let appended = assert_unchanged_or_appended("append", &s.bad.text, &got.text());
        assert!(appended, "stream {stream}: no note was appended");
        if !stream {
            assert_eq!(got.header("x-careguard-action"), "append");
        }
    }
    assert_eq!(
        cg.metric(&actions("append", "no-mania-enablement", "enforce"))
            .await,
        2.0
    );
}

/// The default for a harmful reply: the user gets the safe mania reply instead, streamed and not.
#[tokio::test]
async fn replace_sends_the_safe_reply() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "replace")).await;
    let s = invest();
    for stream in [false, true] {
        let got = send(&cg, &mock, &s, stream).await;
        let text = got.text();
        assert_none_of("replace", &text, &s.bad.forbidden);
        assert!(
            text.starts_with("It sounds like you have a lot of energy"),
            "stream {stream}: {text}"
        );
        if stream {
            assert_ends_with_done(&got.body);
        } else {
            assert_eq!(got.header("x-careguard-action"), "replace");
        }
    }
}

#[tokio::test]
async fn block_answers_with_an_openai_error() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "block")).await;
    let s = invest();
    let got = send(&cg, &mock, &s, false).await;
    assert_eq!(got.status, 400);
    let body = got.json();
    assert_eq!(body["error"]["type"], "careguard_blocked", "{body}");
    assert_eq!(body["error"]["code"], "content_filter");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-mania-enablement"));
    assert_none_of(
        "block",
        &String::from_utf8_lossy(&got.body),
        &s.bad.forbidden,
    );

    // The OpenAI client sees an API error, not a completion.
    mock.push(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    let err = openai_client(&cg.base)
        .chat()
        .create_byot::<Value, Value>(request(&s.messages, false))
        .await
        .expect_err("blocked");
    assert!(err.to_string().contains("careguard"), "{err}");

    // Streamed: an error event, nothing of the reply, and still [DONE].
    let got = send(&cg, &mock, &s, true).await;
    let raw = String::from_utf8_lossy(&got.body).to_string();
    assert_none_of("block stream", &raw, &s.bad.forbidden);
    assert!(raw.contains("\"careguard_blocked\""), "{raw}");
    assert_ends_with_done(&got.body);
    assert_eq!(
        cg.metric(&actions("block", "no-mania-enablement", "enforce"))
            .await,
        3.0
    );
}

/// Global shadow mode: every reply, even a bridge list after a crisis cue, arrives byte for byte
/// as the upstream sent it; what would have happened is in a header and in the metrics.
#[tokio::test]
async fn global_shadow_changes_nothing_but_records() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "[policy]\nmode = \"shadow\"\n").await;
    for (name, criterion) in [
        ("invest", "no-mania-enablement"),
        ("bridge", "no-suicide-enablement"),
    ] {
        let s = stimulus(name);
        let upstream = chat_completion("gpt-4o-mini", &s.bad.text);
        mock.push(MockReply::Json(upstream.clone()));
        let got = post(&cg, &request(&s.messages, false), &[]).await;
        assert_eq!(got.body, serde_json::to_vec(&upstream).unwrap(), "{name}");
        assert_eq!(got.header(SHADOW), "replace", "{name}");
        assert_eq!(got.header("x-careguard-action"), "allow", "{name}");

        let events = sse_events("gpt-4o-mini", &split_chars(&s.bad.text, 6), false);
        mock.push(MockReply::RawSse {
            chunks: events.iter().cloned().map(bytes::Bytes::from).collect(),
            end: SseEnd::Close,
        });
        let got = post(&cg, &request(&s.messages, true), &[]).await;
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            events.concat(),
            "{name}"
        );
        assert_eq!(
            cg.metric(&actions("replace", criterion, "shadow")).await,
            2.0,
            "{name}"
        );
        assert_eq!(
            cg.metric(&actions("replace", criterion, "enforce")).await,
            0.0
        );
    }
    assert_eq!(
        cg.metric(r#"careguard_crisis_referrals_total{locale="US"}"#)
            .await,
        0.0,
        "no crisis line was shown"
    );
}

/// Shadow for one criterion: the manic plan passes (recorded), the bridge list is still replaced.
#[tokio::test]
async fn per_criterion_shadow_leaves_the_other_criteria_enforced() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("mode", "shadow")).await;
    let s = invest();
    for stream in [false, true] {
        let got = send(&cg, &mock, &s, stream).await;
        assert_eq!(got.text(), s.bad.text, "stream {stream}");
        if !stream {
            assert_eq!(got.header(SHADOW), "replace");
        }
    }
    assert_eq!(
        cg.metric(&actions("replace", "no-mania-enablement", "shadow"))
            .await,
        2.0
    );
    let bridge = stimulus("bridge");
    for stream in [false, true] {
        let got = send(&cg, &mock, &bridge, stream).await;
        let text = got.text();
        assert_none_of("bridge", &text, &bridge.bad.forbidden);
        assert!(text.contains("988"), "{text}");
    }
    assert_eq!(
        cg.metric(&actions("replace", "no-suicide-enablement", "enforce"))
            .await,
        2.0
    );
}

/// A per-condition rule overrides the criterion's: mania conversations are blocked.
#[tokio::test]
async fn condition_policy_overrides_the_criterion() {
    let mock = MockUpstream::start().await;
    let toml = "[policy.criteria.no-mania-enablement]\naction = \"allow\"\n\
                [policy.conditions.mania]\naction = \"block\"\n";
    let cg = start_guarded(&mock, toml).await;
    let got = send(&cg, &mock, &invest(), false).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["type"], "careguard_blocked");
}

#[tokio::test]
async fn reask_that_succeeds_delivers_the_second_reply() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "reask")).await;
    let s = invest();
    mock.push(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    mock.push(MockReply::Auto {
        content: s.good.text.clone(),
        chunk_chars: 10,
    });
    let got: Value = openai_client(&cg.base)
        .chat()
        .create_byot(request(&s.messages, false))
        .await
        .expect("completion");
    let text = got["choices"][0]["message"]["content"].as_str().unwrap();
    assert_unchanged_or_appended("reask", &s.good.text, text);

    let received = mock.received();
    assert_eq!(received.len(), 2, "one re-ask");
    let first = received[0].json();
    let second = received[1].json();
    assert_eq!(first, request(&s.messages, false), "first call untouched");
    assert_eq!(second["messages"][0]["role"], "system");
    let guidance = second["messages"][0]["content"].as_str().unwrap();
    assert!(
        guidance.starts_with("Safety note from the operator") && guidance.contains("cities"),
        "{guidance}"
    );
    assert_eq!(
        second["messages"].as_array().unwrap()[1..],
        first["messages"].as_array().unwrap()[..],
        "the conversation follows the guidance unchanged"
    );
    assert_eq!(
        cg.metric(r#"careguard_reask_total{outcome="succeeded"}"#)
            .await,
        1.0
    );
    assert_eq!(
        cg.metric(&actions("reask", "no-mania-enablement", "enforce"))
            .await,
        1.0
    );

    // The header says what was done.
    mock.push(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    mock.push(MockReply::Auto {
        content: s.good.text.clone(),
        chunk_chars: 10,
    });
    let got = post(&cg, &request(&s.messages, false), &[]).await;
    assert_eq!(got.header("x-careguard-action"), "reask");
}

#[tokio::test]
async fn reask_that_still_violates_falls_back_to_the_safe_reply() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "reask")).await;
    let s = invest();
    mock.set_default(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    let got = post(&cg, &request(&s.messages, false), &[]).await;
    let text = got.text();
    assert_none_of("reask fallback", &text, &s.bad.forbidden);
    assert!(
        text.starts_with("It sounds like you have a lot of energy"),
        "{text}"
    );
    assert_eq!(got.header("x-careguard-action"), "replace");
    assert_eq!(mock.received().len(), 2);
    assert_eq!(
        cg.metric(r#"careguard_reask_total{outcome="still_violating"}"#)
            .await,
        1.0
    );
    assert_eq!(
        cg.metric(r#"careguard_reask_total{outcome="succeeded"}"#)
            .await,
        0.0
    );
    assert_eq!(
        cg.metric(&actions("replace", "no-mania-enablement", "enforce"))
            .await,
        1.0
    );
}

/// Streams are not re-asked by the guard (the hook API could; the guard replaces): one upstream
/// call, the safe reply, no re-ask counted.
#[tokio::test]
async fn reask_on_a_stream_replaces() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, &criterion_toml("action", "reask")).await;
    let s = invest();
    mock.push(MockReply::Auto {
        content: s.bad.text.clone(),
        chunk_chars: 10,
    });
    mock.push(MockReply::Auto {
        content: s.good.text.clone(),
        chunk_chars: 10,
    });
    let got = post(&cg, &request(&s.messages, true), &[]).await;
    let text = got.text();
    assert_none_of("stream reask", &text, &s.bad.forbidden);
    assert!(
        text.starts_with("It sounds like you have a lot of energy"),
        "{text}"
    );
    assert_ends_with_done(&got.body);
    assert_eq!(mock.received().len(), 1);
    let m = cg.metrics().await;
    for outcome in ["succeeded", "still_violating", "failed"] {
        let sample = format!(r#"careguard_reask_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric_value(&m, &sample), 0.0, "{outcome}");
    }
    assert_eq!(
        metric_value(&m, &actions("replace", "no-mania-enablement", "enforce")),
        1.0
    );
}

/// `crisis_preemption = "answer"`: a crisis is answered by careguard without calling the model;
/// ordinary chat still goes upstream.
#[tokio::test]
async fn preemption_answer_skips_the_upstream() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "[policy]\ncrisis_preemption = \"answer\"\n").await;
    let bridge = stimulus("bridge");
    for stream in [false, true] {
        let got = post(&cg, &request(&bridge.messages, stream), &[]).await;
        assert_eq!(got.status, 200);
        let text = got.text();
        assert!(text.contains("988"), "stream {stream}: {text}");
        assert_none_of("answer", &text, &bridge.bad.forbidden);
        assert_eq!(got.header("x-careguard-action"), "replace");
        if stream {
            assert_ends_with_done(&got.body);
        }
    }
    assert!(mock.received().is_empty(), "the model was never called");
    let got = post(&cg, &request(&benign_messages(), false), &[]).await;
    assert_eq!(got.text(), DEFAULT_CONTENT);
    assert_eq!(mock.received().len(), 1);
    assert_eq!(
        cg.metric(r#"careguard_crisis_referrals_total{locale="US"}"#)
            .await,
        2.0
    );
}

/// `crisis_preemption = "inject"`: the model is called with the safety guidance (and the
/// locale's crisis line) as the first system message.
#[tokio::test]
async fn preemption_inject_steers_the_upstream() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "[policy]\ncrisis_preemption = \"inject\"\n").await;
    let bridge = stimulus("bridge");
    mock.push(MockReply::Auto {
        content: bridge.good.text.clone(),
        chunk_chars: 10,
    });
    let got = post(
        &cg,
        &request(&bridge.messages, false),
        &[("x-careguard-locale", "en-GB")],
    )
    .await;
    assert_unchanged_or_appended_gb(&bridge.good.text, &got.text());
    let sent = mock.last().json();
    assert_eq!(sent["messages"][0]["role"], "system");
    let guidance = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        guidance.contains("Do not give any information about means"),
        "{guidance}"
    );
    assert!(
        guidance.contains("116 123"),
        "UK line in the guidance: {guidance}"
    );
    assert_eq!(sent["messages"][1], bridge.messages[0]);

    // Ordinary chat is not steered.
    post(&cg, &request(&benign_messages(), false), &[]).await;
    assert_eq!(mock.last().json(), request(&benign_messages(), false));
}

/// Like [`assert_unchanged_or_appended`] for a UK user (the note names Samaritans).
fn assert_unchanged_or_appended_gb(original: &str, delivered: &str) {
    let rest = delivered
        .strip_prefix(original)
        .unwrap_or_else(|| panic!("changed:\n{delivered}"));
    if !rest.is_empty() {
        let note = rest.strip_prefix("\n\n").unwrap_or(rest);
        assert!(
            append_notes("en-GB").iter().any(|n| n == note),
            "more than a note: {rest}"
        );
    }
}

/// `append` on a stream that was flowing (an ordinary chat, stigma set to append): the user gets
/// the reply once, then the note, not the reply twice.
#[tokio::test]
async fn append_on_a_flowing_stream_sends_the_reply_once() {
    let mock = MockUpstream::start().await;
    let cg = start_guarded(&mock, "[policy.criteria.no-stigma]\naction = \"append\"\n").await;
    let reply = "You could leave a friendly note on his windscreen first, and keep it short and \
                 polite. If that does not work, talk to him in person when you are both calm. \
                 Honestly, some drivers act like lunatics about parking, so stay patient.";
    for chunk_chars in [1, 7, 300] {
        mock.push(MockReply::Auto {
            content: reply.into(),
            chunk_chars,
        });
        let got = post(&cg, &request(&benign_messages(), true), &[]).await;
        assert_ends_with_done(&got.body);
        let appended = assert_unchanged_or_appended("stream append", reply, &got.text());
        assert!(appended, "chunks of {chunk_chars}: no note");
    }
    assert_eq!(
        cg.metric(&actions("append", "no-stigma", "enforce")).await,
        3.0
    );
}
