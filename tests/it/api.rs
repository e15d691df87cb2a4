//! The Svix-compatible API through the official `svix` client: shapes,
//! signatures, lookups by uid, pagination, and every kind of bad input.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use svix::api::{MessageAttemptListByMsgOptions, MessageListOptions};
use svix::error::Error as SvixError;
use svix::models::{
    ApplicationIn, ApplicationPatch, EndpointIn, EndpointPatch, EndpointUpsertIn, MessageIn, MessageStatus,
};

use crate::common::{Receiver, Reply, TOKEN, TestServer, svix_client};

fn status_of(e: SvixError) -> u16 {
    match e {
        SvixError::Http(h) => h.status.as_u16(),
        SvixError::Validation(v) => v.status.as_u16(),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// The whole round trip through the official Svix client: create app +
/// endpoint, send, the receiver gets it, and the signature verifies with the
/// secret from the API.
#[tokio::test]
async fn svix_client_round_trip_and_signature_verifies() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "thanks")).await;

    let app = t
        .svix
        .application()
        .create(ApplicationIn { uid: Some("acme".into()), ..ApplicationIn::new("Acme".into()) }, None)
        .await
        .unwrap();
    assert!(app.id.starts_with("app_"));
    assert_eq!(app.uid.as_deref(), Some("acme"));

    t.event_types(&["invoice.paid"]).await;
    let ep = t
        .svix
        .endpoint()
        .create(
            "acme".into(),
            EndpointIn {
                event_types: Some(BTreeSet::from(["invoice.paid".to_string()])),
                ..EndpointIn::new(rx.url.clone())
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(ep.url, rx.url);
    let secret = t.svix.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.unwrap().key;
    assert!(secret.starts_with("whsec_"));

    let payload = json!({"invoice": "in_1", "amount": 4200, "nested": {"a": [1, 2]}});
    let msg = t
        .svix
        .message()
        .create(app.id.clone(), MessageIn::new("invoice.paid".into(), payload.clone()), None)
        .await
        .unwrap();
    // An event type the endpoint filters out goes nowhere.
    t.svix
        .message()
        .create(app.id.clone(), MessageIn::new("invoice.created".into(), json!({})), None)
        .await
        .unwrap();

    let got = rx.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.header("webhook-id"), msg.id);
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("svix-id"), msg.id);
    assert_eq!(req.header("svix-signature"), req.header("webhook-signature"));
    assert!(req.header("user-agent").starts_with("Hookline/"));
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap(), payload);

    // Verified by both the Standard Webhooks library and Svix's own.
    standardwebhooks::Webhook::new(&secret).unwrap().verify(&req.body, &req.headers).unwrap();
    svix::webhooks::Webhook::new(&secret).unwrap().verify(&req.body, &req.headers).unwrap();
    // A different secret does not verify.
    let other =
        t.svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.unwrap();
    let other_secret = t.svix.endpoint().get_secret(app.id.clone(), other.id).await.unwrap().key;
    assert!(standardwebhooks::Webhook::new(&other_secret).unwrap().verify(&req.body, &req.headers).is_err());

    // The attempt is on record, readable through the client.
    let attempts = crate::common::eventually("the attempt to be recorded", || async {
        let list = t
            .svix
            .message_attempt()
            .list_by_msg(
                app.id.clone(),
                msg.id.clone(),
                Some(MessageAttemptListByMsgOptions { with_content: Some(true), ..Default::default() }),
            )
            .await
            .unwrap();
        (!list.data.is_empty()).then_some(list)
    })
    .await;
    let a = &attempts.data[0];
    assert_eq!(a.response_status_code, 200);
    assert_eq!(a.response, "thanks");
    assert_eq!(a.status, MessageStatus::Success);
    assert_eq!(a.endpoint_id, ep.id);
    let one = t.svix.message_attempt().get(app.id.clone(), msg.id.clone(), a.id.clone(), None).await.unwrap();
    assert_eq!(one.id, a.id);

    // The message reads back with its exact payload.
    let back = t
        .svix
        .message()
        .get(app.id.clone(), msg.id.clone(), Some(svix::api::MessageGetOptions { with_content: Some(true) }))
        .await
        .unwrap();
    assert_eq!(back.payload, payload);
    assert_eq!(back.event_type, "invoice.paid");
}

