//! Scale scenarios (issue 21): does a delivery cost the same when the work
//! has another shape? Each runs after (b) in the same run and reports its
//! CPU per delivery (server and, on PostgreSQL, database) against (b)'s.
//! - `fanout`: one message to many endpoints of one application;
//! - `tenants`: many applications with one endpoint each, messages spread
//!   at random over them;
//! - `endpoints`: (b) again on a store holding a million endpoints.
//!
//! Applications and endpoints are created through the API like any
//! client's, many at once; the time that takes is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde_json::json;

use super::cpu::CpuUse;
use super::delivery::{self, Delivered, Load, deliver, deliver_to, report_f64};
use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::{Report, progress};
use super::{Opts, Subject};

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Endpoints of the one application in the fanout run.
    #[arg(long, default_value_t = 100)]
    pub fanout: usize,
    /// Applications, with one endpoint each, in the tenants run.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// Applications stored before the endpoints run.
    #[arg(long, default_value_t = 100_000)]
    pub endpoint_apps: usize,
    /// Endpoints of each of those applications.
    #[arg(long, default_value_t = 10)]
    pub endpoints_per_app: usize,
    /// API calls in flight at once while creating applications and endpoints.
    #[arg(long, default_value_t = 128)]
    pub setup_concurrency: usize,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Fanout,
    Tenants,
    Endpoints,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Fanout, Kind::Tenants, Kind::Endpoints];
}

/// (a), (b), then each of `kinds`, compared with (b).
pub async fn run(opts: &Opts, args: &ScaleArgs, kinds: &[Kind], report: &mut Report) -> anyhow::Result<()> {
    delivery::throughput(opts, report).await?;
    let base = Baseline::of(report, opts.database_url.is_some());
    for kind in kinds {
        match kind {
            Kind::Fanout => fanout(opts, args, &base, report).await?,
            Kind::Tenants => tenants(opts, args, &base, report).await?,
            Kind::Endpoints => endpoints(opts, args, &base, report).await?,
        }
    }
    Ok(())
}

/// (b)'s figures in this run.
struct Baseline {
    rate: Option<f64>,
    /// Server and database CPU per delivery, µs.
    cost_us: Option<f64>,
    ack_p99_ms: Option<f64>,
    /// How far above (b)'s cost a scenario may be: 20 % on the embedded
    /// store, 30 % on PostgreSQL (issue 21).
    tolerance: f64,
}

impl Baseline {
    fn of(report: &Report, on_postgres: bool) -> Baseline {
        let server = report_f64(report, "throughput", "cpu.server.us");
        let database = report_f64(report, "throughput", "cpu.database").unwrap_or(0.0);
        Baseline {
            rate: report_f64(report, "throughput", "delivered_per_s"),
            cost_us: server.map(|s| s + database),
            ack_p99_ms: report_f64(report, "throughput", "ack.p99_ms"),
            tolerance: if on_postgres { 0.3 } else { 0.2 },
        }
    }

    /// The rows every scale scenario reports, and their JSON figures.
    fn compare(&self, scenario: &str, run: &Delivered, report: &mut Report) -> serde_json::Value {
        let rate_ratio = self.rate.map(|b| run.rate / b);
        let cost = cost_us(&run.cpu);
        let cost_ratio = cost.zip(self.cost_us).and_then(|(c, b)| (b > 0.0).then(|| c / b));
        let pct = |r: Option<f64>| r.map_or_else(|| "unknown".into(), |r| format!("{:.0} %", r * 100.0));
        report.add(scenario, "deliveries/s", format!("{:.0}", run.rate), "(info)", None);
        report.add(scenario, "deliveries/s, share of (b)'s", pct(rate_ratio), "(info)", None);
        report.add(scenario, "CPU per delivery", run.cpu.brief(), "(info)", None);
        let target = format!("<= {:.0} %", (1.0 + self.tolerance) * 100.0);
        report.add(
            scenario,
            "cost per delivery, share of (b)'s",
            pct(cost_ratio),
            &target,
            cost_ratio.map(|r| r <= 1.0 + self.tolerance),
        );
        json!({
            "deliveries_per_s": run.rate,
            "rate_ratio": rate_ratio,
            "cost_us": cost,
            "baseline_cost_us": self.cost_us,
            "cost_ratio": cost_ratio,
            "ack": run.ack,
            "cpu": run.cpu,
        })
    }
}

/// Server and database CPU per delivery, µs (unknown when the benchmark
/// did not start the server).
fn cost_us(cpu: &CpuUse) -> Option<f64> {
    Some(cpu.server.as_ref()?.us + cpu.database.unwrap_or(0.0))
}

