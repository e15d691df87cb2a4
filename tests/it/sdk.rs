//! Every operation the official SDKs (Rust `svix` 2.9.1, Python `svix`
//! 2.9.1) can call, and what Hookline answers: `tests/data/sdk-operations.txt`
//! lists them; this checks the list against the SDKs' own sources (so a new
//! SDK release shows what changed), sends each operation, and drives the
//! operations Hookline added for them through both SDKs, on both stores.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use svix::models::{
    AppUsageStatsIn, ApplicationTokenExpireIn, EnvironmentIn, EventTypeImportOpenApiIn, EventTypeIn,
    MessagePrecheckIn,
};

use crate::common::{Receiver, Reply, TOKEN, TestServer};

type Ops = BTreeSet<(String, String)>;

/// One line of the list: an operation, the status it answers, its body.
struct Expected {
    method: String,
    path: String,
    status: u16,
    body: Option<String>,
}

fn expected() -> Vec<Expected> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/data/sdk-operations.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (method, path, status) =
                (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            Expected {
                method: method.to_owned(),
                path: path.to_owned(),
                status: status.parse().unwrap_or_else(|_| panic!("bad status in {l}")),
                body: parts.next().map(str::to_owned),
            }
        })
        .collect()
}

/// `(METHOD, path)` of every request built in these sources: the method
/// right after each `method_marker`, the path in the first quotes after
/// the next `path_marker`.
fn operations_in(dir: &Path, ext: &str, method_marker: &str, path_marker: &str) -> Ops {
    let mut ops = Ops::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                let text = std::fs::read_to_string(&p).unwrap();
                for chunk in text.split(method_marker).skip(1) {
                    let method: String = chunk.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
                    let Some((_, rest)) = chunk.split_once(path_marker) else { continue };
                    let path = rest.split('"').next().unwrap();
                    if !method.is_empty() && (path.starts_with("/api/") || path.starts_with("/ingest/")) {
                        ops.insert((method.to_uppercase(), path.to_owned()));
                    }
                }
            }
        }
    }
    ops
}

/// The `svix` crate's sources, in Cargo's registry.
fn rust_sdk_sources() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let version = lock
        .split("name = \"svix\"\nversion = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("svix in Cargo.lock");
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let registry = home.join("registry/src");
    for index in std::fs::read_dir(&registry).unwrap() {
        let dir = index.unwrap().path().join(format!("svix-{version}/src"));
        if dir.exists() {
            return dir;
        }
    }
    panic!("svix-{version} is not in {}: run `cargo fetch`", registry.display());
}

/// The Python interpreter with the official `svix` package (`scripts/test`
/// makes a virtualenv and sets this).
fn python() -> String {
    std::env::var("HOOKLINE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "HOOKLINE_TEST_PYTHON is not set. The Python SDK tests need an interpreter with \
             `svix==2.9.1`: run `scripts/test`, which makes one, or point HOOKLINE_TEST_PYTHON at yours"
        )
    })
}

fn python_sdk_sources() -> PathBuf {
    let out = std::process::Command::new(python())
        .args(["-c", "import os, svix; print(os.path.dirname(svix.__file__), svix.__version__)"])
        .output()
        .expect("run the Python interpreter");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (dir, version) = text.trim().rsplit_once(' ').unwrap();
    assert_eq!(version, "2.9.1", "the Python SDK the list was made from");
    PathBuf::from(dir)
}

#[test]
fn the_list_holds_every_operation_of_both_sdks() {
    // `Request::new(http::Method::GET, "/api/…")`, the call split over lines or not.
    let rust = operations_in(&rust_sdk_sources(), "rs", "http::Method::", "\"");
    let python = operations_in(&python_sdk_sources(), "py", "method=\"", "path=\"");
    let listed: Ops = expected().into_iter().map(|e| (e.method, e.path)).collect();
    let sdks: Ops = rust.union(&python).cloned().collect();
    assert!(rust.len() > 100 && python.len() > 100, "the SDK sources were not read: {rust:?} {python:?}");
    let missing: Vec<_> = sdks.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&sdks).collect();
    assert!(missing.is_empty(), "operations of the SDKs not in tests/data/sdk-operations.txt: {missing:#?}");
    assert!(gone.is_empty(), "listed operations no SDK calls any more: {gone:#?}");
}

