//! Flow control (issue 17), end to end on the manual clock: an endpoint's
//! rate limit, `Retry-After` pausing the whole endpoint, and congestion
//! slowing it down and successes bringing it back.

use std::time::Duration;

use hookline::domain::time::Timestamp;
use serde_json::{Value, json};

use crate::common::{Receiver, Reply, TestServer};

/// The clock moves in steps this long while a throttle paces attempts.
const STEP: Duration = Duration::from_millis(100);

fn millis(v: &Value) -> i64 {
    Timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap().as_millis()
}

/// The most attempts that started within any one second.
fn busiest_second(attempts: &[Value]) -> usize {
    let mut starts: Vec<i64> = attempts.iter().map(|a| millis(&a["timestamp"])).collect();
    starts.sort_unstable();
    (0..starts.len())
        .map(|i| starts[i..].iter().take_while(|t| **t < starts[i] + 1000).count())
        .max()
        .unwrap_or(0)
}

async fn app(t: &TestServer, body: Value) -> String {
    let (status, app) = t.post("/api/v1/app", body).await;
    assert_eq!(status, 201, "{app}");
    app["id"].as_str().unwrap().to_owned()
}

async fn flow(t: &TestServer, app: &str, ep: &str) -> Value {
    t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/flow")).await
}

/// Acceptance 17.1: `throttleRate` 10 and 1,000 messages: no second holds
/// more than 10 starts plus the burst (one), and all arrive; an endpoint
/// without a rate of its own takes its application's (5/s here).
#[tokio::test]
async fn a_throttled_endpoint_starts_at_most_its_rate_and_gets_everything() {
    let t = TestServer::with_manual_clock().await;
    let (own_rx, inherited_rx) =
        (Receiver::start(Reply::Status(200, "")).await, Receiver::start(Reply::Status(200, "")).await);
    let app = app(&t, json!({"name": "paced", "throttleRate": 5})).await;
    let own = t.endpoint(&app, json!({"url": own_rx.url, "throttleRate": 10, "channels": ["own"]})).await;
    let inherited = t.endpoint(&app, json!({"url": inherited_rx.url, "channels": ["inherited"]})).await;
    for i in 0..1000 {
        t.send_message(&app, json!({"payload": {"i": i}, "channels": ["own"]})).await;
    }
    for i in 0..50 {
        t.send_message(&app, json!({"payload": {"i": i}, "channels": ["inherited"]})).await;
    }
    // Nothing more than the burst went before the clock moved.
    let view = flow(&t, &app, &own).await;
    assert_eq!(
        (view["throttleRate"].as_u64(), view["allowedRate"].as_f64()),
        (Some(10), Some(10.0)),
        "{view}"
    );
    assert!(view["waiting"].as_u64().unwrap() > 900, "the rest waits in the store: {view}");
    assert_eq!(flow(&t, &app, &inherited).await["throttleRate"], 5);
    assert_eq!((own_rx.count(), inherited_rx.count()), (1, 1));

    // Each step lets one more start to `own` (10/s) and, every other step,
    // one to `inherited` (5/s): each receiver gets exactly that pace.
    for steps in 1..=999 {
        t.clock().advance(STEP);
        own_rx.wait_for(1 + steps).await;
        inherited_rx.wait_for((1 + steps / 2).min(50)).await;
    }
    assert_eq!((own_rx.count(), inherited_rx.count()), (1000, 50));

    let paced = crate::common::eventually("1,000 attempts recorded", || async {
        let all = t.all_attempts_to_endpoint(&app, &own).await;
        (all.len() >= 1000).then_some(all)
    })
    .await;
    assert_eq!(paced.len(), 1000);
    assert!(paced.iter().all(|a| a["status"] == 0), "every attempt succeeded");
    assert!(busiest_second(&paced) <= 11, "at most 10/s plus a burst of 1: {}", busiest_second(&paced));
    let inherited = crate::common::eventually("50 attempts recorded", || async {
        let all = t.all_attempts_to_endpoint(&app, &inherited).await;
        (all.len() >= 50).then_some(all)
    })
    .await;
    assert_eq!(inherited.len(), 50);
    assert!(busiest_second(&inherited) <= 6, "the application's 5/s: {}", busiest_second(&inherited));
}

