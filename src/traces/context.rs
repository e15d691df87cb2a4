//! W3C trace context in and out: what a message is created in (stored
//! with it, so attempts hours later still join that trace) and what each
//! webhook carries (`traceparent`, `tracestate`), so the receiver's trace
//! continues it.
//!
//! Parsing and formatting are the OpenTelemetry propagator's; this module
//! only decides which context applies.

use std::collections::HashMap;

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::model::TraceContext;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The remote context described by request headers (invalid if none).
pub fn from_headers(headers: &HeaderMap) -> Context {
    let carrier: HashMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), headers.get(name)?.to_str().ok()?.to_owned())))
        .collect();
    if carrier.is_empty() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The stored form of a context carrying a valid span.
fn to_stored(cx: &Context) -> Option<TraceContext> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    Some(TraceContext {
        traceparent: carrier.remove(TRACEPARENT)?,
        tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
    })
}

/// The remote context a stored one describes.
pub fn to_context(stored: &TraceContext) -> Context {
    let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), stored.traceparent.clone())]);
    if let Some(state) = &stored.tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.clone());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// What a new message stores: the span it is being created in when traces
/// are on (the API request, itself a child of the caller's span), else the
/// caller's own context from the request headers, if well-formed. Either
/// way its attempts join the caller's trace.
pub fn for_new_message(headers: &HeaderMap) -> Option<TraceContext> {
    if super::on()
        && let Some(current) = to_stored(&tracing::Span::current().context())
    {
        return Some(current);
    }
    headers.get(TRACEPARENT)?;
    to_stored(&from_headers(headers))
}

/// The context of whatever span is current, if traces are on (messages
/// Hookline creates itself, like an endpoint's example event).
pub fn current() -> Option<TraceContext> {
    if !super::on() {
        return None;
    }
    to_stored(&tracing::Span::current().context())
}

/// What a webhook carries: the attempt span's own context when traces are
/// on; otherwise, for a message created in a trace, a child of that
/// context with a fresh span id (the receiver's spans land in the sender's
/// trace, under a span nobody exported); otherwise nothing.
pub fn outgoing(attempt: &tracing::Span, stored: Option<&TraceContext>) -> Option<TraceContext> {
    if super::on()
        && let Some(own) = to_stored(&attempt.context())
    {
        return Some(own);
    }
    let parent = to_context(stored?);
    let sc = parent.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let child = SpanContext::new(
        sc.trace_id(),
        SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes()),
        sc.trace_flags(),
        true,
        sc.trace_state().clone(),
    );
    to_stored(&Context::new().with_remote_span_context(child))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_well_formed_traceparent_is_kept_with_its_state() {
        let stored = for_new_message(&headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "vendor=x")])).unwrap();
        assert_eq!(stored, TraceContext { traceparent: PARENT.into(), tracestate: Some("vendor=x".into()) });
        assert!(to_context(&stored).span().span_context().is_valid());
    }

    #[test]
    fn malformed_or_missing_traceparents_are_ignored() {
        assert_eq!(for_new_message(&headers(&[])), None);
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(for_new_message(&headers(&[(TRACEPARENT, bad)])), None, "{bad}");
        }
    }

    #[test]
    fn without_traces_the_webhook_continues_the_stored_trace_under_a_fresh_span() {
        let stored = TraceContext { traceparent: PARENT.into(), tracestate: Some("vendor=x".into()) };
        let out = outgoing(&tracing::Span::none(), Some(&stored)).unwrap();
        let parts: Vec<&str> = out.traceparent.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_ne!(parts[2], "00f067aa0ba902b7", "its own span id");
        assert_eq!(parts[3], "01", "the sampling decision is kept");
        assert_eq!(out.tracestate.as_deref(), Some("vendor=x"));
        assert_eq!(outgoing(&tracing::Span::none(), None), None);
    }
}
