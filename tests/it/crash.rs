//! Nothing acknowledged is lost: the real binary, `kill -9`ed with
//! deliveries pending, restarted, delivers every acknowledged message.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Child;

use crate::common::{PATIENCE, Receiver, Reply, TOKEN, spawn_hookline};

async fn spawn_server(data_dir: &std::path::Path) -> (Child, String) {
    spawn_hookline(&["--data-dir".as_ref(), data_dir.as_os_str()]).await
}

pub async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let resp = http.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

pub async fn get(http: &reqwest::Client, url: String) -> Option<Value> {
    http.get(url).bearer_auth(TOKEN).send().await.ok()?.json().await.ok()
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // A port for the receiver, which stays down until after the crash.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let (mut server, url) = spawn_server(dir.path()).await;
    let app = post(&http, format!("{url}/api/v1/app"), json!({"name": "crash"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let retry_every_second = json!({"schedule": vec![1; 40]});
    post(
        &http,
        format!("{url}/api/v1/app/{app_id}/endpoint"),
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "retryPolicy": retry_every_second}),
    )
    .await;

    let mut acknowledged = HashSet::new();
    for i in 0..50 {
        let msg = post(
            &http,
            format!("{url}/api/v1/app/{app_id}/msg"),
            json!({"eventType": "crash.test", "payload": {"i": i}}),
        )
        .await;
        acknowledged.insert(msg["id"].as_str().unwrap().to_owned());
    }
    // Let first attempts fail so retries (and, since the endpoint refuses
    // connections, a congestion backoff) are pending in the store.
    crate::common::eventually("a failed attempt", || async {
        let list = get(&http, format!("{url}/api/v1/app/{app_id}/endpoint")).await?;
        let ep = list["data"][0]["id"].as_str()?.to_owned();
        let attempts = get(&http, format!("{url}/api/v1/app/{app_id}/attempt/endpoint/{ep}?limit=1")).await?;
        (!attempts["data"].as_array()?.is_empty()).then_some(())
    })
    .await;

    server.kill().await.unwrap(); // SIGKILL: no shutdown code runs
    let (mut server, _url) = spawn_server(dir.path()).await;
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("receiver port still free");
    let rx = Receiver::serve(listener, Reply::Status(200, ""));

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let delivered: HashSet<String> =
            rx.received().iter().map(|r| r.header("webhook-id").to_owned()).collect();
        if acknowledged.is_subset(&delivered) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} acknowledged messages delivered after the restart",
            acknowledged.intersection(&delivered).count(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill().await.unwrap();
}

/// SIGTERM on an idle server: it stops at once (nothing is in flight), not
/// after the whole shutdown grace of 10 s, and leaves the data directory
/// free for the next start.
#[tokio::test]
async fn sigterm_stops_an_idle_server_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (mut server, url) = spawn_server(dir.path()).await;
    post(&http, format!("{url}/api/v1/app"), json!({"name": "stop"})).await;

    let pid = server.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("still running 5 s after SIGTERM")
        .unwrap();
    assert!(exited.success(), "{exited}");

    let (mut again, url) = spawn_server(dir.path()).await;
    let apps = get(&http, format!("{url}/api/v1/app")).await.unwrap();
    assert_eq!(apps["data"][0]["name"], "stop");
    again.kill().await.unwrap();
}