/// Acceptance 17.2: one answer with `Retry-After` pauses the whole
/// endpoint; another endpoint of the application keeps receiving; once the
/// pause is over everything arrives, and no message was charged an attempt
/// for waiting.
async fn a_retry_after_pauses_the_whole_endpoint(pause: impl FnOnce(Timestamp) -> Reply) {
    let t = TestServer::with_manual_clock().await;
    let paused = Receiver::start(Reply::Status(200, "")).await;
    paused.script([pause(hookline::clock::Clock::now(t.clock()))]);
    let other = Receiver::start(Reply::Status(200, "")).await;
    let app = app(&t, json!({"name": "pausing"})).await;
    let policy = json!({"schedule": [5, 5]});
    let ep = t.endpoint(&app, json!({"url": paused.url, "retryPolicy": policy})).await;
    t.endpoint(&app, json!({"url": other.url})).await;

    let first = t.send(&app, json!({"n": 0})).await;
    t.wait_attempts_to(&app, &first, Some(&ep), 1).await;
    let view = flow(&t, &app, &ep).await;
    assert!(view["pausedUntil"].is_string() && view["pauseReason"].is_string(), "{view}");
    let metrics = t.http.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nhookline_endpoints_paused 1\n"), "{metrics}");
    let mut sent = vec![first];
    for s in 1..30 {
        t.clock().advance(Duration::from_secs(1));
        sent.push(t.send(&app, json!({"n": s})).await);
        // The other endpoint got this second's message: the dispatcher ran.
        other.wait_for(s + 1).await;
        assert_eq!(paused.count(), 1, "a request reached the paused endpoint {s} s into a 30 s pause");
    }
    t.clock().advance(Duration::from_secs(2));
    paused.wait_for(31).await;
    for (n, msg) in sent.iter().enumerate() {
        t.wait_status(&app, msg, &ep, "success").await;
        let attempts = t.attempts_to(&app, msg, Some(&ep)).await;
        let expected = if n == 0 { 2 } else { 1 };
        assert_eq!(attempts.len(), expected, "message {n} was charged for the pause: {attempts:?}");
    }
    assert!(flow(&t, &app, &ep).await["pausedUntil"].is_null());
    let metrics = t.http.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nhookline_endpoints_paused 0\n"), "{metrics}");
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_pauses_the_endpoint() {
    a_retry_after_pauses_the_whole_endpoint(|_| Reply::Headers(429, &[("retry-after", "30")])).await;
}

#[tokio::test]
async fn a_503_with_an_http_date_pauses_the_endpoint() {
    a_retry_after_pauses_the_whole_endpoint(|now| {
        // Whole seconds: the date is 30 s from now, rounded up.
        let until = Timestamp::from_millis((now.as_millis() / 1000 + 31) * 1000).to_datetime();
        let date: &'static str =
            Box::leak(until.format("%a, %d %b %Y %H:%M:%S GMT").to_string().into_boxed_str());
        let headers: &'static [(&str, &str)] = Box::leak(Box::new([("retry-after", date)]));
        Reply::Headers(503, headers)
    })
    .await;
}

/// Acceptance 17.3: a receiver answering 503 (no `Retry-After`) to half of
/// the requests: the endpoint's allowed rate falls; once it answers 200
/// again, successes raise it back to unlimited within a bounded time.
#[tokio::test]
async fn congestion_slows_the_endpoint_and_successes_restore_it() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    // Every message's first attempt gets a 503: half of all requests.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let (seen, failing) = (seen.clone(), failing.clone());
        rx.rule(move |payload| {
            let first = seen.lock().unwrap().insert(payload["i"].as_u64());
            (failing.load(std::sync::atomic::Ordering::SeqCst) && first).then_some(Reply::Status(503, "busy"))
        });
    }
    let app = app(&t, json!({"name": "congested"})).await;
    let ep =
        t.endpoint(&app, json!({"url": rx.url, "retryPolicy": {"schedule": [1, 1, 1, 1, 1, 1, 1, 1]}})).await;
    assert!(flow(&t, &app, &ep).await["allowedRate"].is_null(), "unlimited to begin with");

    let mut next = 0;
    let mut sent = Vec::new();
    let mut lowest = f64::MAX;
    // Congested: ten messages a second for 20 s.
    for _ in 0..200 {
        sent.push(t.send_message(&app, json!({"payload": {"i": next}})).await);
        next += 1;
        t.clock().advance(STEP);
        let view = flow(&t, &app, &ep).await;
        if let Some(rate) = view["allowedRate"].as_f64() {
            assert_eq!(view["backingOff"], true, "{view}");
            lowest = lowest.min(rate);
        }
    }
    assert!(lowest <= 5.0, "the allowed rate fell well below the offered 10/s: {lowest}");

    // Healthy again: the rate climbs back to unlimited, within 60 s.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut recovered_after = None;
    for step in 1..=600 {
        sent.push(t.send_message(&app, json!({"payload": {"i": next}})).await);
        next += 1;
        t.clock().advance(STEP);
        let view = flow(&t, &app, &ep).await;
        if view["allowedRate"].is_null() && view["backingOff"] == false {
            recovered_after = Some(step);
            break;
        }
    }
    let steps = recovered_after.expect("back to unlimited within 60 s of healthy answers");
    eprintln!(
        "congestion: allowed rate fell to {lowest}/s; unlimited again {:.1} s after answers turned healthy",
        steps as f64 / 10.0
    );

    // Nothing was lost on the way: every message succeeds in the end.
    for _ in 0..20 {
        t.clock().advance(Duration::from_secs(1));
    }
    for msg in &sent {
        t.wait_status(&app, msg, &ep, "success").await;
    }
}

crate::common::on_postgres!(
    a_throttled_endpoint_starts_at_most_its_rate_and_gets_everything,
    a_429_with_retry_after_seconds_pauses_the_endpoint,
    a_503_with_an_http_date_pauses_the_endpoint,
    congestion_slows_the_endpoint_and_successes_restore_it
);