#[tokio::test]
async fn payload_bytes_are_delivered_exactly_as_sent() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(204, "")).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({})).await;
    let body = r#"{"eventType":"t.x","payload":{ "z": 1,   "a": "ü\u00e9", "n": 1.50 }}"#;
    let resp = t
        .http
        .post(t.url(&format!("/api/v1/app/{app}/msg")))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = rx.wait_for(1).await;
    assert_eq!(&got[0].body[..], r#"{ "z": 1,   "a": "ü\u00e9", "n": 1.50 }"#.as_bytes());
}

#[tokio::test]
async fn crud_through_the_client_with_uids() {
    let t = TestServer::start().await;
    let app = t
        .svix
        .application()
        .create(ApplicationIn { uid: Some("tenant-1".into()), ..ApplicationIn::new("One".into()) }, None)
        .await
        .unwrap();
    assert_eq!(t.svix.application().get("tenant-1".into()).await.unwrap().id, app.id);

    let patched = t
        .svix
        .application()
        .patch("tenant-1".into(), ApplicationPatch { name: Some("Renamed".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(patched.name, "Renamed");
    assert_eq!(patched.uid.as_deref(), Some("tenant-1"));

    // PUT to an unknown uid creates (upsert); the same PUT again updates
    // that application, which keeps its uid though the body names none.
    let upserted =
        t.svix.application().upsert("tenant-2".into(), ApplicationIn::new("Two".into())).await.unwrap();
    assert_eq!(upserted.uid.as_deref(), Some("tenant-2"));
    let again =
        t.svix.application().upsert("tenant-2".into(), ApplicationIn::new("Two!".into())).await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.uid.as_deref(), again.name.as_str()),
        (upserted.id.as_str(), Some("tenant-2"), "Two!")
    );
    // Addressed by id, PUT replaces everything: no uid in the body, none kept.
    let by_id =
        t.svix.application().upsert(again.id.clone(), ApplicationIn::new("Two".into())).await.unwrap();
    assert_eq!((by_id.id.as_str(), by_id.uid), (again.id.as_str(), None));

    let ep = t
        .svix
        .endpoint()
        .create(
            app.id.clone(),
            EndpointIn { uid: Some("primary".into()), ..EndpointIn::new("https://example.com/hook".into()) },
            None,
        )
        .await
        .unwrap();
    assert_eq!(t.svix.endpoint().get("tenant-1".into(), "primary".into()).await.unwrap().id, ep.id);
    // The same for endpoints: PUT by uid twice updates one endpoint.
    for url in ["https://example.com/one", "https://example.com/two"] {
        let put = t
            .svix
            .endpoint()
            .upsert("tenant-1".into(), "secondary".into(), EndpointUpsertIn::new(url.into()))
            .await
            .unwrap();
        assert_eq!((put.uid.as_deref(), put.url.as_str()), (Some("secondary"), url));
    }
    let disabled = t
        .svix
        .endpoint()
        .patch(app.id.clone(), "primary".into(), EndpointPatch { disabled: Some(true), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(disabled.disabled, Some(true));
    let list = t.svix.endpoint().list(app.id.clone(), None).await.unwrap();
    assert_eq!(list.data.len(), 2, "primary and secondary, no third from the repeated PUT");
    assert!(list.done);

    // Messages are found by eventId too.
    let msg = t
        .svix
        .message()
        .create(
            app.id.clone(),
            MessageIn { event_id: Some("evt-42".into()), ..MessageIn::new("a.b".into(), json!({"k": 1})) },
            None,
        )
        .await
        .unwrap();
    assert_eq!(t.svix.message().get(app.id.clone(), "evt-42".into(), None).await.unwrap().id, msg.id);

    t.svix.endpoint().delete(app.id.clone(), ep.id.clone()).await.unwrap();
    assert_eq!(status_of(t.svix.endpoint().get(app.id.clone(), ep.id).await.unwrap_err()), 404);
    t.svix.application().delete(app.id.clone()).await.unwrap();
    assert_eq!(status_of(t.svix.application().get(app.id).await.unwrap_err()), 404);
}

#[tokio::test]
async fn pagination_walks_every_message_once_in_both_directions() {
    let t = TestServer::start().await;
    let app = t.svix.application().create(ApplicationIn::new("p".into()), None).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..7 {
        let event = if i % 2 == 0 { "even" } else { "odd" };
        let m = t
            .svix
            .message()
            .create(app.id.clone(), MessageIn::new(event.into(), json!({"i": i})), None)
            .await
            .unwrap();
        sent.push(m.id);
    }
    let mut seen = Vec::new();
    let mut iterator = None;
    loop {
        let page = t
            .svix
            .message()
            .list(app.id.clone(), Some(MessageListOptions { limit: Some(3), iterator, ..Default::default() }))
            .await
            .unwrap();
        assert!(page.data.len() <= 3);
        seen.extend(page.data.iter().map(|m| m.id.clone()));
        if page.done {
            break;
        }
        iterator = page.iterator;
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // prevIterator of the second page leads back to the first page.
    let first = t.get(&format!("/api/v1/app/{}/msg?limit=3", app.id)).await;
    let second = t
        .get(&format!("/api/v1/app/{}/msg?limit=3&iterator={}", app.id, first["iterator"].as_str().unwrap()))
        .await;
    let back = t
        .get(&format!(
            "/api/v1/app/{}/msg?limit=3&iterator={}",
            app.id,
            second["prevIterator"].as_str().unwrap()
        ))
        .await;
    assert_eq!(back["data"], first["data"]);

    // Filters: event type, comma-joined like the SDK sends.
    let odd = t
        .svix
        .message()
        .list(
            app.id.clone(),
            Some(MessageListOptions {
                event_types: Some(BTreeSet::from(["odd".to_string()])),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(odd.data.len(), 3);
    let both = t.get(&format!("/api/v1/app/{}/msg?event_types=odd,even", app.id)).await;
    assert_eq!(both["data"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn paths_work_with_and_without_trailing_slash() {
    let t = TestServer::start().await;
    assert_eq!(t.get("/api/v1/app/").await["done"], true);
    assert_eq!(t.get("/api/v1/app").await["done"], true);
    let (status, _) = t.call(Method::GET, "/api/v1/health/", None).await;
    assert_eq!(status, 204);
}

/// Bad input gets a clear 4xx error in Svix's shape, never a 500.
#[tokio::test]
async fn bad_input_gets_svix_shaped_4xx() {
    let t = TestServer::start().await;
    let (app, ep) = t.app_with_endpoint("https://example.com/hook", json!({})).await;

    // Missing and wrong tokens.
    let resp = t.http.get(t.url("/api/v1/app")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "authentication_failed");
    assert!(body["detail"].is_string());
    let wrong = svix_client(&t.server.url(), "hl_not_a_real_token");
    assert_eq!(status_of(wrong.application().list(None).await.unwrap_err()), 401);
    let resp =
        t.http.get(t.url("/api/v1/app")).header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // Unknown things: 404 with a code.
    assert_eq!(status_of(t.svix.application().get("app_nope".into()).await.unwrap_err()), 404);
    assert_eq!(status_of(t.svix.endpoint().get(app.clone(), "ep_nope".into()).await.unwrap_err()), 404);
    assert_eq!(status_of(t.svix.message().get(app.clone(), "msg_nope".into(), None).await.unwrap_err()), 404);
    assert_eq!(
        status_of(
            t.svix
                .message_attempt()
                .resend(app.clone(), "msg_nope".into(), ep.clone(), None)
                .await
                .unwrap_err()
        ),
        404
    );
    let (status, body) =
        t.call(Method::GET, &format!("/api/v1/app/{app}/msg/msg_x/attempt/atmpt_x"), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = t.call(Method::GET, "/api/v1/no/such/path", None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("not_found")));
    let (status, _) =
        t.call(Method::POST, "/api/v1/app/nope/msg", Some(json!({"eventType": "a", "payload": {}}))).await;
    assert_eq!(status, 404);

    // Malformed JSON and wrong types: 422 with the field's location.
    let raw = |body: &'static str| {
        t.http
            .post(t.url("/api/v1/app"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw("{not json").await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"][0], "body");
    let resp = raw(r#"{"name": 5}"#).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body", "name"]));
    assert_eq!(raw("").await.unwrap().status(), 422);
    assert_eq!(raw("[]").await.unwrap().status(), 422);

    // Invalid URL, through the client: a validation error.
    let err =
        t.svix.endpoint().create(app.clone(), EndpointIn::new("not a url".into()), None).await.unwrap_err();
    match err {
        SvixError::Validation(v) => {
            assert_eq!(v.status.as_u16(), 422);
            assert_eq!(v.payload.unwrap().detail[0].loc, vec!["body", "url"]);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    for bad in [
        json!({"url": "ftp://example.com/"}),
        json!({"url": "https://example.com/", "uid": "has spaces"}),
        json!({"url": "https://example.com/", "secret": "short"}),
        json!({"url": "https://example.com/", "channels": []}),
        json!({"url": "https://example.com/", "headers": {"webhook-signature": "x"}}),
        json!({"url": "https://example.com/", "retryPolicy": {"schedule": [1], "success": "3xx"}}),
        json!({"url": "https://example.com/", "retryPolicy": {"schedule": [1], "timeout": 0}}),
        json!({"url": "https://example.com/", "throttleRate": 0}),
        json!({"url": 12}),
        json!({}),
    ] {
        let (status, body) = t.post(&format!("/api/v1/app/{app}/endpoint"), bad.clone()).await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert!(body["detail"].is_array(), "{body}");
    }
    for bad in [
        json!({"eventType": "bad type!", "payload": {}}),
        json!({"eventType": "a", "payload": [1, 2]}),
        json!({"eventType": "a", "payload": "text"}),
        json!({"eventType": "a"}),
        json!({"eventType": "a", "payload": {}, "channels": ["a b"]}),
        json!({"eventType": "a", "payload": {}, "deliverAt": "yesterday"}),
    ] {
        let (status, body) = t.post(&format!("/api/v1/app/{app}/msg"), bad.clone()).await;
        assert_eq!(status, 422, "{bad} → {body}");
    }

    // Oversized payload: 413.
    let big = "x".repeat(1024 * 1024 + 10);
    let (status, body) =
        t.post(&format!("/api/v1/app/{app}/msg"), json!({"eventType": "a", "payload": {"b": big}})).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    let huge = "y".repeat(3 * 1024 * 1024);
    let (status, _) =
        t.post(&format!("/api/v1/app/{app}/msg"), json!({"eventType": "a", "payload": {"b": huge}})).await;
    assert_eq!(status, 413);

    // Bad query parameters.
    for q in ["limit=1000", "limit=abc", "order=sideways", "before=tuesday"] {
        let (status, body) = t.call(Method::GET, &format!("/api/v1/app/{app}/msg?{q}"), None).await;
        assert!(status.is_client_error(), "{q} → {status} {body}");
    }
    let (status, _) =
        t.call(Method::GET, &format!("/api/v1/app/{app}/attempt/endpoint/{ep}?status=9"), None).await;
    assert_eq!(status, 422);

    // Conflicts: a taken uid and a repeated eventId.
    let (status, _) = t.post("/api/v1/app", json!({"name": "x", "uid": "dup"})).await;
    assert_eq!(status, 201);
    let (status, body) = t.post("/api/v1/app", json!({"name": "y", "uid": "dup"})).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("conflict")));
    let m = json!({"eventType": "a", "payload": {}, "eventId": "once"});
    assert_eq!(t.post(&format!("/api/v1/app/{app}/msg"), m.clone()).await.0, 202);
    assert_eq!(t.post(&format!("/api/v1/app/{app}/msg"), m).await.0, 409);

    // A path segment that is not valid UTF-8.
    let (status, body) = t.call(Method::GET, "/api/v1/app/%FF", None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("bad_request")));

    // Wrong method on a known path.
    let (status, body) = t.call(Method::DELETE, "/api/v1/app", None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (405, Some("method_not_allowed")));
}

/// As in Svix, an endpoint may only filter on event types that exist and
/// are not archived, on create, upsert and patch.
#[tokio::test]
async fn endpoint_filters_name_existing_event_types_only() {
    let t = TestServer::start().await;
    let app = t.svix.application().create(ApplicationIn::new("a".into()), None).await.unwrap();
    let filter = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>());
    let refused = |r: Result<svix::models::EndpointOut, SvixError>, missing: &str| match r {
        Err(SvixError::Validation(e)) => {
            let item = &e.payload.expect("validation body").detail[0];
            assert_eq!(item.loc, ["body", "filterTypes"]);
            assert!(item.msg.contains(missing), "{}", item.msg);
        }
        other => panic!("expected 422, got {other:?}"),
    };
    let url = "https://example.com/hook".to_string();
    let create = |types: &[&str]| EndpointIn { event_types: filter(types), ..EndpointIn::new(url.clone()) };
    refused(t.svix.endpoint().create(app.id.clone(), create(&["invoice.paid"]), None).await, "invoice.paid");

    t.event_types(&["invoice.paid", "invoice.old"]).await;
    let ep = t.svix.endpoint().create(app.id.clone(), create(&["invoice.paid"]), None).await.unwrap();
    assert_eq!(ep.event_types, filter(&["invoice.paid"]));

    // Archived counts as gone.
    t.svix.event_type().delete("invoice.old".into(), None).await.unwrap();
    let patch: EndpointPatch = serde_json::from_value(json!({"eventTypes": ["invoice.old"]})).unwrap();
    refused(t.svix.endpoint().patch(app.id.clone(), ep.id.clone(), patch).await, "invoice.old");
    let upsert = EndpointUpsertIn { event_types: filter(&["nope"]), ..EndpointUpsertIn::new(url.clone()) };
    refused(t.svix.endpoint().upsert(app.id.clone(), ep.id.clone(), upsert).await, "nope");
    let (status, body) = t
        .call(
            Method::PUT,
            &format!("/api/v1/app/{}/endpoint/{}", app.id, ep.id),
            Some(json!({"url": url, "eventTypes": ["invoice.paid", "nope"]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        t.get(&format!("/api/v1/app/{}/endpoint/{}", app.id, ep.id)).await["eventTypes"],
        json!(["invoice.paid"])
    );
}

// The same checks with the server on PostgreSQL (both stores must answer
// the svix client alike).
crate::common::on_postgres!(
    svix_client_round_trip_and_signature_verifies,
    payload_bytes_are_delivered_exactly_as_sent,
    crud_through_the_client_with_uids,
    pagination_walks_every_message_once_in_both_directions,
    paths_work_with_and_without_trailing_slash,
    bad_input_gets_svix_shaped_4xx,
    endpoint_filters_name_existing_event_types_only
);

/// Custom headers are bounded: 50 per endpoint and 16 KiB in all, on
/// create, replace and merge alike, with the limit in the error.
#[tokio::test]
async fn custom_headers_have_limits() {
    let t = TestServer::start().await;
    let (app, ep) = t.app_with_endpoint("https://example.com/hook", json!({})).await;
    let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let (status, body) = t
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": "https://example.com/b", "headers": many}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("at most 50"), "{body}");
    let big = json!({"headers": {"X-Big": "a".repeat(17 * 1024)}});
    let (status, body) =
        t.call(reqwest::Method::PUT, &format!("/api/v1/app/{app}/endpoint/{ep}/headers"), Some(big)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("16 KiB"), "{body}");
    let half = |name: &str| json!({"headers": {name: "a".repeat(9 * 1024)}});
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/headers");
    assert_eq!(t.call(reqwest::Method::PATCH, &path, Some(half("X-One"))).await.0, 204);
    let (status, body) = t.call(reqwest::Method::PATCH, &path, Some(half("X-Two"))).await;
    assert_eq!(status, 422, "the merged headers are over the limit: {body}");
}

/// Deleting an event type archives it: it reads as gone unless archived
/// ones are asked for, and deleting it again finds nothing.
#[tokio::test]
async fn archived_event_types_read_as_deleted() {
    let t = TestServer::start().await;
    let (status, _) = t.post("/api/v1/event-type", json!({"name": "invoice.void", "description": "x"})).await;
    assert_eq!(status, 201);
    assert_eq!(t.call(reqwest::Method::DELETE, "/api/v1/event-type/invoice.void", None).await.0, 204);
    assert_eq!(t.call(reqwest::Method::GET, "/api/v1/event-type/invoice.void", None).await.0, 404);
    let (status, et) =
        t.call(reqwest::Method::GET, "/api/v1/event-type/invoice.void?include_archived=true", None).await;
    assert_eq!((status.as_u16(), et["archived"].clone()), (200, json!(true)));
    assert_eq!(t.call(reqwest::Method::DELETE, "/api/v1/event-type/invoice.void", None).await.0, 404);
    let (status, _) = t
        .call(reqwest::Method::PUT, "/api/v1/event-type/invoice.void", Some(json!({"description": "back"})))
        .await;
    assert_eq!(status, 200, "PUT brings it back");
    assert_eq!(t.call(reqwest::Method::GET, "/api/v1/event-type/invoice.void", None).await.0, 200);
}

/// A message that would create its application names it by a valid uid:
/// a path that is not one creates nothing.
#[tokio::test]
async fn a_message_cannot_create_an_application_with_an_invalid_uid() {
    let t = TestServer::start().await;
    let body = json!({"eventType": "a", "payload": {}, "application": {"name": "x"}});
    let (status, _) = t.post("/api/v1/app/%C2%AAt%C3%90/msg", body.clone()).await;
    assert_eq!(status, 404);
    assert_eq!(t.get("/api/v1/app").await["data"], json!([]));
    let (status, _) = t.post("/api/v1/app/tenant-9/msg", body).await;
    assert_eq!(status, 202);
    assert_eq!(t.get("/api/v1/app/tenant-9").await["uid"], "tenant-9");
}
