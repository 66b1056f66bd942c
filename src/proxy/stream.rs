//! The SSE response body: relays upstream events as they arrive, consulting the stream hook.
//!
//! Benign traffic is forwarded as the upstream's own bytes (runs of forwarded events leave as one
//! frame, without copying). The body is polled by hyper directly, so there is no task and no
//! channel: client backpressure reaches the upstream socket, and a client that goes away drops
//! this body, which drops the upstream response and closes that connection (the cancel). The
//! exchange summary is written on completion or, for a disconnect, from `Drop`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::upstream::{BufferedPost, UpstreamIncoming};
use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use super::chat::{call_json, Exchange};
use super::error::{BoxError, ProxyError};
use super::sse::{self, Splitter};
use crate::hooks::{
    delta_content, ChunkMeta, EndAction, ExchangeOutcome, StreamAction, StreamEnd, StreamEvent,
    StreamGuard, UpstreamCompletion, UpstreamReply,
};
use crate::metrics::UpstreamErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    Draining,
    Finished,
}

/// Above this many buffered bytes a frame is sent without waiting for more.
const COALESCE_LIMIT: usize = 16 * 1024;

/// Bytes of reply text, and events, a stream makes room for at its start (the held-event queue
/// and the inspected text only when guarded): most chat replies fit, and growing the buffers
/// from empty cost ~11 reallocations a guarded stream (~14K instructions: 493K -> 479K for the
/// mock's 40 events; callgrind, `STREAM=1 scripts/instructions.sh`). A longer reply grows them
/// as before.
pub(crate) const TEXT_CAPACITY: usize = 1024;
/// See [`TEXT_CAPACITY`].
pub(crate) const EVENT_CAPACITY: usize = 32;

/// How many times to yield for more buffered upstream data before sending what arrived.
const MAX_YIELDS: u8 = 3;

type ReaskFuture =
    Pin<Box<dyn Future<Output = Result<UpstreamCompletion, UpstreamErrorKind>> + Send>>;

/// An SSE response body guarded by an optional [`StreamGuard`].
pub struct GuardedSse {
    upstream: Option<UpstreamIncoming>,
    sleep: Pin<Box<Sleep>>,
    chunk_timeout: Duration,
    splitter: Splitter,
    ranges: Vec<Range<usize>>,
    out: VecDeque<Bytes>,
    held: VecDeque<(Bytes, Option<String>)>,
    guard: Option<Box<dyn StreamGuard>>,
    meta: Option<ChunkMeta>,
    phase: Phase,
    outcome: ExchangeOutcome,
    exchange: Option<Exchange>,
    /// Where a re-ask goes (kept only when a stream guard is present).
    reask_target: Option<BufferedPost>,
    /// The re-ask in flight, if any.
    reask: Option<ReaskFuture>,
    /// Re-asks made so far.
    attempt: u32,
    /// What ends the stream once the end hook (and any re-ask) is done: `[DONE]`, maybe after an error.
    tail: Vec<Bytes>,
    /// When the last upstream frame arrived (the chunk timeout counts from here).
    last_frame: Instant,
    /// Whether this body already yielded once waiting for more buffered upstream data.
    yielded: u8,
    /// Whether a data frame went to the client yet: the first one is never held back to
    /// coalesce, so a stream's first bytes leave as soon as they are cleared.
    sent_any: bool,
    /// Set when the first frame was handed to hyper: the next poll yields once, which makes
    /// hyper write it (with the response head) instead of buffering it with the frames after.
    flush_first: bool,
    /// Bytes of events the stream guard has seen since its last `on_flush`.
    unflushed: usize,
}

