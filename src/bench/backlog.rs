//! Idle memory and start-up time; (f) a large retry backlog: memory, and
//! restart (after `kill -9`) to the first due delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::receiver::{Behaviour, Receiver};
use super::report::Report;
use super::{Opts, Subject, send_closed};

pub async fn idle(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("idle: start-up and memory of an idle server");
    let subject = Subject::new(opts).await?;
    let Some(startup) = subject.startup else {
        report.add("idle", "start-up", "n/a with --url".into(), "", None);
        return Ok(());
    };
    let ms = startup.as_secs_f64() * 1000.0;
    report.add(
        "idle",
        "start-up to first answered request",
        format!("{ms:.0} ms"),
        "< 200 ms",
        Some(ms < 200.0),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = subject.rss_mib().unwrap_or(f64::NAN);
    report.add("idle", "resident memory", format!("{rss:.1} MiB"), "< 30 MiB", Some(rss < 30.0));
    report.data("idle", json!({"startup_ms": ms, "rss_mib": rss}));
    Ok(())
}

pub async fn backlog(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (m, c) = (opts.backlog, opts.concurrency);
    let mut subject = Subject::new(opts).await?;
    if !subject.is_local() {
        report.add("(f) backlog", "restart", "n/a with --url".into(), "", None);
        return Ok(());
    }
    eprintln!("(f) backlog: {m} deliveries due in {} s, then kill -9 and restart", opts.due_in);
    let rx = Receiver::start(Behaviour::Ok, None).await?;
    let app = subject.app("bench-backlog").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;
    let started = Instant::now();
    let due_at = chrono::Utc::now() + chrono::Duration::seconds(opts.due_in as i64);
    let due = due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = Arc::new(move |i: usize| {
        format!(
            r#"{{"eventType":"bench.later","payload":{{"seq":{i},"note":"retry backlog"}},"deliverAt":"{due}"}}"#
        )
    });
    send_closed(&subject.http, &subject.messages_urls(&app), &subject.token, m, c, body, None).await?;
    let loaded_in = started.elapsed();
    anyhow::ensure!(
        loaded_in < Duration::from_secs(opts.due_in),
        "loading took {:.0} s, longer than --due-in {}; raise it",
        loaded_in.as_secs_f64(),
        opts.due_in
    );
    anyhow::ensure!(rx.count() == 0, "deliveries went out before they were due");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = subject.rss_mib().unwrap_or(f64::NAN);
    report.add(
        "(f) backlog",
        &format!("resident memory with {m} waiting"),
        format!("{rss:.1} MiB"),
        "< 300 MiB",
        Some(rss < 300.0),
    );

    // Crash now, start again once the backlog is due: how long from the
    // restart until the first due delivery goes out?
    subject.crash().await?;
    let remaining = (due_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    eprintln!(
        "  loaded in {:.1} s; killed (-9); restarting in {:.0} s, when the backlog is due",
        loaded_in.as_secs_f64(),
        remaining.as_secs_f64()
    );
    anyhow::ensure!(rx.count() == 0, "deliveries went out before they were due");
    let restart = async {
        tokio::time::sleep(remaining).await;
        let spawned = Instant::now();
        subject.restart().await?;
        rx.wait_for(1, Duration::from_secs(120)).await?;
        let first = rx.first_at().ok_or_else(|| anyhow::anyhow!("no delivery recorded"))?;
        anyhow::ensure!(first >= spawned, "a delivery arrived before the restart");
        Ok::<_, anyhow::Error>(first.duration_since(spawned))
    };
    let first = restart.await?;
    let s = first.as_secs_f64();
    report.add("(f) backlog", "restart to first due delivery", format!("{s:.2} s"), "< 5 s", Some(s < 5.0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let draining = subject.rss_mib().unwrap_or(f64::NAN);
    report.add(
        "(f) backlog",
        "resident memory while draining",
        format!("{draining:.1} MiB"),
        "< 300 MiB",
        Some(draining < 300.0),
    );
    report.data(
        "backlog",
        json!({"deliveries": m, "loaded_in_s": loaded_in.as_secs_f64(), "rss_mib": rss, "restart_to_first_s": s, "rss_draining_mib": draining}),
    );
    Ok(())
}
