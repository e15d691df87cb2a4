//! Ingest and the read side of messages, deliveries and attempts (`MessageStore`).

use super::*;

pub async fn message_fan_out(store: SharedStore) {
    let a = app(Some("fan"));
    store.insert_app(&a).await.unwrap();
    let all = endpoint(&a.id);
    let typed = Endpoint { event_types: Some(set(&["invoice.paid"])), ..endpoint(&a.id) };
    let channeled = Endpoint { channels: Some(set(&["eu"])), ..endpoint(&a.id) };
    let disabled = Endpoint { disabled: true, ..endpoint(&a.id) };
    for ep in [&all, &typed, &channeled, &disabled] {
        store.insert_endpoint(ep).await.unwrap();
    }
    let targets = |m: &hookline::store::CreatedMessage| {
        m.endpoints.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>()
    };

    let req = |m: Message, lease: Option<Lease>| request("fan", m, lease);
    let paid = store.create_message(req(message("invoice.paid", T0), Some(lease(at(60))))).await.unwrap();
    assert_eq!(targets(&paid), [all.id.clone(), typed.id.clone()].into());
    assert_eq!(paid.send_now.len(), 2, "both leased, to be sent now");
    assert_eq!(paid.message.app_id, a.id);
    let d = store.get_delivery(&paid.message.id, &all.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Sending, 0, Some(T0)));

    let eu = Message { channels: Some(set(&["eu", "us"])), ..message("other", T0) };
    let eu = store.create_message(req(eu, None)).await.unwrap();
    assert_eq!(targets(&eu), [all.id.clone(), channeled.id.clone()].into());
    assert!(eu.send_now.is_empty());
    let d = store.get_delivery(&eu.message.id, &channeled.id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);

    // A delayed message is never leased up front.
    let later = Message { deliver_at: Some(at(3600)), ..message("other", T0) };
    let later = store.create_message(req(later, Some(lease(at(60))))).await.unwrap();
    assert!(later.send_now.is_empty());
    assert_eq!(later.wake, Some(at(3600)));
    assert_eq!(
        store.get_delivery(&later.message.id, &all.id).await.unwrap().unwrap().next_attempt,
        Some(at(3600))
    );

    // eventId is unique per application; lookups work by it.
    let with_id = Message { event_id: Some("evt-1".into()), ..message("t", T0) };
    store.create_message(req(with_id, None)).await.unwrap();
    let again = Message { event_id: Some("evt-1".into()), ..message("t", T0) };
    assert!(matches!(store.create_message(req(again, None)).await, Err(StoreError::Conflict(_))));
    assert!(store.get_message(&a.id, "evt-1").await.unwrap().is_some());

    // Unknown application: not found, unless one is to be created.
    let orphan = request("ghost", message("t", T0), None);
    assert!(matches!(store.create_message(orphan).await, Err(StoreError::NotFound)));
    let created =
        CreateMessage { new_app: Some(app(Some("ghost"))), ..request("ghost", message("t", T0), None) };
    let m = store.create_message(created).await.unwrap();
    assert_eq!(store.get_app("ghost").await.unwrap().unwrap().id, m.message.app_id);
    assert!(m.endpoints.is_empty());
}