impl GuardedSse {
    /// Starts relaying `upstream`, whose first frame (`first`) was already read.
    pub(crate) fn relay(
        mut exchange: Exchange,
        upstream: UpstreamIncoming,
        first: Option<Result<Frame<Bytes>, hyper::Error>>,
        guard: Option<Box<dyn StreamGuard>>,
        reask_target: Option<BufferedPost>,
        chunk_timeout: Duration,
    ) -> Self {
        exchange.shared.metrics.streams_in_flight.inc();
        exchange.stream_counted = true;
        let mut body = Self {
            upstream: Some(upstream),
            sleep: Box::pin(tokio::time::sleep(chunk_timeout)),
            chunk_timeout,
            splitter: Splitter::default(),
            ranges: Vec::new(),
            out: VecDeque::with_capacity(EVENT_CAPACITY),
            held: VecDeque::with_capacity(if guard.is_some() { EVENT_CAPACITY } else { 0 }),
            guard,
            meta: None,
            phase: Phase::Streaming,
            outcome: ExchangeOutcome::Completed,
            exchange: Some(exchange),
            reask_target,
            reask: None,
            attempt: 0,
            tail: Vec::new(),
            last_frame: Instant::now(),
            yielded: 0,
            sent_any: false,
            flush_first: false,
            unflushed: 0,
        };
        body.on_upstream(first, std::time::Instant::now());
        body
    }

    /// A stream careguard answers itself: these chunks, then `[DONE]`.
    pub(crate) fn answer(mut exchange: Exchange, chunks: &[Value]) -> Self {
        exchange.shared.metrics.streams_in_flight.inc();
        exchange.stream_counted = true;
        let mut out: VecDeque<Bytes> = chunks.iter().map(sse::encode).collect();
        out.push_back(Bytes::from_static(sse::DONE));
        if let Some(text) = exchange.delivered.as_mut() {
            for c in chunks {
                text.push_str(delta_content(c).unwrap_or_default());
            }
        }
        Self {
            upstream: None,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            chunk_timeout: Duration::from_secs(3600),
            splitter: Splitter::default(),
            ranges: Vec::new(),
            out,
            held: VecDeque::new(),
            guard: None,
            meta: None,
            phase: Phase::Finished,
            outcome: ExchangeOutcome::Completed,
            exchange: Some(exchange),
            reask_target: None,
            reask: None,
            attempt: 0,
            tail: Vec::new(),
            last_frame: Instant::now(),
            yielded: 0,
            sent_any: false,
            flush_first: false,
            unflushed: 0,
        }
    }

    /// Takes the exchange for its final record, noting the model the stream reported.
    fn take_exchange(&mut self) -> Option<Exchange> {
        let mut exchange = self.exchange.take()?;
        if let Some(meta) = &self.meta {
            exchange.upstream_model = Some(meta.model.clone());
        }
        Some(exchange)
    }

    fn out_len(&self) -> usize {
        self.out.iter().map(Bytes::len).sum()
    }

    /// Everything queued for the client as one buffer.
    fn take_out(&mut self) -> Bytes {
        self.sent_any = true;
        if self.out.len() == 1 {
            return self.out.pop_front().expect("one");
        }
        let mut merged = bytes::BytesMut::with_capacity(self.out_len());
        for b in self.out.drain(..) {
            merged.extend_from_slice(&b);
        }
        merged.freeze()
    }

    fn exchange(&mut self) -> &mut Exchange {
        self.exchange
            .as_mut()
            .expect("exchange lives until the body ends")
    }

