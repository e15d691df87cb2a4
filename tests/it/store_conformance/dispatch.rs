//! Claims, leases, attempt records, endpoint health and notifications (`DispatchStore`).

use super::*;

pub async fn claiming_and_leases(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let e1 = endpoint(&a.id);
    let e2 = endpoint(&a.id);
    store.insert_endpoint(&e1).await.unwrap();
    store.insert_endpoint(&e2).await.unwrap();
    let m = create(&store, &a.id, message("t", T0), None).await;
    let delayed =
        create(&store, &a.id, Message { deliver_at: Some(at(100)), ..message("t", T0) }, None).await;

    assert_eq!(store.next_due(T0, &[]).await.unwrap(), Some(T0));
    // Skipped endpoints are neither claimed nor counted.
    let claimed = store.claim_due(at(1), &lease(at(31)), 10, std::slice::from_ref(&e1.id)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].message.id.as_str(), claimed[0].endpoint.id.as_str()),
        (m.id.as_str(), e2.id.as_str())
    );
    assert_eq!(claimed[0].message.payload.as_deref(), Some(&br#"{"a": 1}"#[..]));
    assert_eq!(claimed[0].endpoint.headers, e1.headers);

    let rest = store.claim_due(at(1), &lease(at(31)), 10, &[]).await.unwrap();
    assert_eq!(rest.len(), 1, "the leased delivery is not claimed twice");
    assert_eq!(rest[0].endpoint.id, e1.id);
    assert!(store.claim_due(at(30), &lease(at(60)), 10, &[]).await.unwrap().is_empty());
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), Some(at(31)));
    // An expired lease makes the delivery claimable again.
    assert_eq!(store.claim_due(at(31), &lease(at(61)), 10, &[]).await.unwrap().len(), 2);

    // Release hands deliveries back; release_all clears every lease.
    let key = DeliveryKey { msg_id: m.id.clone(), endpoint_id: e1.id.clone() };
    store.release(std::slice::from_ref(&key), at(40)).await.unwrap();
    assert_eq!(store.claim_due(at(40), &lease(at(70)), 10, &[]).await.unwrap().len(), 1);
    assert_eq!(store.release_all(Some("someone-else")).await.unwrap(), 0);
    assert_eq!(store.release_all(None).await.unwrap(), 2);
    assert_eq!(store.claim_due(at(41), &lease(at(500)), 10, &[]).await.unwrap().len(), 2);

    // The delayed message becomes claimable at its time, not before.
    assert!(store.claim_due(at(99), &lease(at(200)), 10, &[]).await.unwrap().is_empty());
    let due = store.claim_due(at(100), &lease(at(200)), 1, &[]).await.unwrap();
    assert_eq!(due.len(), 1, "limit is honoured");
    assert_eq!(due[0].message.id, delayed.id);

    // Deliveries of a disabled endpoint are settled, never claimed.
    store
        .update_endpoint(&a.id, &e2.id, EndpointPatch { disabled: Some(true), ..Default::default() }, at(101))
        .await
        .unwrap();
    let d = store.get_delivery(&delayed.id, &e2.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt), (DeliveryStatus::Fail, None));
    let left = store.claim_due(at(500), &lease(at(600)), 10, &[]).await.unwrap();
    assert!(left.iter().all(|t| t.endpoint.id == e1.id), "nothing for the disabled endpoint");
}

