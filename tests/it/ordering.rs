//! Ordered delivery (issue 18), end to end on the manual clock: keys in
//! order and in parallel, a failing head holding back only its own key,
//! blocking and skipping, FIFO endpoints.

use std::time::Duration;

use serde_json::json;

use crate::common::{Receiver, Reply, TestServer};

async fn app(t: &TestServer) -> String {
    let (status, app) = t.post("/api/v1/app", json!({"name": "ordered"})).await;
    assert_eq!(status, 201, "{app}");
    app["id"].as_str().unwrap().to_owned()
}

async fn send_keyed(t: &TestServer, app: &str, key: &str, n: u64) -> String {
    t.send_message(app, json!({"payload": {"key": key, "n": n}, "orderingKey": key})).await
}

/// Acceptance 18.1 (skip): 3 keys × 20 messages; the 2nd message of key A
/// fails twice. B and C finish while A waits; A resumes after its head
/// succeeds; every key arrives in order.
#[tokio::test]
async fn keys_arrive_in_order_and_a_failing_head_holds_back_only_its_key() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let log = rx.log_ordered(|key, n, before| key == "A" && n == 2 && before < 2, Reply::Status(200, ""));
    let app = app(&t).await;
    let ep = t.endpoint(&app, json!({"url": rx.url, "retryPolicy": {"schedule": [1, 1, 1]}})).await;
    let mut ids = std::collections::HashMap::new();
    for n in 1..=20 {
        for key in ["A", "B", "C"] {
            ids.insert((key, n), send_keyed(&t, &app, key, n).await);
        }
    }
    // Without the clock moving: B and C complete, A stops at its 2nd.
    rx.wait_for(20 + 20 + 2).await;
    crate::common::eventually("B and C complete", || async {
        let log = log.lock().unwrap();
        (log.accepted("B").len() == 20 && log.accepted("C").len() == 20).then_some(())
    })
    .await;
    assert_eq!(log.lock().unwrap().seen("A"), [1, 2]);
    let third = t.delivery(&app, &ids[&("A", 3)], &ep).await;
    assert_eq!(third["waitingFor"], ids[&("A", 2)].as_str(), "{third}");
    let listed = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/msg?limit=250")).await;
    let waiting = listed["data"].as_array().unwrap().iter().filter(|m| m["waitingFor"].is_string()).count();
    assert_eq!(waiting, 18, "A's 3rd to 20th wait, and say so");

    // The retry fails again; the one after succeeds, and A runs to the end.
    // (Each failure is recorded before the clock moves: its retry is due a
    // second after it was recorded.)
    let head = &ids[&("A", 2)];
    t.wait_attempts_to(&app, head, Some(&ep), 1).await;
    t.clock().advance(Duration::from_secs(1));
    rx.wait_for(43).await;
    assert_eq!(log.lock().unwrap().seen("A"), [1, 2, 2]);
    t.wait_attempts_to(&app, head, Some(&ep), 2).await;
    t.clock().advance(Duration::from_secs(1));
    rx.wait_for(62).await;
    crate::common::eventually("A complete", || async {
        (log.lock().unwrap().accepted("A").len() == 20).then_some(())
    })
    .await;
    let log = log.lock().unwrap();
    let in_order: Vec<u64> = (1..=20).collect();
    for key in ["A", "B", "C"] {
        assert_eq!(log.accepted(key), in_order, "key {key}");
    }
    assert_eq!(log.seen("A")[..4], [1, 2, 2, 2], "nothing of A went past its failing head");
    assert!(log.out_of_order().is_empty(), "{:?}", log.out_of_order());
}

