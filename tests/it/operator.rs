//! The rest of the Svix surface and the operator features, through the
//! official client where Svix has the route (plain HTTP for extensions).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use hookline::domain::time::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use svix::api::{
    AuthenticationAppPortalAccessOptions, EventTypeDeleteOptions, EventTypeListOptions, MessageCreateOptions,
};
use svix::models::{
    AppPortalAccessIn, BackgroundTaskStatus, BulkReplayIn, EndpointSecretRotateIn, EventExampleIn,
    EventTypeIn, EventTypePatch, MessageIn, OperationalWebhookEndpointIn, RecoverIn, ReplayIn,
};

use crate::common::{Received, Receiver, Reply, TOKEN, TestServer, eventually, svix_client};

const NO_RETRIES: &str = r#"{"schedule": []}"#;

fn policy(json: &str) -> Value {
    json!({ "retryPolicy": serde_json::from_str::<Value>(json).unwrap() })
}

fn long_ago() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::days(1)
}

/// The Svix client's verification, ignoring the timestamp (the manual clock
/// may be far from now).
fn verifies(secret: &str, req: &Received) -> bool {
    svix::webhooks::Webhook::new(secret).unwrap().verify_ignoring_timestamp(&req.body, &req.headers).is_ok()
}

#[tokio::test]
async fn rotated_secret_signs_alongside_the_old_one_for_24_hours() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let old = t.svix.endpoint().get_secret(app.clone(), ep.clone()).await.unwrap().key;
    t.svix
        .endpoint()
        .rotate_secret(app.clone(), ep.clone(), EndpointSecretRotateIn::new(), None)
        .await
        .unwrap();
    let new = t.svix.endpoint().get_secret(app.clone(), ep.clone()).await.unwrap().key;
    assert_ne!(old, new);

    t.send(&app, json!({"during": "overlap"})).await;
    let req = &rx.wait_for(1).await[0];
    assert_eq!(req.header("webhook-signature").split(' ').count(), 2, "{}", req.header("webhook-signature"));
    // Both keys verify, with the Standard Webhooks library too.
    standardwebhooks::Webhook::new(&old).unwrap().verify(&req.body, &req.headers).unwrap();
    standardwebhooks::Webhook::new(&new).unwrap().verify(&req.body, &req.headers).unwrap();

    t.clock().advance(Duration::from_secs(24 * 3600 + 1));
    t.send(&app, json!({"after": "overlap"})).await;
    let req = &rx.wait_for(2).await[1];
    assert_eq!(req.header("webhook-signature").split(' ').count(), 1);
    assert!(verifies(&new, req));
    assert!(!verifies(&old, req), "the old secret stops signing after the grace period");

    // A chosen key and a grace period of zero.
    let key = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([42u8; 32]));
    let rotate = EndpointSecretRotateIn { key: Some(key.clone()), grace_period_seconds: Some(0) };
    t.svix.endpoint().rotate_secret(app.clone(), ep.clone(), rotate, None).await.unwrap();
    assert_eq!(t.svix.endpoint().get_secret(app.clone(), ep.clone()).await.unwrap().key, key);
    t.send(&app, json!({})).await;
    let req = &rx.wait_for(3).await[2];
    assert!(verifies(&key, req) && !verifies(&new, req));
}

#[tokio::test]
async fn ed25519_endpoints_sign_with_v1a_and_expose_only_the_public_key() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({"secretKind": "ed25519"})).await;
    let public = t.svix.endpoint().get_secret(app.clone(), ep).await.unwrap().key;
    assert!(public.starts_with("whpk_"), "{public}");
    t.send(&app, json!({"signed": "asymmetrically"})).await;
    let req = &rx.wait_for(1).await[0];
    let sig = req.header("webhook-signature").strip_prefix("v1a,").expect("a v1a signature");
    // Verified with ed25519-dalek directly, independent of Hookline's code.
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64.decode(&public[5..]).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&b64.decode(sig).unwrap()).unwrap();
    let content = [req.header("webhook-id"), ".", req.header("webhook-timestamp"), "."].concat();
    let signed = [content.as_bytes(), &req.body[..]].concat();
    key.verify_strict(&signed, &sig).unwrap();
}

