//! The `Store` conformance suite: every implementation must pass all of it.
//! Each check gets a fresh, empty store from the backend's factory.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline::domain::delivery::Outcome;
use hookline::domain::id;
use hookline::domain::model::{
    App, AppPatch, Attempt, DeliveryStatus, Endpoint, EndpointPatch, EventType, EventTypePatch, Message,
    Scope, Task, Trigger,
};
use hookline::domain::retry::RetryPolicy;
use hookline::domain::steering::Steering;
use hookline::domain::time::Timestamp;
use hookline::store::postgres::PgStore;
use hookline::store::sqlite::SqliteStore;
use hookline::store::{
    AppFilter, AttemptFilter, AttemptRecord, CreateMessage, Cursor, DeliveryFilter, DeliveryKey,
    EndpointDisabled, Lease, MessageFilter, Order, PageRequest, SharedStore, StoreError, StoreEvent,
};

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn app(uid: Option<&str>) -> App {
    App {
        id: id::new_id(id::APP, T0),
        uid: uid.map(str::to_owned),
        name: "app".into(),
        metadata: [("k".to_string(), "v".to_string())].into(),
        throttle_rate: None,
        created_at: T0,
        updated_at: T0,
    }
}

fn endpoint(app_id: &str) -> Endpoint {
    Endpoint {
        id: id::new_id(id::ENDPOINT, T0),
        app_id: app_id.into(),
        uid: None,
        url: "https://example.com/hook".into(),
        description: String::new(),
        disabled: false,
        event_types: None,
        channels: None,
        metadata: Default::default(),
        headers: [("X-A".to_string(), "1".to_string())].into(),
        throttle_rate: None,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        old_secrets: Vec::new(),
        retry_policy: Some(RetryPolicy::fixed_two_minutes()),
        failing_since: None,
        created_at: T0,
        updated_at: T0,
    }
}