pub async fn attempts_advance_deliveries(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id); // fixed policy: 3 retries 2 min apart, success on 200
    store.insert_endpoint(&ep).await.unwrap();
    let m = create(&store, &a.id, message("t", T0), Some(lease(at(30)))).await;

    record(&store, &m, &ep, Trigger::Scheduled, 201, at(1)).await;
    let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Pending, 1, Some(at(121))));
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), Some(at(121)), "the lease ended with the attempt");

    // A failing manual attempt leaves the schedule alone.
    record(&store, &m, &ep, Trigger::Manual, 500, at(2)).await;
    let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.attempts, d.next_attempt), (1, Some(at(121))));

    record(&store, &m, &ep, Trigger::Scheduled, 200, at(121)).await;
    let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Success, 2, None));
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), None);

    let page = PageRequest::first(10, Order::Descending);
    let all = AttemptFilter { msg_id: Some(m.id.clone()), ..Default::default() };
    let listed = store.list_attempts(&a.id, &all, &page).await.unwrap();
    let codes: Vec<u16> = listed.items.iter().map(|t| t.status_code).collect();
    assert_eq!(codes, [200, 500, 201], "newest first");
    assert_eq!(listed.items[1].trigger, Trigger::Manual);
    let one = store.get_attempt(&a.id, &m.id, &listed.items[0].id).await.unwrap().unwrap();
    assert_eq!(one, listed.items[0]);
    assert_eq!(store.get_attempt("app_other", &m.id, &one.id).await.unwrap(), None, "scoped to its app");
    assert_eq!(store.get_attempt(&a.id, "msg_other", &one.id).await.unwrap(), None, "and to its message");

    let failed = AttemptFilter { status: Some(DeliveryStatus::Fail), ..all.clone() };
    assert_eq!(store.list_attempts(&a.id, &failed, &page).await.unwrap().items.len(), 2);
    let class_2xx = AttemptFilter { status_code_class: Some(200), ..all.clone() };
    assert_eq!(store.list_attempts(&a.id, &class_2xx, &page).await.unwrap().items.len(), 2);
    let class_5xx = AttemptFilter { status_code_class: Some(500), ..all.clone() };
    assert_eq!(store.list_attempts(&a.id, &class_5xx, &page).await.unwrap().items.len(), 1);
    let by_ep = AttemptFilter { endpoint_id: Some(ep.id.clone()), ..Default::default() };
    assert_eq!(store.list_attempts(&a.id, &by_ep, &page).await.unwrap().items.len(), 3);

    // Exhausting the schedule settles the delivery as failed.
    let m2 = create(&store, &a.id, message("t", at(200)), None).await;
    for k in 0..4 {
        record(&store, &m2, &ep, Trigger::Scheduled, 503, at(200 + k * 120)).await;
    }
    let d = store.get_delivery(&m2.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Fail, 4, None));

    // An attempt that ends after its endpoint was disabled schedules nothing.
    let m3 = create(&store, &a.id, message("t", at(300)), None).await;
    store
        .update_endpoint(&a.id, &ep.id, EndpointPatch { disabled: Some(true), ..Default::default() }, at(301))
        .await
        .unwrap();
    record(&store, &m3, &ep, Trigger::Scheduled, 500, at(302)).await;
    let d = store.get_delivery(&m3.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt), (DeliveryStatus::Fail, None));
}

pub async fn concurrent_claims(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let eps: Vec<Endpoint> = (0..3).map(|_| endpoint(&a.id)).collect();
    for ep in &eps {
        store.insert_endpoint(ep).await.unwrap();
    }
    for i in 0..20 {
        create(&store, &a.id, message("t", at(i)), None).await;
    }
    let claimers = (0..6).map(|i| {
        let store = store.clone();
        async move {
            let lease = Lease { owner: format!("node-{i}"), until: at(600) };
            let mut got = Vec::new();
            loop {
                let batch = store.claim_due(at(100), &lease, 4, &[]).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|t| t.key()));
            }
        }
    });
    let all: Vec<DeliveryKey> = futures_join_all(claimers).await.into_iter().flatten().collect();
    assert_eq!(all.len(), 60, "every delivery claimed");
    assert_eq!(all.iter().collect::<std::collections::HashSet<_>>().len(), 60, "none twice");

    // Graceful shutdown of one node gives back its leases only.
    assert_eq!(store.release_all(Some("node-nobody")).await.unwrap(), 0);
    let mine = store.claim_due(at(600), &lease(at(900)), 5, &[]).await.unwrap();
    assert_eq!(mine.len(), 5, "expired leases are claimable");
    assert_eq!(store.release_all(Some("node-a")).await.unwrap(), 5);
    assert_eq!(store.count_pending().await.unwrap(), 60);
    let first = store.next_due(T0, &[]).await.unwrap().unwrap();
    assert!(first < at(20), "released at their original time, not the lease's end");
}

