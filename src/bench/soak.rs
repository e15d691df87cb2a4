//! Soak (issue 21): a long open-loop run at half of (b)'s rate with short
//! retentions, watching what must level off once retention deletes as
//! much as comes in: the database's size on disk, the server's resident
//! memory, and the acknowledgement and end-to-end p99 per interval.
//!
//! At 30 minutes (the default) the server keeps payloads 5 minutes and
//! records 10 (`--retention 5m --record-retention 10m`); a shorter run
//! scales both in proportion (10 minutes: 100 s and 200 s), so retention
//! starts at the same point of every run. Figures are per minute, or per
//! tenth of the run when that is shorter.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::{Latency, Report, table};
use super::{Opts, Subject, message_body, send_open};

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Length of the run in minutes; the retentions scale with it below 30.
    #[arg(long, default_value_t = 30.0)]
    pub soak_minutes: f64,
    /// Offered messages per second (default: half of (b)'s, measured first
    /// on the embedded store; required with `--database-url`).
    #[arg(long)]
    pub soak_rate: Option<u64>,
}

/// The run the issue asks for, which shorter runs are scaled from.
const FULL_RUN: Duration = Duration::from_secs(30 * 60);
const FULL_PAYLOAD_RETENTION: Duration = Duration::from_secs(5 * 60);
const FULL_RECORD_RETENTION: Duration = Duration::from_secs(10 * 60);
const INTERVAL: Duration = Duration::from_secs(60);

/// What one interval of the run measured.
#[derive(Clone, Debug, Serialize)]
struct Interval {
    /// Seconds since the start, at the end of the interval.
    end_s: f64,
    acked: usize,
    delivered: u64,
    ack: Latency,
    e2e: Latency,
    rss_mib: f64,
    disk_bytes: u64,
}

/// The verdicts of acceptance 3 over the intervals.
#[derive(Debug, Serialize, PartialEq)]
struct Verdicts {
    /// Growth of the size on disk over the last third, as a share of its
    /// size when that third began (< 10 %).
    disk_growth_last_third: f64,
    /// (max − min) / min of resident memory once retention runs (≤ 20 %).
    rss_spread_after_warmup: f64,
    /// Last interval's p99 over the first's (≤ 1.5).
    ack_p99_ratio: f64,
    e2e_p99_ratio: f64,
}

fn verdicts(rows: &[Interval], warmup: Duration) -> Verdicts {
    let n = rows.len();
    let base = rows[n - 1 - n / 3].disk_bytes.max(1) as f64;
    let growth = (rows[n - 1].disk_bytes as f64 - base) / base;
    let settled: Vec<f64> =
        rows.iter().filter(|r| r.end_s > warmup.as_secs_f64()).map(|r| r.rss_mib).collect();
    let (lo, hi) = settled.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let spread = if settled.is_empty() || lo <= 0.0 { f64::NAN } else { (hi - lo) / lo };
    let ratio = |f: fn(&Interval) -> f64| f(&rows[n - 1]) / f(&rows[0]).max(1e-3);
    Verdicts {
        disk_growth_last_third: growth,
        rss_spread_after_warmup: spread,
        ack_p99_ratio: ratio(|r| r.ack.p99_ms),
        e2e_p99_ratio: ratio(|r| r.e2e.p99_ms),
    }
}

/// Bytes of the embedded store's files (database, WAL, shared memory).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

