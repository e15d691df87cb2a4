//! Sending again and the counts that decide it (`RedeliveryStore`).

use super::*;

/// Disabling records when (kept once enabled again), and replay-missing's
/// dry run counts what it would send since then without sending it.
pub async fn missed_while_disabled(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = Endpoint { event_types: Some(set(&["t"])), ..endpoint(&a.id) };
    store.insert_endpoint(&ep).await.unwrap();
    create(&store, &a.id, message("t", at(1)), None).await;
    let off = |disabled| EndpointPatch { disabled: Some(disabled), ..Default::default() };
    let disabled = store.update_endpoint(&a.id, &ep.id, off(true), at(10)).await.unwrap();
    assert_eq!(disabled.disabled_at, Some(at(10)));
    for (t, secs) in [("t", 11), ("other", 12), ("t", 13)] {
        create(&store, &a.id, message(t, at(secs)), None).await;
    }
    let enabled = store.update_endpoint(&a.id, &ep.id, off(false), at(20)).await.unwrap();
    let stored = store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((enabled.disabled_at, stored.disabled_at), (Some(at(10)), Some(at(10))), "kept once enabled");
    create(&store, &a.id, message("t", at(21)), None).await;

    let count = |since, until, cap| {
        let (store, stored) = (store.clone(), stored.clone());
        async move { store.count_missing(&stored, since, until, cap).await.unwrap() }
    };
    assert_eq!(count(at(10), None, None).await, (2, false), "its filters apply");
    assert_eq!(count(at(12), None, None).await, (1, false));
    assert_eq!(count(at(10), Some(at(13)), None).await, (1, false));
    // A cap bounds what is looked at: the first two (one wanted), more after.
    assert_eq!(count(at(10), None, Some(2)).await, (1, true));
    assert_eq!(count(at(10), None, Some(3)).await, (2, false));
    assert_eq!(count(at(10), None, None).await, (2, false), "a count sends nothing");
    assert_eq!(store.replay_missing(&stored, at(10), None, at(30)).await.unwrap(), 2);
    assert_eq!(count(at(10), None, None).await, (0, false));
    let forget = EndpointPatch { forget_disabled: true, ..Default::default() };
    let forgotten = store.update_endpoint(&a.id, &ep.id, forget, at(35)).await.unwrap();
    assert_eq!(forgotten.disabled_at, None);
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap().disabled_at, None);

    // Disabled again: the new time replaces the old one; an endpoint
    // created disabled has one from the start.
    let again = store.update_endpoint(&a.id, &ep.id, off(true), at(40)).await.unwrap();
    assert_eq!(again.disabled_at, Some(at(40)));
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap().disabled_at, Some(at(40)));
    let born_off = Endpoint { disabled: true, created_at: at(50), updated_at: at(50), ..endpoint(&a.id) };
    store.insert_endpoint(&born_off).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, &born_off.id).await.unwrap().unwrap().disabled_at, Some(at(50)));
}