pub async fn listings_filter(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let m1 =
        create(&store, &a.id, Message { channels: Some(set(&["eu"])), ..message("x.created", at(10)) }, None)
            .await;
    let m2 =
        create(&store, &a.id, Message { tags: Some(set(&["vip"])), ..message("x.paid", at(20)) }, None).await;
    let m3 = create(&store, &a.id, message("x.paid", at(30)), None).await;
    record(&store, &m3, &ep, Trigger::Scheduled, 200, at(31)).await;

    let page = PageRequest::first(10, Order::Descending);
    let ids = |p: hookline::store::Page<Message>| p.items.into_iter().map(|m| m.id).collect::<Vec<String>>();
    let one = |m: &Message| vec![m.id.clone()];
    let f = |f: MessageFilter| f;
    let all = store.list_messages(&a.id, &f(MessageFilter::default()), &page).await.unwrap();
    assert_eq!(ids(all), [m3.id.clone(), m2.id.clone(), m1.id.clone()]);
    let paid = MessageFilter { event_types: Some(vec!["x.paid".into()]), ..Default::default() };
    assert_eq!(ids(store.list_messages(&a.id, &paid, &page).await.unwrap()), [m3.id.clone(), m2.id.clone()]);
    let eu = MessageFilter { channel: Some("eu".into()), ..Default::default() };
    assert_eq!(ids(store.list_messages(&a.id, &eu, &page).await.unwrap()), one(&m1));
    let vip = MessageFilter { tag: Some("vip".into()), ..Default::default() };
    assert_eq!(ids(store.list_messages(&a.id, &vip, &page).await.unwrap()), one(&m2));
    let window = MessageFilter { after: Some(at(10)), before: Some(at(30)), ..Default::default() };
    assert_eq!(ids(store.list_messages(&a.id, &window, &page).await.unwrap()), one(&m2));

    let delivered = DeliveryFilter { status: Some(DeliveryStatus::Success), ..Default::default() };
    let rows = store.list_endpoint_deliveries(&a.id, &ep.id, &delivered, &page).await.unwrap();
    assert_eq!(rows.items.len(), 1);
    assert_eq!(rows.items[0].1.id, m3.id);
    let pending = DeliveryFilter { status: Some(DeliveryStatus::Pending), ..Default::default() };
    assert_eq!(store.list_endpoint_deliveries(&a.id, &ep.id, &pending, &page).await.unwrap().items.len(), 2);
    let dests = store.list_message_deliveries(&a.id, &m3.id, &page).await.unwrap();
    assert_eq!(dests.items.len(), 1);
    assert_eq!(
        (dests.items[0].0.status, dests.items[0].1.id.as_str()),
        (DeliveryStatus::Success, ep.id.as_str())
    );
}

pub async fn message_idempotency(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let e1 = endpoint(&a.id);
    let e2 = Endpoint { uid: Some("second".into()), ..endpoint(&a.id) };
    store.insert_endpoint(&e1).await.unwrap();
    store.insert_endpoint(&e2).await.unwrap();
    let keyed =
        |m: Message| CreateMessage { idempotency_key: Some("key-1".into()), ..request(&a.id, m, None) };

    let first = store.create_message(keyed(message("t", T0))).await.unwrap();
    assert!(!first.existing);
    assert_eq!(first.endpoints.len(), 2);
    let again = store.create_message(keyed(message("t", at(60)))).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.message.id, first.message.id);
    assert!(again.endpoints.is_empty());
    // The key holds for a day only.
    let later = store.create_message(keyed(message("t", at(86_400)))).await.unwrap();
    assert!(!later.existing);
    assert_ne!(later.message.id, first.message.id);

    // Nodes racing with a new key end up with one message between them.
    let raced = |i| CreateMessage {
        idempotency_key: Some("key-2".into()),
        ..request(&a.id, message("t", at(i)), None)
    };
    let results = futures_join_all((0..8).map(|i| store.create_message(raced(i)))).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let ids: BTreeSet<&str> = results.iter().map(|r| r.message.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one message");
    assert_eq!(results.iter().filter(|r| !r.existing).count(), 1, "created once");

    // send-example: one endpoint, by id or uid, whatever its filters.
    let only =
        CreateMessage { only_endpoint: Some("second".into()), ..request(&a.id, message("t", at(5)), None) };
    let sent = store.create_message(only).await.unwrap();
    assert_eq!(sent.endpoints.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [e2.id.as_str()]);
    assert_eq!(store.get_delivery(&sent.message.id, &e1.id).await.unwrap(), None);
}

