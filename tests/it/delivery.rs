//! Delivery, retries and the attempt log, with hours of schedule run on a
//! manual clock in milliseconds.

use std::time::Duration;

use hookline::clock::Clock;
use hookline::domain::time::Timestamp;
use serde_json::{Value, json};
use svix::api::{MessageAttemptListAttemptedMessagesOptions, MessageAttemptListByMsgOptions};
use svix::models::{EndpointPatch, MessageAttemptTriggerType, MessageStatus};

use crate::common::{Receiver, Reply, TestServer, secs_since};

/// When `RetryPolicy::exponential` (the default) makes its attempts, in
/// seconds after the first: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h after each failure.
const EXPONENTIAL_OFFSETS: [i64; 8] = [0, 5, 305, 2105, 9305, 27305, 63305, 99305];
/// `RetryPolicy::fixed_two_minutes` in the API's JSON form.
const FIXED_POLICY: &str = r#"{"schedule": [120, 120, 120], "success": "200"}"#;

fn ts(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// Fail every attempt and walk the schedule: after each attempt, check the
/// announced next attempt time, then move the clock exactly there.
async fn walk_schedule(t: &TestServer, app: &str, ep: &str, msg: &str, offsets: &[i64]) -> Vec<Value> {
    let mut t0 = None;
    for k in 1..=offsets.len() {
        let attempts = t.wait_attempts_to(app, msg, Some(ep), k).await;
        assert_eq!(attempts.len(), k, "exactly {k} attempts so far");
        let t0 = t0.get_or_insert_with(|| attempts[0]["timestamp"].as_str().unwrap().to_owned());
        let at = attempts[k - 1]["timestamp"].as_str().unwrap();
        assert_eq!(secs_since(t0, at), offsets[k - 1], "attempt {k} time");
        let d = t.delivery(app, msg, ep).await;
        if k < offsets.len() {
            assert_eq!(d["statusText"], "pending", "{d}");
            let next = &d["nextAttempt"];
            assert_eq!(secs_since(t0, next.as_str().unwrap()), offsets[k], "announced attempt {}", k + 1);
            t.clock().set(ts(next));
        } else {
            assert_eq!(d["statusText"], "fail", "{d}");
            assert_eq!(d["nextAttempt"], Value::Null);
        }
    }
    t.attempts_to(app, msg, Some(ep)).await
}

/// Nothing more arrives even after a long time: the schedule is over.
async fn assert_quiet_after(t: &TestServer, rx: &Receiver, expected: usize) {
    t.clock().advance(Duration::from_secs(72 * 3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), expected, "no attempt after the schedule ended");
}

/// A 500 then a 200: the attempt log shows both, with codes and bodies,
/// and the status and next attempt time are right at each step.
#[tokio::test]
async fn failure_then_success_is_recorded_step_by_step() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "ok now")).await;
    rx.script([Reply::Status(500, "boom")]);
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({"n": 1})).await;

    let first = t.wait_attempts(&app, &msg, 1).await;
    let sent_at = ts(&first[0]["timestamp"]);
    let with_content = || MessageAttemptListByMsgOptions { with_content: Some(true), ..Default::default() };
    let list =
        t.svix.message_attempt().list_by_msg(app.clone(), msg.clone(), Some(with_content())).await.unwrap();
    assert_eq!(list.data.len(), 1);
    assert_eq!(list.data[0].response_status_code, 500);
    assert_eq!(list.data[0].response, "boom");
    assert_eq!(list.data[0].status, MessageStatus::Fail);
    assert_eq!(list.data[0].trigger_type, MessageAttemptTriggerType::Scheduled);

    let opts =
        || MessageAttemptListAttemptedMessagesOptions { with_content: Some(true), ..Default::default() };
    let msgs = t
        .svix
        .message_attempt()
        .list_attempted_messages(app.clone(), ep.clone(), Some(opts()))
        .await
        .unwrap();
    assert_eq!(msgs.data[0].status, MessageStatus::Pending);
    let next = msgs.data[0].next_attempt.expect("a retry is scheduled");
    assert_eq!(Timestamp::from_datetime(next), sent_at.plus(Duration::from_secs(5)));
    assert_eq!(rx.count(), 1, "no retry before its time");

    t.clock().set(Timestamp::from_datetime(next));
    let both = t.wait_attempts(&app, &msg, 2).await;
    assert_eq!(both[1]["responseStatusCode"], 200);
    assert_eq!(both[1]["response"], "ok now");
    assert_eq!(both[1]["status"], 0);
    let list =
        t.svix.message_attempt().list_by_msg(app.clone(), msg.clone(), Some(with_content())).await.unwrap();
    let codes: Vec<i16> = list.data.iter().map(|a| a.response_status_code).collect();
    assert_eq!(codes, [200, 500], "newest first");

    let msgs = t
        .svix
        .message_attempt()
        .list_attempted_messages(app.clone(), ep.clone(), Some(opts()))
        .await
        .unwrap();
    assert_eq!(msgs.data[0].status, MessageStatus::Success);
    assert_eq!(msgs.data[0].next_attempt, None);
    let dests =
        t.svix.message_attempt().list_attempted_destinations(app.clone(), msg.clone(), None).await.unwrap();
    assert_eq!(dests.data[0].status, MessageStatus::Success);
    assert_eq!(dests.data[0].id, ep);
    assert_quiet_after(&t, &rx, 2).await;
}