pub async fn requeue_and_replay(store: SharedStore) {
    use hookline::store::RequeueFilter;
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let ok = create(&store, &a.id, message("t", at(1)), None).await;
    let bad = create(&store, &a.id, Message { tags: Some(set(&["x"])), ..message("t", at(2)) }, None).await;
    let waiting = create(&store, &a.id, message("t", at(3)), None).await;
    record(&store, &ok, &ep, Trigger::Scheduled, 200, at(10)).await;
    for k in 0..4 {
        record(&store, &bad, &ep, Trigger::Scheduled, 500, at(11 + k)).await;
    }

    let all = RequeueFilter { since: T0, ..Default::default() };
    assert_eq!(store.requeue(&a.id, &ep.id, &all, at(100), true).await.unwrap(), 2, "settled ones only");
    let failed = RequeueFilter { statuses: Some(vec![DeliveryStatus::Fail]), ..all.clone() };
    assert_eq!(store.requeue(&a.id, &ep.id, &failed, at(100), true).await.unwrap(), 1);
    let five = RequeueFilter { status_code_class: Some(500), ..all.clone() };
    assert_eq!(store.requeue(&a.id, &ep.id, &five, at(100), true).await.unwrap(), 1);
    let tagged = RequeueFilter { tag: Some("x".into()), ..all.clone() };
    assert_eq!(store.requeue(&a.id, &ep.id, &tagged, at(100), true).await.unwrap(), 1);
    let window = RequeueFilter { since: at(2), until: Some(at(3)), ..all.clone() };
    assert_eq!(store.requeue(&a.id, &ep.id, &window, at(100), true).await.unwrap(), 1);
    assert_eq!(store.get_delivery(&bad.id, &ep.id).await.unwrap().unwrap().status, DeliveryStatus::Fail);

    assert_eq!(store.requeue(&a.id, &ep.id, &failed, at(100), false).await.unwrap(), 1);
    let d = store.get_delivery(&bad.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Pending, 0, Some(at(100))));
    let due = store.claim_due(at(100), &lease(at(130)), 10, &[]).await.unwrap();
    assert_eq!(
        due.iter().map(|t| t.message.id.as_str()).collect::<BTreeSet<_>>(),
        [bad.id.as_str(), waiting.id.as_str()].into()
    );

    // A new endpoint gets what it missed, once.
    let late = Endpoint { event_types: Some(set(&["t"])), ..endpoint(&a.id) };
    store.insert_endpoint(&late).await.unwrap();
    assert_eq!(store.replay_missing(&late, at(2), None, at(200)).await.unwrap(), 2);
    assert_eq!(store.replay_missing(&late, T0, None, at(200)).await.unwrap(), 1);
    assert_eq!(store.replay_missing(&late, T0, None, at(200)).await.unwrap(), 0);
    let d = store.get_delivery(&ok.id, &late.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt), (DeliveryStatus::Pending, Some(at(200))));
    let other = Endpoint { event_types: Some(set(&["other"])), ..endpoint(&a.id) };
    store.insert_endpoint(&other).await.unwrap();
    assert_eq!(store.replay_missing(&other, T0, None, at(200)).await.unwrap(), 0, "filters apply");

    // Counts, by the listings' filters.
    assert_eq!(store.count_messages(&a.id, &MessageFilter::default()).await.unwrap(), 3);
    let tagged = MessageFilter { tag: Some("x".into()), ..Default::default() };
    assert_eq!(store.count_messages(&a.id, &tagged).await.unwrap(), 1);
    let window = MessageFilter { after: Some(at(1)), before: Some(at(3)), ..Default::default() };
    assert_eq!(store.count_messages(&a.id, &window).await.unwrap(), 1);
    assert_eq!(store.count_messages("app_other", &MessageFilter::default()).await.unwrap(), 0);
    let of_ep = |status| AttemptFilter { endpoint_id: Some(ep.id.clone()), status, ..Default::default() };
    assert_eq!(store.count_attempts(&a.id, &of_ep(None)).await.unwrap(), 5);
    assert_eq!(store.count_attempts(&a.id, &of_ep(Some(DeliveryStatus::Success))).await.unwrap(), 1);
    assert_eq!(store.count_attempts(&a.id, &of_ep(Some(DeliveryStatus::Fail))).await.unwrap(), 4);
    let late = AttemptFilter { after: Some(at(12)), ..of_ep(None) };
    assert_eq!(store.count_attempts(&a.id, &late).await.unwrap(), 2);

    let stats = store.endpoint_stats(&a.id, &ep.id, None, None).await.unwrap();
    assert_eq!((stats.success, stats.sending, stats.pending, stats.fail), (1, 2, 0, 0));
    let since = store.endpoint_stats(&a.id, &ep.id, Some(at(2)), Some(at(3))).await.unwrap();
    assert_eq!((since.success, since.sending), (0, 1));
}

pub async fn dashboard_queries(store: SharedStore) {
    let acme = App { name: "Acme Corp".into(), ..app(Some("acme-prod")) };
    let other = App { name: "Globex".into(), ..app(None) };
    store.insert_app(&acme).await.unwrap();
    store.insert_app(&other).await.unwrap();
    let page = PageRequest::first(10, Order::Ascending);
    let search = |s: &str| AppFilter { search: Some(s.into()) };
    let found = |p: hookline::store::Page<App>| p.items.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(found(store.list_apps(&search("corp"), &page).await.unwrap()), vec![acme.id.clone()]);
    assert_eq!(found(store.list_apps(&search("PROD"), &page).await.unwrap()), vec![acme.id.clone()]);
    assert_eq!(found(store.list_apps(&search(&other.id), &page).await.unwrap()), vec![other.id.clone()]);
    assert!(found(store.list_apps(&search("%"), &page).await.unwrap()).is_empty(), "wildcards are literal");

    let ep = endpoint(&acme.id);
    store.insert_endpoint(&ep).await.unwrap();
    let mut msgs = Vec::new();
    for i in 0..5 {
        msgs.push(create(&store, &acme.id, message("t", at(i)), None).await);
    }
    let summaries = store.app_summaries(&[acme.id.clone(), other.id.clone()], 3).await.unwrap();
    let s = &summaries[&acme.id];
    assert_eq!(
        (s.endpoints, s.messages, s.last_message_at),
        (1, 3, Some(at(4))),
        "messages counted up to the cap"
    );
    assert_eq!(summaries[&other.id].messages, 0);

    // Attempts: 2 delivered, 1 failed for good, 2 still pending.
    record(&store, &msgs[0], &ep, Trigger::Scheduled, 200, at(10)).await;
    record(&store, &msgs[1], &ep, Trigger::Scheduled, 200, at(11)).await;
    for k in 0..4 {
        record(&store, &msgs[2], &ep, Trigger::Scheduled, 500, at(12 + k)).await;
    }
    record(&store, &msgs[3], &ep, Trigger::Manual, 503, at(20)).await;
    let d = store.get_delivery(&msgs[2].id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.total_attempts, d.last_code, d.last_attempt_at), (4, Some(500), Some(at(15))));
    let d = store.get_delivery(&msgs[3].id, &ep.id).await.unwrap().unwrap();
    assert_eq!(
        (d.total_attempts, d.attempts, d.last_code),
        (1, 0, Some(503)),
        "manual attempts count in the total only"
    );

    let recent = store.endpoint_recent(std::slice::from_ref(&ep.id), 100).await.unwrap();
    let c = &recent[&ep.id];
    assert_eq!((c.success, c.fail, c.pending), (2, 1, 2));
    let latest = store.endpoint_recent(std::slice::from_ref(&ep.id), 2).await.unwrap();
    let c = &latest[&ep.id];
    assert_eq!((c.success, c.fail, c.pending), (0, 0, 2), "only the latest deliveries");

    let ids: Vec<String> = msgs.iter().map(|m| m.id.clone()).collect();
    let counts = store.message_delivery_counts(&ids).await.unwrap();
    assert_eq!(counts[&msgs[0].id].success, 1);
    assert_eq!(counts[&msgs[2].id].fail, 1);
    assert_eq!(counts[&msgs[4].id].pending, 1);
}

