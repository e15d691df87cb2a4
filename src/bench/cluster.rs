//! PostgreSQL mode under load (issue 21), on `--database-url`:
//! - `cluster`: 1, 2, 3… nodes on one fresh database, messages spread over
//!   the nodes in turn, with each process's CPU per message. The database's
//!   µs per message give the throughput of a cluster whose database has a
//!   machine of its own: 1e6 / µs messages/s per database core.
//! - `pg`: (b) on the embedded store and then on PostgreSQL in one run, and
//!   latency at a fixed rate on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::cpu::{ProcessMeter, per_core};
use super::delivery::{self, Delivered, Load, at_rate, deliver_to};
use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::{Latency, Report};
use super::{Opts, Subject, client, database, spawn_server};

/// PostgreSQL CPU per delivered message before issue 21's work (measured
/// in the issue: 1,499 messages/s, 775 µs), the figure the database
/// ceiling is compared with.
const TODAY_DATABASE_US: f64 = 775.0;

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Largest cluster measured: 1, 2, … this many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
}

fn database_server(opts: &Opts, scenario: &str) -> anyhow::Result<String> {
    anyhow::ensure!(opts.url.is_empty(), "`bench {scenario}` starts its own servers: leave out --url");
    opts.database_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("`bench {scenario}` needs a PostgreSQL server: give --database-url"))
}

/// `nodes` servers on one fresh database.
struct Nodes {
    subject: Subject,
    children: Vec<tokio::process::Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    async fn start(server: &str, nodes: usize) -> anyhow::Result<Nodes> {
        let (db, postmaster) = database::fresh(server).await?;
        let token = crate::service::generate_token();
        let (mut children, mut dirs, mut urls) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..nodes {
            let dir = tempfile::tempdir()?;
            let (child, url, _) = spawn_server(dir.path(), &token, Some(&db), &[]).await?;
            children.push(child);
            dirs.push(dir);
            urls.push(url);
        }
        let subject = Subject {
            url: urls[0].clone(),
            urls,
            token,
            http: client(),
            local: None,
            startup: None,
            postmaster,
        };
        Ok(Nodes { subject, children, _dirs: dirs })
    }
}

/// One cluster size's figures.
struct ClusterRun {
    nodes: usize,
    delivered: Delivered,
    e2e: Latency,
    /// Per node, µs per message.
    node_us: Vec<Option<f64>>,
}

async fn cluster_run(server: &str, nodes: usize, n: usize, c: usize) -> anyhow::Result<ClusterRun> {
    let cluster = Nodes::start(server, nodes).await?;
    let subject = &cluster.subject;
    let times = SendTimes::new(n);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let app = subject.app("bench-cluster").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;
    let meters: Vec<Option<ProcessMeter>> =
        cluster.children.iter().map(|c| c.id().map(|pid| ProcessMeter::start(pid.to_string()))).collect();
    let load = Load { urls: subject.messages_urls(&app), messages: n, deliveries: n, clients: c };
    let delivered = deliver_to(subject, &load, &rx, Some(Arc::clone(&times))).await?;
    let node_us = meters.iter().map(|m| Some(m.as_ref()?.per_message(n)?.us)).collect();
    Ok(ClusterRun { nodes, delivered, e2e: Latency::of(times.latencies()), node_us })
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| format!("{v:.0} µs"))
}

pub async fn cluster(opts: &Opts, args: &ClusterArgs, report: &mut Report) -> anyhow::Result<()> {
    let server = database_server(opts, "cluster")?;
    let (n, c) = (opts.messages, opts.concurrency);
    let mut runs = Vec::new();
    for nodes in 1..=args.nodes.max(1) {
        eprintln!("cluster: {nodes} node(s) on one PostgreSQL, {n} messages by {c} clients spread over them");
        let run = cluster_run(&server, nodes, n, c).await?;
        let scenario = format!("cluster, {nodes} node(s)");
        let db = run.delivered.cpu.database;
        report.add(&scenario, "messages/s", format!("{:.0}", run.delivered.rate), "(info)", None);
        report.add(&scenario, "end-to-end at saturation", run.e2e.brief(), "(info)", None);
        let per_node: Vec<String> = run.node_us.iter().map(|u| us(*u)).collect();
        let nodes_sum: Option<f64> = run.node_us.iter().copied().sum();
        report.add(
            &scenario,
            "node CPU per message",
            format!("{} (together {})", per_node.join(", "), us(nodes_sum)),
            "(info)",
            None,
        );
        report.add(&scenario, "database CPU per message", us(db), "(info)", None);
        let ceiling = db.and_then(per_core);
        let today = 1e6 / TODAY_DATABASE_US;
        report.add(
            &scenario,
            "messages/s per database core",
            ceiling.map_or_else(|| "unknown".into(), |m| format!("{m:.0} ({:.1} × today's)", m / today)),
            &format!(">= {:.0} (5 × today's)", 5.0 * today),
            ceiling.map(|m| m >= 5.0 * today),
        );
        runs.push(run);
    }
    if let [one, two, ..] = runs.as_slice() {
        let ratio = two.delivered.rate / one.delivered.rate;
        report.add(
            "cluster",
            "2 nodes' messages/s, share of 1 node's",
            format!("{:.0} %", ratio * 100.0),
            ">= 100 %",
            Some(ratio >= 1.0),
        );
    }
    let data: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            json!({
                "nodes": r.nodes,
                "delivered_per_s": r.delivered.rate,
                "ack": r.delivered.ack,
                "e2e": r.e2e,
                "node_us": r.node_us,
                "database_us": r.delivered.cpu.database,
                "per_database_core": r.delivered.cpu.database.and_then(per_core),
                "bench_us": r.delivered.cpu.bench.as_ref().map(|b| b.us),
            })
        })
        .collect();
    report.data("cluster", json!(data));
    Ok(())
}

