//! Erasure by subject tag: after it, no payload or response body of a
//! tagged message can be read through the API, the dashboard or the
//! database; untagged messages (and other applications, for the
//! application-scoped erasure) are untouched; the tag stays.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::common::{Receiver, Reply, TestServer};
use crate::dashboard::Dashboard;

/// What the receiver answers: a failure whose body must be erased too.
const RESPONSE: &str = "receiver-body-R1";

/// Every payload and response body stored, straight from the database.
async fn stored_content(t: &TestServer) -> Vec<String> {
    let payloads = "SELECT payload FROM messages WHERE payload IS NOT NULL";
    let bodies = "SELECT response FROM attempts WHERE response <> ''";
    match &t.database_url {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let mut all: Vec<String> = sqlx::query_scalar(payloads).fetch_all(&mut c).await.unwrap();
            all.extend(sqlx::query_scalar::<_, String>(bodies).fetch_all(&mut c).await.unwrap());
            all
        }
        None => {
            let c = rusqlite::Connection::open(t.dir.path().join("hookline.db")).unwrap();
            let mut all = Vec::new();
            for sql in [payloads, bodies] {
                let mut stmt = c.prepare(sql).unwrap();
                all.extend(stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap));
            }
            all
        }
    }
}

async fn send_tagged(t: &TestServer, app: &str, secret: &str, tags: Value) -> String {
    let body = json!({"eventType": "user.updated", "payload": {"secret": secret}, "tags": tags});
    let (status, msg) = t.post(&format!("/api/v1/app/{app}/msg"), body).await;
    assert_eq!(status, 202, "{msg}");
    msg["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn erasure_by_tag_leaves_nothing_of_tagged_messages_readable() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(500, RESPONSE)).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({"retryPolicy": {"schedule": []}})).await;
    let (other, _) = t.app_with_endpoint(&rx.url, json!({"retryPolicy": {"schedule": []}})).await;
    let tagged = send_tagged(&t, &app, "SECRET-A", json!(["user_42", "eu"])).await;
    let kept = send_tagged(&t, &app, "KEPT-A", json!(["user_7"])).await;
    let elsewhere = send_tagged(&t, &other, "SECRET-B", json!(["user_42"])).await;
    for (a, m) in [(&app, &tagged), (&app, &kept), (&other, &elsewhere)] {
        t.wait_attempts(a, m, 1).await;
    }
    let before = stored_content(&t).await;
    assert!(before.iter().any(|c| c.contains("SECRET-A")) && before.iter().any(|c| c.contains(RESPONSE)));

    // One application's messages with the tag.
    let (status, task) =
        t.post(&format!("/api/v1/app/{app}/msg/expunge-by-tag"), json!({"tag": "user_42"})).await;
    assert_eq!(status, 202, "{task}");
    assert_eq!((task["status"].as_str(), task["count"].as_u64()), (Some("finished"), Some(1)));
    let task = t.get(&format!("/api/v1/background-task/{}", task["id"].as_str().unwrap())).await;
    assert_eq!(
        (task["data"]["tag"].as_str(), task["data"]["responses"].as_u64()),
        (Some("user_42"), Some(1))
    );

    // API: the payload reads as `{}`, the attempt's body as "", the tag stays.
    let msg = t.get(&format!("/api/v1/app/{app}/msg/{tagged}")).await;
    assert_eq!((msg["payload"].clone(), msg["tags"].clone()), (json!({}), json!(["eu", "user_42"])));
    assert_eq!(t.attempts(&app, &tagged).await[0]["response"], "");
    let listed = t.get(&format!("/api/v1/app/{app}/msg?with_content=true")).await.to_string();
    assert!(!listed.contains("SECRET-A") && listed.contains("KEPT-A"), "{listed}");
    let attempts =
        t.get(&format!("/api/v1/app/{app}/attempt/endpoint/{}", msg_endpoint(&t, &app, &tagged).await)).await;
    assert_eq!(attempts["data"].as_array().unwrap().iter().filter(|a| a["response"] == RESPONSE).count(), 1);
    // Untagged messages and other applications are left alone.
    assert_eq!(t.payload(&app, &kept).await, json!({"secret": "KEPT-A"}));
    assert_eq!(t.attempts(&app, &kept).await[0]["response"], RESPONSE);
    assert_eq!(t.payload(&other, &elsewhere).await, json!({"secret": "SECRET-B"}));

    // Dashboard: the message page shows the tag and that the payload is gone.
    let d = Dashboard::sign_in(&t).await;
    let page = d.page(&format!("/apps/{app}/messages/{tagged}")).await;
    assert!(!page.contains("SECRET-A") && !page.contains(RESPONSE), "{page}");
    assert!(page.contains("user_42") && page.contains("The payload was erased"));
    assert!(d.page(&format!("/apps/{app}/messages/{kept}")).await.contains("KEPT-A"));

    // Database: nothing of the tagged message is stored any more.
    let after = stored_content(&t).await;
    assert!(!after.iter().any(|c| c.contains("SECRET-A")), "{after:?}");
    assert!(after.iter().any(|c| c.contains("KEPT-A")) && after.iter().any(|c| c.contains("SECRET-B")));
    assert_eq!(after.iter().filter(|c| c.contains(RESPONSE)).count(), 2);

    // Every application, from the dashboard's administrator form.
    let (_, html) = d.post("/apps", "/erase-by-tag", &[("tag", "user_42")]).await;
    assert!(html.contains("Erased the content of 2 messages (payloads and response bodies)"), "{html}");
    assert_eq!(t.payload(&other, &elsewhere).await, json!({}));
    let after = stored_content(&t).await;
    assert!(!after.iter().any(|c| c.contains("SECRET")), "{after:?}");
    assert_eq!(after.iter().filter(|c| c.contains("KEPT-A")).count(), 1);
    assert_eq!(after.iter().filter(|c| c.contains(RESPONSE)).count(), 1, "only the untagged message's body");

    // The API's administrator variant; app-scoped tokens may not use it.
    let (status, task) = t.post("/api/v1/msg/expunge-by-tag", json!({"tag": "user_7"})).await;
    assert_eq!((status.as_u16(), task["count"].as_u64()), (202, Some(1)));
    assert!(stored_content(&t).await.is_empty());
    let (_, portal) = t.post(&format!("/api/v1/auth/app-portal-access/{app}"), json!({})).await;
    let scoped = t
        .http
        .post(t.url("/api/v1/msg/expunge-by-tag"))
        .bearer_auth(portal["token"].as_str().unwrap())
        .json(&json!({"tag": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(scoped.status(), 403);
    let (status, _) =
        t.post(&format!("/api/v1/app/{app}/msg/expunge-by-tag"), json!({"tag": "not a tag!"})).await;
    assert_eq!(status, 422);
}

async fn msg_endpoint(t: &TestServer, app: &str, msg: &str) -> String {
    t.attempts(app, msg).await[0]["endpointId"].as_str().unwrap().to_owned()
}

crate::common::on_postgres!(erasure_by_tag_leaves_nothing_of_tagged_messages_readable);
