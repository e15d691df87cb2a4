//! (a) loopback limit, (b) delivery throughput, (c) ingest, (d) latency at
//! a fixed rate, (e) isolation from a hanging and a failing endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cpu::{CpuUse, MachineMeter};
use super::receiver::{Behaviour, Receiver, SendTimes};
use super::report::{Latency, Report};
use super::{Opts, Subject, message_body, send_closed, send_open};

pub(super) const PATIENCE: Duration = Duration::from_secs(600);

pub(super) fn body_fn(event_type: &'static str) -> Arc<dyn Fn(usize) -> String + Send + Sync> {
    Arc::new(move |i| message_body(event_type, i))
}

/// The webhook body a receiver would get for message `i`, for the loopback
/// run to post the same bytes.
fn payload_fn() -> Arc<dyn Fn(usize) -> String + Send + Sync> {
    Arc::new(|i| {
        let full = message_body("x", i);
        full[full.find("\"payload\":").map(|p| p + 10).unwrap_or(0)..full.len() - 1].to_owned()
    })
}

/// What a closed-loop delivery run measured.
pub(super) struct Delivered {
    /// Deliveries per second, first send to last receipt.
    pub rate: f64,
    /// Acknowledgement times of the messages sent.
    pub ack: Latency,
    /// Per delivery.
    pub cpu: CpuUse,
}

/// Deliveries per second of `n` messages sent by `c` clients to one
/// healthy endpoint, first send to last receipt.
pub(super) async fn deliver(
    subject: &Subject,
    app: &str,
    rx: &Receiver,
    times: Arc<SendTimes>,
    n: usize,
    c: usize,
) -> anyhow::Result<Delivered> {
    let load = Load { urls: subject.messages_urls(app), messages: n, deliveries: n, clients: c };
    deliver_to(subject, &load, rx, Some(times)).await
}

/// A closed-loop run: `messages` sent by `clients` to `urls` in turn, each
/// message making `deliveries / messages` requests to the receiver.
pub(super) struct Load {
    pub urls: Vec<String>,
    pub messages: usize,
    pub deliveries: usize,
    pub clients: usize,
}

/// Runs `load`, first send to last receipt, with the CPU of the subject's
/// server and database per delivery.
pub(super) async fn deliver_to(
    subject: &Subject,
    load: &Load,
    rx: &Receiver,
    times: Option<Arc<SendTimes>>,
) -> anyhow::Result<Delivered> {
    let start = Instant::now();
    let before = rx.count();
    let cpu = subject.cpu_meter();
    let acks = send_closed(
        &subject.http,
        &load.urls,
        &subject.token,
        load.messages,
        load.clients,
        body_fn("bench.good"),
        times,
    )
    .await?;
    rx.wait_for(before + load.deliveries as u64, PATIENCE).await?;
    let rate = load.deliveries as f64 / rx.last_at().duration_since(start).as_secs_f64();
    Ok(Delivered { rate, ack: Latency::of(acks), cpu: cpu.per_message(load.deliveries) })
}

pub async fn throughput(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (n, c) = (opts.messages, opts.concurrency);
    eprintln!("(a) loopback limit: {n} posts by {c} clients straight to the receiver");
    let direct = Receiver::start(Behaviour::Ok, None).await?;
    let start = Instant::now();
    send_closed(&super::client(), &[direct.url()], "", n, c, payload_fn(), None).await?;
    let loopback = n as f64 / start.elapsed().as_secs_f64();
    report.add("(a) loopback", "requests/s", format!("{loopback:.0}"), "(reference)", None);

    eprintln!("(b) delivery throughput: {n} messages by {c} clients, first send to last receipt");
    let (Delivered { rate, ack, cpu }, e2e) = one_endpoint(opts).await?;
    let ratio = rate / loopback;
    report.add("(b) delivery", "messages/s", format!("{rate:.0}"), "", None);
    report.add(
        "(b) delivery",
        "ratio to (a)",
        format!("{:.1} %", ratio * 100.0),
        ">= 40 %",
        Some(ratio >= 0.4),
    );
    report.add("(b) delivery", "end-to-end at saturation", e2e.brief(), "(info)", None);
    // What the ratio is made of: the server's HTTP workers and its store
    // writer, against the benchmark's own client and receiver.
    report.add("(b) delivery", "CPU per message", cpu.brief(), "(info)", None);
    report.data(
        "throughput",
        json!({"loopback_rps": loopback, "delivered_per_s": rate, "ratio": ratio, "e2e": e2e, "ack": ack, "cpu": cpu}),
    );
    Ok(())
}

/// (b)'s run on a fresh server: `--messages` by `--concurrency` clients
/// to one application's one healthy endpoint; with the end-to-end times.
pub(super) async fn one_endpoint(opts: &Opts) -> anyhow::Result<(Delivered, Latency)> {
    let (n, c) = (opts.messages, opts.concurrency);
    let subject = Subject::new(opts).await?;
    let times = SendTimes::new(n);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let app = subject.app("bench-throughput").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;
    let delivered = deliver(&subject, &app, &rx, Arc::clone(&times), n, c).await?;
    Ok((delivered, Latency::of(times.latencies())))
}

