//! Test fixtures: an in-process server, a scriptable webhook receiver, and
//! polling helpers with generous deadlines (tests must not flake on a loaded
//! 2-core machine).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hookline::clock::{ManualClock, SharedClock, SystemClock};
use hookline::config::{DatabaseConfig, ServerConfig};
use hookline::dispatch::ssrf::TargetPolicy;
use hookline::server::Server;
use serde_json::Value;
use svix::api::{Svix, SvixOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const TOKEN: &str = "hl_test_admin_token_0123456789";
/// Longest we wait for anything asynchronous to happen.
pub const PATIENCE: Duration = Duration::from_secs(30);

thread_local! {
    /// Set by [`on_postgres!`] for the test running on this thread.
    static ON_POSTGRES: Cell<bool> = const { Cell::new(false) };
}

/// Run the test fn on this thread with its servers on PostgreSQL.
pub fn with_postgres(test: fn()) {
    ON_POSTGRES.set(true);
    test();
}

/// Also run these `#[tokio::test]`s (defined in the same module) against
/// PostgreSQL, as `<module>::on_postgres::<name>`: every `TestServer` they
/// start gets a fresh database instead of a fresh data directory.
/// (`#[tokio::test]` turns each into a plain fn building its own runtime on
/// the calling thread, which is what makes the thread-local switch work.)
macro_rules! on_postgres {
    ($($test:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[test]
                fn $test() {
                    crate::common::with_postgres(super::$test);
                }
            )*
        }
    };
}
pub(crate) use on_postgres;

pub struct TestServer {
    pub server: Server,
    pub svix: Svix,
    pub http: reqwest::Client,
    pub clock: Option<ManualClock>,
    /// The PostgreSQL database behind it (`None`: SQLite in `dir`).
    pub database_url: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server on the wall clock.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server whose time only moves when the test says so.
    pub async fn with_manual_clock() -> Self {
        Self::start_with(Some(ManualClock::starting_now())).await
    }

    /// A server with the default target policy (no private addresses).
    pub async fn start_strict() -> Self {
        Self::start_configured(None, TargetPolicy::default()).await
    }

    async fn start_with(clock: Option<ManualClock>) -> Self {
        Self::start_configured(clock, TargetPolicy { allow_private: true, allowed: vec![] }).await
    }

    async fn start_configured(clock: Option<ManualClock>, targets: TargetPolicy) -> Self {
        Self::configured(clock, move |cfg| cfg.dispatch.targets = targets).await
    }

