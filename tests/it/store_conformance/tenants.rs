//! Tokens, applications and endpoints (`TenantStore`).

use super::*;

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

    // Expire-all: the application's tokens end by then, sooner ones stay.
    store.insert_token("h3", &Scope::App("app_1".into()), None, T0).await.unwrap();
    store.insert_token("h4", &Scope::App("app_2".into()), None, T0).await.unwrap();
    store.insert_token("h5", &Scope::Admin, None, T0).await.unwrap();
    assert_eq!(store.expire_app_tokens("app_1", at(100)).await.unwrap(), 1, "h1 expires sooner already");
    assert_eq!(store.find_token("h3", at(99)).await.unwrap(), Some(Scope::App("app_1".into())));
    assert_eq!(store.find_token("h3", at(100)).await.unwrap(), None);
    assert_eq!(store.find_token("h1", at(59)).await.unwrap(), Some(Scope::App("app_1".into())));
    assert_eq!(store.expire_app_tokens("app_1", at(10)).await.unwrap(), 2);
    assert_eq!(store.find_token("h1", at(10)).await.unwrap(), None);
    assert!(store.find_token("h4", at(1_000)).await.unwrap().is_some(), "other applications keep theirs");
    assert!(store.find_token("h5", at(1_000)).await.unwrap().is_some(), "admin tokens are not scoped");
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