/// Svix's recover: every message of the endpoint whose latest attempt
/// failed, settled or still waiting for its next retry, is sent at once as
/// a manual attempt; successes are not; a second recover sends nothing new;
/// a window starting more than 14 days back is refused.
#[tokio::test]
async fn recover_sends_failed_deliveries_again() {
    let t = TestServer::start().await;
    let (app, ep, rx, [ok, waiting, settled]) = crate::sdk::recover_fixture(&t).await;
    let pending = t.delivery(&app, &waiting, &ep).await;
    assert_eq!(pending["statusText"], "pending");
    assert!(pending["nextAttempt"].is_string(), "{pending}");
    assert_eq!(rx.count(), 3);

    let out =
        t.svix.endpoint().recover(app.clone(), ep.clone(), RecoverIn::new(long_ago()), None).await.unwrap();
    assert_eq!(out.status, BackgroundTaskStatus::Finished);
    assert_eq!(out.task, svix::models::BackgroundTaskType::EndpointRecover);
    let got = rx.wait_for(5).await;
    let resent: BTreeSet<i64> = got[3..]
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(resent, BTreeSet::from([2, 3]));
    for msg in [&waiting, &settled] {
        t.wait_status(&app, msg, &ep, "success").await;
        let attempts = t.attempts(&app, msg).await;
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1]["triggerType"], 1, "sent as a manual attempt");
    }
    assert!(t.delivery(&app, &waiting, &ep).await["nextAttempt"].is_null(), "the retry is cancelled");
    assert_eq!(t.attempts(&app, &ok).await.len(), 1);
    let task = t.svix.background_task().get(out.id.clone()).await.unwrap();
    assert_eq!(task.data["count"], 2);

    // Nothing failed any more: recovering again sends nothing.
    let (status, out) = t
        .post(&format!("/api/v1/app/{app}/endpoint/{ep}/recover"), json!({"since": long_ago().to_rfc3339()}))
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["count"], 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 5);

    // More than 14 days back: refused, as Svix does.
    let too_old = chrono::Utc::now() - chrono::Duration::days(15);
    match t.svix.endpoint().recover(app.clone(), ep.clone(), RecoverIn::new(too_old), None).await {
        Err(svix::error::Error::Validation(e)) => {
            let detail = &e.payload.expect("a validation body").detail;
            assert_eq!(detail[0].loc, ["body", "since"]);
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn replay_missing_sends_what_the_endpoint_never_got() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let late = Receiver::start(Reply::Status(200, "")).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({})).await;
    let mut sent = BTreeSet::new();
    for i in 0..3 {
        sent.insert(t.send(&app, json!({"i": i})).await);
    }
    let (_, ep) = t.post(&format!("/api/v1/app/{app}/endpoint"), json!({"url": late.url})).await;
    let ep = ep["id"].as_str().unwrap().to_owned();
    assert_eq!(late.count(), 0);

    // The dry run (a Hookline extension) counts and creates nothing.
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/replay-missing");
    let (status, dry) = t.post(&path, json!({"since": long_ago().to_rfc3339(), "dryRun": true})).await;
    assert_eq!((status.as_u16(), dry["count"].as_u64()), (202, Some(3)), "{dry}");
    for m in &sent {
        let destinations = t.get(&format!("/api/v1/app/{app}/msg/{m}/endpoint")).await;
        assert!(
            destinations["data"].as_array().unwrap().iter().all(|d| d["id"] != ep.as_str()),
            "{destinations}"
        );
    }
    let (status, _) = t.post(&path, json!({"since": long_ago().to_rfc3339(), "dryRun": null})).await;
    assert_eq!(status.as_u16(), 422);

    let out = t
        .svix
        .endpoint()
        .replay_missing(app.clone(), ep.clone(), ReplayIn::new(long_ago()), None)
        .await
        .unwrap();
    assert_eq!(out.status, BackgroundTaskStatus::Finished);
    let got: BTreeSet<String> =
        late.wait_for(3).await.iter().map(|r| r.header("webhook-id").to_owned()).collect();
    assert_eq!(got, sent);
    let (_, again) = t
        .post(
            &format!("/api/v1/app/{app}/endpoint/{ep}/replay-missing"),
            json!({"since": long_ago().to_rfc3339()}),
        )
        .await;
    assert_eq!(again["count"], 0, "each message once");
}

