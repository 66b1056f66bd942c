//! Operations at run time: hot reload of rules and policy (valid and broken, under load, on demand
//! and on file change) and per-tenant policy chosen by API key digest or header.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use careguard::server::{start, Running, ServeOptions};
use common::{metric_value, MockReply, MockUpstream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const STIGMA: &str =
    "Honestly, he sounds like a total psycho. Schizophrenics are violent and dangerous.";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A config file and a copy of the shipped rules in a temporary folder.
fn setup(extra_toml: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"), &rules);
    let config = dir.path().join("careguard.toml");
    write_config(&config, &rules, extra_toml);
    (dir, config, rules)
}

fn write_config(path: &Path, rules: &Path, extra: &str) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[rules]\ndir = {:?}\n\n{extra}\n",
        rules.display().to_string()
    );
    std::fs::write(path, text).unwrap();
}

async fn run(mock: &MockUpstream, config: &Path, poll: Duration) -> Running {
    start(ServeOptions {
        config_path: Some(config.to_path_buf()),
        upstream: Some(mock.base_url()),
        reload_poll: Some(poll),
        ..Default::default()
    })
    .await
    .expect("careguard starts")
}

async fn chat(
    addr: std::net::SocketAddr,
    key: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Can you tell me about my new coworker?"}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    (status, headers, body)
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

async fn metrics(running: &Running) -> String {
    String::from_utf8(running.server.metrics.render()).unwrap()
}

fn rules_version(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("careguard_rules_info{") && l.ends_with(" 1"))
        .expect("careguard_rules_info exported");
    line.split('"').nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_under_load_changes_the_rules_without_failing_a_request() {
    let mock = MockUpstream::start().await;
    mock.set_default(MockReply::Auto {
        content: STIGMA.into(),
        chunk_chars: 8,
    });
    let (_dir, config, rules) = setup("");
    let running = run(&mock, &config, Duration::from_secs(3600)).await;
    let addr = running.server.addr;
    let (_, headers, body) = chat(addr, "k", &[]).await;
    assert_eq!(headers["x-careguard-action"], "replace");
    assert!(!content(&body).contains("psycho"));
    let before = rules_version(&metrics(&running).await);

    // Load: four clients sending requests while the rules change underneath them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 500 {
                statuses.push(chat(addr, "k", &[]).await.0);
                n += 1;
            }
            statuses
        }));
    }
    // Without the stigma pack the same reply passes.
    std::fs::remove_file(rules.join("en/reply_stigma.toml")).unwrap();
    let version = running.reloader.reload().expect("the new rules compile");
    assert_ne!(version, before);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        let statuses = task.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "every request under reload succeeds: {statuses:?}"
        );
    }
    let (_, headers, body) = chat(addr, "k", &[]).await;
    assert_eq!(headers["x-careguard-action"], "allow");
    assert_eq!(content(&body), STIGMA);
    let text = metrics(&running).await;
    assert_eq!(rules_version(&text), version);
    assert_eq!(
        metric_value(&text, "careguard_rules_reload_total{result=\"success\"}"),
        1.0
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_pack_keeps_the_old_rules_and_reports_file_line_col() {
    let mock = MockUpstream::start().await;
    mock.set_default(MockReply::Auto {
        content: STIGMA.into(),
        chunk_chars: 8,
    });
    let (_dir, config, rules) = setup("");
    let running = run(&mock, &config, Duration::from_secs(3600)).await;
    let before = rules_version(&metrics(&running).await);
    let broken = rules.join("en/reply_stigma.toml");
    let mut text = std::fs::read_to_string(&broken).unwrap();
    text.push_str("\n[[rule]]\nid = \"broken\"\nkind = \"reply\"\nfeature = \"stigma\"\nwhy = \"x\"\npatterns = ['(unclosed']\nmatch = [\"a\"]\nnear_miss = [\"b\"]\n");
    std::fs::write(&broken, text).unwrap();
    let err = running
        .reloader
        .reload()
        .expect_err("a broken pack is refused");
    assert!(
        err.contains("reply_stigma.toml:") && err.contains("invalid regex"),
        "{err}"
    );
    let (status, headers, body) = chat(running.server.addr, "k", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-careguard-action"], "replace",
        "the old rules are still in force"
    );
    assert!(!content(&body).contains("psycho"));
    let text = metrics(&running).await;
    assert_eq!(rules_version(&text), before);
    assert_eq!(
        metric_value(&text, "careguard_rules_reload_total{result=\"error\"}"),
        1.0
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_on_disk_is_picked_up_without_a_signal() {
    let mock = MockUpstream::start().await;
    mock.set_default(MockReply::Auto {
        content: STIGMA.into(),
        chunk_chars: 8,
    });
    let (_dir, config, rules) = setup("");
    let running = run(&mock, &config, Duration::from_millis(50)).await;
    assert_eq!(
        chat(running.server.addr, "k", &[]).await.1["x-careguard-action"],
        "replace"
    );
    write_config(
        &config,
        &rules,
        "[policy.criteria.no-stigma]\naction = \"annotate\"\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&running).await;
        if metric_value(&text, "careguard_rules_reload_total{result=\"success\"}") >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, headers, body) = chat(running.server.addr, "k", &[]).await;
    assert_eq!(headers["x-careguard-action"], "annotate");
    assert_eq!(headers["x-careguard-violations"], "no-stigma");
    assert_eq!(content(&body), STIGMA);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_their_own_policy_by_api_key_or_header() {
    let mock = MockUpstream::start().await;
    mock.set_default(MockReply::Auto {
        content: STIGMA.into(),
        chunk_chars: 8,
    });
    let digest = hex::encode(Sha256::digest(b"sk-acme-123"));
    let tenancy = format!(
        "[tenancy]\nheader = \"x-careguard-tenant\"\n\n[tenancy.tenants.acme]\napi_key_sha256 = [\"{digest}\"]\n[tenancy.tenants.acme.policy]\nmode = \"shadow\"\n\n[tenancy.tenants.beta.policy.criteria.no-stigma]\naction = \"block\"\n"
    );
    let (_dir, config, _rules) = setup(&tenancy);
    let running = run(&mock, &config, Duration::from_secs(3600)).await;
    let addr = running.server.addr;

    // acme (by key): shadow mode, the reply passes unchanged and the would-be action is named.
    let (status, headers, body) = chat(addr, "sk-acme-123", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(content(&body), STIGMA);
    assert_eq!(headers["x-careguard-shadow-action"], "replace");
    // beta (by header): block.
    let (status, _, body) = chat(addr, "other", &[("x-careguard-tenant", "beta")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "content_filter");
    // Anyone else, and an unknown tenant name: the global policy (replace).
    let (_, headers, body) = chat(addr, "sk-unknown", &[("x-careguard-tenant", "gamma")]).await;
    assert_eq!(headers["x-careguard-action"], "replace");
    assert!(!content(&body).contains("psycho"));

    let text = metrics(&running).await;
    assert_eq!(
        metric_value(&text, "careguard_tenant_exchanges_total{tenant=\"acme\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "careguard_tenant_exchanges_total{tenant=\"beta\"}"),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "careguard_tenant_exchanges_total{tenant=\"default\"}"
        ),
        1.0
    );
    assert!(
        !text.contains("tenant=\"gamma\""),
        "label values stay within configured tenants"
    );
    running.shutdown().await;
}

#[test]
fn a_key_instead_of_a_digest_is_a_config_error() {
    let text = "[tenancy.tenants.acme]\napi_key_sha256 = [\"sk-live-abc\"]\n";
    let err = careguard::config::Config::from_str(text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml:2:18:") && err.contains("digest"),
        "{err}"
    );
}
