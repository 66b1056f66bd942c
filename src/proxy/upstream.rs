//! The upstream side: a pooled HTTP/1.1 keep-alive client (HTTPS via rustls and webpki roots),
//! URL mapping onto the base URL's path prefix, header filtering, and the three timeouts.
//!
//! The pool is careguard's own, over hyper's connection-level client
//! (`hyper::client::conn::http1`), because every pooled connection of an [`Upstream`] goes to one
//! host from one proxy thread: hyper-util's general pool keys each checkout by scheme and
//! authority (a SipHash of the host per request), formats a `Host` header per request and
//! wraps every connection in shared bookkeeping, ~8K instructions per exchange of the ~130K a
//! guarded one costs (callgrind). Decisions:
//! - **Last in, first out.** The most recently used connection is reused first, so a quiet
//!   period lets the others reach the idle timeout and close.
//! - **A connection goes back when its response body has been read to the end** (the last frame
//!   seen, or the body dropped after it). A body dropped early or failed takes its connection
//!   with it: hyper closes it rather than read the rest.
//! - **A stale connection is not an error.** When a pooled connection turns out to be closed
//!   before the request was written (the upstream's keep-alive timeout raced the checkout),
//!   hyper hands the request back and it goes out on another connection. A request that was
//!   written goes out again only under the narrow conditions of [`BufferedPost`]; a streamed
//!   request body never does.
//! - **Idle connections close** after `pool_idle_timeout_ms`: a checkout never takes one older
//!   than that, and a reaper task on the pool's thread closes them while nothing checks out
//!   (every half timeout, at least every second and at most every minute). At most
//!   `pool_max_idle_per_host` stay open idle; returning one more closes the oldest.
//! - The connections are driven by tasks of the runtime that opened them: an [`Upstream`] must
//!   be used from within a tokio runtime, and is best used from one thread (careguard builds one
//!   per proxy thread).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::error::{BoxError, ProxyError};
use crate::config::UpstreamConfig;

/// Body type of requests sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Sender = http1::SendRequest<UpstreamBody>;

/// Why the upstream client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// The base URL is not a usable http(s) URL.
    #[error("invalid upstream URL: {0}")]
    BadUrl(String),
    /// The `api_key_env` variable is unset or not a valid header value.
    #[error("environment variable {name} (from [upstream] api_key_env) is unset or not valid")]
    ApiKey {
        /// The variable name.
        name: String,
    },
    /// TLS could not be configured.
    #[error("TLS setup failed")]
    Tls(#[source] rustls::Error),
}