#[tokio::test]
async fn bulk_replay_filters_and_counts_before_sending() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    for event in ["order.paid", "order.paid", "order.shipped"] {
        let (_, m) =
            t.post(&format!("/api/v1/app/{app}/msg"), json!({"eventType": event, "payload": {}})).await;
        t.wait_status(&app, m["id"].as_str().unwrap(), &ep, "success").await;
    }
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/bulk-replay");
    let filter =
        json!({"since": long_ago().to_rfc3339(), "eventTypes": ["order.paid"], "status": 0, "dryRun": true});
    let (status, dry) = t.post(&path, filter.clone()).await;
    assert_eq!((status.as_u16(), dry["count"].as_u64()), (202, Some(2)), "{dry}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 3, "a dry run sends nothing");

    let replay = BulkReplayIn {
        event_types: Some(BTreeSet::from(["order.paid".to_string()])),
        ..BulkReplayIn::new(long_ago())
    };
    let out = t.svix.endpoint().bulk_replay(app.clone(), ep.clone(), replay, None).await.unwrap();
    assert_eq!(out.status, BackgroundTaskStatus::Finished);
    let got = rx.wait_for(5).await;
    assert!(got[3..].iter().all(|r| serde_json::from_slice::<Value>(&r.body).unwrap() == json!({})));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 5, "only the two order.paid messages");
}

#[tokio::test]
async fn idempotency_key_returns_the_first_response_and_creates_one_message() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({})).await;
    let send = |key: &'static str, n: i32| {
        t.http
            .post(t.url(&format!("/api/v1/app/{app}/msg")))
            .bearer_auth(TOKEN)
            .header("idempotency-key", key)
            .json(&json!({"eventType": "once", "payload": {"n": n}}))
            .send()
    };
    let first = send("key-1", 1).await.unwrap();
    assert_eq!(first.status(), 202);
    let first_body = first.text().await.unwrap();
    let again = send("key-1", 1).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body, "the same response, byte for byte");
    // A different body under the same key still gets the first response.
    let third = send("key-1", 2).await.unwrap().text().await.unwrap();
    assert_eq!(third, first_body);
    let other = send("key-2", 1).await.unwrap().json::<Value>().await.unwrap();
    assert_ne!(other.to_string(), first_body);

    rx.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 2, "one delivery per key");
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg")).await["data"].as_array().unwrap().len(), 2);

    // Through the client, with its explicit option.
    let opts =
        || Some(MessageCreateOptions { idempotency_key: Some("sdk-key".into()), ..Default::default() });
    let a =
        t.svix.message().create(app.clone(), MessageIn::new("sdk".into(), json!({})), opts()).await.unwrap();
    let b =
        t.svix.message().create(app.clone(), MessageIn::new("sdk".into(), json!({})), opts()).await.unwrap();
    assert_eq!(a.id, b.id);

    // Even if the remembered response were lost (a crash right after the
    // commit), the key stored with the message prevents a second one.
    let new = || hookline::domain::model::NewMessage {
        event_type: "crash.window".into(),
        event_id: None,
        channels: None,
        tags: None,
        payload: bytes::Bytes::from_static(b"{}"),
        deliver_at: None,
        create_app: None,
        retention: None,
        ordering_key: None,
        trace: None,
    };
    let service = &t.server.service;
    let m1 = service.create_message(&app, new(), Some("k".into())).await.unwrap();
    let m2 = service.create_message(&app, new(), Some("k".into())).await.unwrap();
    assert_eq!(m1.message.id, m2.message.id);
    assert!(!m1.replayed && m2.replayed);

    // Other POSTs too: one application for one key.
    let create_app = || {
        t.http
            .post(t.url("/api/v1/app"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "app-key")
            .json(&json!({"name": "once"}))
            .send()
    };
    let a1: Value = create_app().await.unwrap().json().await.unwrap();
    let a2: Value = create_app().await.unwrap().json().await.unwrap();
    assert_eq!(a1["id"], a2["id"]);
}

