//! The benchmark stays runnable: a short run of each scenario, checking it
//! reports what it says. (The full runs are in BENCHMARKS.md, not in CI.)

use serde_json::Value;
use tokio::process::Command;

async fn bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("HOOKLINE_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (String::from_utf8(output.stdout).unwrap(), report)
}

#[tokio::test]
async fn dashboard_bench_smoke() {
    let (table, report) = bench(&["dashboard", "--messages", "300", "--samples", "2"]).await;
    assert!(table.contains("endpoint messages"), "{table}");
    let pages = report["pages"].as_array().unwrap();
    assert!(pages.len() >= 10);
    for page in pages {
        let l = &page["latency"];
        assert_eq!(l["samples"], 2, "{page}");
        assert!(l["max_ms"].as_f64().unwrap() > 0.0, "{page}");
    }
}
