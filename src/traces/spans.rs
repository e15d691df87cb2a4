//! The spans Hookline makes, each with `trace_id` and `span_id` fields so
//! every log line inside one says which trace it belongs to. All of them
//! are [`Span::none`] while traces are off.
//!
//! | span | parent |
//! |---|---|
//! | `HTTP <method> <route>`, every API and dashboard request | the caller's `traceparent`, if any |
//! | `ingest`, the message's commit | the request |
//! | `attempt`, one per HTTP attempt (scheduled, retry, manual resend, replay) | the context stored with the message |
//! | `claim`, one per batch the scheduler claims | none (a root) |

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{Status, TraceContextExt};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{context, on};
use crate::domain::model::{Attempt, Endpoint, Message, Trigger};

/// Axum middleware: a server span per request, continuing the caller's
/// trace. (Requests run inside it, so a message created here stores it.)
pub async fn http_request(req: Request, next: Next) -> Response {
    if !on() {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    let _ = span.set_parent(context::from_headers(req.headers()));
    record_ids(&span);
    let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    response
}

/// The commit of a new message and its deliveries.
pub fn ingest(app_ref: &str, event_type: &str) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "ingest",
        hookline.app = %app_ref,
        hookline.event_type = %event_type,
        hookline.msg_id = Empty,
        hookline.deliveries = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    record_ids(&span);
    span
}

/// What the ingest commit created.
pub fn ingested(span: &Span, msg_id: &str, deliveries: usize) {
    span.record("hookline.msg_id", msg_id);
    span.record("hookline.deliveries", deliveries);
}

/// One HTTP attempt of a delivery, in the trace its message was created in.
pub fn attempt(message: &Message, endpoint: &Endpoint, trigger: Trigger) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "attempt",
        otel.name = "webhook attempt",
        otel.kind = "client",
        hookline.app_id = %message.app_id,
        hookline.endpoint_id = %endpoint.id,
        hookline.msg_id = %message.id,
        hookline.event_type = %message.event_type,
        hookline.trigger = if trigger == Trigger::Manual { "manual" } else { "scheduled" },
        hookline.attempt = Empty,
        hookline.duration_ms = Empty,
        http.response.status_code = Empty,
        error.message = Empty,
        url.full = %endpoint.url,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some(stored) = &message.trace {
        let _ = span.set_parent(context::to_context(stored));
    }
    record_ids(&span);
    span
}

/// What the attempt came to; `number` is the delivery's scheduled attempt
/// count after it (manual attempts do not count).
pub fn attempt_done(span: &Span, attempt: &Attempt, number: Option<u32>) {
    if span.is_none() {
        return;
    }
    if let Some(n) = number {
        span.record("hookline.attempt", n);
    }
    span.record("hookline.duration_ms", attempt.duration_ms);
    if attempt.status_code != 0 {
        span.record("http.response.status_code", attempt.status_code);
    }
    match &attempt.error {
        Some(e) => {
            span.record("error.message", e.as_str());
            span.set_status(Status::error(e.clone()));
        }
        None if attempt.status != crate::domain::model::DeliveryStatus::Success => {
            span.set_status(Status::error(format!("HTTP {}", attempt.status_code)));
        }
        None => {}
    }
}

/// One batch claimed by the scheduler.
pub fn claim(limit: usize) -> Span {
    if !on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "claim",
        hookline.limit = limit,
        hookline.claimed = Empty,
        trace_id = Empty,
        span_id = Empty
    );
    record_ids(&span);
    span
}

pub fn claimed(span: &Span, n: usize) {
    span.record("hookline.claimed", n);
}

/// Put the span's ids in its fields, for the log lines inside it.
fn record_ids(span: &Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}
