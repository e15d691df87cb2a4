//! `hookline bench`: reproducible measurements through the public HTTP API
//! only, so the same scenarios can be pointed at any Svix-compatible server
//! (`--url`, `--token`). Without `--url` each scenario starts a fresh
//! embedded-store `hookline serve` as a child process (this binary), so its
//! memory can be read and it can be killed and restarted.
//!
//! With `--database-url` those servers run on PostgreSQL instead, on a
//! fresh database per scenario.
//!
//! Scenarios live in their own files (`delivery.rs`, `backlog.rs`,
//! `throttle.rs`, `ordering.rs`, `dashboard.rs`, `scale.rs`, `cluster.rs`);
//! this module has the target server, the load generators and the report.

mod backlog;
mod cluster;
mod cpu;
mod dashboard;
mod database;
mod delivery;
mod ordering;
pub mod receiver;
pub mod report;
mod scale;
mod soak;
mod throttle;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use self::receiver::SendTimes;
use self::report::Report;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// (a) to (f) and idle (the default); throttle, ordering and the
    /// dashboard run on their own.
    All,
    /// (a) loopback limit, (b) delivery throughput and its ratio to (a).
    Throughput,
    /// (c) acknowledged messages per second with no endpoint subscribed.
    Ingest,
    /// (d) acknowledgement and end-to-end latency at a fixed rate.
    Latency,
    /// (e) throughput and latency of a healthy endpoint beside a hanging and a failing one.
    Isolation,
    /// (f) memory with a large retry backlog, and restart to first due delivery.
    Backlog,
    /// Idle memory and start-up time.
    Idle,
    /// (a), (b), then (g): a healthy endpoint beside one throttled with a
    /// large backlog behind it, and the server's memory meanwhile.
    Throttle,
    /// (a), (b), then (h): keyed (ordered) traffic, and unkeyed traffic
    /// beside keyed traffic.
    Ordering,
    /// Dashboard page times with many messages in the store.
    Dashboard(dashboard::DashboardArgs),
    /// (a), (b), then one message to many endpoints of one application.
    Fanout(scale::ScaleArgs),
    /// (a), (b), then messages spread at random over many applications.
    Tenants(scale::ScaleArgs),
    /// (a), (b), then (b) again with a million endpoints stored.
    Endpoints(scale::ScaleArgs),
    /// (a), (b), fanout, tenants and endpoints.
    Scale(scale::ScaleArgs),
    /// 1, 2, 3… nodes on one PostgreSQL (`--database-url`): throughput and
    /// each process's CPU per message.
    Cluster(cluster::ClusterArgs),
    /// (b) on the embedded store, then on PostgreSQL (`--database-url`),
    /// and latency at a fixed rate on PostgreSQL.
    Pg,
    /// A long run at half of (b)'s rate under short retentions: disk,
    /// memory and latencies must level off (issue 21).
    Soak(soak::SoakArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Base URL of a running server; default: start one per scenario.
    /// Several (comma-separated) for nodes sharing one database: messages
    /// are spread over them in turn.
    #[arg(long, global = true, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Start the scenarios' servers on the PostgreSQL server at this URL
    /// instead of the embedded store, each on a fresh database (the user
    /// needs CREATEDB).
    #[arg(long, global = true, env = "HOOKLINE_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Admin token for `--url`.
    #[arg(long, global = true, env = "HOOKLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Write the results as JSON here too.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Messages for the throughput and ingest runs (N).
    #[arg(long, global = true, default_value_t = 100_000)]
    pub messages: usize,
    /// Concurrent clients (C).
    #[arg(long, global = true, default_value_t = 64)]
    pub concurrency: usize,
    /// Offered rate for the latency runs, messages per second.
    #[arg(long, global = true, default_value_t = 1000)]
    pub rate: u64,
    /// Length of the latency runs, seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub duration: u64,
    /// Deliveries waiting for a retry in the backlog run.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// The backlog becomes due this many seconds after loading starts.
    #[arg(long, global = true, default_value_t = 240)]
    pub due_in: u64,
    /// Messages waiting behind the throttled endpoint in the throttle run.
    #[arg(long, global = true, default_value_t = 100_000)]
    pub throttled: usize,
    /// The throttled endpoint's `throttleRate`, messages per second.
    #[arg(long, global = true, default_value_t = 5)]
    pub throttle_rate: u32,
    /// Ordering keys in the ordering run.
    #[arg(long, global = true, default_value_t = 1000)]
    pub keys: usize,
    /// Messages per ordering key in the ordering run.
    #[arg(long, global = true, default_value_t = 100)]
    pub per_key: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    let mut report = Report::new();
    match args.scenario.unwrap_or(Scenario::All) {
        Scenario::Dashboard(a) => return dashboard::run(&opts, a).await,
        Scenario::Soak(a) => soak::soak(&opts, a, &mut report).await?,
        Scenario::All => {
            delivery::throughput(&opts, &mut report).await?;
            delivery::ingest(&opts, &mut report).await?;
            delivery::latency(&opts, &mut report).await?;
            delivery::isolation(&opts, &mut report).await?;
            backlog::idle(&opts, &mut report).await?;
            backlog::backlog(&opts, &mut report).await?;
        }
        Scenario::Throughput => delivery::throughput(&opts, &mut report).await?,
        Scenario::Ingest => delivery::ingest(&opts, &mut report).await?,
        Scenario::Latency => delivery::latency(&opts, &mut report).await?,
        Scenario::Isolation => {
            delivery::throughput(&opts, &mut report).await?;
            delivery::latency(&opts, &mut report).await?;
            delivery::isolation(&opts, &mut report).await?;
        }
        Scenario::Backlog => backlog::backlog(&opts, &mut report).await?,
        Scenario::Idle => backlog::idle(&opts, &mut report).await?,
        Scenario::Throttle => {
            delivery::throughput(&opts, &mut report).await?;
            throttle::throttle(&opts, &mut report).await?;
        }
        Scenario::Ordering => {
            delivery::throughput(&opts, &mut report).await?;
            ordering::ordering(&opts, &mut report).await?;
        }
        Scenario::Fanout(a) => scale::run(&opts, &a, &[scale::Kind::Fanout], &mut report).await?,
        Scenario::Tenants(a) => scale::run(&opts, &a, &[scale::Kind::Tenants], &mut report).await?,
        Scenario::Endpoints(a) => scale::run(&opts, &a, &[scale::Kind::Endpoints], &mut report).await?,
        Scenario::Scale(a) => scale::run(&opts, &a, &scale::Kind::ALL, &mut report).await?,
        Scenario::Cluster(a) => cluster::cluster(&opts, &a, &mut report).await?,
        Scenario::Pg => cluster::compare_stores(&opts, &mut report).await?,
    }
    println!("{}", report.render());
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    Ok(())
}