/// The upstream client and where it points.
pub struct Upstream {
    connector: Connector,
    pool: Arc<Pool>,
    /// `scheme://authority/`, what the connector dials.
    origin: Uri,
    /// The `Host` header: the host, and the port unless it is the scheme's default.
    host: HeaderValue,
    prefix: String,
    /// [`Self::uri_for`] of `/v1/chat/completions`, built once: the route of nearly every
    /// request, whose URI would otherwise be formatted and parsed anew each time.
    chat_uri: Uri,
    api_key: Option<HeaderValue>,
    /// Time allowed to the first response byte.
    pub first_byte_timeout: Duration,
    /// Longest silence between two body chunks.
    pub chunk_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client for `base_url` with the timeouts and pool settings of `cfg`.
    pub fn new(base_url: &str, cfg: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let uri = crate::config::check_base_url(base_url).map_err(UpstreamSetupError::BadUrl)?;
        let host = host_header(&uri).ok_or_else(|| UpstreamSetupError::BadUrl(base_url.into()))?;
        let parts = uri.into_parts();
        let scheme = parts.scheme.expect("checked");
        let authority = parts.authority.expect("checked");
        let prefix = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamSetupError::BadUrl(e.to_string()))?;
        let chat_uri = map_uri(&prefix, CHAT_PATH, None)
            .map_err(|e| UpstreamSetupError::BadUrl(e.to_string()))?;
        let api_key = match &cfg.api_key_env {
            Some(name) => {
                let key = std::env::var(name)
                    .ok()
                    .and_then(|k| HeaderValue::try_from(format!("Bearer {k}")).ok())
                    .ok_or_else(|| UpstreamSetupError::ApiKey { name: name.clone() })?;
                let mut key = key;
                key.set_sensitive(true);
                Some(key)
            }
            None => None,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(UpstreamSetupError::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            connector,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                max_idle: cfg.pool_max_idle_per_host,
                idle_timeout: Duration::from_millis(cfg.pool_idle_timeout_ms),
                reaping: AtomicBool::new(false),
            }),
            origin,
            host,
            prefix,
            chat_uri,
            api_key,
            first_byte_timeout: Duration::from_millis(cfg.first_byte_timeout_ms),
            chunk_timeout: Duration::from_millis(cfg.chunk_timeout_ms),
        })
    }

    /// Maps careguard's `/v1/<rest>?q` onto `<prefix>/<rest>?q` (origin form: the connection
    /// already goes to the upstream's host).
    pub fn uri_for(&self, incoming: &Uri) -> Result<Uri, ProxyError> {
        if incoming.path() == CHAT_PATH && incoming.query().is_none() {
            return Ok(self.chat_uri.clone());
        }
        map_uri(&self.prefix, incoming.path(), incoming.query()).map_err(ProxyError::BuildRequest)
    }

    /// The client's headers made fit for the upstream, in place (no copy): hop-by-hop,
    /// `content-length` and `expect` dropped (careguard reads or streams the body itself), `host`
    /// set to the upstream's, `authorization` replaced when an upstream key is configured.
    pub fn request_headers(&self, mut headers: HeaderMap, identity_encoding: bool) -> HeaderMap {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::EXPECT);
        headers.insert(header::HOST, self.host.clone());
        if identity_encoding {
            headers.remove(header::ACCEPT_ENCODING);
        }
        if let Some(key) = &self.api_key {
            headers.insert(header::AUTHORIZATION, key.clone());
        }
        headers
    }

    /// Sends `req` (origin-form URI, headers from [`Self::request_headers`]), its body streamed
    /// as it comes; the future ends when response headers arrive or the first-byte deadline
    /// passes.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Result<Response<UpstreamIncoming>, ProxyError> {
        match tokio::time::timeout_at(deadline, self.exchange(req, None)).await {
            Err(_) => Err(ProxyError::FirstByteTimeout),
            Ok(result) => result,
        }
    }

    /// [`Self::send`] for a POST whose body is in memory, which may be written a second time:
    /// see [`BufferedPost`].
    pub async fn send_post(
        &self,
        post: &BufferedPost,
        deadline: Instant,
    ) -> Result<Response<UpstreamIncoming>, ProxyError> {
        match tokio::time::timeout_at(deadline, self.exchange(post.request(), Some(post))).await {
            Err(_) => Err(ProxyError::FirstByteTimeout),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        mut req: Request<UpstreamBody>,
        replay: Option<&BufferedPost>,
    ) -> Result<Response<UpstreamIncoming>, ProxyError> {
        let mut replayed = false;
        loop {
            let pooled = if replayed { None } else { self.pool.checkout() };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => self.connect().await?,
            };
            let written = Instant::now();
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool = Arc::clone(&self.pool);
                    return Ok(resp.map(|inner| UpstreamIncoming {
                        inner,
                        checkin: Some((sender, pool)),
                    }));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // Not written: a pooled connection closed under us. Another one, or a new one.
                    (Some(unsent), _) if reused => req = unsent,
                    // Written to a pooled connection that closed without a byte of answer: the
                    // upstream closed it while idle, before the request arrived.
                    (None, Some(post))
                        if reused
                            && !replayed
                            && written.elapsed() < REPLAY_WINDOW
                            && closed_unanswered(e.error()) =>
                    {
                        replayed = true;
                        req = post.request();
                    }
                    _ => return Err(ProxyError::UpstreamProtocol(Box::new(e.into_error()))),
                },
            }
        }
    }

    /// Opens a connection (TCP, TLS for https) and starts driving it on this thread.
    async fn connect(&self) -> Result<Sender, ProxyError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| {
                if is_timeout(&*e) {
                    ProxyError::ConnectTimeout(e)
                } else {
                    ProxyError::UpstreamUnreachable(e)
                }
            })?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.pool.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(&self.pool)));
        }
        Ok(sender)
    }

    /// Reads a whole body, allowing at most the chunk timeout between frames.
    pub async fn read_body(&self, mut body: UpstreamIncoming) -> Result<Bytes, ProxyError> {
        let mut first: Option<Bytes> = None;
        let mut buf: Option<BytesMut> = None;
        loop {
            let frame = tokio::time::timeout(self.chunk_timeout, body.frame())
                .await
                .map_err(|_| ProxyError::ChunkTimeout)?;
            match frame {
                None => break,
                Some(Err(e)) => return Err(ProxyError::UpstreamProtocol(Box::new(e))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match (&mut first, &mut buf) {
                        (None, None) => first = Some(data),
                        (Some(f), None) => {
                            let mut b = BytesMut::with_capacity(f.len() + data.len());
                            b.extend_from_slice(f);
                            b.extend_from_slice(&data);
                            first = None;
                            buf = Some(b);
                        }
                        (_, Some(b)) => b.extend_from_slice(&data),
                    }
                }
            }
        }
        Ok(match (first, buf) {
            (_, Some(b)) => b.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        })
    }
}