/// The trace context a message was created in is kept with it: the API
/// reads it back, and so does the dispatcher when it claims the delivery
/// later (a retry hours on, on another node), so the attempt joins the trace.
pub async fn message_trace_context(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    store.insert_endpoint(&endpoint(&a.id)).await.unwrap();
    let trace = hookline::domain::model::TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("caller=1,other=2".into()),
    };
    let traced =
        create(&store, &a.id, Message { trace: Some(trace.clone()), ..message("t", T0) }, None).await;
    let stateless = hookline::domain::model::TraceContext { tracestate: None, ..trace.clone() };
    let bare =
        create(&store, &a.id, Message { trace: Some(stateless.clone()), ..message("t", T0) }, None).await;
    let untraced = create(&store, &a.id, message("t", T0), None).await;

    let read = |id: String| {
        let store = store.clone();
        let app_id = a.id.clone();
        async move { store.get_message(&app_id, &id).await.unwrap().unwrap().trace }
    };
    assert_eq!(read(traced.id.clone()).await, Some(trace.clone()));
    assert_eq!(read(bare.id.clone()).await, Some(stateless.clone()));
    assert_eq!(read(untraced.id.clone()).await, None);

    let claimed = store.claim_due(at(1), &lease(at(60)), 10, &[]).await.unwrap();
    let by_id: std::collections::HashMap<_, _> =
        claimed.iter().map(|t| (t.message.id.clone(), t.message.trace.clone())).collect();
    assert_eq!(by_id.len(), 3);
    assert_eq!(by_id[&traced.id], Some(trace));
    assert_eq!(by_id[&bare.id], Some(stateless));
    assert_eq!(by_id[&untraced.id], None);
}

/// A message for an endpoint id that names none (imported history) is
/// stored with no delivery.
pub async fn message_without_deliveries(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    store.insert_endpoint(&endpoint(&a.id)).await.unwrap();
    let req = CreateMessage { only_endpoint: Some(String::new()), ..request(&a.id, message("t", T0), None) };
    let created = store.create_message(req).await.unwrap();
    assert!(created.endpoints.is_empty());
    let page = PageRequest::first(10, Order::Ascending);
    let deliveries = store.list_message_deliveries(&a.id, &created.message.id, &page).await.unwrap();
    assert!(deliveries.items.is_empty());
    assert_eq!(store.next_due(T0, &[]).await.unwrap(), None, "nothing to send");
    assert!(store.get_message(&a.id, &created.message.id).await.unwrap().unwrap().payload.is_some());
}

/// Ingest sees the configuration as it is now: an endpoint just added gets
/// the next message, one just disabled, filtered away or deleted does not,
/// and a throttle set a moment ago applies (a store may keep applications
/// and endpoints in memory for ingest; it must never answer from an old
/// copy). Many messages at once (which a store may store in batches) are
/// all stored with their deliveries, and one idempotency key sent many
/// times at once creates one message.
pub async fn ingest_follows_configuration_changes(store: SharedStore) {
    ingest_follows_changes_made_by(store.clone(), store).await;
}

/// PostgreSQL: the changes are made on one node, the messages sent to another.
#[tokio::test]
async fn ingest_on_one_node_follows_changes_made_on_another() {
    let url = crate::pg::fresh_database().await;
    let ingest: SharedStore = Arc::new(PgStore::connect(&url).await.unwrap());
    let admin: SharedStore = Arc::new(PgStore::connect(&url).await.unwrap());
    ingest_follows_changes_made_by(ingest, admin).await;
}

/// A store on `url` with 1,500 deliveries sent through it (more than the
/// 1,000 rows the statistics task waits for), kept open so that task runs.
/// Autovacuum is off for `deliveries`, so that only the store's statistics
/// task can analyze it (autovacuum's own analysis, whenever it comes by,
/// would pass or fail these tests by itself).
async fn grow_deliveries(url: &str) -> SharedStore {
    use sqlx::Connection;
    let store: SharedStore = Arc::new(PgStore::connect(url).await.unwrap());
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("ALTER TABLE deliveries SET (autovacuum_enabled = false)").execute(&mut db).await.unwrap();
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    store.insert_endpoint(&endpoint(&a.id)).await.unwrap();
    for _ in 0..15 {
        let batch = (0..100).map(|_| store.create_message(request(&a.id, message("t", T0), None)));
        for created in futures_join_all(batch).await {
            created.unwrap();
        }
    }
    store
}

/// PostgreSQL: a young database's busiest tables get planner statistics as
/// they grow, not a minute later from autovacuum, so the statements' cached
/// plans use their indexes instead of scanning every delivery.
#[tokio::test]
async fn young_tables_get_planner_statistics_as_they_grow() {
    use sqlx::Connection;
    let url = crate::pg::fresh_database().await;
    let _store = grow_deliveries(&url).await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let known =
        || sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'");
    // The server publishes table sizes within seconds (idle sessions within 10).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut rows = known().fetch_one(&mut db).await.unwrap();
    while rows < 1_000.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = known().fetch_one(&mut db).await.unwrap();
    }
    assert!(rows >= 1_000.0, "deliveries analyzed at {rows} rows (−1: never)");
}