    /// A server (private targets allowed) with settings changed by `change`.
    pub async fn configured(clock: Option<ManualClock>, change: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new(dir.path());
        let database_url = match ON_POSTGRES.get() {
            true => Some(crate::pg::fresh_database().await),
            false => None,
        };
        if let Some(url) = &database_url {
            cfg.database = Some(DatabaseConfig { url: url.clone(), pool: 8 });
        }
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.admin_token = Some(TOKEN.into());
        cfg.dispatch.targets = TargetPolicy { allow_private: true, allowed: vec![] };
        // Exact schedule offsets are asserted; jitter has its own tests.
        cfg.dispatch.jitter = 0.0;
        change(&mut cfg);
        let shared: SharedClock = match &clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let server = Server::start(cfg, shared).await.unwrap();
        let svix = svix_client(&server.url(), TOKEN);
        TestServer { server, svix, http: reqwest::Client::new(), clock, database_url, dir }
    }

    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("started with a manual clock")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    /// A raw API call; returns status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Create these event types (endpoint filters may only name existing ones).
    pub async fn event_types(&self, names: &[&str]) {
        for name in names {
            let (status, body) =
                self.post("/api/v1/event-type", serde_json::json!({"name": name, "description": name})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    /// Create an application and an endpoint for `url` (extra endpoint
    /// fields merged in); returns (app_id, endpoint_id).
    pub async fn app_with_endpoint(&self, url: &str, extra: Value) -> (String, String) {
        let (status, app) = self.post("/api/v1/app", serde_json::json!({"name": "test"})).await;
        assert_eq!(status, StatusCode::CREATED, "{app}");
        let app_id = app["id"].as_str().unwrap().to_owned();
        let mut ep = serde_json::json!({"url": url});
        ep.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let (status, ep) = self.post(&format!("/api/v1/app/{app_id}/endpoint"), ep).await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        (app_id, ep["id"].as_str().unwrap().to_owned())
    }

    /// Create an endpoint in `app_id` from this body; returns its id.
    pub async fn endpoint(&self, app_id: &str, body: Value) -> String {
        let (status, ep) = self.post(&format!("/api/v1/app/{app_id}/endpoint"), body).await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        ep["id"].as_str().unwrap().to_owned()
    }

    /// Send a message with these fields (`eventType` defaults to
    /// `test.event`); returns its id.
    pub async fn send_message(&self, app_id: &str, mut body: Value) -> String {
        if body.get("eventType").is_none() {
            body["eventType"] = "test.event".into();
        }
        let (status, msg) = self.post(&format!("/api/v1/app/{app_id}/msg"), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{msg}");
        msg["id"].as_str().unwrap().to_owned()
    }

    /// Every attempt to an endpoint, oldest first.
    pub async fn all_attempts_to_endpoint(&self, app_id: &str, ep_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut iterator = String::new();
        loop {
            let page =
                self.get(&format!("/api/v1/app/{app_id}/attempt/endpoint/{ep_id}?limit=250{iterator}")).await;
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            if page["done"] == true {
                break;
            }
            iterator = format!("&iterator={}", page["iterator"].as_str().unwrap());
        }
        all.reverse();
        all
    }

    pub async fn send(&self, app_id: &str, payload: Value) -> String {
        let (status, msg) = self
            .post(
                &format!("/api/v1/app/{app_id}/msg"),
                serde_json::json!({"eventType": "test.event", "payload": payload}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{msg}");
        msg["id"].as_str().unwrap().to_owned()
    }

    /// A message's payload as the API shows it (`{}` once expunged).
    pub async fn payload(&self, app_id: &str, msg_id: &str) -> Value {
        self.get(&format!("/api/v1/app/{app_id}/msg/{msg_id}")).await["payload"].clone()
    }

    /// Attempts of a message, oldest first.
    pub async fn attempts(&self, app_id: &str, msg_id: &str) -> Vec<Value> {
        self.attempts_to(app_id, msg_id, None).await
    }

    /// Attempts of a message (to one endpoint if given), oldest first.
    pub async fn attempts_to(&self, app_id: &str, msg_id: &str, ep_id: Option<&str>) -> Vec<Value> {
        let filter = ep_id.map(|e| format!("&endpoint_id={e}")).unwrap_or_default();
        let list = self.get(&format!("/api/v1/app/{app_id}/attempt/msg/{msg_id}?limit=250{filter}")).await;
        let mut data = list["data"].as_array().unwrap().clone();
        data.reverse();
        data
    }

    /// Wait until the message has `n` recorded attempts; returns them.
    pub async fn wait_attempts(&self, app_id: &str, msg_id: &str, n: usize) -> Vec<Value> {
        self.wait_attempts_to(app_id, msg_id, None, n).await
    }

    pub async fn wait_attempts_to(
        &self,
        app_id: &str,
        msg_id: &str,
        ep_id: Option<&str>,
        n: usize,
    ) -> Vec<Value> {
        eventually(&format!("{n} attempts of {msg_id}"), || async {
            let a = self.attempts_to(app_id, msg_id, ep_id).await;
            (a.len() >= n).then_some(a)
        })
        .await
    }

    /// Wait until the delivery of `msg_id` to `ep_id` has this status text.
    pub async fn wait_status(&self, app_id: &str, msg_id: &str, ep_id: &str, status: &str) {
        eventually(&format!("delivery of {msg_id} to be {status}"), || async {
            (self.delivery(app_id, msg_id, ep_id).await["statusText"] == status).then_some(())
        })
        .await
    }

    /// The message's delivery to the endpoint (status, nextAttempt).
    pub async fn delivery(&self, app_id: &str, msg_id: &str, ep_id: &str) -> Value {
        let list = self.get(&format!("/api/v1/app/{app_id}/msg/{msg_id}/endpoint")).await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == ep_id)
            .cloned()
            .unwrap_or_else(|| panic!("no delivery of {msg_id} to {ep_id}: {list}"))
    }
}

pub fn svix_client(url: &str, token: &str) -> Svix {
    Svix::new(
        token.to_owned(),
        Some(SvixOptions { server_url: Some(url.to_owned()), num_retries: Some(0), ..Default::default() }),
    )
}

/// Poll `probe` until it yields a value, or panic after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16, &'static str),
    /// A status with response headers (steering: `Retry-After`, …).
    Headers(u16, &'static [(&'static str, &'static str)]),
    /// Never answer (the connection stays open until the client gives up).
    Hang,
    /// 200, after this long.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived (the wall clock, whatever the server's clock).
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    /// Decides the reply from the request body, before the script.
    rule: Mutex<Option<Rule>>,
    arrived: Notify,
}

/// One request of an ordered sequence as a receiver saw it.
pub struct OrderedRequest {
    pub key: String,
    pub n: u64,
    pub accepted: bool,
    pub at: std::time::Instant,
}

/// The requests of `{"key", "n"}` payloads a receiver saw, in arrival order.
#[derive(Default)]
pub struct OrderLog {
    pub requests: Vec<OrderedRequest>,
}

impl OrderLog {
    /// The key's numbers the receiver accepted, in arrival order.
    pub fn accepted(&self, key: &str) -> Vec<u64> {
        self.requests.iter().filter(|r| r.key == key && r.accepted).map(|r| r.n).collect()
    }

    /// The key's numbers it saw at all, in arrival order.
    pub fn seen(&self, key: &str) -> Vec<u64> {
        self.requests.iter().filter(|r| r.key == key).map(|r| r.n).collect()
    }

    /// Requests for an earlier message of a key after a later one of it
    /// had been accepted: what ordered delivery must never do.
    pub fn out_of_order(&self) -> Vec<(String, u64, u64)> {
        let mut latest: std::collections::HashMap<&str, u64> = Default::default();
        let mut wrong = Vec::new();
        for r in &self.requests {
            let top = latest.get(r.key.as_str()).copied();
            if top.is_some_and(|top| r.n < top) {
                wrong.push((r.key.clone(), r.n, top.unwrap()));
            }
            if r.accepted {
                latest.insert(&r.key, top.map_or(r.n, |top| top.max(r.n)));
            }
        }
        wrong
    }
}

/// A reply chosen by the request's JSON body (`None`: script or default).
type Rule = Box<dyn FnMut(&Value) -> Option<Reply> + Send>;

/// A webhook receiver on loopback that records every request and answers
/// from a script (then with a default reply).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(default: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, default)
    }

    /// Serve on an already bound listener (to come up on a known port).
    pub fn serve(listener: TcpListener, default: Reply) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        *state.default.lock().unwrap() = Some(default);
        let app = axum::Router::new().route("/{*path}", post(handle)).with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url: format!("http://{addr}/hook"), state }
    }

    /// Answer the next requests with these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Answer by the request's body: `rule` sees each request's JSON
    /// payload and may pick the reply (`None`: the script or the default).
    pub fn rule(&self, rule: impl FnMut(&Value) -> Option<Reply> + Send + 'static) {
        *self.state.rule.lock().unwrap() = Some(Box::new(rule));
    }

    /// Log `{"key", "n"}` payloads for ordering checks: `fail(key, n,
    /// times seen before)` picks those answered 500; the rest get `accept`.
    pub fn log_ordered(
        &self,
        mut fail: impl FnMut(&str, u64, usize) -> bool + Send + 'static,
        accept: Reply,
    ) -> Arc<Mutex<OrderLog>> {
        let log = Arc::new(Mutex::new(OrderLog::default()));
        let shared = Arc::clone(&log);
        self.rule(move |p: &Value| {
            let key = p["key"].as_str().unwrap_or_default().to_owned();
            let n = p["n"].as_u64().unwrap_or_default();
            let mut log = shared.lock().unwrap();
            let before = log.requests.iter().filter(|r| r.key == key && r.n == n).count();
            let accepted = !fail(&key, n, before);
            log.requests.push(OrderedRequest { key, n, accepted, at: std::time::Instant::now() });
            Some(if accepted { accept.clone() } else { Reply::Status(500, "not now") })
        });
        log
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests have arrived; returns all so far.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.state.arrived.notified();
            if self.count() >= n {
                return self.received();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("receiver got {} requests, expected {n}", self.count());
            }
        }
    }
}