/// Whether the connection ended (closed or reset) before the response began.
fn closed_unanswered(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    e.is_incomplete_message()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
                )
            })
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers (including those named by `Connection`) in place. Most messages
/// have none, so names are compared first and the map is changed only when one is there.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// How soon after a request was written a closed or reset connection still counts as the
/// idle-close race (see [`BufferedPost`]).
const REPLAY_WINDOW: Duration = Duration::from_secs(1);

/// A POST to the upstream whose body is in memory (a chat request, a re-ask).
///
/// Decision: when such a request was written to a reused keep-alive connection and, within
/// [`REPLAY_WINDOW`], the connection closed or was reset before a complete response head, it is
/// written once more, on a new connection. That is the race of an upstream closing an idle
/// connection just as careguard reuses it (the close is in flight when the request goes out):
/// answering 502 there would fail a request the upstream never saw, and the OpenAI SDKs would
/// retry that 502 themselves anyway, later. hyper reports a close after part of a response head
/// the same way as a close before any byte, so the rare upstream that read the request, began
/// to answer and died within the window is asked twice, as after the SDK's own retry; a failure
/// later than the window (a long generation cut off) is never replayed. `Expect` is not
/// forwarded (the body is already here, and a `100 Continue` would only widen the ambiguity).
/// Streamed request bodies (other `/v1` routes) are never written twice.
#[derive(Debug, Clone)]
pub struct BufferedPost {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl BufferedPost {
    /// A POST of `body` to `uri` with `headers` (`Content-Length` set from the body).
    pub fn new(uri: Uri, mut headers: HeaderMap, body: Bytes) -> Self {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Self { uri, headers, body }
    }

    /// The same POST (target and headers) with another body: a re-ask.
    pub fn with_body(&self, body: Bytes) -> Self {
        Self::new(self.uri.clone(), self.headers.clone(), body)
    }

    fn request(&self) -> Request<UpstreamBody> {
        let body = http_body_util::Full::new(self.body.clone())
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut req = Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The `Host` header for `uri`: its host, with the port unless it is the scheme's default.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::try_from(value).ok()
}

/// The idle connections of one [`Upstream`], newest last.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the reaper task has been started.
    reaping: AtomicBool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    /// The newest idle connection that can take a request now. Closed and expired ones are
    /// dropped; one still finishing its last response is left for later.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let entry = &idle[i];
            if self.stale(entry, now) {
                idle.remove(i);
            } else if entry.sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
        }
        None
    }

    /// Keeps `sender` for reuse, closing the oldest idle connection when the pool is full. A
    /// connection not yet ready for its next request (its request body still going out after an
    /// early answer) joins the pool when it is, if ever.
    fn put(self: &Arc<Self>, mut sender: Sender) {
        if self.max_idle == 0 || self.idle_timeout.is_zero() || sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pool = Arc::clone(self);
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.put(sender);
                    }
                });
            }
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for the timeout or longer.
    fn expire(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|e| !self.stale(e, now));
    }

    /// Whether `entry` is closed or has been idle for the timeout or longer.
    fn stale(&self, entry: &Idle, now: Instant) -> bool {
        entry.sender.is_closed() || now.duration_since(entry.since) >= self.idle_timeout
    }
}

