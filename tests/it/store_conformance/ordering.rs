//! Ordered delivery: heads, held deliveries, promotion, blocking and
//! skipping (`DispatchStore` on those paths, `OrderingStore` for the rest).

use hookline::domain::ordering::OnFailure;

use super::*;

fn keyed(key: &str, created_at: Timestamp) -> Message {
    Message { ordering_key: Some(key.into()), ..message("t", created_at) }
}

/// A scheduled attempt of `m` to `ep` answered `code`, recorded by
/// "node-a", which takes the key's next delivery if it may go.
async fn answer(store: &SharedStore, m: &Message, ep: &Endpoint, code: u16, at: Timestamp) -> AttemptEffects {
    let policy = ep.retry_policy.clone().unwrap_or_default();
    let outcome = Outcome::classify(&policy, Some(code));
    let mut rec = record_of(attempt(m, ep, Trigger::Scheduled, code, at), outcome, policy);
    rec.lease = Some(lease(at.plus(Duration::from_secs(600))));
    store.record_attempt(rec).await.unwrap()
}

async fn waiting_for(store: &SharedStore, m: &Message, ep: &Endpoint) -> Option<String> {
    store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap().waiting_for
}

pub async fn one_key_goes_in_order_and_others_pass(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();

    let mut a_msgs = Vec::new();
    let mut sent_now = Vec::new();
    for (i, key) in ["A", "A", "B", "A"].iter().enumerate() {
        let c = store
            .create_message(request(&a.id, keyed(key, at(i as u64)), Some(lease(at(600)))))
            .await
            .unwrap();
        sent_now.push(!c.send_now.is_empty());
        if *key == "A" {
            a_msgs.push(c.message);
        }
    }
    assert_eq!(sent_now, [true, false, true, false], "only each key's head goes at once");
    let unkeyed =
        store.create_message(request(&a.id, message("t", at(5)), Some(lease(at(600))))).await.unwrap();
    assert_eq!(unkeyed.send_now.len(), 1, "unkeyed messages are never held");
    assert_eq!(waiting_for(&store, &a_msgs[1], &ep).await, Some(a_msgs[0].id.clone()));
    assert_eq!(waiting_for(&store, &a_msgs[0], &ep).await, None);
    assert!(
        store.claim_due(at(100), &lease(at(2000)), 100, &[]).await.unwrap().is_empty(),
        "held ones are never claimable"
    );
    assert_eq!(store.endpoint_flow(&ep.id, at(10)).await.unwrap().held, 2);

    // The head fails with retries left: its key waits, the others do not.
    let fx = answer(&store, &a_msgs[0], &ep, 500, at(10)).await;
    assert!(fx.next.is_none());
    assert_eq!(waiting_for(&store, &a_msgs[1], &ep).await, Some(a_msgs[0].id.clone()));
    // Its retry is claimed on time; then it succeeds and hands over the next.
    let retry = store.claim_due(at(130), &lease(at(700)), 100, &[]).await.unwrap();
    assert_eq!(retry.iter().map(|t| t.message.id.clone()).collect::<Vec<_>>(), [a_msgs[0].id.clone()]);
    let fx = answer(&store, &a_msgs[0], &ep, 200, at(131)).await;
    let next = fx.next.expect("the key's next delivery, leased to the recorder");
    assert_eq!(next.message.id, a_msgs[1].id);
    let d = store.get_delivery(&a_msgs[1].id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.waiting_for), (DeliveryStatus::Sending, None));
    assert_eq!(waiting_for(&store, &a_msgs[2], &ep).await, Some(a_msgs[1].id.clone()));
    // The last one of the key: after it, the key is idle and a new
    // message goes at once.
    answer(&store, &a_msgs[1], &ep, 200, at(132)).await;
    let fx = answer(&store, &a_msgs[2], &ep, 200, at(133)).await;
    assert!(fx.next.is_none());
    let again =
        store.create_message(request(&a.id, keyed("A", at(134)), Some(lease(at(700))))).await.unwrap();
    assert_eq!(again.send_now.len(), 1);
}

pub async fn fifo_endpoints_order_everything(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let mut fifo = endpoint(&a.id);
    fifo.fifo = true;
    store.insert_endpoint(&fifo).await.unwrap();
    let plain = endpoint(&a.id);
    store.insert_endpoint(&plain).await.unwrap();
    let first = store.create_message(request(&a.id, message("t", T0), Some(lease(at(600))))).await.unwrap();
    let second = store.create_message(request(&a.id, keyed("X", at(1)), Some(lease(at(600))))).await.unwrap();
    assert_eq!(first.send_now.len(), 2);
    assert_eq!(
        second.send_now.iter().map(|t| t.endpoint.id.as_str()).collect::<Vec<_>>(),
        [plain.id.as_str()],
        "held at the FIFO endpoint only"
    );
    assert_eq!(waiting_for(&store, &second.message, &fifo).await, Some(first.message.id.clone()));
}