pub async fn ingest(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (n, c) = (opts.messages, opts.concurrency);
    eprintln!("(c) ingest: {n} messages by {c} clients, no endpoint subscribed");
    let subject = Subject::new(opts).await?;
    let app = subject.app("bench-ingest").await?;
    let start = Instant::now();
    let acks = send_closed(
        &subject.http,
        &subject.messages_urls(&app),
        &subject.token,
        n,
        c,
        body_fn("bench.ingest"),
        None,
    )
    .await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let acks = Latency::of(acks);
    report.add(
        "(c) ingest",
        "acknowledged messages/s",
        format!("{rate:.0}"),
        ">= 20000",
        Some(rate >= 20_000.0),
    );
    report.add("(c) ingest", "ack latency at saturation", acks.brief(), "(info)", None);
    report.data("ingest", json!({"acked_per_s": rate, "ack": acks}));
    Ok(())
}

/// What a fixed-rate run measured.
pub(super) struct AtRate {
    pub ack: Latency,
    pub e2e: Latency,
    /// Share of the machine's CPUs busy meanwhile (see [`MachineMeter`]).
    pub cpu_busy: Option<f64>,
    /// Per message sent at the rate (the neighbours' work in (e) included).
    pub cpu: CpuUse,
}

impl AtRate {
    pub(super) fn cpu_brief(&self) -> String {
        self.cpu_busy.map(|b| format!("{:.0} % of all CPUs", b * 100.0)).unwrap_or_else(|| "unknown".into())
    }
}

/// Send at a fixed rate to `app`.
pub(super) async fn at_rate(
    subject: &Subject,
    app: &str,
    rx: &Receiver,
    times: Arc<SendTimes>,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<AtRate> {
    let before = rx.count();
    let (machine, cpu) = (MachineMeter::start(), subject.cpu_meter());
    let acks = send_open(
        &subject.http,
        &subject.messages_urls(app),
        &subject.token,
        rate,
        duration,
        body_fn("bench.good"),
        Some(Arc::clone(&times)),
    )
    .await?;
    rx.wait_for(before + acks.len() as u64, PATIENCE).await?;
    let (cpu_busy, cpu) = (machine.busy(), cpu.per_message(acks.len()));
    Ok(AtRate { ack: Latency::of(acks), e2e: Latency::of(times.latencies()), cpu_busy, cpu })
}

pub async fn latency(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (rate, duration) = (opts.rate, Duration::from_secs(opts.duration));
    eprintln!("(d) latency: {rate} messages/s for {} s", opts.duration);
    let subject = Subject::new(opts).await?;
    let times = SendTimes::new((rate * opts.duration) as usize + 1);
    let rx = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
    let app = subject.app("bench-latency").await?;
    subject.endpoint(&app, &rx.url(), json!({})).await?;
    let run = at_rate(&subject, &app, &rx, times, rate, duration).await?;
    let (ack, e2e) = (&run.ack, &run.e2e);
    report.add("(d) latency", &format!("ack at {rate}/s"), ack.brief(), "p99 < 3 ms", Some(ack.p99_ms < 3.0));
    report.add(
        "(d) latency",
        &format!("end-to-end at {rate}/s"),
        e2e.brief(),
        "p99 < 5 ms",
        Some(e2e.p99_ms < 5.0),
    );
    report.add("(d) latency", "machine busy meanwhile", run.cpu_brief(), "(info)", None);
    report.add("(d) latency", "CPU per message", run.cpu.brief(), "(info)", None);
    report.data(
        "latency",
        json!({"rate": rate, "ack": ack, "e2e": e2e, "cpu_busy": run.cpu_busy, "cpu": run.cpu}),
    );
    Ok(())
}

/// Background load (on the misbehaving endpoints while the healthy one is
/// measured): message `i` is `body(i)`, an open loop at `rate`, until stopped.
pub(super) fn background(
    subject: &Subject,
    app: &str,
    rate: u64,
    body: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    let (http, url, token) =
        (subject.http.clone(), subject.messages_urls(app).swap_remove(0), subject.token.clone());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        for i in 0.. {
            ticker.tick().await;
            let (http, url, token, body) = (http.clone(), url.clone(), token.clone(), body(i));
            tokio::spawn(async move {
                let _ = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
            });
        }
    })
}

/// A server for (e): the `bad` application's endpoints hang and fail, and
/// traffic to them runs in the background until the guard is dropped.
struct BadNeighbours {
    subject: Subject,
    hanging: Receiver,
    failing: Receiver,
    noise: tokio::task::JoinHandle<()>,
}

