//! Configuration: `config/careguard.toml`, parsed in two phases.
//!
//! Phase one is *raw and spanned*: the file is read as tables of spanned keys and values, every
//! key is checked against its section's fields and every value is deserialised on its own, so
//! all unknown keys and all ill-typed values are reported together, each with its
//! `path:line:col`. Phase two *validates* what parsed (URL schemes, non-zero limits, ...), again
//! collecting every problem. Adding a table is three small steps: a struct implementing
//! [`Section`], a field on [`Config`], and one line in [`Config::from_str`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserialize;

/// The whole validated configuration. Every table is optional in the file and has defaults.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[server]`: listeners and shutdown.
    pub server: ServerConfig,
    /// `[upstream]`: where requests go and how long to wait.
    pub upstream: UpstreamConfig,
    /// `[proxy]`: request limits and which unguarded routes may pass.
    pub proxy: ProxyConfig,
    /// `[rules]`: where the clinical engine finds its rule packs.
    pub rules: RulesConfig,
    /// `[policy]`: what the guard does about violations, per criterion and condition.
    pub policy: crate::guard::policy::PolicyConfig,
    /// `[audit]`: the tamper-evident audit log.
    pub audit: crate::audit::AuditConfig,
    /// `[tenancy]`: tenants chosen by API key digest or header, with policy overrides.
    pub tenancy: crate::runtime::TenancyConfig,
}

/// `[server]`: the two listeners and graceful shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Main (proxy) listener address.
    pub listen: SocketAddr,
    /// Admin listener address (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub drain_timeout_ms: u64,
    /// Proxy threads, each with its own event loop and upstream connection pool (see
    /// [`crate::server::proxy_threads`]); 0: `TOKIO_WORKER_THREADS`, else one per CPU core.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            drain_timeout_ms: 30_000,
            workers: 0,
        }
    }
}

impl ServerConfig {
    /// The drain timeout as a [`Duration`].
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// `[upstream]`: the OpenAI-compatible server careguard forwards to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL including the API prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// Name of an environment variable holding an API key that replaces the client's.
    pub api_key_env: Option<String>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending the request to the first response byte.
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two body chunks of a response.
    pub chunk_timeout_ms: u64,
    /// How long an idle pooled upstream connection is kept (never reused after that, closed by
    /// a sweep every half timeout, at least every second, at most every minute; 0 keeps none).
    pub pool_idle_timeout_ms: u64,
    /// Most idle pooled connections kept per upstream host, per proxy thread.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key_env: None,
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 120_000,
            chunk_timeout_ms: 60_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 1024,
        }
    }
}

/// `[proxy]`: limits on requests and the unguarded-route switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest request body accepted, in bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// Conversation routes careguard does not guard yet that may pass through anyway.
    pub allow_unguarded_routes: Vec<UnguardedRoute>,
    /// Most re-asks a guard may request for one exchange.
    pub max_reasks: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            allow_unguarded_routes: Vec::new(),
            max_reasks: 2,
        }
    }
}

/// A conversation route careguard does not guard yet (refused unless allowed in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnguardedRoute {
    /// `/v1/responses`.
    Responses,
    /// `/v1/assistants`.
    Assistants,
    /// `/v1/threads`.
    Threads,
    /// `/v1/realtime`.
    Realtime,
}

impl UnguardedRoute {
    /// The config (and metric label) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::Assistants => "assistants",
            Self::Threads => "threads",
            Self::Realtime => "realtime",
        }
    }
}

/// `[rules]`: rule packs for the clinical engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Folder of rule packs; without it the embedded packs are used.
    pub dir: Option<PathBuf>,
    /// How many recent user messages the engine remembers the scan of (0: off); see
    /// [`crate::engine::cache`].
    pub message_cache: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            message_cache: 65_536,
        }
    }
}

