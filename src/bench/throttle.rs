//! (g) throttle: a healthy endpoint beside one held to a low `throttleRate`
//! with a large backlog behind it. Waiting deliveries belong in the store,
//! so neither the healthy endpoint's throughput nor the server's memory may
//! notice them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::delivery::{Delivered, body_fn, deliver, report_f64};
use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::Report;
use super::{Opts, Subject, send_closed};

/// The memory budget, in MB (10^6 bytes).
const RSS_BUDGET_MB: f64 = 100.0;

/// MiB to MB.
fn mb(mib: f64) -> f64 {
    mib * 1.048_576
}

pub async fn throttle(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (n, c, waiting, limit) = (opts.messages, opts.concurrency, opts.throttled, opts.throttle_rate);
    let baseline = report_f64(report, "throughput", "delivered_per_s");
    eprintln!(
        "(g) throttle: {waiting} messages behind an endpoint throttled to {limit}/s, then {n} to a healthy one"
    );
    let subject = Subject::new(opts).await?;
    let rss = subject.watch_rss();
    let throttled_rx = Receiver::start(Behaviour::Ok, None).await?;
    let throttled = subject.app("bench-throttled").await?;
    subject.endpoint(&throttled, &throttled_rx.url(), json!({"throttleRate": limit})).await?;
    // From before the first message could go out: an upper bound of the
    // time the bucket had to fill.
    let throttle_start = Instant::now();
    send_closed(
        &subject.http,
        &subject.messages_urls(&throttled),
        &subject.token,
        waiting,
        c,
        body_fn("bench.throttled"),
        None,
    )
    .await?;
    let loaded_in = throttle_start.elapsed();
    // Let the server settle, as (b)'s fresh server is settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_loaded = subject.rss_mib();

    let times = SendTimes::new(n + 1);
    let healthy_rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let healthy = subject.app("bench-healthy").await?;
    subject.endpoint(&healthy, &healthy_rx.url(), json!({})).await?;
    let Delivered { rate, cpu, .. } = deliver(&subject, &healthy, &healthy_rx, times, n, c).await?;
    let throttled_got = throttled_rx.count();
    let window = throttle_start.elapsed().as_secs_f64();
    let peak = rss.as_ref().map(|w| mb(w.peak_mib()));

    report.add(
        "(g) throttle",
        "healthy messages/s",
        format!("{rate:.0}"),
        &baseline.map(|b| format!("within 10 % of {b:.0}")).unwrap_or_else(|| "(run (b) too)".into()),
        baseline.map(|b| rate >= 0.9 * b),
    );
    // The token bucket's burst is at most a second's worth.
    let allowed = f64::from(limit) * (window + 1.0);
    report.add(
        "(g) throttle",
        &format!("throttled endpoint got (limit {limit}/s)"),
        format!(
            "{throttled_got} requests in {window:.1} s ({:.1}/s)",
            throttled_got as f64 / window.max(f64::EPSILON)
        ),
        &format!("<= {limit}/s + burst"),
        Some(throttled_got > 0 && throttled_got as f64 <= allowed),
    );
    let budget = format!("< {RSS_BUDGET_MB:.0} MB");
    match peak {
        Some(peak) => report.add(
            "(g) throttle",
            &format!("server peak resident memory, {waiting} waiting"),
            format!("{peak:.1} MB"),
            &budget,
            Some(peak < RSS_BUDGET_MB),
        ),
        None => report.add("(g) throttle", "server resident memory", "n/a with --url".into(), &budget, None),
    }
    report.add("(g) throttle", "CPU per healthy message", cpu.brief(), "(info)", None);
    report.data(
        "throttle",
        json!({
            "healthy_per_s": rate,
            "baseline_per_s": baseline,
            "throttle_rate": limit,
            "waiting": waiting,
            "loaded_in_s": loaded_in.as_secs_f64(),
            "throttled_got": throttled_got,
            "throttled_window_s": window,
            "rss_loaded_mb": rss_loaded.map(mb),
            "rss_peak_mb": peak,
            "cpu": cpu,
        }),
    );
    Ok(())
}
