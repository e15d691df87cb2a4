//! Making one HTTP attempt: sign, POST, wait at most the policy's timeout,
//! keep the first 64 KiB of the answer.
//!
//! The status line and headers decide the outcome: if they arrive within
//! the timeout, their status is recorded, whatever the body does next. The
//! body is then read, up to 64 KiB, in what is left of the timeout, and the
//! rest dropped; a body that trickles, stalls or never ends costs neither
//! the status nor more than the timeout.
//!
//! The client is hyper-util's pooled client over hyper-rustls, with the
//! target policy in its DNS resolver. (reqwest, which wraps the same client,
//! added URL re-parsing, header merging and retry/redirect layers that
//! showed up as a tenth of the server's CPU at full delivery speed.)

use std::error::Error;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ssrf::{GuardedResolver, Refused, TargetPolicy};
use crate::clock::Clock;
use crate::domain::attempt_stats;
use crate::domain::model::TraceContext;
use crate::domain::retry::RetryPolicy;
use crate::domain::signing;
use crate::domain::time::Timestamp;
use crate::store::DeliveryTask;

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// Response bodies are cut here before storing; the rest is never read.
pub const RESPONSE_LIMIT: usize = 64 * 1024;

/// What came back from one attempt.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Sent {
    /// `None` when no HTTP response arrived.
    pub status: Option<u16>,
    pub body: String,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// The `Retry-After` and `webhook-delivery` response headers.
    pub retry_after: Option<String>,
    pub directive: Option<String>,
}

#[derive(Clone)]
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    targets: Arc<TargetPolicy>,
}

impl Sender {
    pub fn new(targets: TargetPolicy) -> Self {
        let targets = Arc::new(targets);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy: Arc::clone(&targets) });
        http.enforce_http(false);
        http.set_nodelay(true);
        // ring explicitly: test builds link a second rustls provider, and
        // rustls will not choose between two by itself.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports rustls' default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // No redirects are followed (the client never does): a 3xx is
        // recorded as a failure, and following it would sidestep the policy.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(https);
        Sender { client, targets }
    }

    /// Deliver `task` once. `started` stamps the signature; the attempt is
    /// abandoned once the clock passes `started + policy.timeout`.
    pub async fn send(
        &self,
        clock: &dyn Clock,
        task: &DeliveryTask,
        policy: &RetryPolicy,
        started: Timestamp,
        trace: Option<&TraceContext>,
    ) -> Sent {
        let timer = Instant::now();
        let deadline = clock.sleep_until(started.plus(policy.timeout));
        tokio::pin!(deadline);
        let head = tokio::select! {
            r = self.request(task, started, trace) => r,
            _ = &mut deadline => Err(attempt_stats::timeout_error(policy.timeout)),
        };
        let resp = match head {
            Ok(resp) => resp,
            Err(error) => {
                return Sent {
                    error: Some(error),
                    duration_ms: timer.elapsed().as_millis() as i64,
                    ..Sent::default()
                };
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (retry_after, directive) = (header("retry-after"), header("webhook-delivery"));
        let mut body = Vec::new();
        tokio::select! {
            _ = read_body(resp.into_body(), &mut body) => {}
            // The status stands; the body is what arrived in time.
            _ = &mut deadline => {}
        }
        Sent {
            status: Some(status),
            body: String::from_utf8_lossy(&body).into_owned(),
            error: None,
            duration_ms: timer.elapsed().as_millis() as i64,
            retry_after,
            directive,
        }
    }

    /// Send the request; resolves with the status line and headers.
    async fn request(
        &self,
        task: &DeliveryTask,
        started: Timestamp,
        trace: Option<&TraceContext>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let ep = &task.endpoint;
        let msg = &task.message;
        let Some(payload) = msg.payload.clone() else {
            return Err("the message payload was expunged; nothing to send".into());
        };
        let uri = parse_uri(&ep.url)?;
        if let Some(ip) = literal_ip(&uri)
            && !self.targets.permits(ip)
        {
            let host = uri.host().unwrap_or_default().to_owned();
            return Err(Refused { host, addr: ip }.to_string());
        }
        let ts = started.as_secs();
        let signature = signing::signature_header(ep.signing_secrets(started), &msg.id, ts, &payload)
            .map_err(|e| format!("cannot sign: {e}"))?;

        let mut req = Request::post(uri).body(Full::new(payload)).map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        headers.reserve(11 + ep.headers.len());
        for (name, value) in &ep.headers {
            if let (Ok(n), Ok(v)) =
                (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            {
                headers.insert(n, v);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("Hookline/", env!("CARGO_PKG_VERSION"))));
        let id = HeaderValue::try_from(msg.id.as_str()).map_err(|e| e.to_string())?;
        let ts = HeaderValue::from(ts);
        let sig = HeaderValue::try_from(signature).map_err(|e| e.to_string())?;
        for [id_name, ts_name, sig_name] in SIGNATURE_HEADERS {
            headers.insert(HeaderName::from_static(id_name), id.clone());
            headers.insert(HeaderName::from_static(ts_name), ts.clone());
            headers.insert(HeaderName::from_static(sig_name), sig.clone());
        }
        // After the endpoint's own headers: the trace is this attempt's.
        if let Some(t) = trace {
            insert_trace_headers(headers, t);
        }

        self.client.request(req).await.map_err(|e| describe(&e))
    }
}

/// Read the body into `body` up to [`RESPONSE_LIMIT`]; the rest is never
/// read (dropping the stream closes the connection). A broken body after
/// the status line still leaves us an answer.
async fn read_body(mut stream: hyper::body::Incoming, body: &mut Vec<u8>) {
    while let Some(Ok(frame)) = stream.frame().await {
        let Some(chunk) = frame.data_ref() else { continue };
        let room = RESPONSE_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= RESPONSE_LIMIT {
            break;
        }
    }
}

fn insert_trace_headers(headers: &mut http::HeaderMap, trace: &TraceContext) {
    if let Ok(v) = HeaderValue::try_from(trace.traceparent.as_str()) {
        headers.insert(HeaderName::from_static("traceparent"), v);
    }
    if let Some(Ok(v)) = trace.tracestate.as_deref().map(HeaderValue::try_from) {
        headers.insert(HeaderName::from_static("tracestate"), v);
    }
}

/// Standard Webhooks' names, and Svix's for receivers that verify with older
/// Svix libraries.
const SIGNATURE_HEADERS: [[&str; 3]; 2] = [
    ["webhook-id", "webhook-timestamp", "webhook-signature"],
    ["svix-id", "svix-timestamp", "svix-signature"],
];

/// Endpoint URLs were checked by the `url` crate when they were saved; most
/// are already in the strict form `http::Uri` wants, and the rest (say, an
/// internationalised host name) are normalised by `url` first.
fn parse_uri(raw: &str) -> Result<Uri, String> {
    if let Ok(uri) = Uri::try_from(raw)
        && uri.scheme().is_some()
        && uri.host().is_some()
    {
        return Ok(uri);
    }
    let url = url::Url::parse(raw).map_err(|e| format!("invalid URL: {e}"))?;
    Uri::try_from(url.as_str()).map_err(|e| format!("invalid URL: {e}"))
}

fn literal_ip(uri: &Uri) -> Option<IpAddr> {
    uri.host()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The client's top-level message is vague ("client error (Connect)"); the
/// causes below it say what happened (connection refused, TLS, refused
/// target).
fn describe(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    if source.is_none() {
        parts.push(e.to_string());
    }
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