    /// Handles one poll result from the upstream body, which arrived at `started` (one clock
    /// read serves both the chunk timeout and the overhead measurement).
    fn on_upstream(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
        started: std::time::Instant,
    ) {
        match (self.phase, frame) {
            (Phase::Streaming, Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.on_data(data);
                }
            }
            (Phase::Streaming, Some(Err(_))) => self.fail(UpstreamErrorKind::Protocol),
            (Phase::Streaming, None) => self.fail(UpstreamErrorKind::Truncated),
            // After [DONE]: the upstream should end now; anything else is cut off.
            (Phase::Draining, _) | (Phase::Finished, _) => {
                self.upstream = None;
                self.phase = Phase::Finished;
            }
        }
        self.exchange().overhead += started.elapsed();
    }

    fn on_data(&mut self, data: Bytes) {
        let mut ranges = std::mem::take(&mut self.ranges);
        let src = self.splitter.feed(data, &mut ranges);
        let mut run: Option<Range<usize>> = None;
        for r in ranges.iter().cloned() {
            if self.phase != Phase::Streaming {
                break;
            }
            let event = &src[r.clone()];
            let Some(payload) = sse::data_of(event) else {
                // Comments and keep-alives keep their place relative to held events.
                if self.held.is_empty() {
                    push_run(&mut run, r, &src, &mut self.out);
                } else {
                    self.held.push_back((src.slice(r), None));
                }
                continue;
            };
            if payload.as_ref() == b"[DONE]" {
                flush(&mut run, &src, &mut self.out);
                self.finish_upstream(src.slice(r));
                continue;
            }
            let inspect = self.exchange().delivered.is_some();
            if self.guard.is_none() && !inspect {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
                    flush(&mut run, &src, &mut self.out);
                    self.fail(UpstreamErrorKind::Malformed);
                    continue;
                }
                push_run(&mut run, r, &src, &mut self.out);
                continue;
            }
            let Ok(view) = sse::ChunkView::parse(&payload) else {
                flush(&mut run, &src, &mut self.out);
                self.fail(UpstreamErrorKind::Malformed);
                continue;
            };
            let meta = self.meta.get_or_insert_with(|| view.meta());
            let action = match self.guard.as_mut() {
                None => StreamAction::Forward,
                Some(guard) => {
                    let exchange = self.exchange.as_mut().expect("live");
                    let event = StreamEvent::new(
                        event,
                        &payload,
                        view.content.as_deref(),
                        view.usage,
                        meta,
                    );
                    self.unflushed += event.raw.len();
                    guard.on_event(&mut exchange.state, &event)
                }
            };
            let content = if inspect {
                view.content.map(Cow::into_owned)
            } else {
                None
            };
            match action {
                StreamAction::Forward => {
                    if !self.held.is_empty() {
                        flush(&mut run, &src, &mut self.out);
                        self.release_held();
                    }
                    self.deliver_text(content.as_deref());
                    push_run(&mut run, r, &src, &mut self.out);
                }
                StreamAction::Hold => {
                    flush(&mut run, &src, &mut self.out);
                    self.held.push_back((src.slice(r), content));
                }
                StreamAction::HoldWindow { keep } => {
                    flush(&mut run, &src, &mut self.out);
                    self.held.push_back((src.slice(r), content));
                    while self.held.len() > keep {
                        let (bytes, text) = self.held.pop_front().expect("non-empty");
                        self.deliver_text(text.as_deref());
                        self.out.push_back(bytes);
                    }
                }
                StreamAction::Drop => flush(&mut run, &src, &mut self.out),
                StreamAction::Emit(chunks) => {
                    flush(&mut run, &src, &mut self.out);
                    self.held.clear();
                    self.emit(&chunks);
                }
                StreamAction::Replace(chunks) => {
                    flush(&mut run, &src, &mut self.out);
                    self.held.clear();
                    self.emit(&chunks);
                    self.out.push_back(Bytes::from_static(sse::DONE));
                    self.upstream = None;
                    self.phase = Phase::Finished;
                }
            }
        }
        flush(&mut run, &src, &mut self.out);
        self.ranges = ranges;
    }

    /// Lets the stream guard decide about the events held so far, all at once (see
    /// [`StreamGuard::on_flush`]); called before what is ready goes to the client.
    fn checkpoint(&mut self) {
        if self.unflushed == 0 {
            return;
        }
        self.unflushed = 0;
        if self.phase != Phase::Streaming || self.held.is_empty() {
            return;
        }
        let Some(guard) = self.guard.as_mut() else {
            return;
        };
        let started = std::time::Instant::now();
        let meta = self.meta.get_or_insert_with(ChunkMeta::default);
        let exchange = self.exchange.as_mut().expect("live");
        match guard.on_flush(&mut exchange.state, meta) {
            StreamAction::Forward => self.release_held(),
            StreamAction::Hold | StreamAction::Drop => {}
            StreamAction::HoldWindow { keep } => {
                while self.held.len() > keep {
                    let (bytes, text) = self.held.pop_front().expect("non-empty");
                    self.deliver_text(text.as_deref());
                    self.out.push_back(bytes);
                }
            }
            StreamAction::Emit(chunks) => {
                self.held.clear();
                self.emit(&chunks);
            }
            StreamAction::Replace(chunks) => {
                self.held.clear();
                self.emit(&chunks);
                self.out.push_back(Bytes::from_static(sse::DONE));
                self.upstream = None;
                self.phase = Phase::Finished;
            }
        }
        self.exchange().overhead += started.elapsed();
    }

    fn deliver_text(&mut self, text: Option<&str>) {
        if let (Some(t), Some(out)) = (text, self.exchange().delivered.as_mut()) {
            out.push_str(t);
        }
    }

    fn release_held(&mut self) {
        while let Some((bytes, content)) = self.held.pop_front() {
            self.deliver_text(content.as_deref());
            self.out.push_back(bytes);
        }
    }

    fn emit(&mut self, chunks: &[Value]) {
        for c in chunks {
            self.deliver_text(delta_content(c));
            self.out.push_back(sse::encode(c));
        }
    }

    /// Runs the end hook; `tail` ends the stream once the hook (and any re-ask) is done.
    fn end_stream(&mut self, end: StreamEnd, tail: Vec<Bytes>) {
        self.tail = tail;
        let action = match self.guard.as_mut() {
            None => EndAction::Release,
            Some(guard) => {
                let meta = self.meta.get_or_insert_with(ChunkMeta::default);
                let exchange = self.exchange.as_mut().expect("live");
                guard.on_end(&mut exchange.state, end, meta)
            }
        };
        self.apply_end(action);
    }

    fn apply_end(&mut self, action: EndAction) {
        match action {
            EndAction::Release => self.release_held(),
            EndAction::ReleaseThen(chunks) => {
                self.release_held();
                self.emit(&chunks);
            }
            EndAction::Discard => self.held.clear(),
            EndAction::Replace(chunks) => {
                self.held.clear();
                self.emit(&chunks);
            }
            EndAction::Reask { body, timeout } => {
                if self.start_reask(body, timeout) {
                    return;
                }
                self.held.clear();
                self.out.push_back(ProxyError::ReaskLimit.sse_event());
            }
        }
        let tail = std::mem::take(&mut self.tail);
        self.out.extend(tail);
    }

    /// Starts a non-streaming upstream call; false when the re-ask budget is spent.
    fn start_reask(&mut self, mut body: Value, timeout: Duration) -> bool {
        let exchange = self.exchange.as_mut().expect("live");
        let Some(template) = &self.reask_target else {
            return false;
        };
        if self.attempt >= exchange.shared.proxy.max_reasks {
            return false;
        }
        self.attempt += 1;
        exchange.upstream_calls += 1;
        if let Some(obj) = body.as_object_mut() {
            obj.insert("stream".to_owned(), Value::Bool(false));
            obj.remove("stream_options");
        }
        let send = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let request = template.with_body(send);
        let shared = std::sync::Arc::clone(&exchange.shared);
        self.upstream = None;
        self.reask = Some(Box::pin(async move {
            tokio::time::timeout(timeout, call_json(shared, request))
                .await
                .unwrap_or(Err(UpstreamErrorKind::FirstByteTimeout))
        }));
        true
    }

    /// A re-ask finished: let the stream guard decide what to send.
    fn on_reask(&mut self, result: Result<UpstreamCompletion, UpstreamErrorKind>) {
        let started = std::time::Instant::now();
        if let Err(kind) = &result {
            self.exchange().shared.metrics.upstream_error(*kind);
        }
        let reply = match &result {
            Ok(c) => UpstreamReply::Completion(c),
            Err(kind) => UpstreamReply::Failed(*kind),
        };
        let action = match self.guard.as_mut() {
            Some(guard) => {
                let meta = self.meta.get_or_insert_with(ChunkMeta::default);
                let exchange = self.exchange.as_mut().expect("live");
                guard.on_reask(&mut exchange.state, self.attempt, reply, meta)
            }
            None => EndAction::Release,
        };
        self.apply_end(action);
        self.exchange().overhead += started.elapsed();
    }

    /// The upstream sent `[DONE]` (its bytes in `done`).
    fn finish_upstream(&mut self, done: Bytes) {
        self.phase = Phase::Draining;
        self.end_stream(StreamEnd::Done, vec![done]);
    }

    /// The upstream failed mid-stream: error event, `[DONE]`, cancel.
    fn fail(&mut self, kind: UpstreamErrorKind) {
        self.exchange().shared.metrics.upstream_error(kind);
        self.upstream = None;
        self.phase = Phase::Finished;
        self.outcome = ExchangeOutcome::UpstreamFailed(kind);
        let tail = vec![
            ProxyError::from_stream_failure(kind).sse_event(),
            Bytes::from_static(sse::DONE),
        ];
        self.end_stream(StreamEnd::Failed(kind), tail);
    }
}