/// The default policy (`RetryPolicy::exponential`) against an endpoint that
/// always fails: 8 attempts at 0, 5 s, 5 min 5 s, 35 min 5 s, … then nothing.
#[tokio::test]
async fn default_exponential_schedule_makes_eight_attempts_then_stops() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(503, "down")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    let attempts = walk_schedule(&t, &app, &ep, &msg, &EXPONENTIAL_OFFSETS).await;
    assert!(attempts.iter().all(|a| a["responseStatusCode"] == 503 && a["statusText"] == "fail"));
    assert_eq!(rx.count(), 8);
    assert_quiet_after(&t, &rx, 8).await;
}

/// `RetryPolicy::fixed_two_minutes` set through the API: 4 attempts two
/// minutes apart, and a 201 is a failure under "success only on 200".
#[tokio::test]
async fn fixed_policy_makes_four_attempts_two_minutes_apart_and_201_fails() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(201, "created")).await;
    let policy: Value = serde_json::from_str(FIXED_POLICY).unwrap();
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({ "retryPolicy": policy })).await;
    let shown = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(shown["retryPolicy"], json!({"schedule": [120, 120, 120], "success": "200", "timeout": 30}));

    let msg = t.send(&app, json!({})).await;
    let attempts = walk_schedule(&t, &app, &ep, &msg, &[0, 120, 240, 360]).await;
    assert!(attempts.iter().all(|a| a["responseStatusCode"] == 201 && a["status"] == 2));
    assert_quiet_after(&t, &rx, 4).await;

    // The same policy delivers on a 200 at the first try.
    rx.set_default(Reply::Status(200, ""));
    let msg = t.send(&app, json!({})).await;
    t.wait_attempts(&app, &msg, 1).await;
    t.wait_status(&app, &msg, &ep, "success").await;
}

/// No answer within the timeout is a failure, and the retry is scheduled
/// from the moment the attempt gave up.
#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    rx.script([Reply::Hang]);
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;

    rx.wait_for(1).await;
    let started = t.clock().now();
    t.clock().advance(Duration::from_secs(29));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(t.attempts(&app, &msg).await.is_empty(), "still within the 30 s timeout");
    t.clock().advance(Duration::from_secs(1));

    let attempts = t.wait_attempts(&app, &msg, 1).await;
    assert_eq!(attempts[0]["responseStatusCode"], 0);
    assert_eq!(attempts[0]["status"], 2);
    assert!(attempts[0]["error"].as_str().unwrap().contains("timed out"), "{}", attempts[0]);
    let d = t.delivery(&app, &msg, &ep).await;
    assert_eq!(ts(&d["nextAttempt"]), started.plus(Duration::from_secs(30 + 5)));

    t.clock().set(ts(&d["nextAttempt"]));
    t.wait_attempts(&app, &msg, 2).await;
    t.wait_status(&app, &msg, &ep, "success").await;
}