/// Real objects for the placeholders of the list.
struct Fixture {
    app: String,
    endpoint: String,
    msg: String,
    attempt: String,
    task: String,
    op_endpoint: String,
    receiver: String,
}

async fn fixture(t: &TestServer) -> Fixture {
    let rx = Receiver::start(Reply::Status(200, "")).await;
    t.event_types(&["sdk.event"]).await;
    let (app, endpoint) = t.app_with_endpoint(&rx.url, json!({})).await;
    let msg = t.send(&app, json!({"n": 0})).await;
    let attempt = t.wait_attempts(&app, &msg, 1).await[0]["id"].as_str().unwrap().to_owned();
    let (_, task) =
        t.post(&format!("/api/v1/app/{app}/endpoint/{endpoint}/recover"), json!({"since": recent(-1)})).await;
    let (status, op) = t.post("/api/v1/operational-webhook/endpoint", json!({"url": rx.url})).await;
    assert_eq!(status, 201, "{op}");
    Fixture {
        app,
        endpoint,
        msg,
        attempt,
        task: task["id"].as_str().unwrap().to_owned(),
        op_endpoint: op["id"].as_str().unwrap().to_owned(),
        receiver: rx.url,
    }
}

fn recent(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

impl Fixture {
    fn path(&self, path: &str) -> String {
        let endpoint =
            if path.starts_with("/api/v1/operational-webhook") { &self.op_endpoint } else { &self.endpoint };
        path.replace("{app_id}", &self.app)
            .replace("{endpoint_id}", endpoint)
            .replace("{msg_id}", &self.msg)
            .replace("{attempt_id}", &self.attempt)
            .replace("{event_type_name}", "sdk.event")
            .replace("{task_id}", &self.task)
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn body(&self, body: &str) -> Value {
        let text = body
            .replace("{recent}", &recent(-1))
            .replace("{later}", &recent(1))
            .replace("{receiver}", &self.receiver)
            .replace("{msg_id}", &self.msg);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad body {body}: {e}"))
    }
}

/// When an operation runs: reads, writes, erasures, deletions, and the
/// application's deletion last.
fn phase(e: &Expected) -> u8 {
    match (e.method.as_str(), e.path.as_str()) {
        ("GET", _) => 0,
        ("DELETE", "/api/v1/app/{app_id}") => 4,
        ("DELETE", _) => 3,
        (_, p) if p.contains("expunge") || p.ends_with("/logout") => 2,
        _ => 1,
    }
}

#[tokio::test]
async fn every_sdk_operation_answers_as_listed() {
    let t = TestServer::start().await;
    let f = fixture(&t).await;
    let mut ops = expected();
    ops.sort_by_key(phase);
    let mut wrong = Vec::new();
    for e in &ops {
        let path = f.path(&e.path);
        let method = Method::from_bytes(e.method.as_bytes()).unwrap();
        let mut req = t.http.request(method, t.url(&path));
        req = if e.path == "/api/v1/auth/logout" {
            // Only app-scoped tokens log out.
            let (_, portal) = t.post(&format!("/api/v1/auth/app-portal-access/{}", f.app), json!({})).await;
            req.bearer_auth(portal["token"].as_str().unwrap())
        } else {
            req.bearer_auth(TOKEN)
        };
        if let Some(body) = &e.body {
            req = req.json(&f.body(body));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let as_listed = status == e.status
            && (status != 403 || answer["code"] == "not_offered" && answer["detail"].as_str().is_some());
        if !as_listed {
            wrong.push(format!("{} {} → {status} {answer} (listed: {})", e.method, e.path, e.status));
        }
    }
    assert!(wrong.is_empty(), "answers differ from tests/data/sdk-operations.txt: {wrong:#?}");
    // And the check can fail: without a token nothing is as listed.
    let (status, _) = (t.http.get(t.url("/api/v1/connector")).send().await.unwrap().status(), ());
    assert_eq!(status, 401, "not-offered paths still need a token");
}

/// An endpoint with one message delivered, one waiting for a retry and one
/// settled as failed; returns (app, endpoint, the receiver, messages).
pub(crate) async fn recover_fixture(t: &TestServer) -> (String, String, Receiver, [String; 3]) {
    let rx = Receiver::start(Reply::Status(200, "")).await;
    t.event_types(&["sdk.event"]).await;
    // One retry, an hour later: a failed message stays pending for that hour.
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({"retryPolicy": {"schedule": [3600]}})).await;
    let ok = t.send(&app, json!({"n": 1})).await;
    t.wait_status(&app, &ok, &ep, "success").await;
    rx.script([Reply::Status(500, "")]);
    let waiting = t.send(&app, json!({"n": 2})).await;
    t.wait_attempts(&app, &waiting, 1).await;
    rx.script([Reply::Headers(500, &[("webhook-delivery", "abort-message")])]);
    let settled = t.send(&app, json!({"n": 3})).await;
    t.wait_status(&app, &settled, &ep, "fail").await;
    (app, ep, rx, [ok, waiting, settled])
}

/// After a recover: the two failed messages went out again as manual
/// attempts and succeeded; the delivered one was left alone.
async fn assert_recovered(t: &TestServer, app: &str, ep: &str, rx: &Receiver, msgs: &[String; 3]) {
    rx.wait_for(5).await;
    for msg in &msgs[1..] {
        t.wait_status(app, msg, ep, "success").await;
        assert_eq!(t.attempts(app, msg).await[1]["triggerType"], 1);
    }
    assert_eq!(t.attempts(app, &msgs[0]).await.len(), 1);
}

#[tokio::test]
async fn the_python_sdk_against_hookline() {
    let t = TestServer::start().await;
    let (app, ep, rx, msgs) = recover_fixture(&t).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_check.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args([&t.server.url(), TOKEN, &app, &ep])
        .output()
        .await
        .expect("run the Python SDK script");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls: std::collections::HashMap<String, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["call"].as_str().unwrap().to_owned(), v))
        .collect();
    let call = |name: &str| calls.get(name).unwrap_or_else(|| panic!("{name} was not called: {calls:?}"));

    let recover = call("endpoint.recover");
    assert_eq!(recover["value"]["status"], "finished", "{recover}");
    assert_eq!(recover["value"]["task"], "endpoint.recover");
    assert_recovered(&t, &app, &ep, &rx, &msgs).await;
    let too_old = call("endpoint.recover.15days");
    assert_eq!(
        (too_old["status"].clone(), too_old["loc"][0].clone()),
        (json!(422), json!(["body", "since"]))
    );
    let unknown = call("endpoint.create.unknown_event_type");
    assert_eq!(
        (unknown["status"].clone(), unknown["loc"][0].clone()),
        (json!(422), json!(["body", "filterTypes"]))
    );

    let stats = call("endpoint.get_attempt_stats");
    // The recover's two attempts may or may not have landed by then.
    let success = stats["value"]["success"].as_u64().unwrap();
    assert!((1..=3).contains(&success) && stats["value"]["fail"] == 2, "{stats}");
    assert_eq!(call("message.precheck")["value"]["active"], true);
    assert_eq!(call("authentication.expire_all")["ok"], true);
    let usage = call("statistics.aggregate_app_stats");
    assert_eq!(usage["value"]["unresolvedAppIds"], json!(["app_missing"]), "{usage}");
    assert_eq!(usage["value"]["task"], "application.stats");
    assert_eq!(call("statistics.aggregate_event_types")["value"]["task"], "event-type.aggregate");
    assert_eq!(call("event_type.import_openapi")["value"]["data"]["modified"], json!(["py.imported"]));
    let exported = &call("environment.export")["value"]["eventTypes"];
    assert!(exported.as_array().unwrap().iter().any(|et| et["name"] == "py.imported"), "{exported}");
    assert_eq!(call("environment.import_")["ok"], true);
    assert_eq!(t.get("/api/v1/event-type/py.env").await["description"], "env");
    for product in [
        "connector.list",
        "destination.list",
        "integration.list",
        "streaming.stream.list",
        "ingest.source.list",
    ] {
        let c = call(product);
        assert_eq!((c["status"].clone(), c["code"].clone()), (json!(403), json!("not_offered")), "{c}");
    }
}

