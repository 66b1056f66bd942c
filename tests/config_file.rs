//! The shipped configuration validates, and a broken one reports every problem with its position.

use std::io::Write as _;
use std::path::Path;

use careguard::config::{Config, ConfigErrors};

#[test]
fn shipped_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/careguard.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let defaults = Config::default();
    assert_eq!(config.server.listen, defaults.server.listen);
    assert_eq!(config.server.admin_listen, defaults.server.admin_listen);
    assert_eq!(config.proxy.max_body_bytes, defaults.proxy.max_body_bytes);
    assert_eq!(
        config.upstream.chunk_timeout_ms,
        defaults.upstream.chunk_timeout_ms
    );
    assert!(config.proxy.allow_unguarded_routes.is_empty());
}

#[test]
fn every_problem_is_reported_with_path_line_and_column() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "not an address"
drain_timeout_ms = 0

[upstream]
base_url = "api.openai.com"
api_key = "sk-oops"

[proxy]
allow_unguarded_routes = ["threads", "everything"]
max_body_bytes = -1

[polcy]
mode = "enforce"
"#
    )
    .unwrap();
    let err = Config::load(file.path()).unwrap_err();
    let ConfigErrors::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    let path = file.path().display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), problems.len());
    let expect = [
        (3, 16, "[server] admin_listen:"),
        (4, 20, "[server] drain_timeout_ms: must be greater than 0"),
        (
            7,
            12,
            "[upstream] base_url: URL \"api.openai.com\" must start with http:// or https://",
        ),
        (8, 1, "[upstream] unknown key `api_key`, expected one of:"),
        (
            11,
            26,
            "[proxy] allow_unguarded_routes: unknown variant `everything`",
        ),
        (12, 18, "[proxy] max_body_bytes:"),
        (
            14,
            2,
            "unknown table `[polcy]`, expected one of: server, upstream, proxy, rules",
        ),
    ];
    assert_eq!(lines.len(), expect.len(), "{text}");
    for (line, (l, c, msg)) in lines.iter().zip(expect) {
        let prefix = format!("{path}:{l}:{c}: {msg}");
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start with {prefix:?}"
        );
    }
}

#[test]
fn unreadable_file_is_reported() {
    let err = Config::load(Path::new("/nonexistent/careguard.toml")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("/nonexistent/careguard.toml: cannot read"));
}
