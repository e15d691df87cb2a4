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
    let (table, report) = bench(&["dashboard", "--store-messages", "300", "--samples", "2"]).await;
    assert!(table.contains("endpoint messages"), "{table}");
    assert!(table.contains("chart: endpoint, week") && table.contains("chart: application, day"), "{table}");
    let pages = report["pages"].as_array().unwrap();
    assert!(pages.len() >= 10);
    for page in pages {
        let l = &page["latency"];
        assert_eq!(l["samples"], 2, "{page}");
        assert!(l["max_ms"].as_f64().unwrap() > 0.0, "{page}");
    }
}

/// Every scenario of `hookline bench` (a) to (f), at a size that runs in
/// seconds. Targets are not checked here (a loaded CI machine, tiny runs);
/// that the figures exist and are consistent is.
#[tokio::test]
async fn all_scenarios_smoke() {
    let args = [
        "all",
        "--messages",
        "300",
        "--concurrency",
        "8",
        "--rate",
        "200",
        "--duration",
        "1",
        "--backlog",
        "400",
        "--due-in",
        "10",
    ];
    let (table, report) = bench(&args).await;
    for scenario in
        ["(a) loopback", "(b) delivery", "(c) ingest", "(d) latency", "(e) isolation", "(f) backlog", "idle"]
    {
        assert!(table.contains(scenario), "{scenario} missing from\n{table}");
    }
    let data = &report["data"];
    let positive = |path: &str| {
        let v = path.split('.').fold(data, |v, k| &v[k]);
        assert!(v.as_f64().is_some_and(|x| x > 0.0), "{path} = {v} in {data}");
    };
    for path in [
        "throughput.loopback_rps",
        "throughput.delivered_per_s",
        "throughput.ratio",
        "ingest.acked_per_s",
        "latency.ack.p99_ms",
        "latency.e2e.p99_ms",
        "latency.cpu_busy",
        "isolation.delivered_per_s",
        "isolation.cpu_busy",
        // CPU per message of the server the bench started: at the fixed
        // rate that is tens of ms in all, well above /proc's 10 ms ticks.
        "latency.cpu.server.us",
        "isolation.cpu.server.us",
        "backlog.rss_mib",
        "idle.rss_mib",
        "idle.startup_ms",
    ] {
        positive(path);
    }
    // (b)'s few ms of CPU may round to 0 ticks; the figures must be there.
    for path in
        ["throughput.cpu.server.us", "throughput.cpu.server.threads.sqlite-writer", "throughput.cpu.bench.us"]
    {
        let v = path.split('.').fold(data, |v, k| &v[k]);
        assert!(v.as_f64().is_some_and(|x| x >= 0.0), "{path} = {v} in {data}");
    }
    // Every message sent at the fixed rate arrived and was timed.
    assert_eq!(data["latency"]["e2e"]["samples"], data["latency"]["ack"]["samples"], "{data}");
    // The backlog went out after the restart, not before the kill.
    let restart = data["backlog"]["restart_to_first_s"].as_f64().unwrap();
    assert!(restart > 0.0 && restart < 60.0, "{data}");
}

fn figure<'a>(data: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(data, |v, k| &v[k])
}

/// `bench throttle` at a small size: (b) for the baseline, then a healthy
/// endpoint beside one throttled to 5/s with messages waiting behind it.
#[tokio::test]
async fn throttle_bench_smoke() {
    let args = ["throttle", "--messages", "300", "--concurrency", "8", "--throttled", "2000"];
    let (table, report) = bench(&args).await;
    assert!(table.contains("(b) delivery") && table.contains("(g) throttle"), "{table}");
    assert!(table.contains("healthy messages/s") && table.contains("peak resident memory"), "{table}");
    let data = &report["data"]["throttle"];
    for path in ["healthy_per_s", "baseline_per_s", "rss_peak_mb", "rss_loaded_mb", "throttled_window_s"] {
        assert!(figure(data, path).as_f64().is_some_and(|x| x > 0.0), "{path} in {data}");
    }
    // The throttled endpoint was served, and at its rate: over the whole
    // window at most 5/s plus a second's burst, whatever the machine's speed.
    let got = data["throttled_got"].as_f64().unwrap();
    let window = data["throttled_window_s"].as_f64().unwrap();
    assert!(got >= 1.0 && got <= 5.0 * (window + 1.0), "{data}");
}