/// One table of the configuration file: its name and its phase-two checks.
pub trait Section: DeserializeOwned + Default {
    /// The table name, e.g. `"upstream"`.
    const NAME: &'static str;
    /// Semantic checks run after every key parsed; report problems through `v`.
    fn validate(&self, _v: &mut Validator<'_>) {}
}

impl Section for ServerConfig {
    const NAME: &'static str = "server";
    fn validate(&self, v: &mut Validator<'_>) {
        if self.drain_timeout_ms == 0 {
            v.error("drain_timeout_ms", "must be greater than 0");
        }
    }
}

impl Section for UpstreamConfig {
    const NAME: &'static str = "upstream";
    fn validate(&self, v: &mut Validator<'_>) {
        if let Some(url) = &self.base_url {
            if let Err(msg) = check_base_url(url) {
                v.error("base_url", &msg);
            }
        }
        if let Some(name) = &self.api_key_env {
            if name.is_empty() || name.contains('=') || name.starts_with("sk-") {
                v.error(
                    "api_key_env",
                    "must name an environment variable (the key itself never goes in this file)",
                );
            }
        }
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("chunk_timeout_ms", self.chunk_timeout_ms),
        ] {
            if value == 0 {
                v.error(key, "must be greater than 0");
            }
        }
    }
}

impl Section for ProxyConfig {
    const NAME: &'static str = "proxy";
    fn validate(&self, v: &mut Validator<'_>) {
        if self.max_body_bytes == 0 {
            v.error("max_body_bytes", "must be greater than 0");
        }
        if self.max_reasks > 10 {
            v.error("max_reasks", "must be at most 10");
        }
    }
}

impl Section for crate::guard::policy::PolicyConfig {
    const NAME: &'static str = "policy";
    fn validate(&self, v: &mut Validator<'_>) {
        for (key, message) in self.problems() {
            let key = key.strip_prefix("policy.").unwrap_or(&key).to_owned();
            v.error(&key, &message);
        }
    }
}

impl Section for crate::audit::AuditConfig {
    const NAME: &'static str = "audit";
    fn validate(&self, v: &mut Validator<'_>) {
        for (key, message) in self.problems() {
            let key = key.strip_prefix("audit.").unwrap_or(&key).to_owned();
            v.error(&key, &message);
        }
    }
}

impl Section for crate::runtime::TenancyConfig {
    const NAME: &'static str = "tenancy";
    fn validate(&self, v: &mut Validator<'_>) {
        for (key, message) in self.problems() {
            v.error(&key, &message);
        }
    }
}

impl Section for RulesConfig {
    const NAME: &'static str = "rules";
    fn validate(&self, v: &mut Validator<'_>) {
        if self.message_cache > 16_777_216 {
            v.error("message_cache", "must be at most 16777216 messages");
        }
    }
}

/// Checks that `url` is an absolute `http` or `https` URL without query or fragment.
pub fn check_base_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL {url:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL {url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("URL {url:?} must not have a query"));
    }
    Ok(uri)
}

/// One configuration problem with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a configuration file; `Display` prints one `path:line:col: message` per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, in file order.
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}:{}:{}: {}",
            path.display(),
            p.line,
            p.col,
            p.message
        ));
    }
    out
}

/// Collects phase-two problems for one section, locating them by key.
pub struct Validator<'a> {
    src: &'a str,
    section: &'static str,
    spans: &'a BTreeMap<(&'static str, String), Range<usize>>,
    section_span: Range<usize>,
    out: &'a mut Vec<(Range<usize>, String)>,
}

impl Validator<'_> {
    /// Reports `message` about `key` of this section (at the value if the key is in the file).
    pub fn error(&mut self, key: &str, message: &str) {
        let nested = || {
            // `criteria.no-stigma` or `tenants.acme.api_key_sha256`: find the innermost part.
            let parts: Vec<&str> = key.split('.').collect();
            let (last, parents) = parts.split_last()?;
            let path: Vec<&str> = std::iter::once(self.section)
                .chain(parents.iter().copied())
                .collect();
            let (_, value) = locate(self.src, &path, last);
            (value != (0..0)).then_some(value)
        };
        let span = self
            .spans
            .get(&(self.section, key.to_owned()))
            .cloned()
            .or_else(|| key.contains('.').then(nested).flatten())
            .unwrap_or_else(|| self.section_span.clone());
        self.out
            .push((span, format!("[{}] {key}: {message}", self.section)));
    }
}

/// Keys of one table with the spans of each key and its value. Values are read from the plain
/// parse ([`Loader::plain`]); spans come from [`locate`], because toml's `Spanned` cannot wrap
/// tables that dotted headers (`[policy.criteria.x]`) define.
type RawTable = Vec<(String, Range<usize>, Range<usize>)>;

