//! `POST /v1/chat/completions`: body limit, one JSON parse, the request hook, the upstream call,
//! and the response hooks (whole reply with re-asks, or the guarded SSE body).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::error::ProxyError;
use super::stream::GuardedSse;
use super::upstream::{response_headers, BufferedPost, TimeoutBody};
use super::{boxed, full, ResBody, Shared};
use crate::hooks::{
    message_content, ChatRequest, ExchangeOutcome, ExchangeSummary, HookState, JsonBody, Reply,
    RequestAction, ResponseAction, ResponseExchange, UpstreamCompletion, UpstreamReply,
};
use crate::metrics::{Route, UpstreamErrorKind};
use crate::wire::RequestView;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Everything needed to write one exchange's summary and metrics, whenever it ends.
pub(crate) struct Exchange {
    pub(crate) shared: Arc<Shared>,
    pub(crate) request_id: String,
    pub(crate) state: HookState,
    /// `Some` when the request hook asked to inspect: the assistant text delivered so far.
    pub(crate) delivered: Option<String>,
    /// Time spent in careguard so far (upstream waits excluded).
    pub(crate) overhead: Duration,
    pub(crate) upstream_started: Option<Instant>,
    pub(crate) upstream_calls: u32,
    pub(crate) upstream_model: Option<String>,
    pub(crate) status: StatusCode,
    pub(crate) stream_counted: bool,
}

impl Exchange {
    /// Records metrics and hands the summary to the guard.
    pub(crate) fn finish(self, streamed: bool, outcome: ExchangeOutcome) {
        let metrics = &self.shared.metrics;
        if self.stream_counted {
            metrics.streams_in_flight.dec();
            if let Some(t) = self.upstream_started {
                metrics.upstream_duration.observe(t.elapsed().as_secs_f64());
            }
        }
        metrics.overhead.observe(self.overhead.as_secs_f64());
        let shared = Arc::clone(&self.shared);
        shared.guard.on_complete(ExchangeSummary {
            request_id: self.request_id,
            route: Route::ChatCompletions,
            status: self.status,
            streamed,
            delivered_text: self.delivered,
            upstream_model: self.upstream_model,
            upstream_calls: self.upstream_calls,
            outcome,
            state: self.state,
        });
    }
}

/// Handles one chat completion request; never fails (errors become OpenAI-shaped responses).
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ResBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id = parts
        .headers
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut slot = Some(Exchange {
        shared: Arc::clone(&shared),
        request_id,
        state: Box::new(()),
        delivered: None,
        overhead: Duration::ZERO,
        upstream_started: None,
        upstream_calls: 0,
        upstream_model: None,
        status: StatusCode::OK,
        stream_counted: false,
    });
    let mut extra = HeaderMap::new();
    let mut upstream_wait = Duration::ZERO;
    let result = run(
        &shared,
        parts,
        body,
        &mut slot,
        &mut extra,
        &mut upstream_wait,
        started,
    )
    .await;
    let (mut response, outcome) = match result {
        Ok(resp) => (resp, ExchangeOutcome::Completed),
        Err(err) => {
            let p = err.presentation();
            if let Some(kind) = p.upstream {
                shared.metrics.upstream_error(kind);
            }
            tracing::debug!(error = %err, "chat request failed");
            let outcome = p
                .upstream
                .map_or(ExchangeOutcome::Rejected, ExchangeOutcome::UpstreamFailed);
            (json_response(p.status, err.body()), outcome)
        }
    };
    response.headers_mut().extend(extra);
    if let Some(mut ex) = slot {
        let outcome = if response.status().is_success() || outcome != ExchangeOutcome::Completed {
            outcome
        } else {
            ExchangeOutcome::UpstreamFailed(UpstreamErrorKind::Status)
        };
        ex.status = response.status();
        ex.overhead += started.elapsed().saturating_sub(upstream_wait);
        ex.finish(false, outcome);
    }
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

fn sse_response(body: GuardedSse) -> Response<ResBody> {
    let mut resp = Response::new(boxed(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, EVENT_STREAM);
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// Reads the body within the size limit.
pub(crate) async fn read_limited(
    parts: &Parts,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e)),
    }
}