/// What a recover sends again: the latest attempt failed (settled or
/// waiting for a retry), in the window, with a payload, not in flight.
pub async fn recoverable_deliveries(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    let other = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    store.insert_endpoint(&other).await.unwrap();
    let before = create(&store, &a.id, message("t", at(1)), None).await;
    let ok = create(&store, &a.id, message("t", at(2)), None).await;
    let settled = create(&store, &a.id, message("t", at(3)), None).await;
    let waiting = create(&store, &a.id, message("t", at(4)), None).await;
    let recovered = create(&store, &a.id, message("t", at(5)), None).await;
    let never = create(&store, &a.id, message("t", at(6)), None).await;
    let erased = create(&store, &a.id, message("t", at(7)), None).await;
    let in_flight = create(&store, &a.id, message("t", at(8)), Some(lease(at(900)))).await;
    let after = create(&store, &a.id, message("t", at(9)), None).await;

    for m in [&before, &settled, &recovered, &erased, &after] {
        for k in 0..4 {
            record(&store, m, &ep, Trigger::Scheduled, 500, at(20 + k)).await;
        }
    }
    record(&store, &ok, &ep, Trigger::Scheduled, 200, at(20)).await;
    record(&store, &waiting, &ep, Trigger::Scheduled, 500, at(20)).await;
    record(&store, &recovered, &ep, Trigger::Manual, 200, at(30)).await;
    record(&store, &in_flight, &ep, Trigger::Manual, 500, at(30)).await;
    record(&store, &settled, &other, Trigger::Scheduled, 500, at(20)).await;
    store.expunge_message(&a.id, &erased.id).await.unwrap();
    assert_eq!(
        store.get_delivery(&waiting.id, &ep.id).await.unwrap().unwrap().status,
        DeliveryStatus::Pending
    );
    assert_eq!(store.get_delivery(&never.id, &ep.id).await.unwrap().unwrap().total_attempts, 0);

    let ids = |p: hookline::store::Page<Message>| p.items.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let all = PageRequest::first(10, Order::Ascending);
    let found = store.recoverable(&a.id, &ep.id, at(2), Some(at(9)), &all).await.unwrap();
    assert!(!found.more);
    assert_eq!(ids(found), [settled.id.clone(), waiting.id.clone()]);
    let found = store.recoverable(&a.id, &ep.id, T0, None, &all).await.unwrap();
    assert_eq!(ids(found), [&*before.id, &*settled.id, &*waiting.id, &*after.id]);
    assert!(found_payload(&store, &a.id, &ep.id).await, "rows carry the payload to send");

    // A page at a time, by message id.
    let first = store.recoverable(&a.id, &ep.id, T0, None, &PageRequest::first(1, Order::Ascending)).await;
    let first = first.unwrap();
    assert!(first.more);
    let next = PageRequest {
        limit: 2,
        cursor: Some(Cursor::After(first.items[0].id.clone())),
        order: Order::Ascending,
    };
    let second = store.recoverable(&a.id, &ep.id, T0, None, &next).await.unwrap();
    assert!(second.more);
    assert_eq!(ids(second), [settled.id.clone(), waiting.id.clone()]);

    // Once a manual attempt succeeds, the delivery is no longer recoverable.
    record(&store, &waiting, &ep, Trigger::Manual, 200, at(40)).await;
    let found = store.recoverable(&a.id, &ep.id, at(2), Some(at(9)), &all).await.unwrap();
    assert_eq!(ids(found), [settled.id.as_str()]);
    let found = store.recoverable(&a.id, &other.id, T0, None, &all).await.unwrap();
    assert_eq!(ids(found), [settled.id.as_str()], "per endpoint");
}

async fn found_payload(store: &SharedStore, app_id: &str, ep_id: &str) -> bool {
    let page = PageRequest::first(1, Order::Ascending);
    let found = store.recoverable(app_id, ep_id, T0, None, &page).await.unwrap();
    found.items.iter().all(|m| m.payload.as_deref() == Some(&br#"{"a": 1}"#[..]))
}
