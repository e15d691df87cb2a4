//! OpenTelemetry traces, end to end: an OTLP/HTTP collector in the test
//! (decoding the protobuf with the `opentelemetry-proto` types) receives
//! the spans of one event, from the caller's request to the webhook
//! receiver, all in the caller's trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use hookline::traces::{Exporter, OtlpConfig};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use crate::common::{Receiver, Reply, TOKEN, TestServer};

/// An OTLP/HTTP traces endpoint on its own thread and runtime (the
/// exporter posts from its own thread, blocking, so the collector must not
/// depend on the test's runtime being polled).
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&spans);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/v1/traces", post(collect))
                    .layer(axum::extract::DefaultBodyLimit::disable())
                    .with_state(kept);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Collector { url: format!("http://{addr}"), spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn collect(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut all = spans.lock().unwrap();
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            all.extend(ss.spans);
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A message sent with a `traceparent`: the request span, the ingest span
/// and one span per attempt (a 500, the scheduled retry's 200, then a
/// manual resend) are all exported in the caller's trace, and every webhook
/// carries a `traceparent` of that trace naming its own attempt span.
#[test]
fn one_trace_per_event_from_the_request_to_the_receiver() {
    let collector = Collector::start();
    let cfg =
        OtlpConfig { traces_url: format!("{}/v1/traces", collector.url), service_name: "hookline-it".into() };
    // Built and shut down outside any runtime: the exporter's client blocks.
    let exporter = Exporter::start(&cfg).unwrap();
    // Log lines too, as `hookline serve` prints them (at debug).
    let logs = Logs::default();
    let printed = tracing_subscriber::fmt::layer().with_writer(logs.clone()).with_ansi(false).with_filter(
        tracing_subscriber::filter::Targets::new().with_target("hookline", tracing::Level::DEBUG),
    );
    let subscriber = tracing_subscriber::registry().with(exporter.layer()).with(printed);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A current-thread runtime: the server's tasks run on this thread, in
    // this subscriber (other tests in the binary are not traced).
    // With a single dispatcher registered, tracing-core asks only the
    // registering thread's default whether a new callsite is wanted, and
    // caches the answer for all threads: the other tests' threads (no
    // subscriber) would switch Hookline's spans off for this one too. A
    // second dispatcher makes it ask every registered one.
    let _others = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let (msg_id, webhooks) = tracing::subscriber::with_default(subscriber, || {
        // And callsites met before this subscriber existed are asked again.
        tracing::callsite::rebuild_interest_cache();
        rt.block_on(send_and_retry())
    });
    drop(rt);
    exporter.shutdown();

    let spans = collector.spans();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE_ID).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let by_name = |name: &str| -> Vec<&Span> { ours.iter().copied().filter(|s| s.name == name).collect() };

    let requests = by_name("POST /api/v1/app/{app_id}/msg");
    assert_eq!(requests.len(), 1, "the message-creation request, in the caller's trace: {names:?}");
    let request = requests[0];
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN, "a child of the caller's span");
    assert_eq!(attr(request, "http.response.status_code").as_deref(), Some("202"));

    let ingest = by_name("ingest");
    assert_eq!(ingest.len(), 1, "{names:?}");
    assert_eq!(ingest[0].parent_span_id, request.span_id, "the commit is part of the request");
    assert_eq!(attr(ingest[0], "hookline.msg_id").as_deref(), Some(msg_id.as_str()));

    let mut attempts = by_name("webhook attempt");
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 3, "{names:?}");
    let codes: Vec<Option<String>> = attempts.iter().map(|s| attr(s, "http.response.status_code")).collect();
    assert_eq!(codes, [Some("500".into()), Some("200".into()), Some("200".into())]);
    let triggers: Vec<Option<String>> = attempts.iter().map(|s| attr(s, "hookline.trigger")).collect();
    assert_eq!(triggers, [Some("scheduled".into()), Some("scheduled".into()), Some("manual".into())]);
    for a in &attempts {
        assert_eq!(a.parent_span_id, request.span_id, "attempts join the trace the message was created in");
        assert_eq!(attr(a, "hookline.msg_id").as_deref(), Some(msg_id.as_str()));
        assert_eq!(attr(a, "hookline.event_type").as_deref(), Some("trace.test"));
    }
    assert_eq!(attr(attempts[0], "error.message"), None, "an HTTP 500 is not a transport error");

    // Each webhook names its own attempt span as the parent the receiver
    // continues from.
    assert_eq!(webhooks.len(), 3);
    for (hook, span) in webhooks.iter().zip(&attempts) {
        let parts: Vec<&str> = hook.split('-').collect();
        assert_eq!(parts.len(), 4, "{hook}");
        assert_eq!(parts[1], TRACE_ID, "the webhook continues the caller's trace");
        assert_eq!(parts[2], hex(&span.span_id), "and names its attempt span");
    }

    // The log line of each attempt names its trace and span.
    let logs = logs.text();
    for span in &attempts {
        let ids = format!("trace_id={TRACE_ID} span_id={}", hex(&span.span_id));
        let line = logs.lines().find(|l| l.contains(&ids) && l.contains(" attempt "));
        assert!(line.is_some(), "no attempt log line with {ids}:\n{logs}");
    }

    // The picture in docs/tracing.md: these spans as a waterfall.
    let mut shown: Vec<&Span> = vec![request];
    shown.extend(ingest);
    shown.extend(attempts);
    let page = tempfile::tempdir().unwrap();
    let file = page.path().join("trace.html");
    std::fs::write(&file, waterfall(&shown)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let b = crate::browser::Browser::start().await;
        b.goto(&format!("file://{}", file.display())).await;
        b.screenshot_of("trace", "#trace").await;
    });
}