/// Acceptance 18.1 (block): a head that exhausts its schedule blocks its
/// key until it is skipped through the API; then the key goes on in order.
#[tokio::test]
async fn a_blocked_key_waits_until_skipped() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let log = rx.log_ordered(|key, n, _| key == "A" && n == 1, Reply::Status(200, ""));
    let app = app(&t).await;
    let ep = t
        .endpoint(
            &app,
            json!({"url": rx.url, "retryPolicy": {"schedule": [1]}, "orderingOnFailure": "block"}),
        )
        .await;
    let head = send_keyed(&t, &app, "A", 1).await;
    for n in 2..=5 {
        send_keyed(&t, &app, "A", n).await;
    }
    for n in 1..=3 {
        send_keyed(&t, &app, "B", n).await;
    }
    t.wait_attempts(&app, &head, 1).await;
    t.clock().advance(Duration::from_secs(1));
    t.wait_status(&app, &head, &ep, "fail").await;
    rx.wait_for(2 + 3).await;

    let blocked = crate::common::eventually("A listed as blocked", || async {
        let list = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/ordering/blocked")).await;
        (list["data"].as_array().unwrap().len() == 1).then_some(list)
    })
    .await;
    assert_eq!(
        (blocked["data"][0]["key"].as_str(), blocked["data"][0]["msgId"].as_str()),
        (Some("A"), Some(head.as_str()))
    );
    // An hour passes and B goes on (so the dispatcher ran); A stays put.
    t.clock().advance(Duration::from_secs(3600));
    send_keyed(&t, &app, "B", 4).await;
    rx.wait_for(2 + 4).await;
    assert_eq!(log.lock().unwrap().seen("A"), [1, 1]);
    assert_eq!(log.lock().unwrap().accepted("B"), [1, 2, 3, 4]);

    // Skipping a key that is not blocked is a 404; skipping A lets it go on.
    let skip = format!("/api/v1/app/{app}/endpoint/{ep}/ordering/skip");
    assert_eq!(t.post(&skip, json!({"key": "B"})).await.0, 404);
    assert_eq!(t.post(&skip, json!({"key": "\u{7}"})).await.0, 422);
    assert_eq!(t.post(&skip, json!({"key": "A"})).await.0, 204);
    rx.wait_for(2 + 4 + 4).await;
    crate::common::eventually("A's rest", || async {
        (log.lock().unwrap().accepted("A").len() == 4).then_some(())
    })
    .await;
    assert_eq!(log.lock().unwrap().accepted("A"), [2, 3, 4, 5]);
    assert_eq!(t.delivery(&app, &head, &ep).await["statusText"], "fail", "the skipped head stays failed");
    let list = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/ordering/blocked")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}

/// Acceptance 18.2: a FIFO endpoint gets 500 unkeyed messages in the order
/// they were accepted, although the first needs two retries.
#[tokio::test]
async fn a_fifo_endpoint_receives_everything_in_acceptance_order() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let log = rx.log_ordered(|_, n, before| n == 0 && before < 2, Reply::Status(200, ""));
    let app = app(&t).await;
    t.endpoint(&app, json!({"url": rx.url, "fifo": true, "retryPolicy": {"schedule": [1, 1, 1]}})).await;
    let mut first = None;
    for n in 0..500 {
        let id = t.send_message(&app, json!({"payload": {"key": "", "n": n}})).await;
        first.get_or_insert(id);
    }
    let first = first.unwrap();
    t.wait_attempts(&app, &first, 1).await;
    t.clock().advance(Duration::from_secs(1));
    t.wait_attempts(&app, &first, 2).await;
    t.clock().advance(Duration::from_secs(1));
    rx.wait_for(502).await;
    crate::common::eventually("all 500", || async {
        (log.lock().unwrap().accepted("").len() == 500).then_some(())
    })
    .await;
    let log = log.lock().unwrap();
    assert_eq!(log.accepted(""), (0..500).collect::<Vec<u64>>());
    assert_eq!(log.seen("")[..3], [0, 0, 0]);
}

/// Acceptance 18 point 7 and 17 point 5: bad ordering and flow input is a
/// 422 naming the field.
#[tokio::test]
async fn bad_ordering_and_flow_input_is_refused() {
    let t = TestServer::start().await;
    let app = app(&t).await;
    let msg = format!("/api/v1/app/{app}/msg");
    for key in [json!(""), json!("k".repeat(257)), json!("a\u{0}b"), json!("tab\there"), json!(5)] {
        let (status, body) = t.post(&msg, json!({"eventType": "x", "payload": {}, "orderingKey": key})).await;
        assert_eq!(status, 422, "{key}: {body}");
        assert_eq!(body["detail"][0]["loc"][1], "orderingKey", "{body}");
    }
    assert_eq!(
        t.post(&msg, json!({"eventType": "x", "payload": {}, "orderingKey": "é".repeat(256)})).await.0,
        202
    );
    let ep = format!("/api/v1/app/{app}/endpoint");
    for (field, value) in [
        ("throttleRate", json!(0)),
        ("throttleRate", json!(65_536)),
        ("maxInFlight", json!(0)),
        ("maxInFlight", json!(1001)),
        ("orderingOnFailure", json!("later")),
        ("fifo", json!("yes")),
    ] {
        let (status, body) = t.post(&ep, json!({"url": "https://example.com/hook", field: value})).await;
        assert_eq!(status, 422, "{field} = {value}: {body}");
        assert_eq!(body["detail"][0]["loc"][1], field, "{body}");
    }
    let (status, body) = t
        .post(
            &ep,
            json!({"url": "https://example.com/hook", "maxInFlight": 1000, "fifo": true, "orderingOnFailure": "block"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["maxInFlight"].as_u64(), body["fifo"].as_bool()), (Some(1000), Some(true)));
    assert_eq!(body["orderingOnFailure"], "block");
}

crate::common::on_postgres!(
    keys_arrive_in_order_and_a_failing_head_holds_back_only_its_key,
    a_blocked_key_waits_until_skipped,
    a_fifo_endpoint_receives_everything_in_acceptance_order
);
