//! (h) ordering: keyed messages to one endpoint (order per key, parallel
//! across keys), and unkeyed traffic on a server that also carries keyed
//! traffic whose heads sometimes fail (so some keys are held back).

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::delivery::{Delivered, PATIENCE, background, deliver, report_f64};
use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::{Latency, Report};
use super::{Opts, Subject, post_message};

/// Message `pos` of key `key`; `seq` numbers it among all keys for the
/// latency figures.
fn keyed_body(event_type: &str, key: usize, pos: usize, seq: usize) -> String {
    format!(
        r#"{{"eventType":"{event_type}","orderingKey":"order_{key:05}","payload":{{"seq":{seq},"key":"order_{key:05}","pos":{pos},"type":"order.updated","amount":4200,"currency":"eur"}}}}"#
    )
}

/// `keys` × `per_key` keyed messages by `concurrency` clients. Each client
/// owns some keys and sends their messages round by round (message 0 of
/// each of its keys, then message 1, …), each after the previous one's
/// acknowledgement: a key's messages are acknowledged in `pos` order, so
/// that is the order its receiver must see. Message `pos` of `key` has
/// sequence number `pos × keys + key`.
async fn send_keyed(
    subject: &Subject,
    app: &str,
    keys: usize,
    per_key: usize,
    concurrency: usize,
    times: Arc<SendTimes>,
) -> anyhow::Result<()> {
    let clients = concurrency.clamp(1, keys.max(1));
    let progress = super::report::progress((keys * per_key) as u64, "sending keyed");
    let urls = subject.messages_urls(app);
    let mut workers = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (http, token, urls) = (subject.http.clone(), subject.token.clone(), urls.clone());
        let (times, progress) = (Arc::clone(&times), progress.clone());
        workers.spawn(async move {
            for pos in 0..per_key {
                for key in (client..keys).step_by(clients) {
                    let seq = pos * keys + key;
                    times.mark_sent(seq);
                    let url = &urls[seq % urls.len()];
                    post_message(&http, url, &token, keyed_body("bench.keyed", key, pos, seq)).await?;
                    progress.inc(1);
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    progress.finish_and_clear();
    Ok(())
}

pub async fn ordering(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (n, c, keys, per_key) = (opts.messages, opts.concurrency, opts.keys, opts.per_key);
    let keyed_n = keys * per_key;
    let baseline = report_f64(report, "throughput", "delivered_per_s");
    let ratio_to_b = |rate: f64| baseline.map(|b| rate / b);

    eprintln!("(h) ordering: {keys} keys × {per_key} messages by {c} clients, first send to last receipt");
    let (keyed_rate, out_of_order, e2e) = {
        let subject = Subject::new(opts).await?;
        let times = SendTimes::new(keyed_n);
        let rx = Receiver::start_ordered(Behaviour::Ok, Some(Arc::clone(&times))).await?;
        let app = subject.app("bench-keyed").await?;
        subject.endpoint(&app, &rx.url(), json!({})).await?;
        let start = Instant::now();
        send_keyed(&subject, &app, keys, per_key, c, Arc::clone(&times)).await?;
        rx.wait_for(keyed_n as u64, PATIENCE).await?;
        let rate = keyed_n as f64 / rx.last_at().duration_since(start).as_secs_f64();
        (rate, rx.out_of_order(), Latency::of(times.latencies()))
    };

    let background_rate = (opts.rate / 10).max(1);
    eprintln!(
        "(h) ordering: {n} unkeyed messages beside keyed traffic ({background_rate}/s over {keys} keys, every 10th request failing)"
    );
    let (unkeyed, keyed_beside_got) = {
        let subject = Subject::new(opts).await?;
        let keyed_rx = Receiver::start(Behaviour::FailEvery(10), None).await?;
        let keyed_app = subject.app("bench-keyed-beside").await?;
        subject.endpoint(&keyed_app, &keyed_rx.url(), json!({})).await?;
        let body = Arc::new(move |i: usize| keyed_body("bench.keyed", i % keys.max(1), i / keys.max(1), i));
        let noise = background(&subject, &keyed_app, background_rate, body);
        // Let failed heads start holding their keys back.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let times = SendTimes::new(n + 1);
        let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
        let app = subject.app("bench-unkeyed").await?;
        subject.endpoint(&app, &rx.url(), json!({})).await?;
        let delivered = deliver(&subject, &app, &rx, times, n, c).await;
        noise.abort();
        (delivered?, keyed_rx.count())
    };
    let Delivered { rate: unkeyed_rate, cpu, .. } = unkeyed;

    let vs_b = |share: &str| {
        baseline.map(|b| format!("{share} of {b:.0}")).unwrap_or_else(|| "(run (b) too)".into())
    };
    let keyed_ratio = ratio_to_b(keyed_rate);
    report.add(
        "(h) ordering",
        &format!("keyed messages/s ({keys} keys × {per_key})"),
        format!(
            "{keyed_rate:.0}{}",
            keyed_ratio.map(|r| format!(" ({:.1} % of (b))", r * 100.0)).unwrap_or_default()
        ),
        &vs_b(">= 70 %"),
        keyed_ratio.map(|r| r >= 0.7),
    );
    report.add(
        "(h) ordering",
        "keyed messages out of order",
        out_of_order.to_string(),
        "0",
        Some(out_of_order == 0),
    );
    report.add("(h) ordering", "keyed end-to-end at saturation", e2e.brief(), "(info)", None);
    let unkeyed_ratio = ratio_to_b(unkeyed_rate);
    report.add(
        "(h) ordering",
        "unkeyed messages/s beside keyed",
        format!(
            "{unkeyed_rate:.0}{}",
            unkeyed_ratio.map(|r| format!(" ({:.1} % of (b))", r * 100.0)).unwrap_or_default()
        ),
        &vs_b("within 10 %"),
        unkeyed_ratio.map(|r| r >= 0.9),
    );
    report.add("(h) ordering", "CPU per unkeyed message", cpu.brief(), "(info)", None);
    report.add(
        "(h) ordering",
        "keyed endpoint beside got",
        format!("{keyed_beside_got} requests (every 10th answered 500)"),
        "(info)",
        None,
    );
    report.data(
        "ordering",
        json!({
            "keys": keys,
            "per_key": per_key,
            "keyed_per_s": keyed_rate,
            "keyed_ratio": keyed_ratio,
            "out_of_order": out_of_order,
            "keyed_e2e": e2e,
            "unkeyed_per_s": unkeyed_rate,
            "unkeyed_ratio": unkeyed_ratio,
            "background_rate": background_rate,
            "keyed_beside_got": keyed_beside_got,
            "cpu": cpu,
            "baseline_per_s": baseline,
        }),
    );
    Ok(())
}
