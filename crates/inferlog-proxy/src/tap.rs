//! [`TapBody`]: the response body on its way from the upstream to the client. Every frame is
//! passed on as soon as it arrives; a copy of the first `max_payload_bytes` is kept aside.
//! When the body ends, fails, or is dropped because the client went away, the record is
//! completed and submitted to capture exactly once.
//!
//! In `sync`/`fsync` durability the client must not see a complete response before its
//! record is in the log: the end of a chunked body, or the last data frame of a body with a
//! known length, is held back until the log acknowledges the record.
//!
//! A `text/event-stream` response is also fed, frame by frame, to a
//! [`StreamAssembler`](inferlog_core::llm::StreamAssembler): the record gets the raw stream in
//! `response_stream`, the assembled answer in `response`, the time to the first output, the
//! chunk count, token usage and how the stream ended.

use crate::record::set_response;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use inferlog_capture::{CaptureHandle, SubmitOutcome};
use inferlog_core::llm::StreamAssembler;
use inferlog_core::record::StreamStatus;
use inferlog_core::Record;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use std::sync::Arc;
use crate::budget::{MemoryBudget, Reservation};
use tokio::sync::oneshot;

/// The record of an exchange whose response is still streaming.
pub struct InFlight {
    pub record: Record,
    pub handle: CaptureHandle,
    pub limit: usize,
    pub received_at: Instant,
    pub forwarded_at: Instant,
    pub body: Vec<u8>,
    pub total: u64,
    /// Set for `text/event-stream` responses.
    pub stream: Option<StreamAssembler>,
    /// The error recorded when the body is dropped before its end.
    pub cancelled_because: &'static str,
    /// For endpoints that offload oversize bodies: what may be kept beyond `max_payload_bytes`.
    pub oversize: Option<OversizeAllowance>,
    /// `inferlog_llm_time_to_first_token_seconds` of the endpoint (none for a shadow).
    pub time_to_first_token: Option<metrics::Histogram>,
}

/// Times a client's exchange from the arrival of its request to the end of the response
/// body (`inferlog_exchange_duration_seconds`), however the body ends.
pub struct ExchangeTimer {
    pub received_at: Instant,
    pub histogram: metrics::Histogram,
}

impl ExchangeTimer {
    pub fn stop(self) {
        self.histogram.record(self.received_at.elapsed().as_secs_f64());
    }
}

/// Keeping a body beyond `inline_max` takes from the gateway's [`MemoryBudget`]; the
/// reservation (the request's, grown by the response's) goes when the record is submitted.
pub struct OversizeAllowance {
    pub inline_max: usize,
    pub budget: Arc<MemoryBudget>,
    pub reservation: Option<Reservation>,
}

impl OversizeAllowance {
    pub fn new(inline_max: usize, budget: Arc<MemoryBudget>) -> Self {
        OversizeAllowance { inline_max, budget, reservation: None }
    }

    /// Whether `bytes` more may be held; counted when they may not.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let granted = match self.reservation.as_mut() {
            Some(reservation) => reservation.grow(bytes),
            None => {
                self.reservation = self.budget.reserve(bytes);
                self.reservation.is_some()
            }
        };
        if !granted {
            metrics::counter!("inferlog_capture_offload_budget_exhausted_total").increment(1);
        }
        granted
    }
}

/// How a response body ended.
pub(crate) enum BodyEnd {
    Completed,
    /// The client went away first.
    Cancelled,
    /// The upstream's body failed.
    Broken(String),
}

impl InFlight {
    fn observe(&mut self, data: &Bytes) {
        self.total += data.len() as u64;
        let mut keep = data.len().min(self.limit.saturating_sub(self.body.len()));
        if let Some(allowance) = self.oversize.as_mut() {
            let beyond = (self.body.len() + keep).saturating_sub(allowance.inline_max.max(self.body.len()));
            // Twice: the bytes kept here, and their text in the record when it is completed.
            if beyond > 0 && !allowance.grow(2 * beyond) {
                // The budget is spent: from here on the body is kept as `truncate` keeps it.
                self.limit = allowance.inline_max.max(self.body.len());
                keep = self.limit - self.body.len();
            }
        }
        if keep > 0 {
            self.body.extend_from_slice(&data[..keep]);
        }
        if let Some(stream) = self.stream.as_mut() {
            stream.feed(data);
            if self.record.time_to_first_token_ms.is_none() && stream.output_seen() {
                let elapsed = self.received_at.elapsed();
                self.record.time_to_first_token_ms = Some(elapsed.as_millis() as i64);
                if let Some(histogram) = &self.time_to_first_token {
                    histogram.record(elapsed.as_secs_f64());
                }
            }
        }
    }

