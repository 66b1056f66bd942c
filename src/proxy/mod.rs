//! The proxy: what happens to a request on the main listener.
//!
//! Cross-cutting concerns are tower layers; the order, outermost first:
//!
//! ```text
//!         client (HTTP/1.1 or h2c)
//!            |
//! +----------v------------------------------------------------------------+
//! | RequestIdLayer   keep or generate `x-request-id`, return it on every   |
//! |                  response (errors included)                           |
//! | +--------v----------------------------------------------------------+ |
//! | | MetricsLayer   classify the route, count                          | |
//! | |                careguard_requests_total{route,status_class}       | |
//! | | +------v------------------------------------------------------+   | |
//! | | | ProxyService  route:                                        |   | |
//! | | |   /v1/chat/completions -> chat: body limit (413), one JSON   |   | |
//! | | |     parse (400), request hook, upstream call (connect /      |   | |
//! | | |     first-byte / chunk timeouts: 504, unreachable: 502),     |   | |
//! | | |     response hook (JSON) or stream hook (SSE body)           |   | |
//! | | |   unguarded conversation routes -> 403 unless allowed        |   | |
//! | | |   other /v1/*  -> passed through untouched                   |   | |
//! | | +------+------------------------------------------------------+   | |
//! | +--------|----------------------------------------------------------+ |
//! +----------|------------------------------------------------------------+
//!            v
//!         upstream (pooled keep-alive HTTP/1.1, rustls for https)
//! ```
//!
//! Every failure is a [`ProxyError`], mapped once (status, OpenAI `type`/`code`, metric label)
//! in [`error`]. Timings for `careguard_overhead_seconds` are taken in `chat` and `stream`.

pub mod chat;
pub mod error;
pub mod sse;
pub mod stream;
pub mod upstream;

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::{Layer, Service};

pub use error::{BoxError, ProxyError};
pub use upstream::{Upstream, UpstreamSetupError};

use crate::config::{ProxyConfig, UnguardedRoute};
use crate::hooks::Guard;
use crate::metrics::{Metrics, Route};

/// Body type of every response careguard sends.
pub type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Boxes any body into [`ResBody`].
pub fn boxed<B>(body: B) -> ResBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A whole-bytes body.
pub fn full(bytes: Bytes) -> ResBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// State shared by every request of one server.
pub struct Shared {
    /// The upstream client.
    pub upstream: Upstream,
    /// The guard behind the hooks.
    pub guard: Arc<dyn Guard>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// `[proxy]` settings.
    pub proxy: ProxyConfig,
}

/// Classifies a request path (and method) into a [`Route`].
pub fn classify(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Route::NotFound;
    };
    let first = rest.split('/').next().unwrap_or_default();
    match first {
        "chat" if rest.trim_end_matches('/') == "chat/completions" && method == Method::POST => {
            Route::ChatCompletions
        }
        "completions" if rest.trim_end_matches('/') == "completions" => Route::Completions,
        "models" => Route::Models,
        "responses" => Route::Responses,
        "assistants" => Route::Assistants,
        "threads" => Route::Threads,
        "realtime" => Route::Realtime,
        _ => Route::OtherV1,
    }
}

fn unguarded(route: Route) -> Option<UnguardedRoute> {
    match route {
        Route::Responses => Some(UnguardedRoute::Responses),
        Route::Assistants => Some(UnguardedRoute::Assistants),
        Route::Threads => Some(UnguardedRoute::Threads),
        Route::Realtime => Some(UnguardedRoute::Realtime),
        Route::ChatCompletions
        | Route::Completions
        | Route::Models
        | Route::OtherV1
        | Route::NotFound => None,
    }
}