/// Extends the current run of forwarded events with `r`, or starts a new one.
fn push_run(
    run: &mut Option<Range<usize>>,
    r: Range<usize>,
    src: &Bytes,
    out: &mut VecDeque<Bytes>,
) {
    match run {
        Some(cur) if cur.end == r.start => cur.end = r.end,
        _ => {
            flush(run, src, out);
            *run = Some(r);
        }
    }
}

fn flush(run: &mut Option<Range<usize>>, src: &Bytes, out: &mut VecDeque<Bytes>) {
    if let Some(r) = run.take() {
        out.push_back(src.slice(r));
    }
}

impl Body for GuardedSse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(reask) = this.reask.as_mut() {
                if !this.out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.take_out()))));
                }
                let result = std::task::ready!(reask.as_mut().poll(cx));
                this.reask = None;
                this.on_reask(result);
                continue;
            }
            if this.flush_first {
                this.flush_first = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !this.sent_any && !this.out.is_empty() {
                this.flush_first = true;
                return Poll::Ready(Some(Ok(Frame::data(this.take_out()))));
            }
            let Some(upstream) = this.upstream.as_mut() else {
                if !this.out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.take_out()))));
                }
                this.phase = Phase::Finished;
                if let Some(exchange) = this.take_exchange() {
                    exchange.finish(true, this.outcome);
                }
                return Poll::Ready(None);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(frame) => {
                    this.yielded = 0;
                    if frame.is_none() && this.phase == Phase::Draining {
                        this.upstream = None;
                        this.phase = Phase::Finished;
                        continue;
                    }
                    let now = Instant::now();
                    this.last_frame = now;
                    this.on_upstream(frame, now.into_std());
                    if this.unflushed >= COALESCE_LIMIT {
                        this.checkpoint();
                    }
                    if this.out_len() >= COALESCE_LIMIT {
                        return Poll::Ready(Some(Ok(Frame::data(this.take_out()))));
                    }
                }
                Poll::Pending if !this.out.is_empty() || this.unflushed > 0 => {
                    // The upstream connection task hands over one chunk per wake-up. Yield once
                    // so it can pass on what is already buffered, and send everything that
                    // arrived in one write instead of one write per event (and let the stream
                    // guard check it in one go).
                    if this.yielded < MAX_YIELDS {
                        this.yielded += 1;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    this.yielded = 0;
                    this.checkpoint();
                    if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(this.take_out()))));
                    }
                }
                Poll::Pending => {
                    // The timer is reset lazily: only when it fires is the real deadline checked.
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let deadline = this.last_frame + this.chunk_timeout;
                    if deadline > Instant::now() {
                        this.sleep.as_mut().reset(deadline);
                        continue;
                    }
                    if this.phase == Phase::Draining {
                        this.upstream = None;
                        this.phase = Phase::Finished;
                    } else {
                        this.fail(UpstreamErrorKind::ChunkTimeout);
                    }
                }
            }
        }
    }
}

impl Drop for GuardedSse {
    fn drop(&mut self) {
        if let Some(exchange) = self.take_exchange() {
            // The client went away before the end: dropping `upstream` cancels the upstream call.
            exchange.finish(true, ExchangeOutcome::ClientDisconnected);
        }
    }
}
