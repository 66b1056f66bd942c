//! Shared pieces of the guard tests (`tests/guard_*.rs`): careguard started with the real guard
//! built from a TOML config, the paper's stimuli with their replies, and readers for what the
//! user actually received.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use careguard::config::Config;
use careguard::metrics::Metrics;
use careguard::server::{build_guard, Server};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::common::{read_all, sse_data, Careguard, MockUpstream};

/// The paper's ten stimuli with one inappropriate and one or two appropriate replies each.
const PAPER: &str = include_str!("../data/guard_paper.json");

/// One reply and where it comes from.
#[derive(Debug, Clone, Deserialize)]
pub struct SourcedReply {
    /// Dev-set id, or "written for this test".
    pub source: String,
    /// The reply text.
    pub text: String,
    /// Words that must never reach the user (inappropriate replies only).
    #[serde(default)]
    pub forbidden: Vec<String>,
}

/// One stimulus of Moore et al. 2025.
#[derive(Debug, Clone, Deserialize)]
pub struct Stimulus {
    /// `bridge`, `pesticides`, ...
    pub stimulus: String,
    /// The paper's condition.
    pub condition: String,
    /// The paper's criterion.
    pub criterion: String,
    /// The conversation.
    pub messages: Vec<Value>,
    /// Whether a crisis line is due in any safe answer (suicide stimuli).
    pub crisis_line_due: bool,
    /// A reply the paper's judge (or the test author) found inappropriate.
    pub bad: SourcedReply,
    /// A reply the paper's judge found appropriate.
    pub good: SourcedReply,
    /// An appropriate reply that lacks support (no crisis line or redirection), when one exists.
    #[serde(default)]
    pub good_lacking_support: Option<SourcedReply>,
}

#[derive(Deserialize)]
struct PaperFile {
    stimuli: Vec<Stimulus>,
}

/// The ten stimuli.
pub fn stimuli() -> Vec<Stimulus> {
    let file: PaperFile = serde_json::from_str(PAPER).expect("tests/data/guard_paper.json");
    assert_eq!(file.stimuli.len(), 10, "the paper has ten stimuli");
    file.stimuli
}

/// One stimulus by name.
pub fn stimulus(name: &str) -> Stimulus {
    stimuli()
        .into_iter()
        .find(|s| s.stimulus == name)
        .unwrap_or_else(|| panic!("no stimulus {name}"))
}

/// A chat request body for `messages`.
pub fn request(messages: &[Value], stream: bool) -> Value {
    serde_json::json!({"model": "gpt-4o-mini", "messages": messages, "stream": stream})
}

/// An ordinary conversation with no clinical content.
pub fn benign_messages() -> Vec<Value> {
    vec![
        serde_json::json!({"role": "user", "content": "My neighbour keeps parking in front of my driveway. What should I say to him?"}),
    ]
}

/// Starts careguard with the real guard (engine, policy, safe texts) built from `toml`, in front
/// of `mock`, with the guard's metrics on the server's registry.
pub async fn start_guarded(mock: &MockUpstream, toml: &str) -> Careguard {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        Config::from_str(toml, std::path::Path::new("guard-test.toml")).expect("valid config");
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.drain_timeout_ms = 5_000;
    config.upstream.base_url = Some(mock.base_url());
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let guarded = build_guard(&config, &metrics).expect("guard builds");
    let server = Server::start_with_metrics(config, guarded.guard, metrics)
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

/// What the client got back over raw HTTP.
#[derive(Debug)]
pub struct Got {
    /// Status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body bytes exactly as received.
    pub body: Bytes,
}

impl Got {
    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The assistant text the user sees: the message content, or the concatenated stream deltas.
    pub fn text(&self) -> String {
        if self.header("content-type").starts_with("text/event-stream") {
            streamed_text(&self.body)
        } else {
            self.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

/// Posts `body` to careguard's chat endpoint with extra `headers`.
pub async fn post(cg: &Careguard, body: &Value, headers: &[(&str, &str)]) -> Got {
    let mut req = reqwest::Client::new()
        .post(cg.chat_url())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-careguard")
        .body(serde_json::to_vec(body).unwrap());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("careguard answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = read_all(resp).await;
    Got {
        status,
        headers,
        body,
    }
}

/// The assistant text of an SSE body: every `choices[0].delta.content`, concatenated.
pub fn streamed_text(body: &[u8]) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Asserts that an SSE body ends the way OpenAI clients expect.
pub fn assert_ends_with_done(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "stream must end with data: [DONE]; got tail {:?}",
        &text[text.len().saturating_sub(200)..]
    );
}

/// Asserts that none of `forbidden` appears in `delivered`.
pub fn assert_none_of(what: &str, delivered: &str, forbidden: &[String]) {
    for f in forbidden {
        assert!(
            !delivered.contains(f.as_str()),
            "{what}: {f:?} reached the user:\n{delivered}"
        );
    }
}

/// The length of the longest prefix of `phrase` found anywhere in `delivered`.
pub fn longest_leaked_prefix(delivered: &str, phrase: &str) -> usize {
    phrase
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .filter(|&end| delivered.contains(&phrase[..end]))
        .max()
        .unwrap_or(0)
}

/// Reads or rewrites (with `UPDATE_GOLDEN=1`) `tests/golden/guard/<name>` and compares.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/guard")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "differs from {} (rerun with UPDATE_GOLDEN=1 if the change is intended)",
        path.display()
    );
}

/// Every appended note careguard can add for `locale` (e.g. `en-US`), as rendered.
pub fn append_notes(locale: &str) -> Vec<String> {
    use careguard::guard::replies::{SafeTexts, TextKind};
    let texts = SafeTexts::load(None).expect("embedded safe texts");
    let locale = texts.resolve(Some(locale), "en-US");
    let raw: toml::Value =
        toml::from_str(include_str!("../../rules/safe_replies.toml")).expect("safe_replies.toml");
    raw["reply"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"].as_str() == Some("append"))
        .filter_map(|r| texts.text(r["for"].as_str().unwrap(), TextKind::Append, &locale))
        .map(|(t, _)| t)
        .collect()
}

/// Asserts that `delivered` is `original`, or `original` followed by exactly one appended note.
pub fn assert_unchanged_or_appended(what: &str, original: &str, delivered: &str) -> bool {
    let Some(rest) = delivered.strip_prefix(original) else {
        panic!("{what}: the reply was changed:\nsent: {original}\ngot:  {delivered}");
    };
    if rest.is_empty() {
        return false;
    }
    let note = rest.strip_prefix("\n\n").unwrap_or(rest);
    assert!(
        append_notes("en-US").iter().any(|n| n == note),
        "{what}: more than a note was added after the reply:\n{rest}"
    );
    true
}
