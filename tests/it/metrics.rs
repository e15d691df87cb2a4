//! Metrics: `/metrics` is Prometheus text and its counters move.

use std::collections::HashMap;

use serde_json::json;

use crate::common::{Receiver, Reply, TestServer, eventually};

/// Parse the text exposition format strictly enough to catch a broken
/// exposition: every sample line is `name{labels} value`, every `# TYPE`
/// names a known type, every value is a number.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kind = rest.split_whitespace().nth(1).expect("a type");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unknown comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(t: &TestServer) -> HashMap<String, f64> {
    let resp = t.http.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    parse(&resp.text().await.unwrap())
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_as_messages_are_sent_and_fail() {
    let t = TestServer::start().await;
    let ok = Receiver::start(Reply::Status(200, "")).await;
    let bad = Receiver::start(Reply::Status(500, "")).await;
    let (ok_app, _) = t.app_with_endpoint(&ok.url, json!({})).await;
    let (bad_app, bad_ep) = t.app_with_endpoint(&bad.url, json!({"retryPolicy": {"schedule": []}})).await;

    // Other tests share the process-wide recorder: compare before and after.
    let before = scrape(&t).await;
    for _ in 0..2 {
        t.send(&ok_app, json!({})).await;
    }
    for _ in 0..3 {
        t.send(&bad_app, json!({})).await;
    }
    ok.wait_for(2).await;
    bad.wait_for(3).await;
    let failures = format!("hookline_endpoint_failures_total{{endpoint=\"{bad_ep}\"}}");
    let after = eventually("the attempts to be counted", || async {
        let now = scrape(&t).await;
        (get(&now, &failures) >= 3.0).then_some(now)
    })
    .await;

    let delta = |series: &str| get(&after, series) - get(&before, series);
    assert!(delta("hookline_messages_ingested_total") >= 5.0);
    assert!(delta("hookline_attempts_total{outcome=\"success\",trigger=\"scheduled\"}") >= 2.0);
    assert!(delta("hookline_attempts_total{outcome=\"failure\",trigger=\"scheduled\"}") >= 3.0);
    assert_eq!(get(&after, &failures), 3.0, "exactly this endpoint's failures");
    assert!(after.keys().any(|k| k.starts_with("hookline_delivery_latency_seconds_bucket")));
    assert!(after.keys().any(|k| k.starts_with("hookline_attempt_duration_seconds_count")));
}

#[test]
fn the_parser_rejects_broken_expositions() {
    assert!(std::panic::catch_unwind(|| parse("metric{a=\"b\" 1")).is_err());
    assert!(std::panic::catch_unwind(|| parse("metric one")).is_err());
    assert!(std::panic::catch_unwind(|| parse("# TYPE m bogus")).is_err());
    assert_eq!(parse("# HELP m x\n# TYPE m counter\nm{a=\"b\"} 2")["m{a=\"b\"}"], 2.0);
}

/// The load gauges are read when scraped, from the scraped server: three
/// attempts held by a silent receiver show at once, not seconds later.
#[tokio::test]
async fn load_gauges_are_exact_at_scrape_time() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Hang).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({})).await;
    let idle = scrape(&t).await;
    assert_eq!(get(&idle, "hookline_dispatch_in_flight"), 0.0);
    assert_eq!(get(&idle, "hookline_pending_deliveries"), 0.0);
    for _ in 0..3 {
        t.send(&app, json!({})).await;
    }
    rx.wait_for(3).await;
    let busy = scrape(&t).await;
    assert_eq!(get(&busy, "hookline_dispatch_in_flight"), 3.0);
    assert_eq!(get(&busy, "hookline_dispatch_queued"), 0.0);
    assert_eq!(get(&busy, "hookline_pending_deliveries"), 3.0);
}
