//! Flow control: throttles paced at ingest and claim, pauses, backoff
//! (`DispatchStore` on those paths, `FlowStore` for the view).

use super::*;

fn ms(n: u64) -> Timestamp {
    T0.plus(Duration::from_millis(n))
}

/// A record of `code` for `m` to `ep`, with the signal its answer gives.
fn answer(m: &Message, ep: &Endpoint, code: u16, retry_after: Option<u64>, at: Timestamp) -> AttemptRecord {
    let policy = ep.retry_policy.clone().unwrap_or_default();
    let outcome = Outcome::classify(&policy, Some(code));
    let mut rec = record_of(attempt(m, ep, Trigger::Scheduled, code, at), outcome, policy);
    let wait = retry_after.map(Duration::from_secs);
    rec.steering.retry_after = wait;
    rec.signal = Signal::classify(outcome == Outcome::Delivered, Some(code), wait, at);
    rec.paced = true;
    rec.sending_rate = 20.0;
    rec
}

pub async fn throttles_pace_ingest_and_claims(store: SharedStore) {
    let mut a = app(None);
    a.throttle_rate = Some(10); // the application's rate: its endpoints' default
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();

    // Burst of one at 10/s: the first goes at once, the rest are parked.
    for i in 0..30 {
        let created =
            store.create_message(request(&a.id, message("t", T0), Some(lease(at(600))))).await.unwrap();
        if i == 0 {
            assert_eq!(created.send_now.len(), 1);
            assert!(created.send_now[0].paced, "counted against the bucket");
        } else {
            assert!(created.send_now.is_empty(), "message {i} waits for the bucket");
            assert_eq!(created.wake, Some(ms(100)));
        }
    }
    let view = store.endpoint_flow(&ep.id, T0).await.unwrap();
    assert_eq!((view.limit, view.waiting), (Some(10), 29));
    assert!(store.claim_due(T0, &lease(at(600)), 100, &[]).await.unwrap().is_empty());
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), Some(ms(100)));

    // Claiming every 10 ms: never more than rate × window + burst, and all go.
    let mut starts: Vec<u64> = vec![0];
    let mut t = 0;
    while starts.len() < 30 {
        t += 10;
        assert!(t < 5_000, "only {} of 30 claimed", starts.len());
        for task in store.claim_due(ms(t), &lease(at(600)), 100, &[]).await.unwrap() {
            assert!(task.paced);
            starts.push(t);
        }
    }
    for w in (0..t).step_by(10) {
        let n = starts.iter().filter(|&&s| s >= w && s < w + 1000).count();
        assert!(n <= 11, "{n} starts in [{w} ms, +1 s)");
    }
    assert!(store.endpoint_flow(&ep.id, ms(t)).await.unwrap().waiting == 0);

    // An endpoint's own rate wins over its application's.
    let mut fast = endpoint(&a.id);
    fast.throttle_rate = Some(1000);
    store.insert_endpoint(&fast).await.unwrap();
    let created = store
        .create_message(CreateMessage {
            only_endpoint: Some(fast.id.clone()),
            ..request(&a.id, message("t", at(10)), Some(lease(at(600))))
        })
        .await
        .unwrap();
    assert_eq!(created.send_now.len(), 1);
    assert_eq!(store.endpoint_flow(&fast.id, at(10)).await.unwrap().limit, Some(1000));

    // Unthrottled endpoints are not paced at all.
    let b = app(None);
    store.insert_app(&b).await.unwrap();
    let free = endpoint(&b.id);
    store.insert_endpoint(&free).await.unwrap();
    for _ in 0..5 {
        let c =
            store.create_message(request(&b.id, message("t", at(20)), Some(lease(at(600))))).await.unwrap();
        assert_eq!(c.send_now.len(), 1);
        assert!(!c.send_now[0].paced);
    }
}