async fn disk_bytes(subject: &Subject, pg: Option<&sqlx::PgPool>) -> anyhow::Result<u64> {
    Ok(match pg {
        Some(pool) => {
            let n: i64 =
                sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(pool).await?;
            n.max(0) as u64
        }
        None => subject.data_dir().map(dir_bytes).unwrap_or(0),
    })
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

pub async fn soak(opts: &Opts, args: SoakArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(opts.url.is_empty(), "soak starts its own server (with short retentions): drop --url");
    anyhow::ensure!(args.soak_minutes > 0.0, "--soak-minutes must be more than 0");
    let rate = match args.soak_rate {
        Some(rate) => rate,
        None if opts.database_url.is_some() => anyhow::bail!(
            "with --database-url, give --soak-rate (half of (b) on that store: \
             `hookline bench throughput --database-url <another empty database>`)"
        ),
        None => {
            super::delivery::throughput(opts, report).await?;
            let b = report.json()["data"]["throughput"]["delivered_per_s"].as_f64().unwrap_or(0.0);
            ((b / 2.0).round() as u64).max(1)
        }
    };
    let run = Duration::from_secs_f64(args.soak_minutes * 60.0);
    let scale = (run.as_secs_f64() / FULL_RUN.as_secs_f64()).min(1.0);
    let payload_retention = FULL_PAYLOAD_RETENTION.mul_f64(scale).max(Duration::from_secs(1));
    let record_retention = FULL_RECORD_RETENTION.mul_f64(scale).max(payload_retention);
    let interval = INTERVAL.min(run / 10).max(Duration::from_secs(1));
    let intervals = (run.as_secs_f64() / interval.as_secs_f64()).round().max(3.0) as usize;
    let store = if opts.database_url.is_some() { "PostgreSQL" } else { "embedded" };
    eprintln!(
        "soak: {rate} messages/s for {intervals} × {}, retention {} / records {} ({store} store)",
        secs(interval),
        secs(payload_retention),
        secs(record_retention)
    );

    let flags = ["--retention", &secs(payload_retention), "--record-retention", &secs(record_retention)];
    let subject = Subject::with_args(opts, &flags.map(str::to_owned)).await?;
    // The server's own database: `--database-url` names only the server
    // on which each scenario gets a fresh one.
    let pg = match subject.database_url() {
        Some(url) => Some(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?),
        None => None,
    };
    let total = rate as usize * interval.as_secs() as usize * intervals;
    let times = SendTimes::new(total + rate as usize);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let app = subject.app("bench-soak").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;

    let started = std::time::Instant::now();
    let mut rows: Vec<Interval> = Vec::with_capacity(intervals);
    let mut sent = 0usize;
    for _ in 0..intervals {
        let before = rx.count();
        let (base, marks) = (sent, Arc::clone(&times));
        let body: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |i| {
            marks.mark_sent(base + i);
            message_body("bench.soak", base + i)
        });
        let acks = send_open(
            &subject.http,
            &subject.messages_urls(&app),
            &subject.token,
            rate,
            interval,
            body,
            None,
        )
        .await?;
        sent += acks.len();
        let row = Interval {
            end_s: started.elapsed().as_secs_f64(),
            acked: acks.len(),
            delivered: rx.count() - before,
            ack: Latency::of(acks),
            e2e: Latency::of(times.take_latencies()),
            rss_mib: subject.rss_mib().unwrap_or(0.0),
            disk_bytes: disk_bytes(&subject, pg.as_ref()).await?,
        };
        eprintln!(
            "  {:>6.0} s: acked {}, delivered {}, ack p99 {:.1} ms, e2e p99 {:.1} ms, RSS {:.0} MiB, disk {:.1} MiB",
            row.end_s,
            row.acked,
            row.delivered,
            row.ack.p99_ms,
            row.e2e.p99_ms,
            row.rss_mib,
            row.disk_bytes as f64 / 1048576.0
        );
        rows.push(row);
    }

    println!("{}", render(&rows));
    let v = verdicts(&rows, record_retention + interval);
    let scenario = format!("soak ({store})");
    let acked_per_s = sent as f64 / started.elapsed().as_secs_f64();
    let with_payloads = rows[0].disk_bytes as f64 / rows[0].acked.max(1) as f64;
    let held = acked_per_s * record_retention.as_secs_f64();
    let steady = rows[rows.len() - 1].disk_bytes as f64 / held.max(1.0);
    report.add(&scenario, "offered messages/s", rate.to_string(), "half of (b)", None);
    report.add(
        &scenario,
        "retentions (payload / records)",
        format!("{} / {}", secs(payload_retention), secs(record_retention)),
        "",
        None,
    );
    report.add(
        &scenario,
        "bytes on disk per message, before retention",
        format!("{with_payloads:.0}"),
        "(info)",
        None,
    );
    report.add(
        &scenario,
        "bytes on disk per message held, at the end",
        format!("{steady:.0}"),
        "(info)",
        None,
    );
    let pct = |x: f64| format!("{:.1} %", x * 100.0);
    for (metric, value, target, met) in [
        (
            "disk growth over the last third",
            pct(v.disk_growth_last_third),
            "< 10 %",
            v.disk_growth_last_third < 0.10,
        ),
        (
            "RSS spread after warm-up",
            pct(v.rss_spread_after_warmup),
            "<= 20 %",
            v.rss_spread_after_warmup <= 0.20,
        ),
        (
            "ack p99, last / first interval",
            format!("{:.2}", v.ack_p99_ratio),
            "<= 1.5",
            v.ack_p99_ratio <= 1.5,
        ),
        (
            "e2e p99, last / first interval",
            format!("{:.2}", v.e2e_p99_ratio),
            "<= 1.5",
            v.e2e_p99_ratio <= 1.5,
        ),
    ] {
        report.add(&scenario, metric, value, target, Some(met));
    }
    report.data(
        "soak",
        json!({
            "store": store,
            "rate": rate,
            "interval_s": interval.as_secs_f64(),
            "payload_retention_s": payload_retention.as_secs_f64(),
            "record_retention_s": record_retention.as_secs_f64(),
            "bytes_per_message_with_payloads": with_payloads,
            "bytes_per_message_held": steady,
            "intervals": rows,
            "verdicts": v,
        }),
    );
    Ok(())
}