#[tokio::test]
async fn the_rust_sdk_against_hookline() {
    let t = TestServer::start().await;
    let (app, ep, rx, msgs) = recover_fixture(&t).await;
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let recover = svix::models::RecoverIn::new(since);
    let out = t.svix.endpoint().recover(app.clone(), ep.clone(), recover, None).await.unwrap();
    assert_eq!(out.status, svix::models::BackgroundTaskStatus::Finished);
    assert_recovered(&t, &app, &ep, &rx, &msgs).await;

    let stats = t.svix.endpoint().get_attempt_stats(app.clone(), ep.clone(), None).await.unwrap();
    assert_eq!((stats.success, stats.fail, stats.canceled), (3, 2, 0));
    let pre = MessagePrecheckIn::new("sdk.event".into());
    assert!(t.svix.message().precheck(app.clone(), pre, None).await.unwrap().active);
    let whoami = t.svix.authentication().whoami().await.unwrap();
    assert_eq!(whoami.app_id, None);
    // `message().events` is behind the crate's `svix_beta` feature.
    let events = t.get(&format!("/api/v1/app/{app}/events?limit=2")).await;
    assert_eq!(
        (events["data"][0]["id"].as_str(), events["done"].as_bool()),
        (Some(msgs[0].as_str()), Some(false))
    );
    let next = events["iterator"].as_str().unwrap();
    let events = t.get(&format!("/api/v1/app/{app}/events?iterator={next}")).await;
    assert_eq!((events["iterator"].as_str(), events["done"].as_bool()), (Some(msgs[2].as_str()), Some(true)));
    let events = t.get(&format!("/api/v1/app/{app}/events?iterator={}", msgs[2])).await;
    assert_eq!(
        (events["data"].as_array().unwrap().len(), events["iterator"].as_str()),
        (0, Some(msgs[2].as_str()))
    );
    t.svix.authentication().expire_all(app.clone(), ApplicationTokenExpireIn::new(), None).await.unwrap();

    let usage = AppUsageStatsIn {
        app_ids: Some([app.clone()].into()),
        ..AppUsageStatsIn::new(since, chrono::Utc::now())
    };
    let usage = t.svix.statistics().aggregate_app_stats(usage, None).await.unwrap();
    let task = t.svix.background_task().get(usage.id).await.unwrap();
    assert_eq!(task.data["apps"][0]["messageCount"], 3);
    t.svix.statistics().aggregate_event_types().await.unwrap();

    let spec = json!({"openapi": "3.1.0", "webhooks": {"rs.imported": {"post": {"summary": "imported"}}}});
    let import = EventTypeImportOpenApiIn { spec: Some(spec), dry_run: Some(true), ..Default::default() };
    let dry = t.svix.event_type().import_openapi(import, None).await.unwrap();
    assert_eq!(dry.data.modified, ["rs.imported"]);
    assert_eq!(dry.data.to_modify.unwrap()[0].description, "imported");
    assert_eq!(
        t.call(Method::GET, "/api/v1/event-type/rs.imported", None).await.0,
        404,
        "a dry run writes nothing"
    );

    let env = t.svix.environment().export(None).await.unwrap();
    assert_eq!(env.event_types.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["sdk.event"]);
    let mut other = EnvironmentIn::new();
    other.event_types = Some(vec![EventTypeIn::new("rs.env".into(), "from an environment".into())]);
    t.svix.environment().import(other, None).await.unwrap();
    assert_eq!(t.get("/api/v1/event-type/rs.env").await["description"], "from an environment");

    match t.svix.connector().list(None).await {
        Err(svix::error::Error::Http(e)) => {
            assert_eq!(e.status, 403);
            assert_eq!(e.payload.unwrap().code, "not_offered");
        }
        other => panic!("expected not_offered, got {other:?}"),
    }
}

crate::common::on_postgres!(
    every_sdk_operation_answers_as_listed,
    the_python_sdk_against_hookline,
    the_rust_sdk_against_hookline
);
