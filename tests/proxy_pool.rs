//! The upstream connection pool, as an operator sees it from the upstream's side: keep-alive
//! connections are reused, a connection the upstream closed while idle never fails a request,
//! and idle connections close after `pool_idle_timeout_ms`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// One proxy thread, so that every request shares one pool.
const ONE_THREAD: &str = "[server]\nworkers = 1\n";

/// A mock, careguard in front of it with `toml`, and a client.
async fn start(toml: &str) -> (MockUpstream, Careguard, reqwest::Client) {
    let mock = MockUpstream::start().await;
    let cg = start_careguard(&mock, toml).await;
    (mock, cg, reqwest::Client::new())
}

async fn chat(client: &reqwest::Client, cg: &Careguard) -> Value {
    let resp = client
        .post(cg.chat_url())
        .json(&chat_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (mock, cg, client) = start(ONE_THREAD).await;
    for _ in 0..20 {
        let v = chat(&client, &cg).await;
        assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_CONTENT);
        let models = client
            .get(format!("{}/models", cg.base))
            .send()
            .await
            .unwrap();
        assert_eq!(models.status(), 200);
        models.bytes().await.unwrap();
    }
    assert_eq!(mock.received().len(), 40);
    assert_eq!(
        mock.connections_accepted(),
        1,
        "every request reused the first connection"
    );
    cg.server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_fails_no_request() {
    let (mock, cg, client) = start(ONE_THREAD).await;
    for round in 0..10 {
        chat(&client, &cg).await;
        // The upstream drops the idle connection without announcing it; half the time the next
        // request follows at once, racing the close, half the time after it has landed.
        mock.close_connections();
        if round % 2 == 1 {
            tokio::time::timeout(Duration::from_secs(5), mock.wait_open_at_most(0))
                .await
                .expect("the mock closed its connections");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let v = chat(&client, &cg).await;
    assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert_eq!(mock.received().len(), 11, "no request was sent twice");
    assert_eq!(
        cg.metric("careguard_upstream_errors_total{kind=\"protocol\"}")
            .await,
        0.0
    );
    cg.server.shutdown().await;
}

#[tokio::test]
async fn a_request_the_upstream_dropped_at_once_is_sent_again_but_never_a_late_one() {
    let (mock, cg, client) = start(ONE_THREAD).await;
    chat(&client, &cg).await;

    // The reused connection dies right after the request arrived: indistinguishable from the
    // idle-close race, so the request goes out once more, on a new connection.
    mock.push(MockReply::DropConnection {
        after: Duration::ZERO,
    });
    let v = chat(&client, &cg).await;
    assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert_eq!(
        mock.received().len(),
        3,
        "the dropped request was written twice"
    );

    // A connection that dies well after the request went out (a generation cut off) is a 502:
    // the upstream had the request, and asking again could generate twice.
    mock.push(MockReply::DropConnection {
        after: Duration::from_millis(1500),
    });
    let resp = client
        .post(cg.chat_url())
        .json(&chat_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].is_string(), "{err}");
    assert_eq!(
        mock.received().len(),
        4,
        "the late failure was not written again"
    );
    cg.server.shutdown().await;
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let (mock, cg, client) = start(&format!(
        "{ONE_THREAD}[upstream]\npool_idle_timeout_ms = 200\n"
    ))
    .await;
    chat(&client, &cg).await;
    assert_eq!(mock.connections_open(), 1);
    // The reaper runs every half timeout, at least every second.
    tokio::time::timeout(Duration::from_secs(10), mock.wait_open_at_most(0))
        .await
        .expect("careguard closed its idle upstream connection");
    // And the next request opens a new one.
    chat(&client, &cg).await;
    assert_eq!(mock.connections_accepted(), 2);
    cg.server.shutdown().await;
}