fn render(rows: &[Interval]) -> String {
    let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{:.0}", r.end_s),
                r.acked.to_string(),
                r.delivered.to_string(),
                format!("{:.2}", r.ack.p99_ms),
                format!("{:.2}", r.e2e.p99_ms),
                format!("{:.0}", r.rss_mib),
                mib(r.disk_bytes),
            ]
        })
        .collect();
    table(&["end (s)", "acked", "delivered", "ack p99 ms", "e2e p99 ms", "RSS MiB", "disk MiB"], &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(end_s: f64, disk_bytes: u64, rss_mib: f64, p99_ms: f64) -> Interval {
        let l = Latency { samples: 1, p50_ms: p99_ms, p99_ms, max_ms: p99_ms };
        Interval { end_s, acked: 1, delivered: 1, ack: l.clone(), e2e: l, rss_mib, disk_bytes }
    }

    #[test]
    fn verdicts_read_the_last_third_and_the_rows_after_warm_up() {
        let rows: Vec<Interval> = [
            (100, 50.0, 2.0),
            (200, 80.0, 9.0),
            (300, 100.0, 3.0),
            (310, 100.0, 3.0),
            (320, 110.0, 3.0),
            (330, 105.0, 3.0),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(d, rss, p))| row((i + 1) as f64 * 60.0, d, rss, p))
        .collect();
        let v = verdicts(&rows, Duration::from_secs(150));
        // The last third began at the end of row 4 (310 bytes).
        assert!((v.disk_growth_last_third - 20.0 / 310.0).abs() < 1e-9, "{v:?}");
        // Warm-up ends at 150 s: rows 3 to 6, 100 to 110 MiB.
        assert!((v.rss_spread_after_warmup - 0.10).abs() < 1e-9, "{v:?}");
        assert!((v.ack_p99_ratio - 1.5).abs() < 1e-9 && (v.e2e_p99_ratio - 1.5).abs() < 1e-9, "{v:?}");
    }
}