pub async fn a_failed_head_skips_or_blocks(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let once = RetryPolicy { schedule: vec![], ..RetryPolicy::fixed_two_minutes() };
    let mut skipping = endpoint(&a.id);
    skipping.retry_policy = Some(once.clone());
    let mut blocking = endpoint(&a.id);
    blocking.retry_policy = Some(once);
    blocking.ordering_on_failure = OnFailure::Block;
    store.insert_endpoint(&skipping).await.unwrap();
    store.insert_endpoint(&blocking).await.unwrap();
    let m1 =
        store.create_message(request(&a.id, keyed("K", T0), Some(lease(at(600))))).await.unwrap().message;
    let m2 =
        store.create_message(request(&a.id, keyed("K", at(1)), Some(lease(at(600))))).await.unwrap().message;
    let m3 =
        store.create_message(request(&a.id, keyed("K", at(2)), Some(lease(at(600))))).await.unwrap().message;

    // Skip (the default): the key moves on; the failed one stays failed.
    let fx = answer(&store, &m1, &skipping, 500, at(3)).await;
    assert!(fx.exhausted);
    assert_eq!(fx.next.map(|t| t.message.id.clone()), Some(m2.id.clone()));
    assert_eq!(store.get_delivery(&m1.id, &skipping.id).await.unwrap().unwrap().status, DeliveryStatus::Fail);

    // Block: the key waits, and says so.
    let fx = answer(&store, &m1, &blocking, 500, at(3)).await;
    assert!(fx.next.is_none());
    let blocked = store.blocked_keys(&blocking.id, &PageRequest::first(50, Order::Ascending)).await.unwrap();
    assert_eq!(blocked.items.len(), 1);
    assert_eq!((blocked.items[0].key.as_str(), blocked.items[0].head_msg_id.as_str()), ("K", m1.id.as_str()));
    assert!(
        store
            .blocked_keys(&skipping.id, &PageRequest::first(50, Order::Ascending))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        store
            .claim_due(at(1000), &lease(at(2000)), 100, &[])
            .await
            .unwrap()
            .iter()
            .all(|t| t.endpoint.id != blocking.id)
    );

    // A manual success of a held one leaves the order alone: it is done,
    // and later skipped over.
    let manual = record_of(
        attempt(&m2, &blocking, Trigger::Manual, 200, at(4)),
        Outcome::Delivered,
        RetryPolicy::default(),
    );
    store.record_attempt(manual).await.unwrap();
    assert_eq!(
        store.get_delivery(&m2.id, &blocking.id).await.unwrap().unwrap().status,
        DeliveryStatus::Success
    );

    // Skipping the blocked head: the next still waiting (m3) becomes due.
    assert!(matches!(store.skip_blocked(&skipping.id, "K", at(5)).await, Err(StoreError::NotFound)));
    let next = store.skip_blocked(&blocking.id, "K", at(5)).await.unwrap();
    assert_eq!(next.map(|k| k.msg_id), Some(m3.id.clone()));
    let due = store.claim_due(at(5), &lease(at(600)), 100, &[]).await.unwrap();
    assert!(due.iter().any(|t| t.endpoint.id == blocking.id && t.message.id == m3.id));
    assert!(
        store
            .blocked_keys(&blocking.id, &PageRequest::first(50, Order::Ascending))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn replays_reenter_in_order_and_disabling_forgets_keys(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let mut msgs = Vec::new();
    for i in 0..3 {
        let c = store.create_message(request(&a.id, keyed("R", at(i)), Some(lease(at(600))))).await.unwrap();
        msgs.push(c.message);
    }
    for (i, m) in msgs.iter().enumerate() {
        let fx = answer(&store, m, &ep, 200, at(10 + i as u64)).await;
        assert_eq!(fx.next.is_some(), i < 2);
    }
    // A new one of the key is pending when the three are sent again: they
    // queue behind it, in their original order.
    let newer =
        store.create_message(request(&a.id, keyed("R", at(20)), Some(lease(at(600))))).await.unwrap().message;
    let filter = RequeueFilter { since: T0, ..Default::default() };
    assert_eq!(store.requeue(&a.id, &ep.id, &filter, at(30), false).await.unwrap(), 3);
    assert_eq!(waiting_for(&store, &msgs[0], &ep).await, Some(newer.id.clone()));
    let fx = answer(&store, &newer, &ep, 200, at(31)).await;
    assert_eq!(fx.next.map(|t| t.message.id.clone()), Some(msgs[0].id.clone()));
    assert_eq!(waiting_for(&store, &msgs[2], &ep).await, Some(msgs[0].id.clone()));

    // Disabling settles everything pending, held ones too, and forgets the key.
    store
        .update_endpoint(&a.id, &ep.id, EndpointPatch { disabled: Some(true), ..Default::default() }, at(40))
        .await
        .unwrap();
    for m in &msgs[1..] {
        let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
        assert_eq!((d.status, d.waiting_for), (DeliveryStatus::Fail, None));
    }
    store
        .update_endpoint(&a.id, &ep.id, EndpointPatch { disabled: Some(false), ..Default::default() }, at(41))
        .await
        .unwrap();
    let fresh = store.create_message(request(&a.id, keyed("R", at(42)), Some(lease(at(600))))).await.unwrap();
    assert_eq!(fresh.send_now.len(), 1, "the key starts afresh");
}