/// An OpenAI-shaped error response for `err`.
pub fn error_response(err: &ProxyError) -> Response<ResBody> {
    let p = err.presentation();
    let mut resp = Response::new(full(err.body()));
    *resp.status_mut() = p.status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The innermost service: routes and proxies.
#[derive(Clone)]
pub struct ProxyService {
    shared: Arc<Shared>,
}

impl ProxyService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Service<Request<Incoming>> for ProxyService {
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let route = classify(req.method(), req.uri().path());
            Ok(match route {
                Route::ChatCompletions => chat::handle(shared, req).await,
                Route::NotFound => error_response(&ProxyError::NotFound),
                _ => {
                    if let Some(u) = unguarded(route) {
                        if !shared.proxy.allow_unguarded_routes.contains(&u) {
                            return Ok(error_response(&ProxyError::UnguardedRoute { route: u }));
                        }
                        shared.metrics.unguarded(route);
                    }
                    match pass_through(&shared, req).await {
                        Ok(resp) => resp,
                        Err(err) => {
                            if let Some(kind) = err.presentation().upstream {
                                shared.metrics.upstream_error(kind);
                            }
                            error_response(&err)
                        }
                    }
                }
            })
        })
    }
}

/// Forwards a request untouched (body streamed within the size limit) and relays the response.
async fn pass_through(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let upstream = &shared.upstream;
    let limit = shared.proxy.max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut out = Request::new(boxed(http_body_util::Limited::new(body, limit)));
    *out.method_mut() = parts.method;
    *out.uri_mut() = upstream.uri_for(&parts.uri)?;
    *out.headers_mut() = upstream.request_headers(std::mem::take(&mut parts.headers), false);
    if let Some(len) = declared {
        out.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let deadline = tokio::time::Instant::now() + upstream.first_byte_timeout;
    let resp = upstream.send(out, deadline).await?;
    let (rp, incoming) = resp.into_parts();
    if !rp.status.is_success() {
        shared
            .metrics
            .upstream_error(crate::metrics::UpstreamErrorKind::Status);
    }
    let mut r = Response::new(boxed(upstream::TimeoutBody::new(
        incoming,
        upstream.chunk_timeout,
    )));
    *r.status_mut() = rp.status;
    *r.headers_mut() = upstream::response_headers(rp.headers);
    Ok(r)
}

/// Layer keeping or generating `x-request-id` and returning it on every response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = WithHeader<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => {
                let v = new_request_id();
                req.headers_mut().insert(REQUEST_ID, v.clone());
                v
            }
        };
        WithHeader {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`RequestIdService`]: sets the id header on the response.
    pub struct WithHeader<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, E> Future for WithHeader<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            resp.headers_mut().insert(REQUEST_ID, id);
        }
        Poll::Ready(Ok(resp))
    }
}

thread_local! {
    static RNG: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
    (a | 1, b | 1)
}

/// A random (version 4) UUID from a per-thread xorshift128+ seeded from the OS; no syscall per id.
fn new_request_id() -> HeaderValue {
    let (hi, lo) = RNG.with(|cell| {
        let next = || {
            let (mut s1, s0) = cell.get();
            let result = s0.wrapping_add(s1);
            s1 ^= s1 << 23;
            let s1 = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
            cell.set((s0, s1));
            result
        };
        (next(), next())
    });
    let id =
        uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
            .into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("uuid is a valid header value")
}

/// Layer counting `careguard_requests_total{route,status_class}`.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = classify(req.method(), req.uri().path());
        Counted {
            inner: self.inner.call(req),
            metrics: Some((Arc::clone(&self.metrics), route)),
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of [`MetricsService`]: counts the response by route and status class.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        metrics: Option<(Arc<Metrics>, Route)>,
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some((metrics, route))) = (&result, this.metrics.take()) {
            metrics.request(route, resp.status());
        }
        Poll::Ready(result)
    }
}

/// The full main-listener service: the onion above, ready for hyper.
pub fn service(shared: Arc<Shared>) -> RequestIdService<MetricsService<ProxyService>> {
    let metrics = Arc::clone(&shared.metrics);
    tower::ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(MetricsLayer::new(metrics))
        .service(ProxyService::new(shared))
}

/// A plain response for the admin listener.
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            classify(&post, "/v1/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            classify(&Method::GET, "/v1/chat/completions"),
            Route::OtherV1
        );
        assert_eq!(classify(&post, "/v1/completions"), Route::Completions);
        assert_eq!(classify(&Method::GET, "/v1/models/gpt-4o"), Route::Models);
        assert_eq!(classify(&post, "/v1/threads/t1/runs"), Route::Threads);
        assert_eq!(classify(&post, "/v1/embeddings"), Route::OtherV1);
        assert_eq!(classify(&post, "/metrics"), Route::NotFound);
    }

    #[test]
    fn request_ids_are_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
}
