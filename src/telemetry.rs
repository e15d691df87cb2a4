//! Metrics: what Hookline measures, and the Prometheus recorder behind
//! `GET /metrics`.
//!
//! Per-endpoint series are capped ([`ENDPOINT_LABELS`]) so a tenant with
//! thousands of endpoints cannot blow up the number of series; failures of
//! endpoints past the cap are counted under `endpoint="other"`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const ENDPOINT_LABELS: usize = 100;
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
    86_400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static LABELLED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();

/// Install the process-wide recorder (once; later calls share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("hookline_messages_ingested_total", "Messages accepted by the API");
    metrics::describe_counter!("hookline_attempts_total", "Delivery attempts by outcome and trigger");
    metrics::describe_counter!("hookline_endpoint_failures_total", "Failed attempts per endpoint (capped)");
    metrics::describe_counter!(
        "hookline_endpoints_disabled_total",
        "Endpoints disabled by Hookline, by reason"
    );
    metrics::describe_counter!(
        "hookline_retention_erased_total",
        "Payloads and response bodies erased by retention, by kind"
    );
    metrics::describe_counter!(
        "hookline_retention_deleted_total",
        "Records deleted by record retention, by table (messages, deliveries, attempts)"
    );
    metrics::describe_histogram!("hookline_attempt_duration_seconds", "Duration of one HTTP attempt");
    metrics::describe_histogram!(
        "hookline_delivery_latency_seconds",
        "From message accepted to successful delivery"
    );
}

/// The gauges read at scrape time from the server being scraped (not kept
/// in the process-wide recorder, which several in-process servers share).
pub struct Load {
    pub in_flight: usize,
    pub queued: usize,
    pub pending: u64,
    pub paused_endpoints: u64,
    pub backing_off_endpoints: u64,
    pub parked_deliveries: u64,
    pub held_deliveries: u64,
}

/// Prometheus text exposition of everything recorded so far, and `load`.
pub fn render(load: &Load) -> String {
    let mut text = HANDLE.get().map(PrometheusHandle::render).unwrap_or_default();
    let f = load;
    let gauges: [(&str, &str, f64); 7] = [
        ("hookline_dispatch_in_flight", "Attempts in flight", load.in_flight as f64),
        ("hookline_dispatch_queued", "Attempts queued in memory behind endpoint limits", load.queued as f64),
        ("hookline_pending_deliveries", "Deliveries waiting for an attempt or a retry", load.pending as f64),
        (
            "hookline_endpoints_paused",
            "Endpoints paused by their receiver (Retry-After)",
            f.paused_endpoints as f64,
        ),
        (
            "hookline_endpoints_backing_off",
            "Endpoints slowed down after congestion (429/502/503/504, timeouts)",
            f.backing_off_endpoints as f64,
        ),
        (
            "hookline_deliveries_parked",
            "Deliveries waiting for their endpoint's rate limit or pause",
            f.parked_deliveries as f64,
        ),
        (
            "hookline_deliveries_held",
            "Deliveries held behind an earlier message of their ordering key",
            f.held_deliveries as f64,
        ),
    ];
    for (name, help, value) in gauges {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
    }
    text
}

/// Housekeeping the exporter needs now and then.
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

pub fn message_ingested() {
    counter!("hookline_messages_ingested_total").increment(1);
}

pub fn attempt(delivered: bool, manual: bool, duration: Duration, endpoint_id: &str) {
    let outcome = if delivered { "success" } else { "failure" };
    let trigger = if manual { "manual" } else { "scheduled" };
    counter!("hookline_attempts_total", "outcome" => outcome, "trigger" => trigger).increment(1);
    histogram!("hookline_attempt_duration_seconds").record(duration.as_secs_f64());
    if !delivered {
        counter!("hookline_endpoint_failures_total", "endpoint" => endpoint_label(endpoint_id)).increment(1);
    }
}

fn endpoint_label(endpoint_id: &str) -> String {
    let mut labelled = LABELLED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if labelled.contains(endpoint_id) || labelled.len() < ENDPOINT_LABELS {
        labelled.insert(endpoint_id.to_owned());
        endpoint_id.to_owned()
    } else {
        "other".to_owned()
    }
}

pub fn delivered(latency: Duration) {
    histogram!("hookline_delivery_latency_seconds").record(latency.as_secs_f64());
}

pub fn endpoint_disabled(automatic: bool) {
    let reason = if automatic { "failing" } else { "receiver" };
    counter!("hookline_endpoints_disabled_total", "reason" => reason).increment(1);
}

/// What a retention run erased and deleted.
pub fn retention(payloads: u64, bodies: u64, messages: u64, deliveries: u64, attempts: u64) {
    counter!("hookline_retention_erased_total", "kind" => "payload").increment(payloads);
    counter!("hookline_retention_erased_total", "kind" => "response_body").increment(bodies);
    counter!("hookline_retention_deleted_total", "table" => "messages").increment(messages);
    counter!("hookline_retention_deleted_total", "table" => "deliveries").increment(deliveries);
    counter!("hookline_retention_deleted_total", "table" => "attempts").increment(attempts);
}