/// `bench ordering` at a small size: keyed messages arrive in order per key
/// (checked by the receiver), and unkeyed traffic beside keyed traffic is
/// measured.
#[tokio::test]
async fn ordering_bench_smoke() {
    let args = [
        "ordering",
        "--messages",
        "300",
        "--concurrency",
        "8",
        "--keys",
        "20",
        "--per-key",
        "15",
        "--rate",
        "200",
    ];
    let (table, report) = bench(&args).await;
    assert!(table.contains("(b) delivery") && table.contains("(h) ordering"), "{table}");
    let data = &report["data"]["ordering"];
    for path in ["keyed_per_s", "keyed_ratio", "unkeyed_per_s", "unkeyed_ratio", "keyed_beside_got"] {
        assert!(figure(data, path).as_f64().is_some_and(|x| x > 0.0), "{path} in {data}");
    }
    assert_eq!(data["out_of_order"], 0, "{data}");
    // Every keyed message arrived and was timed.
    assert_eq!(data["keyed_e2e"]["samples"], 300, "{data}");
}

/// A figure as a number, and that it was measured (above zero).
fn positive(data: &Value, path: &str) -> f64 {
    let v = figure(data, path).as_f64();
    assert!(v.is_some_and(|x| x > 0.0), "{path} in {data}");
    v.unwrap()
}

/// `a` is `b` up to rounding in the JSON.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// `bench scale` at a small size on the embedded store: fanout, tenants
/// and endpoints each measured, with their cost per delivery set against
/// (b)'s from the same run.
#[tokio::test]
async fn scale_bench_smoke() {
    let args = [
        "scale",
        "--messages",
        "2000",
        "--concurrency",
        "8",
        "--fanout",
        "10",
        "--tenants",
        "50",
        "--endpoint-apps",
        "20",
        "--endpoints-per-app",
        "3",
    ];
    let (table, report) = bench(&args).await;
    let data = &report["data"];
    let base_rate = positive(data, "throughput.delivered_per_s");
    let base_cost = positive(data, "throughput.cpu.server.us");
    for scenario in ["fanout", "tenants", "endpoints"] {
        assert!(table.contains(&format!("{scenario} ")), "{scenario} missing from\n{table}");
        let d = &data[scenario];
        let rate = positive(d, "deliveries_per_s");
        let cost = positive(d, "cost_us");
        assert!(close(positive(d, "rate_ratio"), rate / base_rate), "{d}");
        assert!(close(positive(d, "baseline_cost_us"), base_cost), "{d}");
        assert!(close(positive(d, "cost_ratio"), cost / base_cost), "{d}");
        assert!(positive(d, "ack.p99_ms") >= figure(d, "ack.p50_ms").as_f64().unwrap(), "{d}");
    }
    assert_eq!(data["fanout"]["deliveries"], 2000, "{data}");
    assert_eq!(data["fanout"]["endpoints"], 10, "{data}");
    assert_eq!(data["tenants"]["applications"], 50, "{data}");
    assert_eq!(data["endpoints"]["endpoints_stored"], 60, "{data}");
    positive(data, "tenants.setup_s");
    positive(data, "endpoints.setup_s");
    let ack = positive(data, "endpoints.ack.p99_ms") / positive(data, "throughput.ack.p99_ms");
    assert!(close(positive(data, "endpoints.ack_p99_ratio"), ack), "{data}");
}

/// `bench cluster` on PostgreSQL with 1 and 2 nodes: each node's CPU and
/// the database's, per message, read from /proc.
#[tokio::test]
async fn cluster_bench_smoke() {
    let server = crate::pg::server_url();
    let args =
        ["cluster", "--nodes", "2", "--messages", "600", "--concurrency", "8", "--database-url", &server];
    let (table, report) = bench(&args).await;
    assert!(table.contains("messages/s per database core"), "{table}");
    assert!(table.contains("2 nodes' messages/s, share of 1 node's"), "{table}");
    let runs = report["data"]["cluster"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["nodes"], i + 1, "{run}");
        positive(run, "delivered_per_s");
        let db = positive(run, "database_us");
        assert!(close(positive(run, "per_database_core"), 1e6 / db), "{run}");
        let nodes = run["node_us"].as_array().unwrap();
        assert_eq!(nodes.len(), i + 1, "{run}");
        // Every node served messages (they were sent to each in turn).
        for node in nodes {
            assert!(node.as_f64().is_some_and(|us| us > 0.0), "{run}");
        }
    }
}