impl BadNeighbours {
    async fn start(opts: &Opts, bad_rate: u64) -> anyhow::Result<BadNeighbours> {
        let subject = Subject::new(opts).await?;
        let hanging = Receiver::start(Behaviour::Hang, None).await?;
        let failing = Receiver::start(Behaviour::Fail, None).await?;
        let bad = subject.app("bench-bad").await?;
        subject.endpoint(&bad, &hanging.url(), json!({})).await?;
        subject.endpoint(&bad, &failing.url(), json!({})).await?;
        let noise = background(&subject, &bad, bad_rate, body_fn("bench.bad"));
        tokio::time::sleep(Duration::from_secs(2)).await; // let the hanging lane fill up
        Ok(BadNeighbours { subject, hanging, failing, noise })
    }

    /// A fresh application whose one endpoint is a new healthy receiver
    /// timing up to `messages` messages.
    async fn healthy(&self, messages: usize) -> anyhow::Result<(String, Receiver, Arc<SendTimes>)> {
        let times = SendTimes::new(messages + 1);
        let healthy = Receiver::start(Behaviour::Ok, Some(Arc::clone(&times))).await?;
        let app = self.subject.app("bench-good").await?;
        self.subject.endpoint(&app, &healthy.url(), json!({})).await?;
        Ok((app, healthy, times))
    }
}

impl Drop for BadNeighbours {
    fn drop(&mut self) {
        self.noise.abort();
    }
}

/// (e): (b) and (d) again, each on a fresh server like theirs, while the
/// same server also delivers to a hanging and a failing endpoint.
pub async fn isolation(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (n, c, rate) = (opts.messages, opts.concurrency, opts.rate);
    let baseline_rate = report_f64(report, "throughput", "delivered_per_s");
    let baseline_p99 = report_f64(report, "latency", "e2e.p99_ms");
    let bad_rate = (rate / 10).max(1);
    eprintln!(
        "(e) isolation: the healthy endpoint while another hangs and a third answers 500 ({bad_rate} messages/s to them)"
    );
    let (delivered, hanging_got, failing_got) = {
        let bad = BadNeighbours::start(opts, bad_rate).await?;
        let (app, healthy, times) = bad.healthy(n).await?;
        let delivered = deliver(&bad.subject, &app, &healthy, times, n, c).await?.rate;
        (delivered, bad.hanging.count(), bad.failing.count())
    };
    let run = {
        let bad = BadNeighbours::start(opts, bad_rate).await?;
        let (app, healthy, times) = bad.healthy((rate * opts.duration) as usize).await?;
        let duration = Duration::from_secs(opts.duration);
        at_rate(&bad.subject, &app, &healthy, times, rate, duration).await?
    };

    let within = |value: f64, base: Option<f64>, higher_is_better: bool| {
        base.map(|b| if higher_is_better { value >= 0.8 * b } else { value <= 1.2 * b })
    };
    let vs = |base: Option<f64>| {
        base.map(|b| format!("within 20 % of {b:.1}")).unwrap_or_else(|| "(run (b)/(d) too)".into())
    };
    report.add(
        "(e) isolation",
        "healthy messages/s",
        format!("{delivered:.0}"),
        &vs(baseline_rate),
        within(delivered, baseline_rate, true),
    );
    report.add(
        "(e) isolation",
        &format!("healthy end-to-end at {rate}/s"),
        run.e2e.brief(),
        &vs(baseline_p99).replace("within", "p99 within"),
        within(run.e2e.p99_ms, baseline_p99, false),
    );
    // Beside e2e, to tell where extra tail latency comes from: the store's
    // commits (ack and e2e alike) or the dispatcher (e2e alone).
    report.add("(e) isolation", &format!("healthy ack at {rate}/s"), run.ack.brief(), "(info)", None);
    // The neighbours' work shares the two cores: compare with (d)'s figure.
    report.add("(e) isolation", "machine busy meanwhile", run.cpu_brief(), "(info)", None);
    // Per healthy message, the neighbours' work included: compare with (d).
    report.add("(e) isolation", "CPU per healthy message", run.cpu.brief(), "(info)", None);
    report.add(
        "(e) isolation",
        "hanging / failing endpoints got",
        format!("{hanging_got} / {failing_got} requests (during the throughput run)"),
        "(info)",
        None,
    );
    report.data(
        "isolation",
        json!({
            "delivered_per_s": delivered,
            "ack": run.ack,
            "e2e": run.e2e,
            "cpu_busy": run.cpu_busy,
            "cpu": run.cpu,
            "bad_rate": bad_rate
        }),
    );
    Ok(())
}

/// A figure an earlier scenario left in the report (`a.b.c` path).
pub(super) fn report_f64(report: &Report, section: &str, path: &str) -> Option<f64> {
    let mut v = report.json()["data"][section].clone();
    for key in path.split('.') {
        v = v[key].clone();
    }
    v.as_f64()
}