pub async fn endpoint_health(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let m1 = create(&store, &a.id, message("t", T0), None).await;
    let m2 = create(&store, &a.id, message("t", T0), None).await;
    let day = Duration::from_secs(86_400);
    let failing = |m: &Message, when: Timestamp| {
        let policy = ep.retry_policy.clone().unwrap();
        AttemptRecord {
            auto_disable_after: Some(day),
            ..record_of(attempt(m, &ep, Trigger::Scheduled, 500, when), Outcome::Failed, policy)
        }
    };
    let fx = store.record_attempt(failing(&m1, at(10))).await.unwrap();
    assert_eq!(fx.endpoint_disabled, None);
    assert!(!fx.exhausted);
    let stored = store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert_eq!(stored.failing_since, Some(at(10)), "the streak starts");
    // A success ends the streak.
    let policy = ep.retry_policy.clone().unwrap();
    store
        .record_attempt(record_of(
            attempt(&m2, &ep, Trigger::Manual, 200, at(20)),
            Outcome::Delivered,
            policy,
        ))
        .await
        .unwrap();
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap().failing_since, None);
    store.record_attempt(failing(&m1, at(30))).await.unwrap();
    let fx = store.record_attempt(failing(&m1, at(30).plus(day))).await.unwrap();
    let disabled = fx.endpoint_disabled.expect("auto-disabled after a day of failures");
    assert!(disabled.automatic);
    assert_eq!(disabled.failing_since, Some(at(30)));
    assert!(disabled.endpoint.disabled);
    assert_eq!(fx.state.next_attempt, None, "no retry for a disabled endpoint");
    let stored = store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.disabled_at, Some(at(30).plus(day)), "auto-disable records when, as a user's would");

    // The receiver may ask to be disabled; the endpoint's other pending
    // deliveries are settled with it.
    let ep2 = endpoint(&a.id);
    store.insert_endpoint(&ep2).await.unwrap();
    let m3 = create(&store, &a.id, message("t", at(40)), None).await;
    let m4 = create(&store, &a.id, message("t", at(41)), None).await;
    let policy = ep2.retry_policy.clone().unwrap();
    let rec = AttemptRecord {
        steering: Steering { disable_endpoint: true, ..Default::default() },
        ..record_of(attempt(&m3, &ep2, Trigger::Scheduled, 410, at(50)), Outcome::Failed, policy)
    };
    let fx = store.record_attempt(rec).await.unwrap();
    let disabled = fx.endpoint_disabled.expect("disabled on request");
    assert!(!disabled.automatic);
    assert_eq!(disabled.endpoint.id, ep2.id);
    let d = store.get_delivery(&m4.id, &ep2.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt), (DeliveryStatus::Fail, None));
    let d = store.get_delivery(&m3.id, &ep2.id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts, d.total_attempts, d.last_code),
        (DeliveryStatus::Fail, 1, 1, Some(410))
    );
}