#[tokio::test]
async fn app_portal_token_sees_and_acts_on_its_application_only() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (mine, my_ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let (theirs, their_ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let access = t
        .svix
        .authentication()
        .app_portal_access(
            mine.clone(),
            AppPortalAccessIn::new(),
            None::<AuthenticationAppPortalAccessOptions>,
        )
        .await
        .unwrap();
    assert!(access.url.contains(&access.token), "{}", access.url);
    let portal = svix_client(&t.server.url(), &access.token);

    // Its own application: read and act.
    assert_eq!(portal.application().get(mine.clone()).await.unwrap().id, mine);
    assert_eq!(portal.endpoint().list(mine.clone(), None).await.unwrap().data.len(), 1);
    let msg = portal
        .message()
        .create(mine.clone(), MessageIn::new("portal".into(), json!({})), None)
        .await
        .unwrap();
    portal.message_attempt().resend(mine.clone(), msg.id, my_ep, None).await.unwrap();
    portal.event_type().list(None).await.unwrap();

    // Anything else: 404 (not even whether it exists) or 403.
    let status = |e: svix::error::Error| match e {
        svix::error::Error::Http(h) => h.status.as_u16(),
        other => panic!("{other:?}"),
    };
    assert_eq!(status(portal.application().get(theirs.clone()).await.unwrap_err()), 404);
    assert_eq!(status(portal.endpoint().get(theirs.clone(), their_ep.clone()).await.unwrap_err()), 404);
    assert_eq!(
        status(
            portal
                .message()
                .create(theirs.clone(), MessageIn::new("x".into(), json!({})), None)
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(status(portal.application().list(None).await.unwrap_err()), 403);
    assert_eq!(
        status(
            portal
                .application()
                .create(svix::models::ApplicationIn::new("new".into()), None)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            portal.event_type().create(EventTypeIn::new("a.b".into(), "".into()), None).await.unwrap_err()
        ),
        403
    );
    let (status_code, _) =
        t.call(Method::GET, &format!("/api/v1/app/{theirs}/attempt/endpoint/{their_ep}"), None).await;
    assert_eq!(status_code, 200, "the admin still sees everything");

    // Logging out ends the token.
    portal.authentication().logout(None).await.unwrap();
    assert_eq!(status(portal.application().get(mine).await.unwrap_err()), 401);
}

#[tokio::test]
async fn receivers_steer_with_410_and_webhook_delivery_headers() {
    let t = TestServer::with_manual_clock().await;

    // 410 Gone disables the endpoint.
    let gone = Receiver::start(Reply::Status(410, "gone")).await;
    let (app, ep) = t.app_with_endpoint(&gone.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    t.wait_status(&app, &msg, &ep, "fail").await;
    assert_eq!(t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await["disabled"], true);

    // `webhook-delivery: abort-message`: no retry for this message.
    let abort = Receiver::start(Reply::Headers(500, &[("webhook-delivery", "abort-message")])).await;
    let (app, ep) = t.app_with_endpoint(&abort.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    t.wait_status(&app, &msg, &ep, "fail").await;
    assert_eq!(t.delivery(&app, &msg, &ep).await["nextAttempt"], Value::Null);
    assert_eq!(
        t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await["disabled"],
        false,
        "only the message"
    );

    // `webhook-delivery: disable`, even on a 200.
    let disable = Receiver::start(Reply::Headers(200, &[("webhook-delivery", "disable")])).await;
    let (app, ep) = t.app_with_endpoint(&disable.url, json!({})).await;
    let msg = t.send(&app, json!({})).await;
    t.wait_status(&app, &msg, &ep, "success").await;
    assert_eq!(t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await["disabled"], true);
    t.send(&app, json!({})).await;
    t.clock().advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(disable.count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_an_hour_and_never_sooner_than_the_schedule() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    // Retries are scheduled 5 s out: 8 s is honoured, a day is held to the
    // hour the whole endpoint pauses for, 1 s is raised to 5 s.
    rx.script([
        Reply::Headers(429, &[("retry-after", "8")]),
        Reply::Headers(503, &[("retry-after", "86400")]),
        Reply::Headers(429, &[("retry-after", "1")]),
    ]);
    let (app, ep) = t.app_with_endpoint(&rx.url, policy(r#"{"schedule": [5, 5, 5, 5]}"#)).await;
    let msg = t.send(&app, json!({})).await;
    let mut at = None;
    for (k, expected) in [(1, 8), (2, 3600), (3, 5)] {
        let attempts = t.wait_attempts(&app, &msg, k).await;
        let last = Timestamp::parse_rfc3339(attempts[k - 1]["timestamp"].as_str().unwrap()).unwrap();
        if let Some(prev) = at {
            assert!(last > prev);
        }
        let next = t.delivery(&app, &msg, &ep).await["nextAttempt"].as_str().unwrap().to_owned();
        let next = Timestamp::parse_rfc3339(&next).unwrap();
        assert_eq!(next.since(last), Duration::from_secs(expected), "attempt {k}");
        t.clock().set(next);
        at = Some(last);
    }
    t.wait_status(&app, &msg, &ep, "success").await;
}

#[tokio::test]
async fn endpoint_failing_for_five_days_is_disabled_with_an_operational_webhook() {
    let t = TestServer::with_manual_clock().await;
    let ops = Receiver::start(Reply::Status(200, "")).await;
    let op_ep = t
        .svix
        .operational_webhook()
        .endpoint()
        .create(OperationalWebhookEndpointIn::new(ops.url.clone()), None)
        .await
        .unwrap();
    let op_secret = t.svix.operational_webhook().endpoint().get_secret(op_ep.id).await.unwrap().key;

    let rx = Receiver::start(Reply::Status(500, "down")).await;
    let daily = policy(&format!("{{\"schedule\": {:?}}}", [86_400; 10]));
    let (app, ep) = t.app_with_endpoint(&rx.url, daily).await;
    let msg = t.send(&app, json!({})).await;
    for day in 1..=5 {
        t.wait_attempts(&app, &msg, day).await;
        assert_eq!(t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await["disabled"], false, "day {day}");
        let next = t.delivery(&app, &msg, &ep).await["nextAttempt"].as_str().unwrap().to_owned();
        t.clock().set(Timestamp::parse_rfc3339(&next).unwrap());
    }
    // The attempt 5 days after the first failure disables the endpoint.
    t.wait_attempts(&app, &msg, 6).await;
    eventually("the endpoint to be disabled", || async {
        (t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await["disabled"] == true).then_some(())
    })
    .await;
    assert_eq!(t.delivery(&app, &msg, &ep).await["nextAttempt"], Value::Null);

    let event = eventually("an endpoint.disabled operational webhook", || async {
        ops.received().into_iter().find(|r| {
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["type"] == "endpoint.disabled")
        })
    })
    .await;
    assert!(verifies(&op_secret, &event), "operational webhooks are signed");
    let body: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(body["data"]["endpointId"], ep);
    assert_eq!(body["data"]["appId"], app);
    assert_eq!(body["data"]["trigger"], "automatic");
    // The fourth failure was announced as `message.attempt.failing`.
    let types: Vec<String> = ops
        .received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(types.contains(&"message.attempt.failing".to_string()), "{types:?}");
    assert!(types.contains(&"endpoint.created".to_string()), "{types:?}");
}

#[tokio::test]
async fn exhausted_schedule_sends_message_attempt_exhausted() {
    let t = TestServer::start().await;
    let ops = Receiver::start(Reply::Status(200, "")).await;
    let (status, _) = t.post("/api/v1/operational-webhook/endpoint", json!({"url": ops.url})).await;
    assert_eq!(status, 201);
    let rx = Receiver::start(Reply::Status(500, "")).await;
    let (app, _) = t.app_with_endpoint(&rx.url, policy(NO_RETRIES)).await;
    let msg = t.send(&app, json!({})).await;
    let event = eventually("message.attempt.exhausted", || async {
        ops.received()
            .into_iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .find(|v| v["type"] == "message.attempt.exhausted")
    })
    .await;
    assert_eq!(event["data"]["msgId"], msg);
    assert_eq!(event["data"]["lastAttempt"]["responseStatusCode"], 500);
}

/// Events queued faster than they are forwarded go out in batches that
/// share one read of the operational application; none may be dropped at a
/// batch's edge (more endpoints than one batch holds, created at once).
#[tokio::test]
async fn every_endpoint_created_at_once_gets_its_operational_webhook() {
    let t = TestServer::start().await;
    let ops = Receiver::start(Reply::Status(200, "")).await;
    let (status, _) = t.post("/api/v1/operational-webhook/endpoint", json!({"url": ops.url})).await;
    assert_eq!(status, 201);
    let (status, app) = t.post("/api/v1/app", json!({"name": "many endpoints"})).await;
    assert_eq!(status, 201);
    let app = app["id"].as_str().unwrap().to_owned();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let call = t
            .http
            .post(t.url(&format!("/api/v1/app/{app}/endpoint")))
            .bearer_auth(TOKEN)
            .json(&json!({"url": format!("https://example.com/hook/{i}")}));
        calls.spawn(async move { call.send().await.unwrap().json::<Value>().await.unwrap() });
    }
    let mut created = Vec::new();
    while let Some(ep) = calls.join_next().await {
        created.push(ep.unwrap()["id"].as_str().expect("endpoint created").to_owned());
    }
    let mut told: Vec<String> = eventually("an endpoint.created event per endpoint", || async {
        let ids: Vec<String> = ops
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|v| v["type"] == "endpoint.created" && v["data"]["appId"] == app.as_str())
            .map(|v| v["data"]["endpointId"].as_str().unwrap_or_default().to_owned())
            .collect();
        (ids.len() >= created.len()).then_some(ids)
    })
    .await;
    created.sort();
    told.sort();
    assert_eq!(told, created, "one event for each endpoint, none twice");
}

#[tokio::test]
async fn content_can_be_expunged_by_message_attempt_and_application() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "receipt")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let m1 = t.send(&app, json!({"secret": 1})).await;
    let m2 = t.send(&app, json!({"secret": 2})).await;
    let m3 = t.send(&app, json!({"secret": 3})).await;
    for m in [&m1, &m2, &m3] {
        t.wait_status(&app, m, &ep, "success").await;
    }

    t.svix.message().expunge_content(app.clone(), m1.clone()).await.unwrap();
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg/{m1}")).await["payload"], json!({}));
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg/{m2}")).await["payload"], json!({"secret": 2}));
    let (status, _) = t.post(&format!("/api/v1/app/{app}/msg/{m1}/endpoint/{ep}/resend"), json!({})).await;
    assert_eq!(status, 409, "nothing left to send");

    let attempt = t.attempts(&app, &m2).await[0]["id"].as_str().unwrap().to_owned();
    t.svix.message_attempt().expunge_content(app.clone(), m2.clone(), attempt.clone()).await.unwrap();
    let a = t.get(&format!("/api/v1/app/{app}/msg/{m2}/attempt/{attempt}")).await;
    assert_eq!(
        (a["response"].as_str(), a["responseStatusCode"].as_u64()),
        (Some(""), Some(200)),
        "metadata stays"
    );

    let (status, body) =
        t.post(&format!("/api/v1/app/{app}/msg/bulk-expunge"), json!({"ids": [m2, "msg_nope"]})).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"]["msg_nope"], "not-found");
    assert_eq!(body["results"][&m2], "expunged");

    let (status, task) = t.post(&format!("/api/v1/app/{app}/msg/expunge-all-contents"), json!({})).await;
    assert_eq!((status.as_u16(), task["status"].as_str()), (202, Some("finished")));
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg/{m3}")).await["payload"], json!({}));
    assert_eq!(t.attempts(&app, &m3).await[0]["response"], "");
}

#[tokio::test]
async fn retention_expunges_payloads_and_response_bodies_when_they_age_out() {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "kept for a while")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let default = t.send(&app, json!({"keep": "90 days"})).await;
    let (_, short) = t
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "short", "payload": {"keep": "1 hour"}, "payloadRetentionHours": 1}),
        )
        .await;
    let short = short["id"].as_str().unwrap().to_owned();
    t.wait_status(&app, &default, &ep, "success").await;
    t.wait_status(&app, &short, &ep, "success").await;

    t.clock().advance(Duration::from_secs(2 * 3600));
    eventually("the short-lived payload to go", || async {
        (t.payload(&app, &short).await == json!({})).then_some(())
    })
    .await;
    assert_eq!(t.payload(&app, &default).await, json!({"keep": "90 days"}));
    assert_eq!(t.attempts(&app, &default).await[0]["response"], "kept for a while");

    t.clock().advance(Duration::from_secs(91 * 24 * 3600));
    eventually("the default payload to go", || async {
        (t.payload(&app, &default).await == json!({})).then_some(())
    })
    .await;
    eventually("the response body to go", || async {
        (t.attempts(&app, &default).await[0]["response"] == "").then_some(())
    })
    .await;
    // Metadata stays: the message, its attempts and their status codes.
    assert_eq!(t.attempts(&app, &default).await[0]["responseStatusCode"], 200);
}