async fn run(
    shared: &Arc<Shared>,
    mut parts: Parts,
    body: Incoming,
    slot: &mut Option<Exchange>,
    extra: &mut HeaderMap,
    upstream_wait: &mut Duration,
    started: Instant,
) -> Result<Response<ResBody>, ProxyError> {
    let bytes = read_limited(&parts, body, shared.proxy.max_body_bytes).await?;
    // One pass over the body, no JSON tree (see `crate::wire`); the tree is built only if a hook
    // edits the body or a re-ask needs it.
    let view = RequestView::read(&bytes, shared.guard.reads_request_body())
        .map_err(ProxyError::InvalidJson)?;
    if !view.has_messages {
        return Err(ProxyError::MissingMessages);
    }
    let stream = view.stream;
    let mut request_body = JsonBody::new(bytes);
    let ex = slot.as_mut().expect("exchange present");
    let outcome = shared.guard.on_request(&mut ChatRequest {
        request_id: &ex.request_id,
        headers: &parts.headers,
        body: &mut request_body,
        messages: view.messages,
        model: view.model,
        stream,
    });
    ex.state = outcome.state;
    if outcome.inspect {
        // A streamed reply's text arrives a few bytes at a time: room for a typical reply
        // saves the string's repeated regrowth (a whole reply is pushed in one go).
        ex.delivered = Some(if stream {
            String::with_capacity(super::stream::TEXT_CAPACITY)
        } else {
            String::new()
        });
    }
    *extra = outcome.response_headers;
    let send = match outcome.action {
        RequestAction::Forward => request_body.original(),
        RequestAction::ForwardEdited => request_body.to_bytes(),
        RequestAction::Respond(Reply::Error(e)) => return Err(ProxyError::Guard(e)),
        RequestAction::Respond(Reply::Completion(completion)) => {
            if stream {
                let ex = slot.take().expect("exchange present");
                let chunks = super::sse::completion_to_chunks(&completion);
                return Ok(sse_response(GuardedSse::answer(ex, &chunks)));
            }
            if let Some(text) = ex.delivered.as_mut() {
                text.push_str(message_content(&completion).unwrap_or_default());
            }
            let body = serde_json::to_vec(&completion).unwrap_or_default();
            return Ok(json_response(StatusCode::OK, Bytes::from(body)));
        }
    };

    let upstream = &shared.upstream;
    let uri = upstream.uri_for(&parts.uri)?;
    let headers = upstream.request_headers(std::mem::take(&mut parts.headers), true);
    let stream_guard = if stream {
        shared.guard.on_stream(&mut ex.state, &request_body)
    } else {
        None
    };
    let request = BufferedPost::new(uri, headers, send);
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + upstream.first_byte_timeout;
    ex.upstream_calls = 1;
    let resp = upstream.send_post(&request, deadline).await;
    let resp = match resp {
        Ok(resp) => resp,
        Err(e) => {
            *upstream_wait += sent.elapsed();
            return Err(e);
        }
    };
    let (mut resp_parts, incoming) = resp.into_parts();
    let is_sse = resp_parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut out_headers = response_headers(std::mem::take(&mut resp_parts.headers));

    if !resp_parts.status.is_success() {
        // Relay the upstream's own status and body as they are.
        *upstream_wait += sent.elapsed();
        shared.metrics.upstream_error(UpstreamErrorKind::Status);
        let mut r = Response::new(boxed(TimeoutBody::new(incoming, upstream.chunk_timeout)));
        *r.status_mut() = resp_parts.status;
        *r.headers_mut() = out_headers;
        return Ok(r);
    }

    if stream && is_sse {
        let mut incoming = incoming;
        // Await the first event before committing to a 200, so a stall keeps a real status.
        let first = tokio::time::timeout_at(deadline, incoming.frame())
            .await
            .map_err(|_| ProxyError::FirstByteTimeout)?;
        let resumed = Instant::now();
        let mut ex = slot.take().expect("exchange present");
        ex.upstream_started = Some(sent);
        ex.overhead += sent.saturating_duration_since(started);
        ex.overhead += resumed.elapsed();
        // A guarded stream may re-ask: it keeps the request as the template.
        let target = stream_guard.is_some().then_some(request);
        let body = GuardedSse::relay(
            ex,
            incoming,
            first,
            stream_guard,
            target,
            upstream.chunk_timeout,
        );
        let mut r = Response::new(boxed(body));
        out_headers.insert(CONTENT_TYPE, EVENT_STREAM);
        *r.headers_mut() = out_headers;
        return Ok(r);
    }

    let body = upstream.read_body(incoming).await;
    let waited = sent.elapsed();
    *upstream_wait += waited;
    shared
        .metrics
        .upstream_duration
        .observe(waited.as_secs_f64());
    let body = body?;
    if ex.delivered.is_none() {
        let mut r = Response::new(full(body));
        *r.headers_mut() = out_headers;
        return Ok(r);
    }

    // Inspected: read once (model and text, no tree), let the hook decide, re-ask if it wants.
    let mut current = UpstreamCompletion::read(body).map_err(ProxyError::MalformedReply)?;
    ex.upstream_model = current.model().map(str::to_owned);
    let mut attempt = 0u32;
    let mut failed: Option<UpstreamErrorKind> = None;
    loop {
        let reply = match failed {
            Some(kind) => UpstreamReply::Failed(kind),
            None => UpstreamReply::Completion(&current),
        };
        let action = shared.guard.on_response(&mut ResponseExchange {
            request_id: &ex.request_id,
            attempt,
            request: &request_body,
            reply,
            state: &mut ex.state,
            response_headers: extra,
        });
        let delivered = match action {
            ResponseAction::Pass => current.bytes(),
            ResponseAction::Replace(v) => {
                current = UpstreamCompletion::from_value(v);
                current.bytes()
            }
            ResponseAction::Error(e) => return Err(ProxyError::Guard(e)),
            ResponseAction::Reask { body, timeout } => {
                if attempt >= shared.proxy.max_reasks {
                    return Err(ProxyError::ReaskLimit);
                }
                attempt += 1;
                request_body = JsonBody::from_value(body);
                let send = request_body.to_bytes();
                let request = request.with_body(send);
                let t = Instant::now();
                ex.upstream_calls += 1;
                let result =
                    tokio::time::timeout(timeout, call_json(Arc::clone(shared), request)).await;
                *upstream_wait += t.elapsed();
                match result {
                    Ok(Ok(completion)) => {
                        current = completion;
                        failed = None;
                    }
                    Ok(Err(kind)) => {
                        shared.metrics.upstream_error(kind);
                        failed = Some(kind);
                    }
                    Err(_) => {
                        shared
                            .metrics
                            .upstream_error(UpstreamErrorKind::FirstByteTimeout);
                        failed = Some(UpstreamErrorKind::FirstByteTimeout);
                    }
                }
                continue;
            }
        };
        if let Some(text) = ex.delivered.as_mut() {
            text.push_str(current.content().unwrap_or_default());
        }
        let mut r = Response::new(full(delivered));
        *r.headers_mut() = out_headers;
        return Ok(r);
    }
}

/// One non-streaming upstream call for a re-ask: the completion it returned.
pub(crate) async fn call_json(
    shared: Arc<Shared>,
    request: BufferedPost,
) -> Result<UpstreamCompletion, UpstreamErrorKind> {
    let upstream = &shared.upstream;
    let deadline = tokio::time::Instant::now() + upstream.first_byte_timeout;
    let kind = |e: ProxyError| {
        e.presentation()
            .upstream
            .unwrap_or(UpstreamErrorKind::Protocol)
    };
    let resp = upstream.send_post(&request, deadline).await.map_err(kind)?;
    if !resp.status().is_success() {
        return Err(UpstreamErrorKind::Status);
    }
    let bytes = upstream.read_body(resp.into_body()).await.map_err(kind)?;
    UpstreamCompletion::read(bytes).map_err(|_| UpstreamErrorKind::Malformed)
}