/// Attempts recorded at once (a store may batch them) end as recording
/// them one after the other, in any order, would leave them.
pub async fn concurrent_attempts(store: SharedStore) {
    let day = Duration::from_secs(86_400);
    let mut eps = Vec::new();
    for failing_since in [None, None, Some(T0)] {
        let a = app(None);
        store.insert_app(&a).await.unwrap();
        let ep = Endpoint { failing_since, ..endpoint(&a.id) };
        store.insert_endpoint(&ep).await.unwrap();
        eps.push(ep);
    }
    // `ok`: a healthy endpoint; `asks`: one whose receiver asks to be
    // disabled; `stale`: one failing for a day already, auto-disabled.
    let (ok, asks, stale) = (&eps[0], &eps[1], &eps[2]);
    let msgs = |ep: &Endpoint, n: usize| {
        let store = store.clone();
        let app_id = ep.app_id.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(create(&store, &app_id, message("t", T0), None).await);
            }
            out
        }
    };
    let delivered = msgs(ok, 10).await;
    let retried = msgs(ok, 10).await;
    let manual = msgs(ok, 1).await.remove(0);
    let exhausted = msgs(ok, 1).await.remove(0);
    let settled = msgs(asks, 14).await;
    let auto = msgs(stale, 6).await;
    let policy = ok.retry_policy.clone().unwrap();
    let rec = |m: &Message, ep: &Endpoint, trigger: Trigger, code: u16, when: Timestamp| {
        let outcome = Outcome::classify(&policy, Some(code));
        record_of(attempt(m, ep, trigger, code, when), outcome, policy.clone())
    };

    let mut recs = Vec::new();
    for i in 0..10 {
        recs.push(rec(&delivered[i], ok, Trigger::Scheduled, 200, at(10)));
        recs.push(rec(&retried[i], ok, Trigger::Scheduled, 503, at(10)));
        if i < 5 {
            recs.push(rec(&manual, ok, Trigger::Manual, 500, at(10)));
        }
        if i < 4 {
            recs.push(rec(&exhausted, ok, Trigger::Scheduled, 503, at(10)));
        }
        if (1..10).contains(&i) {
            recs.push(rec(&settled[i], asks, Trigger::Scheduled, 503, at(20)));
        }
        if i == 5 {
            let mut r = rec(&settled[0], asks, Trigger::Scheduled, 410, at(20));
            r.steering = Steering { disable_endpoint: true, ..Default::default() };
            recs.push(r);
        }
        if i < 6 {
            let mut r =
                rec(&auto[i], stale, Trigger::Scheduled, 503, T0.plus(day).plus(Duration::from_secs(10)));
            r.auto_disable_after = Some(day);
            recs.push(r);
        }
    }
    assert_eq!(recs.len(), 45);
    let tasks = recs.iter().cloned().map(|r| {
        let store = store.clone();
        async move { store.record_attempt(r).await.unwrap() }
    });
    let effects = futures_join_all(tasks).await;

    let delivery = |m: &Message, ep: &Endpoint| {
        let store = store.clone();
        let (msg_id, ep_id) = (m.id.clone(), ep.id.clone());
        async move {
            let d = store.get_delivery(&msg_id, &ep_id).await.unwrap().unwrap();
            (d.status, d.attempts, d.next_attempt, d.total_attempts)
        }
    };
    for m in &delivered {
        assert_eq!(delivery(m, ok).await, (DeliveryStatus::Success, 1, None, 1));
    }
    for m in &retried {
        assert_eq!(delivery(m, ok).await, (DeliveryStatus::Pending, 1, Some(at(130)), 1));
    }
    assert_eq!(
        delivery(&manual, ok).await,
        (DeliveryStatus::Pending, 0, Some(T0), 5),
        "manual failures change nothing"
    );
    assert_eq!(delivery(&exhausted, ok).await, (DeliveryStatus::Fail, 4, None, 4), "four attempts in a row");
    let is = |r: &AttemptRecord, m: &Message| r.attempt.msg_id == m.id;
    let used_up: Vec<bool> =
        recs.iter().zip(&effects).filter(|(r, _)| is(r, &exhausted)).map(|(_, fx)| fx.exhausted).collect();
    assert_eq!(used_up.iter().filter(|e| **e).count(), 1, "exactly one attempt used the schedule up");
    assert!(effects.iter().zip(&recs).all(|(fx, r)| !fx.exhausted || is(r, &exhausted)));

    // The receiver's request disabled its endpoint: every delivery of it is
    // settled, whether its attempt was recorded before or after.
    for (i, m) in settled.iter().enumerate() {
        let attempts = u32::from(i < 10);
        assert_eq!(delivery(m, asks).await, (DeliveryStatus::Fail, attempts, None, attempts), "delivery {i}");
    }
    let stored = store.get_endpoint(&asks.app_id, &asks.id).await.unwrap().unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.failing_since, Some(at(20)));
    let reported: Vec<(&AttemptRecord, &EndpointDisabled)> = recs
        .iter()
        .zip(&effects)
        .filter_map(|(r, fx)| fx.endpoint_disabled.as_ref().map(|d| (r, d)))
        .collect();
    assert_eq!(reported.len(), 2, "each disabled endpoint reported once");
    let by_request = reported.iter().find(|(r, _)| r.attempt.endpoint_id == asks.id).unwrap();
    assert!(is(by_request.0, &settled[0]), "reported to the attempt that asked");
    assert!(!by_request.1.automatic);
    assert!(by_request.1.endpoint.disabled);

    // Auto-disabled by whichever failure came first; the others found it so.
    let by_streak = reported.iter().find(|(r, _)| r.attempt.endpoint_id == stale.id).unwrap();
    assert!(by_streak.1.automatic);
    assert_eq!(by_streak.1.failing_since, Some(T0));
    for m in &auto {
        assert_eq!(delivery(m, stale).await, (DeliveryStatus::Fail, 1, None, 1));
    }
    assert!(store.get_endpoint(&stale.app_id, &stale.id).await.unwrap().unwrap().disabled);
    assert!(!store.get_endpoint(&ok.app_id, &ok.id).await.unwrap().unwrap().disabled);
}

