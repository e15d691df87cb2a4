//! The event type catalogue, task records and idempotency keys (`EventTypeStore`, `TaskStore`).

use super::*;

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
    store.expunge_expired(at(7200), T0, 100).await.unwrap();
    assert_eq!(store.idempotency_begin("k", at(7200), at(7230)).await.unwrap(), IdempotencyBegin::Started);
}