/// The spans of one trace drawn as a waterfall (HTML), children indented
/// under their parents, as a tracing UI shows them.
fn waterfall(spans: &[&Span]) -> String {
    let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap();
    let end = spans.iter().map(|s| s.end_time_unix_nano).max().unwrap();
    let width = (end - start).max(1) as f64;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let depth = |s: &Span| {
        let mut d = 0;
        let mut parent = s.parent_span_id.clone();
        while let Some(p) = spans.iter().find(|x| x.span_id == parent) {
            d += 1;
            parent = p.parent_span_id.clone();
        }
        d
    };
    let mut rows = String::new();
    for s in spans {
        let left = 100.0 * (s.start_time_unix_nano - start) as f64 / width;
        let span_width = (100.0 * (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / width).max(0.4);
        let ms = (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6;
        let keys =
            ["http.response.status_code", "hookline.trigger", "hookline.attempt", "hookline.deliveries"];
        let details: Vec<String> = keys
            .iter()
            .filter_map(|k| attr(s, k).map(|v| format!("{}={v}", k.rsplit('.').next().unwrap())))
            .collect();
        let failed = attr(s, "http.response.status_code").is_some_and(|c| c.starts_with('5'));
        // The duration beside the bar, on its left near the right edge.
        let label = if left + span_width > 85.0 {
            format!("right:calc({:.2}% + 4px)", 100.0 - left)
        } else {
            format!("left:calc({:.2}% + 4px)", left + span_width)
        };
        rows.push_str(&format!(
            "<div class=row><div class=name style='padding-left:{}px'>{}<small>{}</small></div>\
             <div class=lane><div class='bar{}' style='left:{left:.2}%;width:{span_width:.2}%'></div>\
             <span class=ms style='{label}'>{ms:.1} ms</span></div></div>",
            12 + 18 * depth(s),
            s.name,
            details.join(" "),
            if failed { " bad" } else { "" },
        ));
    }
    format!(
        "<!doctype html><meta charset=utf-8><style>body{{font:13px system-ui,sans-serif;margin:0;background:#fff}}\
         #trace{{width:1100px;padding:12px;border:1px solid #dde}}h1{{font-size:15px;margin:0 0 8px}}\
         .row{{display:flex;border-top:1px solid #eef;height:34px;align-items:center}}\
         .name{{width:430px;white-space:nowrap;overflow:hidden}}.name small{{display:block;color:#667}}\
         .lane{{position:relative;flex:1;height:100%}}.bar{{position:absolute;top:9px;height:14px;background:#3aa35c;border-radius:2px}}\
         .bar.bad{{background:#d9483b}}.ms{{position:absolute;top:8px;color:#556}}</style>\
         <div id=trace><h1>Trace {} — {} spans, service hookline-it</h1>{rows}</div>",
        hex(&spans[0].trace_id),
        spans.len()
    )
}

/// Returns the message id and the `traceparent` of each webhook received.
async fn send_and_retry() -> (String, Vec<String>) {
    let t = TestServer::with_manual_clock().await;
    let rx = Receiver::start(Reply::Status(200, "ok")).await;
    rx.script([Reply::Status(500, "boom")]);
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let resp = t
        .http
        .post(t.url(&format!("/api/v1/app/{app}/msg")))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("tracestate", "caller=1")
        .json(&json!({"eventType": "trace.test", "payload": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let msg: serde_json::Value = resp.json().await.unwrap();
    let msg = msg["id"].as_str().unwrap().to_owned();

    t.wait_attempts(&app, &msg, 1).await;
    // The retry, hours later on the manual clock, joins the same trace.
    t.clock().advance(Duration::from_secs(3 * 3600));
    t.wait_attempts(&app, &msg, 2).await;
    t.svix.message_attempt().resend(app.clone(), msg.clone(), ep.clone(), None).await.unwrap();
    t.wait_attempts(&app, &msg, 3).await;

    let got = rx.wait_for(3).await;
    let states: HashMap<String, usize> = got.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.header("tracestate").to_owned()).or_default() += 1;
        m
    });
    assert_eq!(states.get("caller=1"), Some(&3), "the caller's tracestate travels on: {states:?}");
    let hooks = got.iter().map(|r| r.header("traceparent").to_owned()).collect();
    t.server.shutdown().await;
    (msg, hooks)
}

/// Where the test's log lines go.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Threads of a process, by name.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The real binary: without an OTLP endpoint no exporter thread runs; with
/// `--otlp-endpoint` one does, and what it exports at shutdown includes
/// the request span of a message sent with a `traceparent`.
#[tokio::test]
async fn the_binary_exports_only_when_configured() {
    const EXPORTER_THREAD: &str = "OpenTelemetry.T"; // thread names are cut at 15 bytes
    let dir = tempfile::tempdir().unwrap();
    let (off, _) = crate::common::spawn_hookline(&["--data-dir".as_ref(), dir.path().as_os_str()]).await;
    let names = threads(off.id().unwrap());
    assert!(!names.iter().any(|n| n.starts_with(EXPORTER_THREAD)), "{names:?}");
    drop(off);

    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut on, url) = crate::common::spawn_hookline(&[
        "--otlp-endpoint".as_ref(),
        collector.url.as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ])
    .await;
    let pid = on.id().unwrap();
    assert!(threads(pid).iter().any(|n| n.starts_with(EXPORTER_THREAD)), "{:?}", threads(pid));
    let http = reqwest::Client::new();
    let app = http
        .post(format!("{url}/api/v1/app"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap();
    let app: serde_json::Value = app.json().await.unwrap();
    let resp = http
        .post(format!("{url}/api/v1/app/{}/msg", app["id"].as_str().unwrap()))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"eventType": "binary.test", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // A graceful stop sends what the batch processor still holds.
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    let status = tokio::time::timeout(crate::common::PATIENCE, on.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let spans = collector.spans();
    let request = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/app/{app_id}/msg")
        .unwrap_or_else(|| panic!("{:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()));
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
}