/// `apps` applications with `per_app` endpoints each, all to `target`,
/// created through the API `concurrency` calls at a time. Returns the
/// applications' ids and how long it took.
async fn populate(
    subject: &Subject,
    apps: usize,
    per_app: usize,
    target: &str,
    concurrency: usize,
) -> anyhow::Result<(Vec<String>, Duration)> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let bar = progress(apps as u64, "creating applications");
    let ids: Arc<Vec<std::sync::OnceLock<String>>> =
        Arc::new((0..apps).map(|_| Default::default()).collect());
    let mut workers = tokio::task::JoinSet::new();
    // Each worker makes one application at a time and its endpoints one
    // after the other; `concurrency` workers keep that many calls in flight.
    for _ in 0..concurrency.clamp(1, apps.max(1)) {
        let (next, ids, bar, target) = (Arc::clone(&next), Arc::clone(&ids), bar.clone(), target.to_owned());
        let subject = api_only(subject);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ids.len() {
                    return Ok::<_, anyhow::Error>(());
                }
                let app = subject.app(&format!("bench-scale-{i}")).await?;
                for _ in 0..per_app {
                    subject.endpoint(&app, &target, json!({})).await?;
                }
                let _ = ids[i].set(app);
                bar.inc(1);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    bar.finish_and_clear();
    let ids = Arc::try_unwrap(ids).map_err(|_| anyhow::anyhow!("workers still hold the ids"))?;
    Ok((ids.into_iter().filter_map(|id| id.into_inner()).collect(), started.elapsed()))
}

/// The same server for API calls from another task.
fn api_only(s: &Subject) -> Subject {
    Subject {
        url: s.url.clone(),
        urls: s.urls.clone(),
        token: s.token.clone(),
        http: s.http.clone(),
        local: None,
        startup: None,
        postmaster: None,
    }
}

fn setup_brief(apps: usize, endpoints: usize, took: Duration) -> String {
    format!(
        "{apps} applications, {endpoints} endpoints in {:.1} s ({:.0} API calls/s)",
        took.as_secs_f64(),
        (apps + endpoints) as f64 / took.as_secs_f64().max(1e-9)
    )
}

async fn fanout(opts: &Opts, args: &ScaleArgs, base: &Baseline, report: &mut Report) -> anyhow::Result<()> {
    let endpoints = args.fanout.max(1);
    // About as many deliveries as (b) made messages.
    let messages = (opts.messages / endpoints).max(1);
    let deliveries = messages * endpoints;
    eprintln!(
        "fanout: {messages} messages to {endpoints} endpoints of one application ({deliveries} deliveries)"
    );
    let subject = Subject::new(opts).await?;
    let times = SendTimes::new(messages);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let (apps, took) = populate(&subject, 1, endpoints, &rx.url(), 1).await?;
    let load =
        Load { urls: subject.messages_urls(&apps[0]), messages, deliveries, clients: opts.concurrency };
    let run = deliver_to(&subject, &load, &rx, Some(times)).await?;
    let mut data = base.compare("fanout", &run, report);
    data["endpoints"] = json!(endpoints);
    data["messages"] = json!(messages);
    data["deliveries"] = json!(deliveries);
    data["setup_s"] = json!(took.as_secs_f64());
    report.data("fanout", data);
    Ok(())
}

async fn tenants(opts: &Opts, args: &ScaleArgs, base: &Baseline, report: &mut Report) -> anyhow::Result<()> {
    let (apps, n) = (args.tenants.max(1), opts.messages);
    eprintln!("tenants: {apps} applications with one endpoint each, {n} messages spread at random");
    let subject = Subject::new(opts).await?;
    let times = SendTimes::new(n);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let (ids, took) = populate(&subject, apps, 1, &rx.url(), args.setup_concurrency).await?;
    report.add("tenants", "setup", setup_brief(apps, apps, took), "(info)", None);
    let urls = {
        let mut rng = rand::rng();
        (0..n).map(|_| subject.messages_urls(&ids[rng.random_range(0..ids.len())]).swap_remove(0)).collect()
    };
    let load = Load { urls, messages: n, deliveries: n, clients: opts.concurrency };
    let run = deliver_to(&subject, &load, &rx, Some(times)).await?;
    let mut data = base.compare("tenants", &run, report);
    data["applications"] = json!(apps);
    data["setup_s"] = json!(took.as_secs_f64());
    report.data("tenants", data);
    Ok(())
}

async fn endpoints(
    opts: &Opts,
    args: &ScaleArgs,
    base: &Baseline,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (apps, per_app, n) = (args.endpoint_apps, args.endpoints_per_app, opts.messages);
    let stored = apps * per_app;
    eprintln!("endpoints: (b) again with {stored} endpoints stored ({apps} applications × {per_app})");
    let subject = Subject::new(opts).await?;
    let times = SendTimes::new(n);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    // The stored endpoints get no messages; they point at the receiver
    // all the same, so a stray delivery would show in its count.
    let (_, took) = populate(&subject, apps, per_app, &rx.url(), args.setup_concurrency).await?;
    report.add("endpoints", "setup", setup_brief(apps, stored, took), "(info)", None);
    let app = subject.app("bench-throughput").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;
    let run = deliver(&subject, &app, &rx, times, n, opts.concurrency).await?;
    let ack_ratio = base.ack_p99_ms.filter(|b| *b > 0.0).map(|b| run.ack.p99_ms / b);
    let mut data = base.compare("endpoints", &run, report);
    report.add(
        "endpoints",
        "ack p99, share of (b)'s (empty store)",
        ack_ratio
            .map_or_else(|| "unknown".into(), |r| format!("{:.0} % ({:.2} ms)", r * 100.0, run.ack.p99_ms)),
        &format!("<= {:.0} %", (1.0 + base.tolerance) * 100.0),
        ack_ratio.map(|r| r <= 1.0 + base.tolerance),
    );
    data["endpoints_stored"] = json!(stored);
    data["ack_p99_ratio"] = json!(ack_ratio);
    data["setup_s"] = json!(took.as_secs_f64());
    report.data("endpoints", data);
    Ok(())
}