/// Finds where `key` is written: in `section` (a `key = value` line under `[section]`, or a
/// `[section.key...]` header), or at the top level when `section` is `None` (a `[key]` or
/// `[key.…]` header, or a `key = value` line before any header). Returns the key's span and the
/// value's span (the value starts after `=`; for headers both are the header's key).
fn locate(src: &str, section: &[&str], key: &str) -> (Range<usize>, Range<usize>) {
    let unquote = |p: &str| p.trim().trim_matches('"').trim_matches('\'').to_string();
    let mut offset = 0;
    let mut current: Vec<String> = Vec::new();
    for line in src.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix('[') {
            let inner = rest.trim_start_matches('[');
            let end = inner.find(']').unwrap_or(inner.len());
            current = inner[..end].split('.').map(unquote).collect();
            let wanted: Vec<&str> = section
                .iter()
                .copied()
                .chain(std::iter::once(key))
                .collect();
            if current.len() >= wanted.len() && current.iter().zip(&wanted).all(|(a, b)| a == b) {
                let header = &line[indent..];
                let at = header.find(key).map_or(indent, |i| indent + i);
                let span = offset + at..offset + at + key.len();
                return (span.clone(), span);
            }
        } else if let Some((k, _)) = trimmed.split_once('=') {
            let in_section =
                current.len() == section.len() && current.iter().zip(section).all(|(a, b)| a == b);
            if in_section && unquote(k) == key {
                let key_start = offset + indent;
                let eq = line.find('=').unwrap_or(0);
                let value_start =
                    offset + eq + 1 + (line[eq + 1..].len() - line[eq + 1..].trim_start().len());
                return (
                    key_start..key_start + key.len(),
                    value_start..offset + line.trim_end().len(),
                );
            }
        }
        offset += line.len();
    }
    (0..0, 0..0)
}

/// The keys of `table` with their spans in `src`.
fn raw_table(src: &str, section: Option<&str>, table: &toml::Table) -> RawTable {
    let section: Vec<&str> = section.into_iter().collect();
    table
        .keys()
        .map(|k| {
            let (key_span, value_span) = locate(src, section.as_slice(), k);
            (k.clone(), key_span, value_span)
        })
        .collect()
}

/// Phase-one state shared by all sections.
struct Loader {
    src: String,
    tables: BTreeMap<String, (Range<usize>, RawTable)>,
    plain: toml::Table,
    spans: BTreeMap<(&'static str, String), Range<usize>>,
    problems: Vec<(Range<usize>, String)>,
}

impl Loader {
    /// Phase one for section `S`: every key checked, every value deserialised on its own.
    fn section<S: Section>(&mut self) -> (S, Range<usize>) {
        let Some((span, table)) = self.tables.remove(S::NAME) else {
            return (S::default(), 0..0);
        };
        let fields = field_names::<S>();
        let mut good = toml::Table::new();
        for (key, key_span, value_span) in table {
            let name = key.as_str();
            if !fields.contains(&name) {
                self.problems.push((
                    key_span,
                    format!(
                        "[{}] unknown key `{name}`, expected one of: {}",
                        S::NAME,
                        fields.join(", ")
                    ),
                ));
                continue;
            }
            let plain_value = self
                .plain
                .get(S::NAME)
                .and_then(|t| t.get(name))
                .cloned()
                .unwrap_or(toml::Value::Boolean(false));
            let mut single = toml::Table::new();
            single.insert(name.to_owned(), plain_value.clone());
            match toml::Value::Table(single).try_into::<S>() {
                Ok(_) => {
                    self.spans.insert((S::NAME, name.to_owned()), value_span);
                    good.insert(name.to_owned(), plain_value);
                }
                Err(e) => self.problems.push((
                    value_span,
                    format!("[{}] {name}: {}", S::NAME, e.message().trim()),
                )),
            }
        }
        match toml::Value::Table(good).try_into::<S>() {
            Ok(s) => (s, span),
            Err(e) => {
                self.problems.push((
                    span.clone(),
                    format!("[{}]: {}", S::NAME, e.message().trim()),
                ));
                (S::default(), span)
            }
        }
    }

    fn validate<S: Section>(&mut self, s: &S, section_span: Range<usize>) {
        let mut v = Validator {
            src: &self.src,
            section: S::NAME,
            spans: &self.spans,
            section_span,
            out: &mut self.problems,
        };
        s.validate(&mut v);
    }
}

impl Config {
    /// Names of the tables this version understands.
    pub const SECTIONS: &'static [&'static str] = &[
        ServerConfig::NAME,
        UpstreamConfig::NAME,
        ProxyConfig::NAME,
        RulesConfig::NAME,
        <crate::guard::policy::PolicyConfig as Section>::NAME,
        <crate::audit::AuditConfig as Section>::NAME,
        <crate::runtime::TenancyConfig as Section>::NAME,
    ];