/// A `hookline serve` child process on its own data directory (or the
/// `--database-url` database).
struct LocalServer {
    child: Child,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// What it was started with, to restart it alike: PostgreSQL instead
    /// of the data directory's embedded store, and extra flags.
    database_url: Option<String>,
    extra_args: Vec<String>,
}

/// The server under test and an API client for it.
pub struct Subject {
    /// Where setup calls go (the first `--url`).
    pub url: String,
    /// Where messages go, in turn.
    pub urls: Vec<String>,
    pub token: String,
    pub http: reqwest::Client,
    local: Option<LocalServer>,
    /// Spawn to first answered request, for a local server.
    pub startup: Option<Duration>,
    /// The local PostgreSQL cluster the server runs on, if any (for its CPU).
    pub postmaster: Option<u32>,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .expect("static client configuration")
}

async fn spawn_server(
    data_dir: &Path,
    token: &str,
    database_url: Option<&str>,
    extra_args: &[String],
) -> anyhow::Result<(Child, String, Duration)> {
    let started = Instant::now();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets", "--log", "warn"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    let mut child = command
        .env("HOOKLINE_ADMIN_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let url = loop {
        let line = lines.next_line().await?.ok_or_else(|| anyhow::anyhow!("hookline serve exited"))?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let probe = reqwest::Client::new();
    loop {
        if let Ok(r) = probe.get(format!("{url}/api/v1/health")).send().await
            && r.status().is_success()
        {
            return Ok((child, url, started.elapsed()));
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "hookline serve did not answer");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Subject {
    /// The `--url` server, or a fresh local one.
    pub async fn new(opts: &Opts) -> anyhow::Result<Subject> {
        Self::with_args(opts, &[]).await
    }

    /// The `--url` server, or a fresh local one started with these extra
    /// `hookline serve` flags.
    pub async fn with_args(opts: &Opts, extra_args: &[String]) -> anyhow::Result<Subject> {
        let http = client();
        if let Some(url) = opts.url.first() {
            let token = opts.token.clone().ok_or_else(|| anyhow::anyhow!("--url needs --token"))?;
            return Ok(Subject {
                url: url.trim_end_matches('/').into(),
                urls: opts.url.iter().map(|u| u.trim_end_matches('/').to_owned()).collect(),
                token,
                http,
                local: None,
                startup: None,
                postmaster: None,
            });
        }
        // The previous scenario's server wrote hundreds of megabytes that the
        // kernel may still be flushing; its fsyncs would land in this
        // scenario's latencies. Start every scenario on a quiet disk.
        let flushed = tokio::process::Command::new("sync").status().await;
        if !flushed.is_ok_and(|s| s.success()) {
            eprintln!("  (could not run `sync`; latencies may include earlier disk writes)");
        }
        let (database_url, postmaster) = match &opts.database_url {
            Some(server) => {
                let (url, postmaster) = database::fresh(server).await?;
                (Some(url), postmaster)
            }
            None => (None, None),
        };
        let dir = tempfile::tempdir()?;
        let token = crate::service::generate_token();
        let (child, url, startup) =
            spawn_server(dir.path(), &token, database_url.as_deref(), extra_args).await?;
        let extra_args = extra_args.to_vec();
        let local =
            LocalServer { child, data_dir: dir.path().to_owned(), _dir: dir, database_url, extra_args };
        Ok(Subject {
            urls: vec![url.clone()],
            url,
            token,
            http,
            local: Some(local),
            startup: Some(startup),
            postmaster,
        })
    }

    /// Measures the CPU of the local server, of its database and of the
    /// benchmark from now on.
    pub fn cpu_meter(&self) -> cpu::CpuUseMeter {
        cpu::CpuUseMeter::start(self.pid()).with_database(self.postmaster)
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// `kill -9` the local server.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        let local =
            self.local.as_mut().ok_or_else(|| anyhow::anyhow!("only a local server can be killed"))?;
        local.child.kill().await?;
        Ok(())
    }

    /// Start the local server again on the same data (after [`Self::crash`]).
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        let local =
            self.local.as_mut().ok_or_else(|| anyhow::anyhow!("only a local server can be restarted"))?;
        let (child, url, startup) =
            spawn_server(&local.data_dir, &self.token, local.database_url.as_deref(), &local.extra_args)
                .await?;
        local.child = child;
        self.urls = vec![url.clone()];
        self.url = url;
        Ok(startup)
    }

    /// The local server's data directory (empty when it uses PostgreSQL).
    pub fn data_dir(&self) -> Option<&Path> {
        Some(self.local.as_ref()?.data_dir.as_path())
    }

    /// The database a local server on PostgreSQL was started on (a fresh
    /// one per scenario, not `--database-url` itself).
    pub fn database_url(&self) -> Option<&str> {
        self.local.as_ref()?.database_url.as_deref()
    }

    /// Process id of the local server.
    pub fn pid(&self) -> Option<u32> {
        self.local.as_ref()?.child.id()
    }

    /// Resident memory of the local server, in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        rss_mib(self.pid()?)
    }

    /// The local server's peak resident memory from now until the watch is
    /// read (sampled every 50 ms: a peak shorter than that can slip by).
    pub fn watch_rss(&self) -> Option<RssWatch> {
        let pid = self.pid()?;
        let peak = Arc::new(AtomicUsize::new(0));
        let sampler = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            loop {
                ticker.tick().await;
                if let Some(mib) = rss_mib(pid) {
                    sampler.fetch_max((mib * 1024.0) as usize, Ordering::Relaxed);
                }
            }
        });
        Some(RssWatch { peak, task })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp =
            self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.token).json(body).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn app(&self, name: &str) -> anyhow::Result<String> {
        let app = self.post("/api/v1/app", &json!({"name": name})).await?;
        Ok(app["id"].as_str().unwrap_or_default().to_owned())
    }

    /// An endpoint for `url` on `app` (extra fields merged in).
    pub async fn endpoint(&self, app: &str, url: &str, extra: Value) -> anyhow::Result<String> {
        let mut body = json!({"url": url});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        let ep = self.post(&format!("/api/v1/app/{app}/endpoint"), &body).await?;
        Ok(ep["id"].as_str().unwrap_or_default().to_owned())
    }

    /// The create-message URL on every node.
    pub fn messages_urls(&self, app: &str) -> Vec<String> {
        self.urls.iter().map(|u| format!("{u}/api/v1/app/{app}/msg")).collect()
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a server's resident memory in the background until dropped.
pub struct RssWatch {
    /// KiB.
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    /// The highest resident memory seen so far, in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One message body: a small, realistic payload carrying its sequence number.
pub fn message_body(event_type: &str, seq: usize) -> String {
    format!(
        r#"{{"eventType":"{event_type}","payload":{{"seq":{seq},"type":"invoice.paid","invoice":"in_{seq:08}","amount":4200,"currency":"eur","customer":"cus_1234567890"}}}}"#
    )
}

/// POST one message; returns how long its acknowledgement took.
async fn post_message(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: String,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "send: {}", resp.status());
    resp.bytes().await?;
    Ok(started.elapsed())
}

/// Closed loop: `concurrency` clients send `n` messages, each waiting for
/// its acknowledgement before the next. Returns the acknowledgement times.
pub async fn send_closed(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    n: usize,
    concurrency: usize,
    body: Arc<dyn Fn(usize) -> String + Send + Sync>,
    times: Option<Arc<SendTimes>>,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicUsize::new(0));
    let progress = report::progress(n as u64, "sending");
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, body, times, http) = (Arc::clone(&next), Arc::clone(&body), times.clone(), http.clone());
        let (urls, token, progress) = (urls.to_vec(), token.to_owned(), progress.clone());
        workers.spawn(async move {
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(acks);
                }
                if let Some(t) = &times {
                    t.mark_sent(i);
                }
                acks.push(post_message(&http, &urls[i % urls.len()], &token, body(i)).await?);
                progress.inc(1);
            }
        });
    }
    let mut acks = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        acks.extend(done??);
    }
    progress.finish_and_clear();
    Ok(acks)
}

/// Open loop: one message every `1/rate` s for `duration`, each sent on its
/// own (a slow answer does not hold back the next send, so queueing shows
/// up in the latencies instead of being hidden). Returns the
/// acknowledgement times.
pub async fn send_open(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    rate: u64,
    duration: Duration,
    body: Arc<dyn Fn(usize) -> String + Send + Sync>,
    times: Option<Arc<SendTimes>>,
) -> anyhow::Result<Vec<Duration>> {
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let progress = report::progress(total as u64, "sending at a fixed rate");
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let (body, times, http, progress) =
            (Arc::clone(&body), times.clone(), http.clone(), progress.clone());
        let (url, token) = (urls[i % urls.len()].clone(), token.to_owned());
        sends.spawn(async move {
            if let Some(t) = &times {
                t.mark_sent(i);
            }
            let ack = post_message(&http, &url, &token, body(i)).await?;
            progress.inc(1);
            Ok::<_, anyhow::Error>(ack)
        });
    }
    let mut acks = Vec::with_capacity(total);
    while let Some(done) = sends.join_next().await {
        acks.push(done??);
    }
    progress.finish_and_clear();
    Ok(acks)
}
