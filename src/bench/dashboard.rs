//! `hookline bench dashboard`: how long each dashboard page takes with a
//! large store (default 100,000 messages, one attempt each, 10 % of them
//! failed), signed in like a person would be. The chart pages (endpoint and
//! application, each window) have their own budget: p99 under 50 ms, at
//! 1,000,000 attempts (`--store-messages 1000000`).

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::receiver::{Behaviour, Receiver};
use super::report::{Latency, table};
use super::{Opts, Subject, message_body, send_closed};

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Messages in the store before measuring.
    #[arg(long = "store-messages", default_value_t = 100_000)]
    pub messages: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
}

const BUDGET_MS: f64 = 100.0;
/// The chart pages' budget, on the p99.
const CHART_P99_MS: f64 = 50.0;

pub async fn run(opts: &Opts, args: DashboardArgs) -> anyhow::Result<()> {
    let subject = Subject::new(opts).await?;
    let rx = Receiver::start(Behaviour::FailEvery(10), None).await?;
    let app = subject.app("bench-dashboard").await?;
    let ep = subject.endpoint(&app, &rx.url(), json!({"retryPolicy": {"schedule": []}})).await?;
    eprintln!("loading {} messages through the API ({} clients)…", args.messages, opts.concurrency);
    let started = Instant::now();
    let types = ["order.created", "order.paid", "order.shipped"];
    let body = std::sync::Arc::new(move |i: usize| message_body(types[i % 3], i));
    send_closed(
        &subject.http,
        &subject.messages_urls(&app),
        &subject.token,
        args.messages,
        opts.concurrency,
        body,
        None,
    )
    .await?;
    rx.wait_for(args.messages as u64, Duration::from_secs(1800)).await?;
    settle(&subject, &app, &ep).await?;
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
        ("chart: endpoint, hour", format!("{e}?window=hour")),
        ("chart: endpoint, day", format!("{e}?window=day")),
        ("chart: endpoint, week", format!("{e}?window=week")),
        ("chart: application, hour", format!("{a}?window=hour")),
        ("chart: application, day", format!("{a}?window=day")),
        ("chart: application, week", format!("{a}?window=week")),
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
        let chart = name.starts_with("chart:");
        let within = if chart { l.p99_ms < CHART_P99_MS } else { l.max_ms < BUDGET_MS };
        rows.push(vec![
            name.to_string(),
            format!("{:.1}", l.p50_ms),
            format!("{:.1}", l.p99_ms),
            format!("{:.1}", l.max_ms),
            match (within, chart) {
                (true, _) => "yes".into(),
                (false, true) => "NO (p99)".into(),
                (false, false) => "NO".into(),
            },
        ]);
        results.push(
            json!({"page": name.trim(), "path": path, "latency": l, "chart": chart, "within_budget": within}),
        );
    }
    println!(
        "Dashboard pages with {} messages ({} samples each, after one warm-up):\n{}",
        args.messages,
        args.samples,
        table(&["page", "p50 ms", "p99 ms", "max ms", "budget (max < 100, charts p99 < 50)"], &rows)
    );
    if let Some(path) = &opts.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"messages": args.messages, "pages": results}))?,
        )?;
    }
    Ok(())
}

/// Wait until the endpoint has nothing pending (the attempts are recorded).
async fn settle(subject: &Subject, app: &str, endpoint: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = subject.get(&format!("/api/v1/app/{app}/endpoint/{endpoint}/stats")).await?;
        if s["pending"] == 0 && s["sending"] == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