/// Stores shared between processes report changes; the store's own
/// writes count too (it cannot tell them apart), which this relies on.
pub async fn notifications(store: SharedStore) {
    let Some(mut events) = store.subscribe() else {
        assert!(!store.shared(), "a shared store must report other nodes' changes");
        return;
    };
    async fn next(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> StoreEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event").unwrap()
    }
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    assert_eq!(next(&mut events).await, StoreEvent::Changed);
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    assert_eq!(next(&mut events).await, StoreEvent::Changed);
    store.insert_token("h", &Scope::Admin, None, T0).await.unwrap();
    assert_eq!(next(&mut events).await, StoreEvent::Changed);
    store.delete_token("h").await.unwrap();
    assert_eq!(next(&mut events).await, StoreEvent::Changed);

    // Leased at ingest: nothing for the others to do.
    let m = create(&store, &a.id, message("t", T0), Some(lease(at(30)))).await;
    let delayed = Message { deliver_at: Some(at(3600)), ..message("t", T0) };
    create(&store, &a.id, delayed, Some(lease(at(30)))).await;
    // Notifications name the endpoints, so nodes whose lanes for them are full need not look.
    let due = |t: Timestamp| StoreEvent::Due { at: t, endpoints: Some(vec![ep.id.clone()]) };
    assert_eq!(next(&mut events).await, due(at(3600)));
    // A scheduled retry is anyone's to make.
    record(&store, &m, &ep, Trigger::Scheduled, 500, at(1)).await;
    assert_eq!(next(&mut events).await, due(at(121)));
    let claimed = store.claim_due(at(121), &lease(at(200)), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store.release(&[claimed[0].key()], at(150)).await.unwrap();
    assert_eq!(next(&mut events).await, due(at(150)));
    assert!(events.try_recv().is_err(), "nothing else was sent");
}

/// What several nodes sharing a store rely on: a live node's renewal keeps
/// what it is working on (and only that), a stopping node's release hands
/// over only its own.
pub async fn lease_renewal(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let e = endpoint(&a.id);
    store.insert_endpoint(&e).await.unwrap();
    let first = create(&store, &a.id, message("t", T0), None).await;
    let forgotten = create(&store, &a.id, message("t", T0), None).await;
    let node = |owner: &str, until: Timestamp| Lease { owner: owner.into(), until };
    let key = |m: &Message| DeliveryKey { msg_id: m.id.clone(), endpoint_id: e.id.clone() };

    let claimed = store.claim_due(at(1), &node("node-a", at(30)), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(store.claim_due(at(2), &node("node-b", at(32)), 10, &[]).await.unwrap().is_empty());
    // A live node renews what it holds: that stays its own past the first
    // expiry. A lease it lost track of is not renewed and lapses.
    let held = [key(&first)];
    assert_eq!(store.renew_leases("node-a", &held, at(90)).await.unwrap(), 1);
    assert_eq!(store.renew_leases("node-b", &held, at(90)).await.unwrap(), 0, "not node-b's lease");
    let lapsed = store.claim_due(at(60), &node("node-b", at(90)), 10, &[]).await.unwrap();
    assert_eq!(lapsed.len(), 1);
    assert_eq!(lapsed[0].message.id, forgotten.id);
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), Some(at(90)));
    // A node stopping releases its own leases only.
    assert_eq!(store.release_all(Some("node-c")).await.unwrap(), 0);
    assert_eq!(store.release_all(Some("node-a")).await.unwrap(), 1);
    let taken = store.claim_due(at(61), &node("node-b", at(91)), 10, &[]).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message.id, first.id);
    // Recording settles the delivery: nothing left to renew.
    record(&store, &first, &e, Trigger::Scheduled, 200, at(62)).await;
    assert_eq!(store.renew_leases("node-b", &[key(&first), key(&forgotten)], at(120)).await.unwrap(), 1);
}