/// Record retention: a delivered message's payload goes after the payload
/// retention, the message itself (and its attempts) after the record
/// retention; one still retrying stays, with everything it has.
#[tokio::test]
async fn record_retention_deletes_settled_messages_and_keeps_those_still_retrying() {
    let t = TestServer::configured(Some(hookline::clock::ManualClock::starting_now()), |cfg| {
        cfg.service.retention = Duration::from_secs(5 * 60);
        cfg.record_retention = Duration::from_secs(10 * 60);
    })
    .await;
    let ok = Receiver::start(Reply::Status(200, "fine")).await;
    let failing = Receiver::start(Reply::Status(500, "not yet")).await;
    let (app, ep) = t.app_with_endpoint(&ok.url, json!({})).await;
    let (other, bad_ep) = t.app_with_endpoint(&failing.url, json!({})).await;
    let delivered = t.send(&app, json!({"n": 1})).await;
    let retrying = t.send(&other, json!({"n": 2})).await;
    t.wait_status(&app, &delivered, &ep, "success").await;
    t.wait_attempts(&other, &retrying, 1).await;

    // Past the payload retention: content goes, the records stay.
    t.clock().advance(Duration::from_secs(6 * 60));
    eventually("the payload to go", || async {
        (t.payload(&app, &delivered).await == json!({})).then_some(())
    })
    .await;
    assert_eq!(t.attempts(&app, &delivered).await.len(), 1);

    // Past the record retention: the delivered message is gone from every
    // listing; the one still retrying (next attempt after 35 minutes) stays.
    t.clock().advance(Duration::from_secs(5 * 60));
    eventually("the delivered message to go", || async {
        let (status, _) = t.call(Method::GET, &format!("/api/v1/app/{app}/msg/{delivered}"), None).await;
        (status.as_u16() == 404).then_some(())
    })
    .await;
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg")).await["data"], json!([]));
    assert_eq!(t.get(&format!("/api/v1/app/{app}/attempt/endpoint/{ep}")).await["data"], json!([]));
    let listed = t.get(&format!("/api/v1/app/{other}/msg")).await;
    assert_eq!(listed["data"][0]["id"], json!(retrying), "{listed}");
    let delivery = t.delivery(&other, &retrying, &bad_ep).await;
    // Waiting for its next attempt, or making it (the clock jump made one due).
    assert!(["pending", "sending"].contains(&delivery["statusText"].as_str().unwrap()), "{delivery}");
    assert!(!t.attempts(&other, &retrying).await.is_empty());
}

