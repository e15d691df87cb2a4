//! `hookline bench dashboard`: how long each dashboard page takes with a
//! large store (default 100,000 messages, 10 % of them failed), signed in
//! like a person would be.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::receiver::Receiver;
use super::report::{Latency, table};
use super::{Subject, Target};

#[derive(Args, Debug)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub target: Target,
    /// Messages in the store before measuring.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Clients sending them.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
}

const BUDGET_MS: f64 = 100.0;

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let subject = Subject::connect(&args.target).await?;
    let rx = Receiver::start(10).await?;
    let (app, ep) = subject.app_with_endpoint("bench-dashboard", &rx.url()).await?;
    eprintln!("loading {} messages through the API ({} clients)…", args.messages, args.concurrency);
    let started = Instant::now();
    subject
        .send_many(&app, args.messages, args.concurrency, &["order.created", "order.paid", "order.shipped"])
        .await?;
    subject.settle(&app, &ep, Duration::from_secs(1800)).await?;
    eprintln!("loaded and delivered in {:.1} s", started.elapsed().as_secs_f64());

    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let login = browser
        .post(format!("{}/login", subject.url))
        .form(&[("token", subject.token.as_str())])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("sign-in did not set a session cookie"))?
        .to_owned();

    let newest = subject.get(&format!("/api/v1/app/{app}/msg?limit=1&with_content=false")).await?;
    let newest = newest["data"][0]["id"].as_str().unwrap_or_default().to_owned();
    let oldest =
        subject.get(&format!("/api/v1/app/{app}/msg?limit=100&order=ascending&with_content=false")).await?;
    let deep = oldest["data"]
        .as_array()
        .and_then(|d| d.last())
        .and_then(|m| m["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M");
    let a = format!("/apps/{app}");
    let e = format!("{a}/endpoints/{ep}");
    let pages = [
        ("applications", "/apps".to_owned()),
        ("application", a.clone()),
        ("endpoint", e.clone()),
        ("endpoint messages", format!("{e}/messages")),
        ("  failed only", format!("{e}/messages?status=fail")),
        ("  one event type", format!("{e}/messages?event_type=order.paid")),
        ("  last hour", format!("{e}/messages?since={hour_ago}&until={soon}")),
        ("  oldest page", format!("{e}/messages?before={deep}")),
        ("  nothing matches", format!("{e}/messages?status=sending&event_type=order.none")),
        ("message log", format!("{a}/messages")),
        ("  one event type", format!("{a}/messages?event_type=order.shipped")),
        ("  nothing matches", format!("{a}/messages?event_type=order.none")),
        ("message", format!("{a}/messages/{newest}")),
    ];

    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (name, path) in &pages {
        let url = format!("{}{path}", subject.url);
        let mut samples = Vec::with_capacity(args.samples);
        for i in 0..=args.samples {
            let t = Instant::now();
            let resp = browser.get(&url).header("cookie", &cookie).send().await?;
            anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
            resp.bytes().await?;
            if i > 0 {
                samples.push(t.elapsed()); // the first request only warms caches
            }
        }
        let l = Latency::of(samples);
        rows.push(vec![
            name.to_string(),
            format!("{:.1}", l.p50_ms),
            format!("{:.1}", l.p99_ms),
            format!("{:.1}", l.max_ms),
            if l.max_ms < BUDGET_MS { "yes".into() } else { "NO".into() },
        ]);
        results.push(json!({"page": name.trim(), "path": path, "latency": l}));
    }
    println!(
        "Dashboard pages with {} messages ({} samples each, after one warm-up):\n{}",
        args.messages,
        args.samples,
        table(&["page", "p50 ms", "p99 ms", "max ms", "< 100 ms"], &rows)
    );
    if let Some(path) = &args.target.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"messages": args.messages, "pages": results}))?,
        )?;
    }
    Ok(())
}
