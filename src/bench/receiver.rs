//! Local webhook receivers for benchmarks: keep-alive HTTP/1, answering at
//! once (or failing, or never answering), counting what they get and, when
//! the payload carries a `seq`, how long it took since it was sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Ok,
    /// Every `n`-th request gets a 500.
    FailEvery(u64),
    Fail,
    /// Accept the request and never answer.
    Hang,
}

/// When each message (by `seq`) was sent, in ns since `epoch`; shared by
/// the load generator and the receiver.
pub struct SendTimes {
    pub epoch: Instant,
    sent: Vec<AtomicU64>,
    latencies: std::sync::Mutex<Vec<Duration>>,
}

impl SendTimes {
    pub fn new(capacity: usize) -> Arc<SendTimes> {
        Arc::new(SendTimes {
            epoch: Instant::now(),
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            latencies: std::sync::Mutex::new(Vec::with_capacity(capacity)),
        })
    }

    pub fn mark_sent(&self, seq: usize) {
        if let Some(slot) = self.sent.get(seq) {
            slot.store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn received(&self, seq: usize) {
        let Some(sent) = self.sent.get(seq).map(|s| s.load(Ordering::Relaxed)) else { return };
        if sent > 0 {
            let now = self.epoch.elapsed().as_nanos() as u64;
            let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
            l.push(Duration::from_nanos(now.saturating_sub(sent)));
        }
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Shared {
    behaviour: Behaviour,
    count: AtomicU64,
    /// ns since `start` of the first and the last request (0: none yet).
    first: AtomicU64,
    last: AtomicU64,
    start: Instant,
    times: Option<Arc<SendTimes>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
struct Probe {
    seq: Option<usize>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour, times: Option<Arc<SendTimes>>) -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            behaviour,
            count: AtomicU64::new(0),
            first: AtomicU64::new(0),
            last: AtomicU64::new(0),
            start: Instant::now(),
            times,
        });
        let app = axum::Router::new().fallback(answer).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr, shared })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// When the first request arrived, if one has.
    pub fn first_at(&self) -> Option<Instant> {
        match self.shared.first.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.shared.start + Duration::from_nanos(ns)),
        }
    }

    /// When the latest request arrived.
    pub fn last_at(&self) -> Instant {
        self.shared.start + Duration::from_nanos(self.shared.last.load(Ordering::Relaxed))
    }

    /// Wait until `n` requests have arrived, or `patience` passes.
    pub async fn wait_for(&self, n: u64, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        while self.count() < n {
            anyhow::ensure!(Instant::now() < deadline, "receiver got {} of {n} requests", self.count());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

async fn answer(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    if s.behaviour == Behaviour::Hang {
        s.count.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    if let Some(times) = &s.times
        && let Ok(Probe { seq: Some(seq) }) = serde_json::from_slice::<Probe>(&body)
    {
        times.received(seq);
    }
    let now = (s.start.elapsed().as_nanos() as u64).max(1);
    let _ = s.first.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    s.last.store(now, Ordering::Relaxed);
    let n = s.count.fetch_add(1, Ordering::Relaxed) + 1;
    match s.behaviour {
        Behaviour::FailEvery(k) if n.is_multiple_of(k) => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    }
}
