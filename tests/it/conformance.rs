//! The served OpenAPI document and the server agree: schemathesis, bounded,
//! against the real binary. Every generated request must get an answer its
//! operation documents, no 5xx, no valid request refused and no invalid one
//! accepted (schemathesis' default checks), including in stateful runs
//! that follow the document's links.
//!
//! `scripts/test` installs schemathesis in a venv and names it in
//! `HOOKLINE_SCHEMATHESIS`; without it this test fails rather than skips.
//! A longer run, with a random seed:
//! `schemathesis run http://127.0.0.1:8071/api/v1/openapi.json -H "Authorization: Bearer $TOKEN" --max-examples 200`
//! against `hookline serve --allow-private-targets`.

use crate::common::{TOKEN, spawn_hookline};

pub const ENV: &str = "HOOKLINE_SCHEMATHESIS";

/// Examples per operation and phase: about 4,000 requests in all, a couple
/// of minutes on a loaded two-core machine with a debug build.
const MAX_EXAMPLES: &str = "10";

/// Where a schema-valid request may still be refused with a 422: what
/// makes it invalid is not in the request's shape but in what it names (an
/// endpoint filtering on an event type that does not exist, as Svix refuses
/// it), in a document it carries (an OpenAPI document without webhooks), or
/// in today's date (recovering from more than 14 days ago, as Svix refuses).
/// Everything else keeps schemathesis' default expectations.
const CONFIG: &str = r#"
[[operations]]
include-operation-id = ["v1.endpoint.create", "v1.endpoint.update", "v1.endpoint.patch", "v1.event-type.import-openapi", "v1.endpoint.recover"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422"]
"#;

#[tokio::test]
async fn the_openapi_document_and_the_server_agree() {
    let st = std::env::var(ENV).unwrap_or_else(|_| {
        panic!(
            "{ENV} is not set. This test needs schemathesis: run `scripts/test`, which installs it in a \
             venv, or set {ENV}=/path/to/schemathesis"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    // Private targets allowed: generated endpoint URLs name any host, and
    // refusing blocked IP literals is tested on its own (delivery.rs).
    let (mut server, url) = spawn_hookline(&["--data-dir".as_ref(), dir.path().as_os_str()]).await;
    std::fs::write(dir.path().join("schemathesis.toml"), CONFIG).unwrap();
    let out = tokio::process::Command::new(&st)
        .args(["run", &format!("{url}/api/v1/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "2", "--seed", "19"])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of past failures stays out of the source tree.
        .current_dir(dir.path())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {st}: {e}"));
    server.kill().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> =
        stdout.lines().filter(|l| l.contains("generated") || l.contains("API Links")).collect();
    eprintln!("schemathesis: {}", summary.join(" | ").trim());
    assert!(
        out.status.success(),
        "schemathesis found mismatches between the document and the server:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A run that generated nothing would pass vacuously.
    let generated: u64 =
        summary.iter().filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).sum();
    assert!(generated > 1000, "only {generated} requests generated:\n{stdout}");
}