pub async fn a_retry_after_pauses_the_endpoint(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    let other = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    store.insert_endpoint(&other).await.unwrap();
    let first = create(&store, &a.id, message("t", T0), None).await;
    let claimed = store.claim_due(T0, &lease(at(600)), 100, &[]).await.unwrap();
    assert_eq!(claimed.len(), 2);

    // The receiver says 429, Retry-After: 30.
    let fx = store.record_attempt(answer(&first, &ep, 429, Some(30), at(1))).await.unwrap();
    assert_eq!(fx.endpoint_paused, Some(at(31)));
    let view = store.endpoint_flow(&ep.id, at(2)).await.unwrap();
    assert_eq!(view.paused_until, Some(at(31)));
    assert!(view.pause_reason.unwrap().contains("429"));

    // Messages to it wait, uncharged; the other endpoint gets its own.
    let waiting: Vec<Arc<Message>> = (0..3).map(|_| Arc::new(message("t", at(2)))).collect();
    for m in &waiting {
        store.create_message(request(&a.id, (**m).clone(), Some(lease(at(600))))).await.unwrap();
    }
    for t in [2, 10, 30] {
        let claimed = store.claim_due(at(t), &lease(at(600)), 100, &[]).await.unwrap();
        assert!(claimed.iter().all(|c| c.endpoint.id == other.id), "nothing to the paused endpoint at {t} s");
    }
    let d = store.get_delivery(&waiting[0].id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "not charged an attempt");
    let totals = store.flow_totals(at(30)).await.unwrap();
    assert_eq!((totals.paused_endpoints, totals.parked_deliveries), (1, 3), "{totals:?}");
    assert_eq!(store.flow_totals(at(32)).await.unwrap().paused_endpoints, 0, "the pause is over");
    assert!(store.next_due(T0, &[]).await.unwrap().is_some_and(|t| t <= at(31)));
    let after: Vec<_> = store.claim_due(at(31), &lease(at(600)), 100, &[]).await.unwrap();
    let to_ep: BTreeSet<String> =
        after.iter().filter(|c| c.endpoint.id == ep.id).map(|c| c.message.id.clone()).collect();
    assert_eq!(to_ep, waiting.iter().map(|m| m.id.clone()).collect(), "all go once the pause ends");
    // The paused message itself keeps its own schedule (two minutes).
    let d = store.get_delivery(&first.id, &ep.id).await.unwrap().unwrap();
    assert_eq!(d.next_attempt, Some(at(121)));
}

pub async fn congestion_backs_the_endpoint_off_and_successes_restore_it(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let m = create(&store, &a.id, message("t", T0), None).await;
    store.claim_due(T0, &lease(at(600)), 10, &[]).await.unwrap();

    // 503 without Retry-After, sent at 20/s: the allowed rate halves.
    store.record_attempt(answer(&m, &ep, 503, None, at(1))).await.unwrap();
    let view = store.endpoint_flow(&ep.id, at(1)).await.unwrap();
    assert!(view.backing_off);
    assert_eq!(view.allowed_rate, Some(10.0));
    // New messages are now paced at that rate.
    let c = store.create_message(request(&a.id, message("t", at(2)), Some(lease(at(600))))).await.unwrap();
    assert!(c.send_now.iter().all(|t| t.paced));
    // Successes raise it back to unlimited.
    for i in 0..10 {
        store.record_attempt(answer(&m, &ep, 200, None, at(3 + i))).await.unwrap();
    }
    let view = store.endpoint_flow(&ep.id, at(20)).await.unwrap();
    assert!(!view.backing_off);
    assert_eq!(view.allowed_rate, None);
}

pub async fn a_manual_send_counts_against_the_bucket(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let mut ep = endpoint(&a.id);
    ep.throttle_rate = Some(1);
    store.insert_endpoint(&ep).await.unwrap();
    store.charge(&ep.id, T0).await.unwrap();
    let c = store.create_message(request(&a.id, message("t", T0), Some(lease(at(600))))).await.unwrap();
    assert!(c.send_now.is_empty(), "the manual send took this second's start");
    assert_eq!(c.wake, Some(at(1)));
}
