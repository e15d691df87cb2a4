//! Cluster mode: several `hookline serve` processes on one
//! PostgreSQL database share the work, and a node that dies loses nothing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use tokio::process::Child;

use crate::common::{PATIENCE, Receiver, Reply, spawn_hookline};
use crate::crash::post;
use crate::pg;

/// How long the 20,000-message run may take at most.
const RUN_PATIENCE: Duration = Duration::from_secs(300);

/// A node with a short lease, so the test waits seconds, not minutes, for
/// a dead node's deliveries.
async fn node(db: &str, name: &str, lease_secs: u64, extra: &[&str]) -> (Child, String) {
    let lease = lease_secs.to_string();
    let mut args: Vec<&OsStr> = vec![
        "--database-url".as_ref(),
        db.as_ref(),
        "--node-id".as_ref(),
        name.as_ref(),
        "--lease-secs".as_ref(),
        lease.as_ref(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    spawn_hookline(&args).await
}

async fn app_with_endpoint(http: &reqwest::Client, url: &str, target: &str) -> String {
    let app = post(http, format!("{url}/api/v1/app"), json!({"name": "cluster"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    post(http, format!("{url}/api/v1/app/{app_id}/endpoint"), json!({"url": target})).await;
    app_id
}

async fn leased_by(db: &str, owner: &str) -> HashSet<String> {
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT msg_id FROM deliveries WHERE lease_owner = $1")
        .bind(owner)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.into_iter().collect()
}

/// Webhook ids received, with how many times each arrived.
fn arrivals(rx: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in rx.received() {
        *seen.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_everything_when_one_is_killed() {
    const MESSAGES: usize = 20_000;
    const KILL_AFTER: usize = 6_000;
    const SENDERS: usize = 24;
    let db = pg::fresh_database().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    // Started at the same moment: migrations and the admin token must not
    // trip over each other.
    let (n0, n1, n2) =
        tokio::join!(node(&db, "node-0", 5, &[]), node(&db, "node-1", 5, &[]), node(&db, "node-2", 5, &[]));
    let mut nodes = vec![n0, n1, n2];
    let urls: Vec<String> = nodes.iter().map(|(_, u)| u.clone()).collect();
    let http = reqwest::Client::new();
    let app_id = app_with_endpoint(&http, &urls[0], &rx.url).await;

    // Senders spread messages over the nodes; a message counts once a node
    // acknowledged it. Node 0 dies mid-run: what was sent to it from then on
    // fails and goes to the next node, as a client behind a load balancer
    // would retry it.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (next, acked, http, urls, app_id) =
            (Arc::clone(&next), Arc::clone(&acked), http.clone(), urls.clone(), app_id.clone());
        let killed = killed_rx.clone();
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= MESSAGES {
                    break;
                }
                let mut target = i % urls.len();
                loop {
                    if target == 0 && *killed.borrow() {
                        target = 1;
                    }
                    let sent = http
                        .post(format!("{}/api/v1/app/{app_id}/msg", urls[target]))
                        .bearer_auth(crate::common::TOKEN)
                        .json(&json!({"eventType": "cluster.test", "payload": {"i": i}}))
                        .send()
                        .await;
                    match sent {
                        Ok(resp) if resp.status().is_success() => {
                            let body: serde_json::Value = resp.json().await.unwrap();
                            acked.lock().unwrap().insert(body["id"].as_str().unwrap().to_owned());
                            break;
                        }
                        Ok(resp) => panic!("node {target} answered {}", resp.status()),
                        // The node is gone (or died mid-request): not acknowledged, try another.
                        Err(_) => target = (target + 1) % urls.len(),
                    }
                }
            }
        }));
    }

    // 20,000 messages through debug builds on a loaded CI machine take
    // minutes, not seconds: the deadlines here are generous, and the test
    // fails fast instead if a sender gave up.
    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(senders.iter().all(|s| !s.is_finished()), "a sender stopped early");
        assert!(tokio::time::Instant::now() < deadline, "only {} acknowledged", acked.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut victim, _) = nodes.remove(0);
    victim.start_kill().unwrap(); // SIGKILL: no shutdown code runs
    victim.wait().await.unwrap();
    killed_tx.send(true).unwrap();
    // Frozen at the moment of death: the dead node's leases are exactly
    // the deliveries it had claimed and not yet recorded. Nobody else may
    // touch them until they expire (5 s), long after this query.
    let orphaned = leased_by(&db, "node-0").await;

    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= MESSAGES - SENDERS, "only {} acknowledged", acked.len());

    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    loop {
        // Counting is cheap; matching ids only once enough have arrived.
        let late = tokio::time::Instant::now() >= deadline;
        if rx.count() >= acked.len() || late {
            let seen = arrivals(&rx);
            let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
            if missing == 0 {
                break;
            }
            assert!(!late, "{missing} acknowledged messages never delivered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give a second chance to any duplicate still on its way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = arrivals(&rx);
    let duplicated: Vec<&String> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    let by_live_nodes: Vec<&&String> = duplicated.iter().filter(|id| !orphaned.contains(**id)).collect();
    assert!(
        by_live_nodes.is_empty(),
        "{} deliveries were sent twice though the dead node did not hold them (e.g. {:?})",
        by_live_nodes.len(),
        by_live_nodes.first()
    );
    assert!(duplicated.len() <= orphaned.len());
    eprintln!(
        "cluster: {} acknowledged, {} delivered, dead node held {} leases, {} delivered twice",
        acked.len(),
        seen.len(),
        orphaned.len(),
        duplicated.len()
    );
    // The survivors hold nothing once everything is delivered.
    assert!(leased_by(&db, "node-1").await.is_empty());
    assert!(leased_by(&db, "node-2").await.is_empty());
}

#[tokio::test]
async fn graceful_shutdown_hands_leases_to_the_other_nodes_at_once() {
    let db = pg::fresh_database().await;
    // One request at a time, half a second each: the node has a queue of
    // leased deliveries when it is asked to stop.
    let rx = Receiver::start(Reply::Slow(Duration::from_millis(500))).await;
    // A lease far longer than the test: only an explicit release can let
    // the second node have the first one's deliveries in time.
    let (mut first, url) = node(&db, "first", 600, &["--endpoint-concurrency", "1"]).await;
    let http = reqwest::Client::new();
    let app = post(&http, format!("{url}/api/v1/app"), json!({"name": "graceful"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    post(&http, format!("{url}/api/v1/app/{app_id}/endpoint"), json!({"url": rx.url})).await;
    let mut sent = HashSet::new();
    for i in 0..20 {
        let msg = post(
            &http,
            format!("{url}/api/v1/app/{app_id}/msg"),
            json!({"eventType": "t", "payload": {"i": i}}),
        )
        .await;
        sent.insert(msg["id"].as_str().unwrap().to_owned());
    }
    rx.wait_for(1).await;
    assert!(!leased_by(&db, "first").await.is_empty(), "the first node should hold leases");

    let (_second, _) = node(&db, "second", 600, &[]).await;
    let pid = first.id().unwrap().to_string();
    let term = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let exited = tokio::time::timeout(PATIENCE, first.wait()).await.expect("graceful stop in time").unwrap();
    assert!(exited.success(), "{exited}");
    assert!(leased_by(&db, "first").await.is_empty(), "leases left behind after a graceful stop");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = arrivals(&rx);
        if sent.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} delivered: the second node did not take over",
            sent.iter().filter(|id| seen.contains_key(*id)).count(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes on one database, with an application and one endpoint
/// created through the first; returns the nodes, their URLs, the app id.
async fn two_nodes(db: &str, endpoint: serde_json::Value) -> (Vec<Child>, Vec<String>, String) {
    let (n0, n1) = tokio::join!(node(db, "node-0", 5, &[]), node(db, "node-1", 5, &[]));
    let (nodes, urls): (Vec<Child>, Vec<String>) = [n0, n1].into_iter().unzip();
    let http = reqwest::Client::new();
    let app = post(&http, format!("{}/api/v1/app", urls[0]), json!({"name": "cluster"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    post(&http, format!("{}/api/v1/app/{app_id}/endpoint", urls[0]), endpoint).await;
    (nodes, urls, app_id)
}

/// Flow control holds for the cluster (issue 17, acceptance 4): an
/// endpoint at `throttleRate` 50, 2,000 messages offered through both
/// nodes: no 5 s window at the receiver holds more than 55/s, and every
/// message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_hold_one_endpoints_rate_together() {
    const MESSAGES: usize = 2000;
    let db = pg::fresh_database().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (nodes, urls, app_id) = two_nodes(&db, json!({"url": rx.url, "throttleRate": 50})).await;
    let http = reqwest::Client::new();
    let mut senders = Vec::new();
    for s in 0..8 {
        let (http, urls, app_id) = (http.clone(), urls.clone(), app_id.clone());
        senders.push(tokio::spawn(async move {
            for i in (s..MESSAGES).step_by(8) {
                let url = &urls[i % 2];
                post(
                    &http,
                    format!("{url}/api/v1/app/{app_id}/msg"),
                    json!({"eventType": "rate", "payload": {"i": i}}),
                )
                .await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    while rx.count() < MESSAGES {
        assert!(tokio::time::Instant::now() < deadline, "{} of {MESSAGES} arrived", rx.count());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut at: Vec<std::time::Instant> = rx.received().iter().map(|r| r.at).collect();
    at.sort();
    let window = Duration::from_secs(5);
    let busiest =
        (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t < at[i] + window).count()).max().unwrap();
    let seconds = at.last().unwrap().duration_since(at[0]).as_secs_f64();
    eprintln!(
        "cluster throttle: {MESSAGES} in {seconds:.1} s ({:.1}/s), busiest 5 s window {busiest} ({:.1}/s)",
        MESSAGES as f64 / seconds,
        busiest as f64 / 5.0
    );
    assert!(busiest <= 275, "{busiest} arrivals in one 5 s window: more than 55/s");
    assert_eq!(arrivals(&rx).len(), MESSAGES, "every message, once");
    drop(nodes);
}

/// Ordered delivery holds for the cluster (issue 18, acceptance 4): 50
/// keys × 40 messages spread over both nodes' APIs, a receiver failing
/// 10 % of requests: each key arrives in order, and never two requests
/// of one key at once (each accepted request takes 30 ms to answer, so
/// the next of its key cannot arrive sooner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_keep_each_key_in_order_one_at_a_time() {
    const KEYS: u64 = 50;
    const PER_KEY: u64 = 40;
    const ANSWER: Duration = Duration::from_millis(30);
    let db = pg::fresh_database().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let log = rx.log_ordered(|_, _, _| rand::random::<u8>() < 26, Reply::Slow(ANSWER));
    let endpoint = json!({"url": rx.url, "retryPolicy": {"schedule": vec![1; 30]}});
    let (nodes, urls, app_id) = two_nodes(&db, endpoint).await;
    let http = reqwest::Client::new();
    // Each key's messages go alternately to the two nodes, one after the
    // other (the order is the order they were acknowledged in).
    let mut senders = Vec::new();
    for key in 0..KEYS {
        let (http, urls, app_id) = (http.clone(), urls.clone(), app_id.clone());
        senders.push(tokio::spawn(async move {
            for n in 1..=PER_KEY {
                let url = &urls[((key + n) % 2) as usize];
                let body = json!({"eventType": "order", "payload": {"key": key.to_string(), "n": n}, "orderingKey": key.to_string()});
                post(&http, format!("{url}/api/v1/app/{app_id}/msg"), body).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    loop {
        let complete = {
            let log = log.lock().unwrap();
            (0..KEYS).filter(|k| log.accepted(&k.to_string()).len() >= PER_KEY as usize).count()
        };
        if complete == KEYS as usize {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{complete} of {KEYS} keys complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = log.lock().unwrap();
    assert!(log.out_of_order().is_empty(), "out of order: {:?}", &log.out_of_order()[..1]);
    for key in 0..KEYS {
        let key = key.to_string();
        // Exactly once each: no node died, so nothing is sent twice.
        assert_eq!(log.accepted(&key), (1..=PER_KEY).collect::<Vec<_>>(), "key {key}");
        let of_key: Vec<&crate::common::OrderedRequest> =
            log.requests.iter().filter(|r| r.key == key).collect();
        for pair in of_key.windows(2) {
            if pair[0].accepted {
                let gap = pair[1].at.duration_since(pair[0].at);
                assert!(
                    gap >= ANSWER,
                    "key {key}: {} and {} in flight together ({gap:?} apart)",
                    pair[0].n,
                    pair[1].n
                );
            }
        }
    }
    eprintln!(
        "cluster ordering: {KEYS} keys x {PER_KEY} in order over 2 nodes, each accepted once, {} requests failed by \
         the receiver",
        log.requests.iter().filter(|r| !r.accepted).count()
    );
    drop(nodes);
}