fn message(event_type: &str, created_at: Timestamp) -> Message {
    Message {
        id: id::new_id(id::MESSAGE, created_at),
        app_id: String::new(),
        event_type: event_type.into(),
        event_id: None,
        channels: None,
        tags: None,
        payload: Some(Bytes::from_static(br#"{"a": 1}"#)),
        created_at,
        deliver_at: None,
        expires_at: Some(created_at.plus(Duration::from_secs(90 * 86_400))),
    }
}

fn lease(until: Timestamp) -> Lease {
    Lease { owner: "node-a".into(), until }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn create(store: &SharedStore, app_ref: &str, m: Message, lease: Option<Lease>) -> Arc<Message> {
    store.create_message(request(app_ref, m, lease)).await.unwrap().message
}

fn request(app_ref: &str, message: Message, lease: Option<Lease>) -> CreateMessage {
    CreateMessage {
        app_ref: app_ref.into(),
        new_app: None,
        message,
        lease,
        only_endpoint: None,
        idempotency_key: None,
    }
}

fn attempt(m: &Message, ep: &Endpoint, trigger: Trigger, code: u16, at: Timestamp) -> Attempt {
    Attempt {
        id: id::new_id(id::ATTEMPT, at),
        msg_id: m.id.clone(),
        endpoint_id: ep.id.clone(),
        app_id: ep.app_id.clone(),
        url: ep.url.clone(),
        status: if code == 200 { DeliveryStatus::Success } else { DeliveryStatus::Fail },
        status_code: code,
        response: format!("body {code}"),
        duration_ms: 3,
        trigger,
        error: None,
        created_at: at,
    }
}

async fn record(
    store: &SharedStore,
    m: &Message,
    ep: &Endpoint,
    trigger: Trigger,
    code: u16,
    when: Timestamp,
) {
    let policy = ep.retry_policy.clone().unwrap_or_default();
    let outcome = Outcome::classify(&policy, Some(code));
    store.record_attempt(record_of(attempt(m, ep, trigger, code, when), outcome, policy)).await.unwrap();
}

fn record_of(attempt: Attempt, outcome: Outcome, policy: RetryPolicy) -> AttemptRecord {
    AttemptRecord {
        finished_at: attempt.created_at,
        attempt,
        outcome,
        policy,
        steering: Steering::default(),
        jitter: 0.0,
        auto_disable_after: None,
    }
}

pub async fn tokens(store: SharedStore) {
    assert!(!store.has_admin_token().await.unwrap());
    store.insert_token("h1", &Scope::App("app_1".into()), Some(at(60)), T0).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap());
    store.insert_token("h2", &Scope::Admin, None, T0).await.unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(store.find_token("h1", at(59)).await.unwrap(), Some(Scope::App("app_1".into())));
    assert_eq!(store.find_token("h1", at(60)).await.unwrap(), None, "expired");
    assert_eq!(store.find_token("h2", at(1_000_000)).await.unwrap(), Some(Scope::Admin));
    assert_eq!(store.find_token("nope", T0).await.unwrap(), None);
    assert!(store.delete_token("h2").await.unwrap());
    assert!(!store.delete_token("h2").await.unwrap());
    assert_eq!(store.find_token("h2", T0).await.unwrap(), None);
}

pub async fn applications(store: SharedStore) {
    let a = app(Some("acme"));
    store.insert_app(&a).await.unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_app("acme").await.unwrap().as_ref(), Some(&a));
    assert!(matches!(store.insert_app(&app(Some("acme"))).await, Err(StoreError::Conflict(_))));

    let patch = AppPatch { name: Some("renamed".into()), uid: Some(None), ..Default::default() };
    let updated = store.update_app(&a.id, patch, at(1)).await.unwrap();
    assert_eq!((updated.name.as_str(), updated.uid.as_deref(), updated.updated_at), ("renamed", None, at(1)));
    assert_eq!(store.get_app("acme").await.unwrap(), None);
    assert!(matches!(
        store.update_app("app_missing", AppPatch::default(), at(1)).await,
        Err(StoreError::NotFound)
    ));

    let b = app(Some("b"));
    store.insert_app(&b).await.unwrap();
    let clash = AppPatch { uid: Some(Some("b".into())), ..Default::default() };
    assert!(matches!(store.update_app(&a.id, clash, at(2)).await, Err(StoreError::Conflict(_))));

    // Deleting removes the app with everything under it.
    let ep = endpoint(&b.id);
    store.insert_endpoint(&ep).await.unwrap();
    let m = create(&store, &b.id, message("t", T0), None).await;
    store.delete_app(&b.id).await.unwrap();
    assert_eq!(store.get_app(&b.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&b.id, &ep.id).await.unwrap(), None);
    assert_eq!(store.get_message(&b.id, &m.id).await.unwrap(), None);
    assert_eq!(store.get_delivery(&m.id, &ep.id).await.unwrap(), None);
    assert!(matches!(store.delete_app(&b.id).await, Err(StoreError::NotFound)));
}

pub async fn pagination(store: SharedStore) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let a = app(None);
        store.insert_app(&a).await.unwrap();
        ids.push(a.id);
    }
    let page = |limit, cursor, order| PageRequest { limit, cursor, order };
    let p1 = store.list_apps(&AppFilter::default(), &page(2, None, Order::Ascending)).await.unwrap();
    assert_eq!(p1.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[0], &ids[1]]);
    assert!(p1.more);
    let p2 = store
        .list_apps(&AppFilter::default(), &page(2, Some(Cursor::After(ids[1].clone())), Order::Ascending))
        .await
        .unwrap();
    assert_eq!(p2.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[2], &ids[3]]);
    let p3 = store
        .list_apps(&AppFilter::default(), &page(2, Some(Cursor::After(ids[3].clone())), Order::Ascending))
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(!p3.more);
    // Backwards from the third item, in display order.
    let back = store
        .list_apps(&AppFilter::default(), &page(2, Some(Cursor::Before(ids[2].clone())), Order::Ascending))
        .await
        .unwrap();
    assert_eq!(back.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[0], &ids[1]]);
    let desc = store.list_apps(&AppFilter::default(), &page(3, None, Order::Descending)).await.unwrap();
    assert_eq!(desc.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[4], &ids[3], &ids[2]]);
    let back = store
        .list_apps(&AppFilter::default(), &page(2, Some(Cursor::Before(ids[1].clone())), Order::Descending))
        .await
        .unwrap();
    assert_eq!(back.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[3], &ids[2]]);
}

