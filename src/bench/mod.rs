//! `hookline bench`: reproducible measurements through the public HTTP API
//! only, so the same scenarios can be pointed at any Svix-compatible server
//! (`--url`, `--token`). Without `--url` an embedded-store Hookline is
//! started in this process on a temporary directory.
//!
//! Scenarios live one per file; this module holds what they share: the
//! target server, a fast local receiver, timing statistics and the report.

mod dashboard;
pub mod receiver;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::clock::SystemClock;
use crate::config::ServerConfig;
use crate::dispatch::ssrf::TargetPolicy;
use crate::server::Server;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Dashboard page times with many messages in the store.
    Dashboard(dashboard::DashboardArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Dashboard(a) => dashboard::run(a).await,
    }
}

/// Which server to measure.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Base URL of a running server; default: start one here.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token for `--url`.
    #[arg(long, env = "HOOKLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A server under test and an API client for it.
pub struct Subject {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
    /// Kept alive for the run when the server is ours.
    _local: Option<(Server, tempfile::TempDir)>,
}

impl Subject {
    pub async fn connect(target: &Target) -> anyhow::Result<Subject> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?;
        if let Some(url) = &target.url {
            let token = target.token.clone().ok_or_else(|| anyhow::anyhow!("--url needs --token"))?;
            return Ok(Subject { url: url.trim_end_matches('/').to_owned(), token, http, _local: None });
        }
        let dir = tempfile::tempdir()?;
        let token = crate::service::generate_token();
        let mut cfg = ServerConfig::new(dir.path());
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.admin_token = Some(token.clone());
        cfg.dispatch.targets = TargetPolicy { allow_private: true, allowed: vec![] };
        let server = Server::start(cfg, Arc::new(SystemClock)).await?;
        Ok(Subject { url: server.url(), token, http, _local: Some((server, dir)) })
    }

    /// POST JSON to an API path; the response body, or an error with it.
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

    /// An application and one endpoint (no retries) to `url`.
    pub async fn app_with_endpoint(&self, name: &str, url: &str) -> anyhow::Result<(String, String)> {
        let app = self.post("/api/v1/app", &json!({"name": name})).await?;
        let app = app["id"].as_str().unwrap_or_default().to_owned();
        let ep = self
            .post(
                &format!("/api/v1/app/{app}/endpoint"),
                &json!({"url": url, "retryPolicy": {"schedule": []}}),
            )
            .await?;
        Ok((app, ep["id"].as_str().unwrap_or_default().to_owned()))
    }

    /// Send `n` messages from `concurrency` clients; the event type of
    /// message `i` is `types[i % types.len()]`.
    pub async fn send_many(
        &self,
        app: &str,
        n: usize,
        concurrency: usize,
        types: &[&str],
    ) -> anyhow::Result<()> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let types: Arc<Vec<String>> = Arc::new(types.iter().map(|s| s.to_string()).collect());
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (next, types, http) = (Arc::clone(&next), Arc::clone(&types), self.http.clone());
            let (url, token) = (format!("{}/api/v1/app/{app}/msg", self.url), self.token.clone());
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let body =
                        json!({"eventType": types[i % types.len()], "payload": {"i": i, "note": "bench"}});
                    let resp = http.post(&url).bearer_auth(&token).json(&body).send().await?;
                    anyhow::ensure!(resp.status().is_success(), "send: {}", resp.status());
                    if i > 0 && i % 10_000 == 0 {
                        eprintln!("  sent {i}/{n}");
                    }
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Wait until the endpoint has nothing pending.
    pub async fn settle(&self, app: &str, endpoint: &str, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let s = self.get(&format!("/api/v1/app/{app}/endpoint/{endpoint}/stats")).await?;
            if s["pending"] == 0 && s["sending"] == 0 {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "deliveries did not settle: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
