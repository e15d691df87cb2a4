//! Erasing content (`RetentionStore`).

use super::*;

pub async fn content_erasure(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let old = create(&store, &a.id, Message { expires_at: Some(at(50)), ..message("t", T0) }, None).await;
    let new = create(&store, &a.id, message("t", at(10)), None).await;
    record(&store, &old, &ep, Trigger::Scheduled, 200, at(1)).await;
    record(&store, &new, &ep, Trigger::Scheduled, 200, at(100)).await;

    assert_eq!(store.expunge_expired(at(60), at(50), 100).await.unwrap(), (1, 1));
    assert_eq!(store.expunge_expired(at(60), at(50), 100).await.unwrap(), (0, 0), "nothing left to erase");
    assert_eq!(store.get_message(&a.id, &old.id).await.unwrap().unwrap().payload, None);
    assert!(store.get_message(&a.id, &new.id).await.unwrap().unwrap().payload.is_some());

    let page = PageRequest::first(10, Order::Descending);
    let attempts = store.list_attempts(&a.id, &AttemptFilter::default(), &page).await.unwrap().items;
    assert_eq!(attempts.iter().map(|t| t.response.as_str()).collect::<Vec<_>>(), ["body 200", ""]);
    let (newest, msg) = (&attempts[0].id, &attempts[0].msg_id);
    store.expunge_attempt(&a.id, msg, newest).await.unwrap();
    assert_eq!(store.get_attempt(&a.id, msg, newest).await.unwrap().unwrap().response, "");
    assert!(matches!(store.expunge_attempt("app_other", msg, newest).await, Err(StoreError::NotFound)));
    assert!(matches!(store.expunge_attempt(&a.id, &old.id, newest).await, Err(StoreError::NotFound)));

    store.expunge_message(&a.id, &new.id).await.unwrap();
    assert!(matches!(store.expunge_message(&a.id, "msg_missing").await, Err(StoreError::NotFound)));
    let third = create(&store, &a.id, message("t", at(20)), None).await;
    assert_eq!(store.expunge_app_content(&a.id).await.unwrap(), 1);
    assert_eq!(store.get_message(&a.id, &third.id).await.unwrap().unwrap().payload, None);

    // By message ids (erasure by tag): payloads and their attempts' bodies.
    let tagged = create(&store, &a.id, message("t", at(30)), None).await;
    let kept = create(&store, &a.id, message("t", at(31)), None).await;
    record(&store, &tagged, &ep, Trigger::Scheduled, 500, at(32)).await;
    record(&store, &tagged, &ep, Trigger::Scheduled, 500, at(33)).await;
    record(&store, &kept, &ep, Trigger::Scheduled, 200, at(34)).await;
    let ids = [tagged.id.clone(), "msg_missing".to_owned()];
    assert_eq!(store.expunge_messages(&a.id, &ids).await.unwrap(), (1, 2));
    assert_eq!(store.expunge_messages(&a.id, &ids).await.unwrap(), (0, 0), "nothing left to erase");
    assert_eq!(store.get_message(&a.id, &tagged.id).await.unwrap().unwrap().payload, None);
    let of = |m: &Message| AttemptFilter { msg_id: Some(m.id.clone()), ..Default::default() };
    let bodies =
        |p: hookline::store::Page<Attempt>| p.items.into_iter().map(|t| t.response).collect::<Vec<_>>();
    assert_eq!(bodies(store.list_attempts(&a.id, &of(&tagged), &page).await.unwrap()), ["", ""]);
    assert_eq!(bodies(store.list_attempts(&a.id, &of(&kept), &page).await.unwrap()), ["body 200"]);
    assert!(store.get_message(&a.id, &kept.id).await.unwrap().unwrap().payload.is_some());
    assert_eq!(store.expunge_messages("app_other", std::slice::from_ref(&kept.id)).await.unwrap(), (0, 0));
    assert!(store.get_message(&a.id, &kept.id).await.unwrap().unwrap().payload.is_some());
}

/// Every call of record retention up to the end of its pass, as the
/// maintenance loop makes them; returns the calls and what they deleted.
async fn sweep_all(store: &SharedStore, before: Timestamp, limit: usize) -> (usize, Sweep) {
    let (mut calls, mut total, mut after) = (0, Sweep::default(), None);
    loop {
        let s = store.delete_settled(before, after.take(), limit).await.unwrap();
        assert!(s.examined <= limit as u64 && s.messages <= s.examined, "{s:?}");
        calls += 1;
        total.examined += s.examined;
        total.messages += s.messages;
        total.deliveries += s.deliveries;
        total.attempts += s.attempts;
        match s.next {
            Some(next) => after = Some(next),
            None => return (calls, total),
        }
        assert!(calls < 1000, "the pass never ends");
    }
}

async fn exists(store: &SharedStore, m: &Message) -> bool {
    store.get_message(&m.app_id, &m.id).await.unwrap().is_some()
}