/// PostgreSQL: nodes started together do not all analyze the same table.
/// A look does nothing while the statistics lock is held elsewhere (as
/// another node's look holds it): a grown table waits, and is analyzed by
/// the first look once the lock is free.
#[tokio::test]
async fn a_node_analyzes_only_while_no_other_node_is_looking() {
    use hookline::store::postgres::{STATISTICS_LOCK, look_at_young_tables};
    use sqlx::Connection;
    let url = crate::pg::fresh_database().await;
    let mut other_node = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut look = other_node.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(STATISTICS_LOCK).execute(&mut *look).await.unwrap();

    let _store = grow_deliveries(&url).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let sizes = || {
        sqlx::query_as::<_, (f32, i64)>(
            "SELECT c.reltuples, s.n_live_tup FROM pg_class c
             JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'deliveries'",
        )
    };
    // Wait until the server publishes the table's size (within 10 s), so
    // that a look would find it doubled.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let (_, mut live) = sizes().fetch_one(&pool).await.unwrap();
    while live < 1_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (_, live) = sizes().fetch_one(&pool).await.unwrap();
    }
    assert!(live >= 1_000, "the server published {live} live deliveries");

    assert!(!look_at_young_tables(&pool).await.unwrap());
    let (known, _) = sizes().fetch_one(&pool).await.unwrap();
    assert!(known < 1_000.0, "analyzed at {known} rows while another node was looking");

    // Free: a look analyzes it (ours, or the store's task's if that one
    // took the lock first, in which case ours skips until it committed).
    look.commit().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut known = known;
    while known < 1_000.0 && std::time::Instant::now() < deadline {
        look_at_young_tables(&pool).await.unwrap();
        (known, _) = sizes().fetch_one(&pool).await.unwrap();
        if known < 1_000.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(known >= 1_000.0, "deliveries analyzed at {known} rows (−1: never) once the lock was free");
}

/// Messages go to `store`, the configuration changes to `admin`.
async fn ingest_follows_changes_made_by(store: SharedStore, admin: SharedStore) {
    let a = app(None);
    admin.insert_app(&a).await.unwrap();
    let first = endpoint(&a.id);
    admin.insert_endpoint(&first).await.unwrap();
    let send = |m: Message| store.create_message(request(&a.id, m, Some(lease(at(60)))));
    let targets = |m: &hookline::store::CreatedMessage| {
        m.endpoints.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>()
    };
    assert_eq!(targets(&send(message("t", T0)).await.unwrap()), [first.id.clone()].into());

    let second = endpoint(&a.id);
    admin.insert_endpoint(&second).await.unwrap();
    assert_eq!(targets(&send(message("t", T0)).await.unwrap()), [first.id.clone(), second.id.clone()].into());

    let disable = EndpointPatch { disabled: Some(true), ..Default::default() };
    admin.update_endpoint(&a.id, &first.id, disable, at(1)).await.unwrap();
    assert_eq!(targets(&send(message("t", T0)).await.unwrap()), [second.id.clone()].into());

    let only_other = EndpointPatch { event_types: Some(Some(set(&["other"]))), ..Default::default() };
    admin.update_endpoint(&a.id, &second.id, only_other, at(2)).await.unwrap();
    assert!(targets(&send(message("t", T0)).await.unwrap()).is_empty());

    let throttled =
        EndpointPatch { event_types: Some(None), throttle_rate: Some(Some(1)), ..Default::default() };
    admin.update_endpoint(&a.id, &second.id, throttled, at(3)).await.unwrap();
    let now = at(4);
    let one = send(message("t", now)).await.unwrap();
    let two = send(message("t", now)).await.unwrap();
    assert_eq!(targets(&two), [second.id.clone()].into());
    assert_eq!(one.send_now.len() + two.send_now.len(), 1, "1/s: one goes now, the other waits its turn");

    admin.delete_endpoint(&a.id, &second.id).await.unwrap();
    assert!(targets(&send(message("t", now)).await.unwrap()).is_empty());

    let third = endpoint(&a.id);
    admin.insert_endpoint(&third).await.unwrap();
    let many = futures_join_all((0..200).map(|_| send(message("t", now)))).await;
    for created in many {
        let created = created.unwrap();
        assert_eq!(targets(&created), [third.id.clone()].into());
        assert_eq!(created.send_now.len(), 1);
        let d = store.get_delivery(&created.message.id, &third.id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Sending);
        let stored = store.get_message(&a.id, &created.message.id).await.unwrap().unwrap();
        assert_eq!(stored.app_id, a.id);
    }

    let keyed = |_| {
        let mut req = request(&a.id, message("t", now), Some(lease(at(60))));
        req.idempotency_key = Some("same-key".into());
        store.create_message(req)
    };
    let answers: Vec<_> =
        futures_join_all((0..20).map(keyed)).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|c| !c.existing).count(), 1, "one message created");
    let ids: BTreeSet<_> = answers.iter().map(|c| c.message.id.clone()).collect();
    assert_eq!(ids.len(), 1, "every answer names that message");
    let sent: usize = answers.iter().map(|c| c.send_now.len()).sum();
    assert_eq!(sent, 1, "and it is sent once");
}