/// Disabling an endpoint with a retry pending: nothing more reaches it, and
/// new messages are not queued for it either.
#[tokio::test]
async fn disabling_an_endpoint_stops_scheduled_retries() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(500, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    t.wait_attempts(&app, &msg, 1).await;
    let d = t.delivery(&app, &msg, &ep).await;
    assert_eq!(d["statusText"], "pending");
    assert!(d["nextAttempt"].is_string());

    t.svix
        .endpoint()
        .patch(app.clone(), ep.clone(), EndpointPatch { disabled: Some(true), ..Default::default() })
        .await
        .unwrap();
    let d = t.delivery(&app, &msg, &ep).await;
    assert_eq!(d["statusText"], "fail");
    assert_eq!(d["nextAttempt"], Value::Null);

    let later = t.send(&app, json!({"after": "disable"})).await;
    let dests = t.get(&format!("/api/v1/app/{app}/msg/{later}/endpoint")).await;
    assert_eq!(dests["data"], json!([]), "no delivery is created for a disabled endpoint");
    assert_quiet_after(&t, &rx, 1).await;

    // A manual resend to a disabled endpoint is refused, not silently sent.
    let (status, body) =
        t.post(&format!("/api/v1/app/{app}/msg/{msg}/endpoint/{ep}/resend"), json!({})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn deleting_an_endpoint_stops_scheduled_retries() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(500, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    t.wait_attempts(&app, &msg, 1).await;
    t.svix.endpoint().delete(app.clone(), ep.clone()).await.unwrap();
    assert_quiet_after(&t, &rx, 1).await;
    // The attempt history is kept.
    assert_eq!(t.attempts(&app, &msg).await.len(), 1);
}

/// Resending a succeeded message delivers it again as a manual attempt;
/// resending a failed one works too, neither consumes the schedule.
#[tokio::test]
async fn resend_delivers_again_as_a_manual_attempt() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({"resend": true})).await;
    t.wait_attempts(&app, &msg, 1).await;

    t.svix.message_attempt().resend(app.clone(), msg.clone(), ep.clone(), None).await.unwrap();
    let got = rx.wait_for(2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"), "same message id");
    assert_eq!(got[0].body, got[1].body);
    let attempts = t.wait_attempts(&app, &msg, 2).await;
    assert_eq!(attempts[0]["triggerType"], 0);
    assert_eq!(attempts[1]["triggerType"], 1, "manual");
    assert_eq!(attempts[1]["status"], 0);
    assert_eq!(t.delivery(&app, &msg, &ep).await["statusText"], "success");

    // A failed delivery (fixed policy exhausted) can be resent and succeed.
    let policy: Value = serde_json::from_str(FIXED_POLICY).unwrap();
    t.event_types(&["only.this"]).await;
    let (status, failing) = t
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": rx.url, "retryPolicy": policy, "eventTypes": ["only.this"]}),
        )
        .await;
    assert_eq!(status, 201);
    let fep = failing["id"].as_str().unwrap().to_owned();
    rx.set_default(Reply::Status(500, ""));
    let (_, m) =
        t.post(&format!("/api/v1/app/{app}/msg"), json!({"eventType": "only.this", "payload": {}})).await;
    let m = m["id"].as_str().unwrap().to_owned();
    walk_schedule(&t, &app, &fep, &m, &[0, 120, 240, 360]).await;
    rx.set_default(Reply::Status(200, ""));
    t.svix.message_attempt().resend(app.clone(), m.clone(), fep.clone(), None).await.unwrap();
    let attempts = t.wait_attempts_to(&app, &m, Some(&fep), 5).await;
    assert_eq!(attempts[4]["triggerType"], 1);
    t.wait_status(&app, &m, &fep, "success").await;
}