pub async fn settled_records_go_after_record_retention(store: SharedStore) {
    use hookline::domain::ordering::OnFailure;
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let once = RetryPolicy { schedule: vec![], ..RetryPolicy::fixed_two_minutes() };
    let ep = Endpoint { retry_policy: Some(once.clone()), ..endpoint(&a.id) };
    store.insert_endpoint(&ep).await.unwrap();
    let mk = |m: Message| async {
        Message { app_id: a.id.clone(), ..(*create(&store, &a.id, m, None).await).clone() }
    };

    // Old and settled: delivered, failed for good, no endpoint at all.
    let delivered = mk(message("t", T0)).await;
    record(&store, &delivered, &ep, Trigger::Scheduled, 200, at(1)).await;
    record(&store, &delivered, &ep, Trigger::Manual, 200, at(2)).await;
    let failed = mk(message("t", at(1))).await;
    record(&store, &failed, &ep, Trigger::Scheduled, 500, at(2)).await;
    assert_eq!(store.get_delivery(&failed.id, &ep.id).await.unwrap().unwrap().status, DeliveryStatus::Fail);
    let lonely_app = app(None);
    store.insert_app(&lonely_app).await.unwrap();
    let unsent = Message {
        app_id: lonely_app.id.clone(),
        ..(*create(&store, &lonely_app.id, message("t", at(2)), None).await).clone()
    };
    // Old, and its endpoint is gone since.
    let gone_ep = endpoint(&a.id);
    store.insert_endpoint(&gone_ep).await.unwrap();
    let orphan = mk(Message { ..message("t", at(3)) }).await;
    record(&store, &orphan, &gone_ep, Trigger::Scheduled, 200, at(4)).await;
    record(&store, &orphan, &ep, Trigger::Scheduled, 200, at(4)).await;
    store.delete_endpoint(&a.id, &gone_ep.id).await.unwrap();

    // Old but unsettled: never attempted, retrying, leased, delayed.
    let retrying_ep = endpoint(&a.id); // fixed_two_minutes: retries left
    let other_app = app(None);
    store.insert_app(&other_app).await.unwrap();
    let retry_ep = Endpoint { app_id: other_app.id.clone(), ..retrying_ep };
    store.insert_endpoint(&retry_ep).await.unwrap();
    let on_other = |m: Message| async {
        Message { app_id: other_app.id.clone(), ..(*create(&store, &other_app.id, m, None).await).clone() }
    };
    let pending = on_other(message("t", at(4))).await;
    let retrying = on_other(message("t", at(5))).await;
    record(&store, &retrying, &retry_ep, Trigger::Scheduled, 500, at(6)).await;
    let delayed = on_other(Message { deliver_at: Some(at(100_000)), ..message("t", at(6)) }).await;
    let leased = Message {
        app_id: other_app.id.clone(),
        ..(*create(&store, &other_app.id, message("t", at(7)), Some(lease(at(100_000)))).await).clone()
    };

    // Old, ordered on an endpoint that blocks: its failed head and the one
    // held behind it stay.
    let blocking_app = app(None);
    store.insert_app(&blocking_app).await.unwrap();
    let blocking = Endpoint {
        app_id: blocking_app.id.clone(),
        ordering_on_failure: OnFailure::Block,
        retry_policy: Some(once),
        ..endpoint(&blocking_app.id)
    };
    store.insert_endpoint(&blocking).await.unwrap();
    let keyed = |at: Timestamp| Message { ordering_key: Some("K".into()), ..message("t", at) };
    let on_blocking = |m: Message| async {
        let lease = Some(lease(at(600)));
        Message {
            app_id: blocking_app.id.clone(),
            ..(*create(&store, &blocking_app.id, m, lease).await).clone()
        }
    };
    let head = on_blocking(keyed(at(8))).await;
    let held = on_blocking(keyed(at(9))).await;
    let mut rec = record_of(
        attempt(&head, &blocking, Trigger::Scheduled, 500, at(10)),
        Outcome::Failed,
        RetryPolicy { schedule: vec![], ..RetryPolicy::fixed_two_minutes() },
    );
    rec.lease = Some(lease(at(600)));
    store.record_attempt(rec).await.unwrap();
    assert_eq!(
        store.blocked_keys(&blocking.id, &PageRequest::first(5, Order::Ascending)).await.unwrap().items.len(),
        1
    );

    // Old, parked behind its endpoint's throttle.
    let throttled_app = App { throttle_rate: Some(1), ..app(None) };
    store.insert_app(&throttled_app).await.unwrap();
    store.insert_endpoint(&endpoint(&throttled_app.id)).await.unwrap();
    let mut parked = Vec::new();
    for i in 0..2 {
        let m = create(&store, &throttled_app.id, message("t", at(11 + i)), Some(lease(at(600)))).await;
        parked.push(Message { app_id: throttled_app.id.clone(), ..(*m).clone() });
    }

    // Young and settled.
    let young = mk(message("t", at(1000))).await;
    record(&store, &young, &ep, Trigger::Scheduled, 200, at(1001)).await;

    let (_, swept) = sweep_all(&store, at(500), 3).await;
    assert_eq!((swept.messages, swept.deliveries, swept.attempts), (4, 3, 5), "{swept:?}");
    for m in [&delivered, &failed, &unsent, &orphan] {
        assert!(!exists(&store, m).await, "{} should be gone", m.id);
        assert!(store.get_delivery(&m.id, &ep.id).await.unwrap().is_none());
        let attempts = AttemptFilter { msg_id: Some(m.id.clone()), ..Default::default() };
        let page = PageRequest::first(10, Order::Descending);
        assert!(store.list_attempts(&m.app_id, &attempts, &page).await.unwrap().items.is_empty());
    }
    for m in [&pending, &retrying, &delayed, &leased, &head, &held, &parked[0], &parked[1], &young] {
        assert!(exists(&store, m).await, "{} should stay", m.id);
    }
    assert_eq!(
        store.get_delivery(&retrying.id, &retry_ep.id).await.unwrap().unwrap().status,
        DeliveryStatus::Pending,
        "a message still retrying keeps its delivery"
    );
    let attempts = AttemptFilter { msg_id: Some(retrying.id.clone()), ..Default::default() };
    let page = PageRequest::first(10, Order::Descending);
    assert_eq!(store.list_attempts(&other_app.id, &attempts, &page).await.unwrap().items.len(), 1);

    // Nothing more to delete at the same age; the young one goes once old.
    assert_eq!(sweep_all(&store, at(500), 3).await.1.messages, 0);
    let (_, later) = sweep_all(&store, at(2000), 100).await;
    assert_eq!(later.messages, 1);
    assert!(!exists(&store, &young).await);
}