/// An endpoint whose lane is full on the creating node gets its delivery
/// due now and unleased, for a claim once there is room; the others are
/// leased as usual, and so is paced work (the bucket was charged for it).
pub async fn full_lanes_are_not_leased_at_ingest(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let (full, free) = (endpoint(&a.id), endpoint(&a.id));
    let paced = Endpoint { throttle_rate: Some(100), ..endpoint(&a.id) };
    for ep in [&full, &free, &paced] {
        store.insert_endpoint(ep).await.unwrap();
    }
    let req = CreateMessage {
        busy_endpoints: vec![full.id.clone(), paced.id.clone()],
        ..request(&a.id, message("t", T0), Some(lease(at(60))))
    };
    let created = store.create_message(req).await.unwrap();
    let sent: BTreeSet<_> = created.send_now.iter().map(|t| t.endpoint.id.clone()).collect();
    assert_eq!(sent, [free.id.clone(), paced.id.clone()].into());
    assert_eq!(created.wake, Some(T0), "the unleased one is due now");
    let d = store.get_delivery(&created.message.id, &full.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt), (DeliveryStatus::Pending, Some(T0)));
    let claimed = store.claim_due(T0, &lease(at(60)), 10, &[]).await.unwrap();
    let claimed: Vec<_> = claimed.iter().map(|t| t.endpoint.id.clone()).collect();
    assert_eq!(claimed, vec![full.id.clone()], "only the unleased delivery is claimable");
}

/// Many applications' messages at once, named by id or uid, each go to its
/// own application's endpoints (ingest reads a batch's applications together).
pub async fn messages_to_many_applications_at_once(store: SharedStore) {
    let mut tenants = Vec::new();
    for i in 0..30 {
        let a = app((i % 2 == 0).then(|| format!("tenant-{i}")).as_deref());
        store.insert_app(&a).await.unwrap();
        let ep = endpoint(&a.id);
        store.insert_endpoint(&ep).await.unwrap();
        let app_ref = a.uid.clone().unwrap_or_else(|| a.id.clone());
        tenants.push((a.id, app_ref, ep.id));
    }
    let sends =
        tenants.iter().cycle().take(90).map(|(_, app_ref, _)| {
            store.create_message(request(app_ref, message("t", T0), Some(lease(at(60)))))
        });
    let created = futures_join_all(sends).await;
    for ((app_id, _, ep_id), created) in tenants.iter().cycle().zip(created) {
        let created = created.unwrap();
        assert_eq!(&created.message.app_id, app_id);
        let targets: Vec<&str> = created.endpoints.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(targets, vec![ep_id.as_str()]);
    }
    let missing = store.create_message(request("no-such-app", message("t", T0), None)).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // One application named both ways in one burst: each message reaches
    // each of its endpoints once. (Whether a batch then reads both names
    // together is up to the store; the PostgreSQL read that can is tested
    // on its own, `the_application_read_uses_indexes_before_any_analyze`.)
    let a = app(Some("both-ways"));
    store.insert_app(&a).await.unwrap();
    let mut want = Vec::new();
    for _ in 0..2 {
        let ep = endpoint(&a.id);
        store.insert_endpoint(&ep).await.unwrap();
        want.push(ep.id);
    }
    want.sort();
    let refs = ["both-ways", a.id.as_str()];
    let sends =
        (0..16).map(|i| store.create_message(request(refs[i % 2], message("t", T0), Some(lease(at(60))))));
    for created in futures_join_all(sends).await {
        let mut targets: Vec<String> = created.unwrap().endpoints.iter().map(|e| e.id.clone()).collect();
        targets.sort();
        assert_eq!(targets, want);
    }
}