pub async fn endpoints(store: SharedStore) {
    let a = app(None);
    let other = app(None);
    store.insert_app(&a).await.unwrap();
    store.insert_app(&other).await.unwrap();
    let ep = Endpoint { uid: Some("main".into()), ..endpoint(&a.id) };
    store.insert_endpoint(&ep).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, "main").await.unwrap().as_ref(), Some(&ep));
    assert_eq!(store.get_endpoint(&other.id, &ep.id).await.unwrap(), None, "scoped to its app");
    let dup = Endpoint { uid: Some("main".into()), ..endpoint(&a.id) };
    assert!(matches!(store.insert_endpoint(&dup).await, Err(StoreError::Conflict(_))));
    // The same uid in another application is fine.
    store.insert_endpoint(&Endpoint { uid: Some("main".into()), ..endpoint(&other.id) }).await.unwrap();

    let patch = EndpointPatch {
        url: Some("https://example.org/new".into()),
        event_types: Some(Some(set(&["a"]))),
        retry_policy: Some(None),
        ..Default::default()
    };
    let updated = store.update_endpoint(&a.id, &ep.id, patch, at(5)).await.unwrap();
    assert_eq!(updated.url, "https://example.org/new");
    assert_eq!(updated.event_types, Some(set(&["a"])));
    assert_eq!(updated.retry_policy, None);
    assert_eq!(updated.headers, ep.headers);
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap(), Some(updated));
    let list = store.list_endpoints(&a.id, &PageRequest::first(10, Order::Ascending)).await.unwrap();
    assert_eq!(list.items.len(), 1);

    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    assert!(matches!(store.delete_endpoint(&a.id, &ep.id).await, Err(StoreError::NotFound)));
}

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
    assert!(paid.leased);
    assert_eq!(paid.message.app_id, a.id);
    let d = store.get_delivery(&paid.message.id, &all.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Sending, 0, Some(T0)));

    let eu = Message { channels: Some(set(&["eu", "us"])), ..message("other", T0) };
    let eu = store.create_message(req(eu, None)).await.unwrap();
    assert_eq!(targets(&eu), [all.id.clone(), channeled.id.clone()].into());
    assert!(!eu.leased);
    let d = store.get_delivery(&eu.message.id, &channeled.id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);

    // A delayed message is never leased up front.
    let later = Message { deliver_at: Some(at(3600)), ..message("other", T0) };
    let later = store.create_message(req(later, Some(lease(at(60))))).await.unwrap();
    assert!(!later.leased);
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

    assert_eq!(store.next_due(&[]).await.unwrap(), Some(T0));
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
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(31)));
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
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(121)), "the lease ended with the attempt");

    // A failing manual attempt leaves the schedule alone.
    record(&store, &m, &ep, Trigger::Manual, 500, at(2)).await;
    let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.attempts, d.next_attempt), (1, Some(at(121))));

    record(&store, &m, &ep, Trigger::Scheduled, 200, at(121)).await;
    let d = store.get_delivery(&m.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.next_attempt), (DeliveryStatus::Success, 2, None));
    assert_eq!(store.next_due(&[]).await.unwrap(), None);

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