/// `bench pg`: (b) on the embedded store and on PostgreSQL in one run, and
/// a fixed rate on PostgreSQL.
#[tokio::test]
async fn pg_bench_smoke() {
    let server = crate::pg::server_url();
    let args = [
        "pg",
        "--messages",
        "600",
        "--concurrency",
        "8",
        "--rate",
        "100",
        "--duration",
        "1",
        "--database-url",
        &server,
    ];
    let (table, report) = bench(&args).await;
    assert!(table.contains("PostgreSQL throughput, share of embedded"), "{table}");
    let d = &report["data"]["pg"];
    let share = positive(d, "postgres_per_s") / positive(d, "embedded_per_s");
    assert!(close(positive(d, "share"), share), "{d}");
    let db = positive(d, "database_us");
    assert!(close(positive(d, "per_database_core"), 1e6 / db), "{d}");
    let node = positive(d, "node_us") / positive(d, "embedded_node_us");
    assert!(close(positive(d, "node_ratio"), node), "{d}");
    // The embedded run has no database to measure.
    assert!(d["embedded_cpu"].get("database").is_none(), "{d}");
    assert_eq!(d["at_rate_e2e"]["samples"], 100, "{d}");
    positive(d, "at_rate_e2e.p99_ms");
}
/// The soak (issue 21) at half a minute, retentions of 5 and 10 seconds:
/// every interval has its figures, and the verdicts are computed from them.
#[tokio::test]
async fn soak_bench_smoke() {
    let (table, report) = bench(&["soak", "--soak-minutes", "0.5", "--soak-rate", "100"]).await;
    assert!(table.contains("disk growth over the last third"), "{table}");
    let soak = &report["data"]["soak"];
    assert_eq!(
        (soak["payload_retention_s"].as_f64(), soak["record_retention_s"].as_f64()),
        (Some(5.0), Some(10.0))
    );
    let intervals = soak["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 10, "{soak}");
    for i in intervals {
        assert!(i["acked"].as_u64().unwrap() >= 250, "{i}");
        assert!(i["delivered"].as_u64().unwrap() > 0, "{i}");
        assert!(i["ack"]["p99_ms"].as_f64().unwrap() > 0.0, "{i}");
        assert!(i["e2e"]["samples"].as_u64().unwrap() > 0, "{i}");
        assert!(i["rss_mib"].as_f64().unwrap() > 1.0, "{i}");
        assert!(i["disk_bytes"].as_u64().unwrap() > 4096, "{i}");
    }
    for field in ["bytes_per_message_with_payloads", "bytes_per_message_held"] {
        assert!(soak[field].as_f64().unwrap() > 10.0, "{field}: {soak}");
    }
    for field in ["disk_growth_last_third", "rss_spread_after_warmup", "ack_p99_ratio", "e2e_p99_ratio"] {
        assert!(soak["verdicts"][field].as_f64().is_some_and(f64::is_finite), "{field}: {soak}");
    }
}

/// On PostgreSQL the soak measures the database its server writes to (a
/// fresh one the bench creates), which grows before retention starts.
#[tokio::test]
async fn soak_bench_measures_the_servers_database() {
    let server = crate::pg::server_url();
    let args = ["soak", "--soak-minutes", "0.5", "--soak-rate", "100", "--database-url", &server];
    let (_, report) = bench(&args).await;
    let intervals = report["data"]["soak"]["intervals"].as_array().unwrap().clone();
    let disk = |i: usize| intervals[i]["disk_bytes"].as_u64().unwrap();
    // Records go after 10 s: until then every message adds to the database.
    assert!(disk(2) > disk(0), "{:?}", (0..intervals.len()).map(disk).collect::<Vec<_>>());
}
