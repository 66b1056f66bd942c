//! The upstream side: a pooled HTTP/1.1 keep-alive client (HTTPS via rustls and webpki roots),
//! URL mapping onto the base URL's path prefix, header filtering, and the three timeouts.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, Sleep};

use super::error::{BoxError, ProxyError};
use crate::config::UpstreamConfig;

/// Body type of requests sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

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
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    api_key: Option<HeaderValue>,
    /// Time allowed to the first response byte.
    pub first_byte_timeout: Duration,
    /// Longest silence between two body chunks.
    pub chunk_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client for `base_url` with the timeouts and pool settings of `cfg`.
    pub fn new(base_url: &str, cfg: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let uri = crate::config::check_base_url(base_url).map_err(UpstreamSetupError::BadUrl)?;
        let parts = uri.into_parts();
        let scheme = parts.scheme.expect("checked");
        let authority = parts.authority.expect("checked");
        let prefix = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
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
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(UpstreamSetupError::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(cfg.pool_idle_timeout_ms))
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(https);
        Ok(Self {
            client,
            scheme,
            authority,
            prefix,
            api_key,
            first_byte_timeout: Duration::from_millis(cfg.first_byte_timeout_ms),
            chunk_timeout: Duration::from_millis(cfg.chunk_timeout_ms),
        })
    }

    /// Maps careguard's `/v1/<rest>?q` onto `<base>/<rest>?q`.
    pub fn uri_for(&self, incoming: &Uri) -> Result<Uri, ProxyError> {
        let path = incoming.path();
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        let mut pq = String::with_capacity(self.prefix.len() + rest.len() + 16);
        pq.push_str(&self.prefix);
        pq.push_str(rest);
        if let Some(q) = incoming.query() {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(ProxyError::BuildRequest)
    }

    /// Copies client headers for the upstream: hop-by-hop, `host` and `content-length` dropped,
    /// `authorization` replaced when an upstream key is configured.
    pub fn request_headers(&self, incoming: &HeaderMap, identity_encoding: bool) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(incoming.len());
        copy_end_to_end(incoming, &mut out);
        out.remove(header::HOST);
        out.remove(header::CONTENT_LENGTH);
        if identity_encoding {
            out.remove(header::ACCEPT_ENCODING);
        }
        if let Some(key) = &self.api_key {
            out.insert(header::AUTHORIZATION, key.clone());
        }
        out
    }

    /// Sends `req`; the future ends when response headers arrive or the first-byte deadline passes.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => Err(ProxyError::FirstByteTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                if is_timeout(&e) {
                    Err(ProxyError::ConnectTimeout(Box::new(e)))
                } else {
                    Err(ProxyError::UpstreamUnreachable(Box::new(e)))
                }
            }
            Ok(Err(e)) => Err(ProxyError::UpstreamProtocol(Box::new(e))),
        }
    }

    /// Reads a whole body, allowing at most the chunk timeout between frames.
    pub async fn read_body(&self, mut body: Incoming) -> Result<Bytes, ProxyError> {
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

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = e.source();
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

/// Copies `from` into `to` without hop-by-hop headers (including those named by `Connection`).
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<&str> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for (name, value) in from {
        if HOP_BY_HOP.contains(name)
            || (!named.is_empty() && named.iter().any(|n| n.eq_ignore_ascii_case(name.as_str())))
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Response headers for the client: the upstream's end-to-end headers minus `content-length`
/// (hyper sets it from the body we actually send).
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len() + 2);
    copy_end_to_end(upstream, &mut out);
    out.remove(header::CONTENT_LENGTH);
    out
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
            "http://127.0.0.1:18000/v1/chat/completions?x=1"
        );
        let up = Upstream::new("https://example.com", &UpstreamConfig::default()).unwrap();
        assert_eq!(
            up.uri_for(&"/v1/models".parse().unwrap())
                .unwrap()
                .to_string(),
            "https://example.com/models"
        );
    }

    #[test]
    fn drops_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = HeaderMap::new();
        copy_end_to_end(&h, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("x-bar"));
    }
}