/// 2,500 old messages go in batches of at most the limit, one call per
/// batch, and the pass stops at the first young message.
pub async fn record_retention_works_in_batches(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    // 50 at a time: a loaded machine's pool never waits long for a connection.
    let mut olds = Vec::new();
    for chunk in 0..50u64 {
        olds.extend(
            futures_join_all((chunk * 50..(chunk + 1) * 50).map(|i| {
                let store = Arc::clone(&store);
                let app_id = a.id.clone();
                async move { create(&store, &app_id, message("t", at(i / 100)), None).await }
            }))
            .await,
        );
    }
    let young = create(&store, &a.id, message("t", at(1000)), None).await;
    let (calls, swept) = sweep_all(&store, at(500), 1_000).await;
    assert_eq!(swept.messages, 2_500);
    assert_eq!(calls, 3, "2,500 in batches of 1,000");
    for m in olds.iter().step_by(97) {
        assert!(store.get_message(&a.id, &m.id).await.unwrap().is_none());
    }
    assert!(store.get_message(&a.id, &young.id).await.unwrap().is_some());
    let page = PageRequest::first(10, Order::Descending);
    assert_eq!(store.list_messages(&a.id, &MessageFilter::default(), &page).await.unwrap().items.len(), 1);
}

/// PostgreSQL: the erasure reaches what is due through its partial indexes
/// even when the statistics say nearly every row is due (as they do while
/// payloads wait for their expiry): a sequential scan would first read
/// every row whose content was erased before.
#[tokio::test]
async fn erasure_walks_its_indexes_when_most_rows_are_due() {
    use sqlx::Connection;
    let url = crate::pg::fresh_database().await;
    let store: SharedStore = Arc::new(hookline::store::postgres::PgStore::connect(&url).await.unwrap());
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    for _ in 0..20 {
        let due = || Message { expires_at: Some(at(50)), ..message("t", T0) };
        let batch = (0..100).map(|_| store.create_message(request(&a.id, due(), None)));
        for created in futures_join_all(batch).await {
            let m = created.unwrap().message;
            record(&store, &m, &ep, Trigger::Scheduled, 200, at(1)).await;
        }
    }
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("ANALYZE messages, attempts").execute(&mut db).await.unwrap();
    let explain = format!("EXPLAIN {}", hookline::store::postgres::ERASE_EXPIRED)
        .replace("$3", "25")
        .replace("$2", &at(60).as_millis().to_string())
        .replace("$1", &at(60).as_millis().to_string());
    let plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut db).await.unwrap();
    let plan = plan.join("\n");
    // What is due is chosen from the partial indexes (the rows it names
    // are then found however the planner likes: on a table this small the
    // update may well hash-join a scan of it).
    let from_index = |index: &str| plan.contains(&format!("Index Scan using {index}"));
    assert!(from_index("messages_expiry") && from_index("attempts_expiry"), "{plan}");
    assert_eq!(store.expunge_expired(at(60), at(60), 25).await.unwrap(), (25, 25));
}