#[tokio::test]
async fn event_types_catalogue_and_send_example() {
    let t = TestServer::start().await;
    let schemas = json!({"1": {"type": "object", "examples": [{"invoice": "in_example", "amount": 100}]}});
    let created = t
        .svix
        .event_type()
        .create(
            EventTypeIn {
                schemas: Some(schemas.clone()),
                ..EventTypeIn::new("invoice.paid".into(), "Paid".into())
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.schemas, Some(schemas.clone()));
    t.svix.event_type().create(EventTypeIn::new("invoice.void".into(), "Void".into()), None).await.unwrap();
    assert!(
        t.svix.event_type().create(EventTypeIn::new("invoice.void".into(), "".into()), None).await.is_err()
    );

    let patched = t
        .svix
        .event_type()
        .patch(
            "invoice.void".into(),
            EventTypePatch { description: Some("Voided".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(patched.description, "Voided");
    let listed = t.svix.event_type().list(None).await.unwrap();
    assert_eq!(
        listed.data.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["invoice.paid", "invoice.void"]
    );

    // Deleting archives: hidden from the list unless asked for.
    t.svix.event_type().delete("invoice.void".into(), None).await.unwrap();
    assert_eq!(t.svix.event_type().list(None).await.unwrap().data.len(), 1);
    let all = EventTypeListOptions { include_archived: Some(true), ..Default::default() };
    assert_eq!(t.svix.event_type().list(Some(all)).await.unwrap().data.len(), 2);
    let expunge = EventTypeDeleteOptions { expunge: Some(true) };
    t.svix.event_type().delete("invoice.void".into(), Some(expunge)).await.unwrap();
    assert!(t.svix.event_type().get("invoice.void".into()).await.is_err());

    // send-example: the schema's example goes to this endpoint only.
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let other = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    t.post(&format!("/api/v1/app/{app}/endpoint"), json!({"url": other.url})).await;
    let msg = t
        .svix
        .endpoint()
        .send_example(app.clone(), ep.clone(), EventExampleIn::new("invoice.paid".into()), None)
        .await
        .unwrap();
    assert_eq!(msg.event_type, "invoice.paid");
    let got = rx.wait_for(1).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        json!({"invoice": "in_example", "amount": 100})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.count(), 0);

    let stats = t.svix.endpoint().get_stats(app.clone(), ep.clone(), None).await.unwrap();
    assert_eq!((stats.success, stats.fail, stats.pending), (1, 0, 0));
}

// The same checks with the server on PostgreSQL (both stores must answer
// the svix client alike).
crate::common::on_postgres!(
    rotated_secret_signs_alongside_the_old_one_for_24_hours,
    ed25519_endpoints_sign_with_v1a_and_expose_only_the_public_key,
    recover_sends_failed_deliveries_again,
    replay_missing_sends_what_the_endpoint_never_got,
    bulk_replay_filters_and_counts_before_sending,
    idempotency_key_returns_the_first_response_and_creates_one_message,
    app_portal_token_sees_and_acts_on_its_application_only,
    receivers_steer_with_410_and_webhook_delivery_headers,
    retry_after_is_honoured_up_to_an_hour_and_never_sooner_than_the_schedule,
    endpoint_failing_for_five_days_is_disabled_with_an_operational_webhook,
    exhausted_schedule_sends_message_attempt_exhausted,
    every_endpoint_created_at_once_gets_its_operational_webhook,
    content_can_be_expunged_by_message_attempt_and_application,
    retention_expunges_payloads_and_response_bodies_when_they_age_out,
    record_retention_deletes_settled_messages_and_keeps_those_still_retrying,
    event_types_catalogue_and_send_example
);