/// While a lane is full, the probe for the scheduler's next look answers
/// what becomes due later, not the full lane's backlog already due (its
/// claim skips that; a store need not walk past it either).
pub async fn the_next_look_passes_over_full_lanes(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let (full, other) = (endpoint(&a.id), endpoint(&a.id));
    for ep in [&full, &other] {
        store.insert_endpoint(ep).await.unwrap();
    }
    let only = |ep: &Endpoint| CreateMessage {
        only_endpoint: Some(ep.id.clone()),
        ..request(&a.id, message("t", T0), None)
    };
    for _ in 0..5 {
        store.create_message(only(&full)).await.unwrap();
    }
    let later = CreateMessage {
        only_endpoint: Some(other.id.clone()),
        ..request(&a.id, Message { deliver_at: Some(at(30)), ..message("t", T0) }, None)
    };
    store.create_message(later).await.unwrap();
    let skip = std::slice::from_ref(&full.id);
    assert_eq!(store.next_due(at(1), &[]).await.unwrap(), Some(T0), "the backlog is due");
    assert!(store.claim_due(at(1), &lease(at(60)), 10, skip).await.unwrap().is_empty());
    assert_eq!(store.next_due(at(1), skip).await.unwrap(), Some(at(30)));
}

/// PostgreSQL: ingest reads a batch's applications through indexes even
/// before their statistics exist (many tenants created, then sent to at
/// once, before autovacuum has analyzed the tables; a plain join was then
/// planned as scans of both tables per batch), and an application named
/// both by id and by uid comes once.
#[tokio::test]
async fn the_application_read_uses_indexes_before_any_analyze() {
    use sqlx::{Connection, Row};
    let url = crate::pg::fresh_database().await;
    let store: SharedStore = Arc::new(hookline::store::postgres::PgStore::connect(&url).await.unwrap());
    let a = app(Some("named-twice"));
    store.insert_app(&a).await.unwrap();
    for _ in 0..2 {
        store.insert_endpoint(&endpoint(&a.id)).await.unwrap();
    }
    // 5,000 more applications with one endpoint each, copied from these.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO apps SELECT (jsonb_populate_record(NULL::apps,
            to_jsonb(a) || jsonb_build_object('id', a.id || '_' || i, 'uid', NULL))).*
         FROM apps a, generate_series(1, 5000) i",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO endpoints SELECT (jsonb_populate_record(NULL::endpoints, to_jsonb(e)
            || jsonb_build_object('id', e.id || '_' || i, 'app_id', e.app_id || '_' || i, 'uid', NULL))).*
         FROM (SELECT * FROM endpoints LIMIT 1) e, generate_series(1, 5000) i",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let refs: Vec<String> =
        (1..=30).map(|i| format!("{}_{i}", a.id)).chain(["named-twice".into(), a.id.clone()]).collect();
    let sql = hookline::store::postgres::APPS_WITH_ENDPOINTS.as_str();
    let explain = format!("EXPLAIN {sql}").replace("$1", &format!("'{{{}}}'", refs.join(",")));
    let plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut db).await.unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan on apps") && !plan.contains("Seq Scan on endpoints"), "{plan}");

    let rows = sqlx::query(sql).bind(&refs).fetch_all(&mut db).await.unwrap();
    assert_eq!(rows.len(), 30 + 2, "30 applications with one endpoint, one with two");
    let twice = rows.iter().filter(|r| r.get::<String, _>(0) == a.id).count();
    assert_eq!(twice, 2, "named twice, its two endpoints come once each");
}
