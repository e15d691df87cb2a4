//! `hookline import` (the real binary) from one Hookline, standing in for
//! Svix, into another: everything configured is copied, a receiver keeps
//! verifying with the secret it had, a second run changes nothing, and a
//! dry run writes nothing.

use serde_json::{Value, json};
use tokio::process::Command;

use crate::common::{Receiver, Reply, TOKEN, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn import(from: &TestServer, to: &TestServer, more: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["import", "--from", &from.server.url(), "--from-token", TOKEN])
        .args(["--url", &to.server.url(), "--token", TOKEN, "--quiet"])
        .args(more)
        .env("HOOKLINE_LOG", "warn")
        .output()
        .await
        .expect("run hookline import");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// What the destination holds, to compare before and after a run.
async fn snapshot(t: &TestServer) -> Value {
    let mut apps = t.get("/api/v1/app?limit=250").await["data"].clone();
    for app in apps.as_array_mut().unwrap() {
        let id = app["id"].as_str().unwrap().to_owned();
        app["endpoints"] = t.get(&format!("/api/v1/app/{id}/endpoint")).await["data"].clone();
        app["messages"] = t.get(&format!("/api/v1/app/{id}/msg?with_content=true")).await["data"].clone();
    }
    let types = t.get("/api/v1/event-type?include_archived=true&with_content=true").await["data"].clone();
    json!({"apps": apps, "eventTypes": types})
}

#[tokio::test]
async fn import_copies_a_svix_compatible_server_idempotently() {
    let src = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let schema = json!({"1": {"type": "object", "properties": {"amount": {"type": "integer"}}}});
    let (s, _) = src
        .post("/api/v1/event-type", json!({"name": "invoice.paid", "description": "Paid", "schemas": schema}))
        .await;
    assert_eq!(s, 201);
    src.event_types(&["user.gone"]).await;
    src.call(reqwest::Method::DELETE, "/api/v1/event-type/user.gone", None).await;
    let acme = json!({"name": "Acme", "uid": "acme", "metadata": {"tier": "gold"}, "throttleRate": 10});
    let (_, acme) = src.post("/api/v1/app", acme).await;
    let (_, plain) = src.post("/api/v1/app", json!({"name": "No uid"})).await;
    let plain_id = plain["id"].as_str().unwrap();
    let billing = json!({
        "url": rx.url, "uid": "billing", "description": "Billing", "filterTypes": ["invoice.paid"],
        "channels": ["eu"], "headers": {"X-Tenant": "acme"}, "metadata": {"team": "fin"},
        "throttleRate": 5, "secret": SECRET, "retryPolicy": {"schedule": [60]},
    });
    let (s, billing) = src.post("/api/v1/app/acme/endpoint", billing).await;
    assert_eq!(s, 201, "{billing}");
    let (_, off) = src.post("/api/v1/app/acme/endpoint", json!({"url": rx.url, "disabled": true})).await;
    src.post(&format!("/api/v1/app/{plain_id}/endpoint"), json!({"url": rx.url})).await;
    let with_id =
        json!({"eventType": "invoice.paid", "payload": {"n": 1}, "eventId": "evt-1", "channels": ["eu"]});
    src.post("/api/v1/app/acme/msg", with_id).await;
    let second = src.send(acme["id"].as_str().unwrap(), json!({"n": 2})).await;
    rx.wait_for(1).await; // billing got evt-1 (the other message is on no channel)
    let delivered = rx.count();

    // A dry run writes nothing and says what it would do.
    let dry_dst = TestServer::start().await;
    let (ok, out) = import(&src, &dry_dst, &["--dry-run", "--messages-since", "2000-01-01T00:00:00Z"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("would create application acme") && out.contains("would create endpoint billing"),
        "{out}"
    );
    assert!(out.contains("applications: 2 to create"), "{out}");
    assert_eq!(snapshot(&dry_dst).await, json!({"apps": [], "eventTypes": []}));

    let dst = TestServer::start().await;
    let (ok, out) = import(&src, &dst, &["--messages-since", "2000-01-01T00:00:00Z"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("applications: 2 created, 0 updated, 0 unchanged"), "{out}");
    assert!(out.contains("endpoints: 3 created") && out.contains("messages: 2 created"), "{out}");
    assert!(out.contains("event types: 2 created"), "{out}");

    // Everything configured came over.
    let app = dst.get("/api/v1/app/acme").await;
    assert_eq!(
        (app["name"].clone(), app["metadata"].clone(), app["throttleRate"].clone()),
        (json!("Acme"), json!({"tier": "gold"}), json!(10))
    );
    assert_eq!(
        dst.get(&format!("/api/v1/app/{plain_id}")).await["uid"],
        plain_id,
        "found again by its old id"
    );
    let et = dst.get("/api/v1/event-type/invoice.paid").await;
    assert_eq!((et["description"].clone(), et["schemas"].clone()), (json!("Paid"), schema));
    assert_eq!(dst.get("/api/v1/event-type/user.gone?include_archived=true").await["archived"], true);
    let ep = dst.get("/api/v1/app/acme/endpoint/billing").await;
    for field in [
        "url",
        "description",
        "filterTypes",
        "channels",
        "metadata",
        "throttleRate",
        "disabled",
        "retryPolicy",
    ] {
        assert_eq!(ep[field], billing[field], "{field}");
    }
    assert_eq!(
        dst.get("/api/v1/app/acme/endpoint/billing/headers").await["headers"],
        json!({"X-Tenant": "acme"})
    );
    assert_eq!(dst.get("/api/v1/app/acme/endpoint/billing/secret").await["key"], SECRET);
    let off_id = off["id"].as_str().unwrap();
    assert_eq!(dst.get(&format!("/api/v1/app/acme/endpoint/{off_id}")).await["disabled"], true);
    // Messages: stored with their payloads, found by eventId (or old id), not sent again.
    let m = dst.get("/api/v1/app/acme/msg/evt-1").await;
    assert_eq!((m["payload"].clone(), m["channels"].clone()), (json!({"n": 1}), json!(["eu"])));
    let m2 = dst.get(&format!("/api/v1/app/acme/msg/{second}")).await;
    assert_eq!(m2["payload"], json!({"n": 2}));
    assert_eq!(
        dst.get(&format!("/api/v1/app/acme/msg/{}/endpoint", m["id"].as_str().unwrap())).await["data"],
        json!([])
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(rx.count(), delivered, "imported history is not delivered again");

    // A receiver verifies what the destination signs with the secret it had.
    let fresh = json!({"eventType": "invoice.paid", "payload": {"n": 3}, "channels": ["eu"]});
    let (s, _) = dst.post("/api/v1/app/acme/msg", fresh).await;
    assert_eq!(s, 202);
    let got = rx.wait_for(delivered + 1).await;
    let req = got.last().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap(), json!({"n": 3}));
    svix::webhooks::Webhook::new(SECRET).unwrap().verify(&req.body, &req.headers).expect("verifies");

    // A second run changes nothing.
    let before = snapshot(&dst).await;
    let (ok, out) = import(&src, &dst, &["--messages-since", "2000-01-01T00:00:00Z"]).await;
    assert!(ok, "{out}");
    for kind in ["event types", "applications", "endpoints", "messages"] {
        assert!(out.contains(&format!("{kind}: 0 created, 0 updated")), "{kind}: {out}");
    }
    assert_eq!(snapshot(&dst).await, before);

    // A change at the source is carried over as an update.
    src.call(
        reqwest::Method::PATCH,
        "/api/v1/app/acme/endpoint/billing",
        Some(json!({"description": "Billing v2"})),
    )
    .await;
    let (ok, out) = import(&src, &dst, &[]).await;
    assert!(ok && out.contains("endpoints: 0 created, 1 updated, 2 unchanged"), "{out}");
    assert_eq!(dst.get("/api/v1/app/acme/endpoint/billing").await["description"], "Billing v2");
    assert_eq!(dst.get("/api/v1/app/acme/endpoint/billing/secret").await["key"], SECRET);

    // The source refusing is an error that says what it refused.
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["import", "--from", &src.server.url(), "--from-token", "hl_wrong", "--url", &dst.server.url()])
        .args(["--token", TOKEN, "--quiet"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the source refused listing the event types: 401"),
        "{err}"
    );
}
crate::common::on_postgres!(import_copies_a_svix_compatible_server_idempotently);