    /// Completes the record and submits it.
    pub(crate) fn finish(mut self, end: BodyEnd) -> SubmitOutcome {
        let now = Instant::now();
        let limit = self.limit;
        let total = self.total;
        set_response(&mut self.record, &self.body, total, limit);
        self.record.execution_time_ms = Some(now.duration_since(self.forwarded_at).as_millis() as i64);
        self.record.latency_ms = now.duration_since(self.received_at).as_millis() as i64;
        if let Some(stream) = self.stream.take() {
            let assembled = stream.finish();
            let r = &mut self.record;
            r.response_stream = r.response.take();
            r.response = assembled.response;
            r.stream_chunks = Some(assembled.chunks);
            r.prompt_tokens = assembled.usage.prompt_tokens;
            r.completion_tokens = assembled.usage.completion_tokens;
            r.total_tokens = assembled.usage.total_tokens;
            r.llm_model = assembled.model;
            r.stream_status = Some(match end {
                BodyEnd::Completed => StreamStatus::Completed,
                BodyEnd::Cancelled => StreamStatus::Cancelled,
                BodyEnd::Broken(_) => StreamStatus::Broken,
            });
            if assembled.cut && !r.logging_error_codes.iter().any(|c| c == inferlog_core::record::MAX_RESPONSE_SIZE_EXCEEDED) {
                r.logging_error_codes.push(inferlog_core::record::MAX_RESPONSE_SIZE_EXCEEDED.to_string());
            }
        }
        match end {
            BodyEnd::Completed => {}
            BodyEnd::Cancelled => self.record.error = Some(self.cancelled_because.to_string()),
            BodyEnd::Broken(e) => self.record.error = Some(e),
        }
        self.handle.submit(self.record)
    }
}

pub struct TapBody {
    inner: Incoming,
    capture: Option<InFlight>,
    timer: Option<ExchangeTimer>,
    hold_back: bool,
    expected_len: Option<u64>,
    seen: u64,
    held: Option<Frame<Bytes>>,
    waiting: Option<oneshot::Receiver<()>>,
    ended: bool,
}

impl TapBody {
    pub fn new(inner: Incoming, capture: Option<InFlight>, hold_back: bool, timer: Option<ExchangeTimer>) -> Self {
        let expected_len = inner.size_hint().exact();
        TapBody {
            inner,
            capture,
            timer,
            hold_back,
            expected_len,
            seen: 0,
            held: None,
            waiting: None,
            ended: false,
        }
    }

    /// Completes capture; in hold-back mode remembers what to wait for.
    fn finish(&mut self, end: BodyEnd) {
        if let Some(timer) = self.timer.take() {
            timer.stop();
        }
        if let Some(inflight) = self.capture.take() {
            if let SubmitOutcome::AwaitLog(rx) = inflight.finish(end) {
                if self.hold_back {
                    self.waiting = Some(rx);
                }
            }
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(rx) = this.waiting.as_mut() {
                // Whether the log took the record or failed, the response goes on.
                if Pin::new(rx).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.waiting = None;
            }
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.seen += data.len() as u64;
                        if let Some(c) = this.capture.as_mut() {
                            c.observe(data);
                        }
                    }
                    // The server stops polling a sized body once it has all its bytes, so its
                    // end is seen here, not as a final `None`.
                    let complete = this.expected_len == Some(this.seen) || this.inner.is_end_stream();
                    if complete && (this.capture.is_some() || this.timer.is_some()) {
                        this.ended = true;
                        this.finish(BodyEnd::Completed);
                        if this.waiting.is_some() {
                            // Release the last bytes after the log has the record.
                            this.held = Some(frame);
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.finish(BodyEnd::Broken(format!("upstream response body failed: {e}")));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.finish(BodyEnd::Completed);
                    continue;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_none() && self.waiting.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.expected_len {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.seen) + self.held.as_ref().and_then(|f| f.data_ref()).map_or(0, |d| d.len() as u64)),
            None => self.inner.size_hint(),
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.stop();
        }
        if let Some(inflight) = self.capture.take() {
            // The client went away before the response was complete: still recorded.
            let _ = inflight.finish(BodyEnd::Cancelled);
        }
    }
}