/// Closes expired idle connections every half timeout (1 s to 60 s) while the pool lives.
async fn reap(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.expire(),
            None => return,
        }
    }
}

/// An upstream response body. Read to the end, it returns its connection to the pool.
pub struct UpstreamIncoming {
    inner: Incoming,
    checkin: Option<(Sender, Arc<Pool>)>,
}

impl UpstreamIncoming {
    fn check_in(&mut self) {
        if let Some((sender, pool)) = self.checkin.take() {
            pool.put(sender);
        }
    }
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.check_in(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.check_in(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamIncoming {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.check_in();
        }
    }
}

/// Response headers for the client: the upstream's end-to-end headers minus `content-length`
/// (hyper sets it from the body we actually send).
pub fn response_headers(mut upstream: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut upstream);
    upstream.remove(header::CONTENT_LENGTH);
    upstream
}

/// A relayed body that fails with [`ProxyError::ChunkTimeout`] after too long a silence.
pub struct TimeoutBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> TimeoutBody<B> {
    /// Wraps `inner`, allowing `timeout` between frames.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ProxyError::ChunkTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The chat completions route, as clients call it.
const CHAT_PATH: &str = "/v1/chat/completions";

/// `path` (careguard's `/v1/<rest>`) and `query` mapped onto `<prefix>/<rest>?query`.
fn map_uri(prefix: &str, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let mut pq = String::with_capacity(prefix.len() + rest.len() + 16);
    pq.push_str(prefix);
    pq.push_str(rest);
    if pq.is_empty() {
        pq.push('/');
    }
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder().path_and_query(pq).build()
}

/// Shared handle to the upstream.
pub type SharedUpstream = Arc<Upstream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_prefix() {
        let up = Upstream::new("http://127.0.0.1:18000/v1/", &UpstreamConfig::default()).unwrap();
        let uri: Uri = "/v1/chat/completions?x=1".parse().unwrap();
        assert_eq!(
            up.uri_for(&uri).unwrap().to_string(),
            "/v1/chat/completions?x=1"
        );
        assert_eq!(up.host, "127.0.0.1:18000");
        // The chat route without a query takes the URI built once; the same mapping.
        let up =
            Upstream::new("http://gw.internal/openai/v1/", &UpstreamConfig::default()).unwrap();
        for (path, want) in [
            ("/v1/chat/completions", "/openai/v1/chat/completions"),
            (
                "/v1/chat/completions?a=b",
                "/openai/v1/chat/completions?a=b",
            ),
            ("/v1/chat/completionsx", "/openai/v1/chat/completionsx"),
        ] {
            let got = up.uri_for(&path.parse().unwrap()).unwrap();
            assert_eq!(got.to_string(), want, "{path}");
        }
        let up = Upstream::new("https://example.com", &UpstreamConfig::default()).unwrap();
        assert_eq!(
            up.uri_for(&"/v1/chat/completions".parse().unwrap())
                .unwrap()
                .to_string(),
            "/chat/completions"
        );
        assert_eq!(
            up.uri_for(&"/v1/models".parse().unwrap())
                .unwrap()
                .to_string(),
            "/models"
        );
        assert_eq!(up.host, "example.com");
        let up = Upstream::new("https://example.com:8443/", &UpstreamConfig::default()).unwrap();
        assert_eq!(
            up.uri_for(&"/v1".parse().unwrap()).unwrap().to_string(),
            "/"
        );
        assert_eq!(up.host, "example.com:8443");
    }

    #[test]
    fn drops_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("x-bar", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys_len(), 1);
        let bars: Vec<_> = h.get_all("x-bar").iter().collect();
        assert_eq!(bars, ["2", "3"]);
        // Nothing to drop: the map is left as it is.
        let mut plain = HeaderMap::new();
        plain.insert("x-keep", HeaderValue::from_static("Keep-Alive"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
