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