pub async fn event_types_and_tasks(store: SharedStore) {
    let et = EventType {
        name: "invoice.paid".into(),
        description: "paid".into(),
        archived: false,
        deprecated: false,
        schemas: Some(serde_json::json!({"1": {"type": "object"}})),
        group_name: Some("invoice".into()),
        feature_flags: Some(set(&["beta"])),
        created_at: T0,
        updated_at: T0,
    };
    store.insert_event_type(&et).await.unwrap();
    assert_eq!(store.get_event_type(&et.name).await.unwrap().as_ref(), Some(&et));
    assert!(matches!(store.insert_event_type(&et).await, Err(StoreError::Conflict(_))));
    let archive = EventTypePatch { archived: Some(true), ..Default::default() };
    let archived = store.update_event_type(&et.name, archive, at(1)).await.unwrap();
    assert!(archived.archived);
    let page = PageRequest::first(10, Order::Ascending);
    assert!(store.list_event_types(false, &page).await.unwrap().items.is_empty(), "archived are hidden");
    assert_eq!(store.list_event_types(true, &page).await.unwrap().items.len(), 1);
    // Creating an archived type again brings it back, with the new definition.
    let again = EventType { description: "new".into(), ..et.clone() };
    store.insert_event_type(&again).await.unwrap();
    assert_eq!(store.get_event_type(&et.name).await.unwrap(), Some(again));
    assert!(matches!(
        store.update_event_type("nope", EventTypePatch::default(), at(2)).await,
        Err(StoreError::NotFound)
    ));
    store.delete_event_type(&et.name).await.unwrap();
    assert!(matches!(store.delete_event_type(&et.name).await, Err(StoreError::NotFound)));

    let task = Task {
        id: id::new_id(id::TASK, T0),
        kind: "endpoint.recover".into(),
        status: "finished".into(),
        data: serde_json::json!({"n": 3}),
        created_at: T0,
        updated_at: at(1),
    };
    store.insert_task(&task).await.unwrap();
    assert_eq!(store.get_task(&task.id).await.unwrap().as_ref(), Some(&task));
    assert!(matches!(store.insert_task(&task).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.list_tasks(&page).await.unwrap().items, vec![task]);
    assert_eq!(store.get_task("qtask_missing").await.unwrap(), None);
}

pub async fn idempotency_keys(store: SharedStore) {
    use hookline::store::{IdempotencyBegin, StoredResponse};
    assert_eq!(store.idempotency_begin("k", T0, at(30)).await.unwrap(), IdempotencyBegin::Started);
    assert_eq!(store.idempotency_begin("k", at(1), at(31)).await.unwrap(), IdempotencyBegin::InProgress);
    // A lapsed lock can be taken over.
    assert_eq!(store.idempotency_begin("k", at(30), at(60)).await.unwrap(), IdempotencyBegin::Started);
    let response =
        StoredResponse { status: 202, content_type: Some("application/json".into()), body: b"{}".to_vec() };
    store.idempotency_finish("k", &response, at(3600)).await.unwrap();
    assert_eq!(store.idempotency_begin("k", at(40), at(70)).await.unwrap(), IdempotencyBegin::Done(response));
    store.idempotency_abort("k").await.unwrap();
    assert!(
        matches!(store.idempotency_begin("k", at(41), at(71)).await.unwrap(), IdempotencyBegin::Done(_)),
        "abort leaves finished keys alone"
    );
    assert_eq!(store.idempotency_begin("k", at(3600), at(3630)).await.unwrap(), IdempotencyBegin::Started);

    assert_eq!(store.idempotency_begin("j", T0, at(30)).await.unwrap(), IdempotencyBegin::Started);
    store.idempotency_abort("j").await.unwrap();
    assert_eq!(store.idempotency_begin("j", at(1), at(31)).await.unwrap(), IdempotencyBegin::Started);
    // Retention drops lapsed records.
    store.expunge_expired(at(7200), T0).await.unwrap();
    assert_eq!(store.idempotency_begin("k", at(7200), at(7230)).await.unwrap(), IdempotencyBegin::Started);
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

/// Poll every future to completion, concurrently (no extra dependency).
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
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
    let first = store.next_due(&[]).await.unwrap().unwrap();
    assert!(first < at(20), "released at their original time, not the lease's end");
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

    let stats = store.endpoint_stats(&a.id, &ep.id, None, None).await.unwrap();
    assert_eq!((stats.success, stats.sending, stats.pending, stats.fail), (1, 2, 0, 0));
    let since = store.endpoint_stats(&a.id, &ep.id, Some(at(2)), Some(at(3))).await.unwrap();
    assert_eq!((since.success, since.sending), (0, 1));
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
    assert!(store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap().disabled);

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

pub async fn content_erasure(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    let old = create(&store, &a.id, Message { expires_at: Some(at(50)), ..message("t", T0) }, None).await;
    let new = create(&store, &a.id, message("t", at(10)), None).await;
    record(&store, &old, &ep, Trigger::Scheduled, 200, at(1)).await;
    record(&store, &new, &ep, Trigger::Scheduled, 200, at(100)).await;

    assert_eq!(store.expunge_expired(at(60), at(50)).await.unwrap(), (1, 1));
    assert_eq!(store.expunge_expired(at(60), at(50)).await.unwrap(), (0, 0), "nothing left to erase");
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
    assert_eq!(next(&mut events).await, StoreEvent::Due(at(3600)));
    // A scheduled retry is anyone's to make.
    record(&store, &m, &ep, Trigger::Scheduled, 500, at(1)).await;
    assert_eq!(next(&mut events).await, StoreEvent::Due(at(121)));
    let claimed = store.claim_due(at(121), &lease(at(200)), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store.release(&[claimed[0].key()], at(150)).await.unwrap();
    assert_eq!(next(&mut events).await, StoreEvent::Due(at(150)));
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
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(90)));
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

/// One `#[tokio::test]` per check, for a backend given by a factory that
/// returns a fresh store and whatever keeps it alive.
macro_rules! conformance {
    ($backend:ident, $factory:path) => {
        mod $backend {
            conformance!(@each $factory; tokens, applications, pagination, endpoints, message_fan_out,
                claiming_and_leases, attempts_advance_deliveries, listings_filter, dashboard_queries,
                event_types_and_tasks, idempotency_keys, message_idempotency, concurrent_claims,
                requeue_and_replay, endpoint_health, content_erasure, notifications, lease_renewal,
                concurrent_attempts);
        }
    };
    (@each $factory:path; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $factory().await;
                super::$check(store).await;
            }
        )*
    };
}

pub async fn sqlite_store() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).unwrap());
    (store, dir)
}

conformance!(sqlite, super::sqlite_store);

pub async fn postgres_store() -> (SharedStore, ()) {
    let url = crate::pg::fresh_database().await;
    let store: SharedStore = Arc::new(PgStore::connect(&url).await.unwrap());
    (store, ())
}

conformance!(postgres, super::postgres_store);