    /// Reads and validates `path`, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigErrors::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str(&src, path)
    }

    /// Parses and validates configuration text; `path` only labels the problems.
    pub fn from_str(src: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let invalid = |problems: Vec<(Range<usize>, String)>| ConfigErrors::Invalid {
            path: path.to_owned(),
            problems: to_problems(src, problems),
        };
        // Phase one, top level: syntax, unknown tables, tables that are not tables.
        let plain: toml::Table = toml::from_str(src).map_err(|e| {
            invalid(vec![(
                e.span().unwrap_or(0..0),
                e.message().trim().to_owned(),
            )])
        })?;
        let mut problems = Vec::new();
        let mut tables = BTreeMap::new();
        for (key, value) in &plain {
            let (key_span, value_span) = locate(src, &[], key);
            if !Self::SECTIONS.contains(&key.as_str()) {
                problems.push((
                    key_span,
                    format!(
                        "unknown table `[{}]`, expected one of: {}",
                        key,
                        Self::SECTIONS.join(", ")
                    ),
                ));
            } else if let Some(table) = value.as_table() {
                tables.insert(key.clone(), (key_span, raw_table(src, Some(key), table)));
            } else {
                problems.push((value_span, format!("`{key}` must be a table")));
            }
        }
        if problems.iter().any(|(_, m)| m.ends_with("must be a table")) {
            return Err(invalid(problems));
        }
        let mut loader = Loader {
            src: src.to_owned(),
            tables,
            plain,
            spans: BTreeMap::new(),
            problems,
        };
        let (server, server_span) = loader.section::<ServerConfig>();
        let (upstream, upstream_span) = loader.section::<UpstreamConfig>();
        let (proxy, proxy_span) = loader.section::<ProxyConfig>();
        let (rules, rules_span) = loader.section::<RulesConfig>();
        let (policy, policy_span) = loader.section::<crate::guard::policy::PolicyConfig>();
        let (audit, audit_span) = loader.section::<crate::audit::AuditConfig>();
        let (tenancy, tenancy_span) = loader.section::<crate::runtime::TenancyConfig>();
        // Phase two: semantic checks on what parsed.
        loader.validate(&server, server_span);
        loader.validate(&upstream, upstream_span);
        loader.validate(&proxy, proxy_span);
        loader.validate(&rules, rules_span);
        loader.validate(&policy, policy_span);
        loader.validate(&audit, audit_span);
        loader.validate(&tenancy, tenancy_span);
        if !loader.problems.is_empty() {
            return Err(invalid(loader.problems));
        }
        Ok(Config {
            server,
            upstream,
            proxy,
            rules,
            policy,
            audit,
            tenancy,
        })
    }
}

fn to_problems(src: &str, mut raw: Vec<(Range<usize>, String)>) -> Vec<Problem> {
    raw.sort_by_key(|(span, _)| span.start);
    raw.into_iter()
        .map(|(span, message)| {
            let (line, col) = line_col(src, span.start);
            Problem { line, col, message }
        })
        .collect()
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The field names of a derived `Deserialize` struct, read by asking it to deserialise from a probe.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_str("", Path::new("x.toml")).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.proxy.max_reasks, 2);
    }

    #[test]
    fn reports_every_problem_with_position() {
        let src = "[server]\nlisten = \"nope\"\nbogus = 1\n\n[upstream]\nbase_url = \"ftp://x\"\nconnect_timeout_ms = \"soon\"\n\n[proxy]\nallow_unguarded_routes = [\"threads\", \"chat\"]\n\n[whatever]\nx = 1\n";
        let err = Config::from_str(src, Path::new("c.toml")).unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[0].starts_with("c.toml:2:10: [server] listen:"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("c.toml:3:1: [server] unknown key `bogus`"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("c.toml:6:12: [upstream] base_url: URL"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("c.toml:7:22: [upstream] connect_timeout_ms:"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("c.toml:10:26: [proxy] allow_unguarded_routes:"),
            "{text}"
        );
        assert!(
            lines[5].starts_with("c.toml:12:2: unknown table `[whatever]`"),
            "{text}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = Config::from_str("[server\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().starts_with("c.toml:1:"), "{err}");
    }

    #[test]
    fn field_probe_lists_fields() {
        assert_eq!(field_names::<RulesConfig>(), &["dir", "message_cache"]);
    }
}