/// Acceptance 1 of issue 21: PostgreSQL mode against the embedded store in
/// one run, one node each.
pub async fn compare_stores(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    database_server(opts, "pg")?;
    let (n, c, rate) = (opts.messages, opts.concurrency, opts.rate);
    eprintln!("pg: (b) on the embedded store, {n} messages by {c} clients");
    let embedded_opts = Opts { database_url: None, ..opts.clone() };
    let (embedded, _) = delivery::one_endpoint(&embedded_opts).await?;
    eprintln!("pg: (b) on PostgreSQL");
    let (pg, pg_e2e) = delivery::one_endpoint(opts).await?;
    eprintln!("pg: {rate} messages/s for {} s on PostgreSQL", opts.duration);
    let fixed = {
        let subject = Subject::new(opts).await?;
        let times = SendTimes::new((rate * opts.duration) as usize + 1);
        let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
        let app = subject.app("bench-latency").await?;
        subject.endpoint(&app, &rx.url(), json!({})).await?;
        at_rate(&subject, &app, &rx, times, rate, Duration::from_secs(opts.duration)).await?
    };

    let s = "pg vs embedded";
    report.add(s, "embedded messages/s", format!("{:.0}", embedded.rate), "(info)", None);
    report.add(s, "PostgreSQL messages/s", format!("{:.0}", pg.rate), "(info)", None);
    let share = pg.rate / embedded.rate;
    report.add(
        s,
        "PostgreSQL throughput, share of embedded",
        format!("{:.0} %", share * 100.0),
        ">= 50 %",
        Some(share >= 0.5),
    );
    let db = pg.cpu.database;
    report.add(s, "PostgreSQL CPU per delivered message", us(db), "<= 150 µs", db.map(|d| d <= 150.0));
    report.add(
        s,
        "messages/s per database core",
        db.and_then(per_core).map_or_else(|| "unknown".into(), |m| format!("{m:.0}")),
        "(info)",
        None,
    );
    let (pg_node, embedded_node) =
        (pg.cpu.server.as_ref().map(|c| c.us), embedded.cpu.server.as_ref().map(|c| c.us));
    let node_ratio = pg_node.zip(embedded_node).and_then(|(p, e)| (e > 0.0).then(|| p / e));
    report.add(
        s,
        "node CPU per message, PostgreSQL node / embedded node",
        node_ratio.map_or_else(
            || "unknown".into(),
            |r| format!("{r:.2} × ({} / {})", us(pg_node), us(embedded_node)),
        ),
        "<= 1.5 ×",
        node_ratio.map(|r| r <= 1.5),
    );
    report.add(s, "CPU per message, embedded", embedded.cpu.brief(), "(info)", None);
    report.add(s, "CPU per message, PostgreSQL", pg.cpu.brief(), "(info)", None);
    report.add(s, "end-to-end at saturation, PostgreSQL", pg_e2e.brief(), "(info)", None);
    report.add(
        s,
        &format!("end-to-end at {rate}/s, PostgreSQL"),
        fixed.e2e.brief(),
        "p99 < 10 ms",
        Some(fixed.e2e.p99_ms < 10.0),
    );
    report.add(s, &format!("ack at {rate}/s, PostgreSQL"), fixed.ack.brief(), "(info)", None);
    report.add(s, "machine busy meanwhile", fixed.cpu_brief(), "(info)", None);
    report.data(
        "pg",
        json!({
            "embedded_per_s": embedded.rate,
            "postgres_per_s": pg.rate,
            "share": share,
            "database_us": db,
            "per_database_core": db.and_then(per_core),
            "node_us": pg_node,
            "embedded_node_us": embedded_node,
            "node_ratio": node_ratio,
            "embedded_cpu": embedded.cpu,
            "postgres_cpu": pg.cpu,
            "postgres_e2e": pg_e2e,
            "rate": rate,
            "at_rate_ack": fixed.ack,
            "at_rate_e2e": fixed.e2e,
            "at_rate_cpu": fixed.cpu,
        }),
    );
    Ok(())
}