#[tokio::test]
async fn delayed_messages_wait_for_deliver_at() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let at = t.clock().now().plus(Duration::from_secs(3600));
    let (status, m) = t
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "later", "payload": {}, "deliverAt": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 202);
    let msg = m["id"].as_str().unwrap();
    assert_eq!(m["deliverAt"], at.to_rfc3339());
    assert_eq!(ts(&t.delivery(&app, msg, &ep).await["nextAttempt"]), at);
    t.clock().advance(Duration::from_secs(3599));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 0);
    t.clock().advance(Duration::from_secs(1));
    rx.wait_for(1).await;
}

#[tokio::test]
async fn private_targets_are_refused_by_default() {
    let t = TestServer::start_strict().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let once = json!({"retryPolicy": {"schedule": []}});
    // A name is checked after resolution, when connecting…
    let localhost = rx.url.replace("127.0.0.1", "localhost");
    let (app, ep) = t.app_with_endpoint(&localhost, once.clone()).await;
    // …an IP literal in a blocked range is refused at once, in every form.
    let port = rx.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    for host in ["127.0.0.1", "[::127.0.0.1]", "[::ffff:127.0.0.1]", "2130706433", "[64:ff9b::7f00:1]"] {
        let url = format!("http://{host}:{port}/hook");
        let (status, body) = t.post(&format!("/api/v1/app/{app}/endpoint"), json!({"url": url})).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "url"]), "{body}");
        assert!(body["detail"][0]["msg"].as_str().unwrap().contains("--allow-private-targets"), "{body}");
        let (status, _) = t
            .call(
                reqwest::Method::PATCH,
                &format!("/api/v1/app/{app}/endpoint/{ep}"),
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(status, 422, "PATCH to {url}");
    }
    let msg = t.send(&app, json!({})).await;
    let attempts = t.wait_attempts(&app, &msg, 1).await;
    for a in &attempts {
        assert_eq!(a["responseStatusCode"], 0);
        assert!(a["error"].as_str().unwrap().contains("refused to connect"), "{a}");
    }
    assert_eq!(rx.count(), 0);
}

/// An attempt still running when the shutdown grace period ends is cut off
/// and recorded (no response, "interrupted by shutdown"), so the attempt
/// log shows the request the receiver got.
#[tokio::test]
async fn shutdown_records_the_attempts_it_interrupts() {
    let t = TestServer::configured(Some(hookline::clock::ManualClock::starting_now()), |cfg| {
        cfg.shutdown_grace = Duration::from_millis(300)
    })
    .await;
    let rx = Receiver::start(Reply::Hang).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    rx.wait_for(1).await;
    let store = t.server.service.store.clone();
    t.server.shutdown().await;
    let attempts = store
        .list_attempts(
            &app,
            &hookline::store::AttemptFilter { msg_id: Some(msg.clone()), ..Default::default() },
            &hookline::store::PageRequest::first(10, hookline::store::Order::Descending),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!((attempts[0].status_code, attempts[0].endpoint_id.as_str()), (0, ep.as_str()));
    assert!(
        attempts[0].error.as_deref().unwrap_or_default().contains("interrupted by shutdown"),
        "{attempts:?}"
    );
    let delivery = store.get_delivery(&msg, &ep).await.unwrap().unwrap();
    assert_eq!(
        delivery.status,
        hookline::domain::model::DeliveryStatus::Pending,
        "retried after the restart"
    );
}

// The same checks with the server on PostgreSQL (both stores must answer
// the svix client alike).
crate::common::on_postgres!(
    failure_then_success_is_recorded_step_by_step,
    default_exponential_schedule_makes_eight_attempts_then_stops,
    fixed_policy_makes_four_attempts_two_minutes_apart_and_201_fails,
    a_receiver_that_never_answers_times_out_and_is_retried,
    disabling_an_endpoint_stops_scheduled_retries,
    deleting_an_endpoint_stops_scheduled_retries,
    resend_delivers_again_as_a_manual_attempt,
    delayed_messages_wait_for_deliver_at,
    private_targets_are_refused_by_default,
    shutdown_records_the_attempts_it_interrupts
);
