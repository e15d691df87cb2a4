//! API coverage: every operation of Svix's OpenAPI document is served by
//! Hookline and described in Hookline's own `/api/v1/openapi.json`.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TOKEN, TestServer};

type Ops = BTreeSet<(String, String)>;

fn parse_list(text: &str) -> Ops {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (m, p) = l.split_once(' ').expect("METHOD path");
            (m.to_owned(), p.to_owned())
        })
        .collect()
}

fn operations_of(doc: &Value) -> Ops {
    let mut ops = Ops::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The Svix operations: the committed list (CI has no `../shared`), checked
/// against the shared document whenever it is there.
fn svix_operations() -> Ops {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed =
        parse_list(&std::fs::read_to_string(root.join("tests/data/svix-operations.txt")).unwrap());
    let shared = root.join("../shared/svix-openapi.json");
    if shared.exists() {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(shared).unwrap()).unwrap();
        assert_eq!(operations_of(&doc), committed, "tests/data/svix-operations.txt is out of date");
    }
    assert!(committed.len() >= 40, "the list looks truncated");
    committed
}

/// A request to `path` with placeholder ids. Served means: anything but the
/// router's own "no route" 404 or a 405.
async fn is_served(t: &TestServer, method: &str, path: &str) -> Result<(), String> {
    let concrete: String = path
        .split('/')
        .map(|seg| if seg.starts_with('{') { "placeholder" } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
    let mut req = t.http.request(method.clone(), t.url(&concrete)).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let response: Value = resp.json().await.unwrap_or(Value::Null);
    let no_route = status == 404 && response["detail"] == "No route for this path";
    if no_route || status == 405 {
        return Err(format!("{method} {path} → {status} {response}"));
    }
    if status.is_server_error() {
        return Err(format!("{method} {path} → {status} {response}"));
    }
    Ok(())
}

#[tokio::test]
async fn every_svix_operation_is_served_and_documented() {
    let t = TestServer::start().await;
    let resp = t.http.get(t.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the document needs no token");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ours = operations_of(&doc);

    let svix = svix_operations();
    let undocumented: Vec<_> = svix.difference(&ours).collect();
    assert!(undocumented.is_empty(), "missing from /api/v1/openapi.json: {undocumented:?}");

    // Everything documented (Svix's and Hookline's own) is served.
    let mut failures = Vec::new();
    for (method, path) in &ours {
        if let Err(e) = is_served(&t, method, path).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "not served: {failures:#?}");
    // And the check can fail: an unknown path is reported.
    assert!(is_served(&t, "GET", "/api/v1/nothing/here").await.is_err());

    // Extensions are marked.
    let retry = &doc["components"]["schemas"]["RetryPolicy"];
    assert_eq!(retry["x-hookline"], true);
    assert!(doc["paths"]["/api/v1/app/{app_id}/endpoint"]["post"]["requestBody"].is_object());
}

#[tokio::test]
async fn the_reference_page_renders_every_operation() {
    let t = TestServer::start().await;
    let html = t.http.get(t.url("/api/v1/docs")).send().await.unwrap().text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    let doc: Value = t.http.get(t.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for (_, methods) in doc["paths"].as_object().unwrap() {
        for op in methods.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(html.contains(&format!("id=\"{id}\"")), "{id} is not on the page");
        }
    }
    assert!(html.contains("id=\"schema-RetryPolicy\""));
}