async fn handle(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
        let ruled = state.rule.lock().unwrap().as_mut().and_then(|rule| rule(&payload));
        let scripted = || state.script.lock().unwrap().pop_front();
        ruled.or_else(scripted).or_else(|| state.default.lock().unwrap().clone()).unwrap()
    };
    state.received.lock().unwrap().push(Received { headers, body, at: std::time::Instant::now() });
    state.arrived.notify_waiters();
    match reply {
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap(), body.to_owned()).into_response(),
        Reply::Headers(code, headers) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            for (k, v) in headers {
                response.headers_mut().insert(*k, HeaderValue::from_static(v));
            }
            response
        }
        Reply::Hang => std::future::pending().await,
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Start the compiled `hookline serve` with these extra arguments on a free
/// port (plus the test admin token and private targets allowed); returns
/// the child, killed on drop, and its URL.
pub async fn spawn_hookline(args: &[&std::ffi::OsStr]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", TOKEN, "--allow-private-targets"])
        .args(args)
        .env("HOOKLINE_LOG", "warn")
        // Traces only where a test asks for them, never to an ambient collector.
        .env_remove("HOOKLINE_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start hookline");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("hookline exited before listening");
    })
    .await
    .expect("hookline did not start in time");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Seconds from `t0` to an RFC 3339 time.
pub fn secs_since(t0: &str, t: &str) -> i64 {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
    let ms = parse(t) - parse(t0);
    assert_eq!(ms % 1000, 0, "{t} is not a whole number of seconds after {t0}");
    ms / 1000
}

/// Poll every future to completion, concurrently (no extra dependency).
pub async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}
