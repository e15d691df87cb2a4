//! Local webhook receivers for benchmarks: keep-alive HTTP/1, answering at
//! once (or failing, or never answering), counting what they get and, when
//! the payload carries a `seq`, how long it took since it was sent; when it
//! carries a `key` and its `pos` among that key's messages, whether it came
//! in order.

use std::collections::HashMap;
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

    /// The latencies received since the last call (all of them at first).
    pub fn take_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Per ordering key, the highest position received so far.
#[derive(Default)]
struct KeyOrder {
    highest: std::sync::Mutex<HashMap<String, u64>>,
    /// Requests whose message came after a later one of its key.
    late: AtomicU64,
}

impl KeyOrder {
    fn received(&self, key: &str, pos: u64) {
        let mut highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        match highest.get_mut(key) {
            Some(h) if pos < *h => {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
            Some(h) => *h = pos,
            None => {
                highest.insert(key.to_owned(), pos);
            }
        }
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
    order: Option<KeyOrder>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    seq: Option<usize>,
    #[serde(borrow)]
    key: Option<std::borrow::Cow<'a, str>>,
    pos: Option<u64>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour, times: Option<Arc<SendTimes>>) -> anyhow::Result<Receiver> {
        Self::launch(behaviour, times, None).await
    }

    /// A receiver that also checks that each key's messages come in order
    /// (see [`Receiver::out_of_order`]).
    pub async fn start_ordered(
        behaviour: Behaviour,
        times: Option<Arc<SendTimes>>,
    ) -> anyhow::Result<Receiver> {
        Self::launch(behaviour, times, Some(KeyOrder::default())).await
    }

    async fn launch(
        behaviour: Behaviour,
        times: Option<Arc<SendTimes>>,
        order: Option<KeyOrder>,
    ) -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            behaviour,
            count: AtomicU64::new(0),
            first: AtomicU64::new(0),
            last: AtomicU64::new(0),
            start: Instant::now(),
            times,
            order,
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

    /// Requests whose message arrived after a later message of the same key
    /// (for a receiver from [`Receiver::start_ordered`]).
    pub fn out_of_order(&self) -> u64 {
        self.shared.order.as_ref().map_or(0, |o| o.late.load(Ordering::Relaxed))
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
    if (s.times.is_some() || s.order.is_some())
        && let Ok(probe) = serde_json::from_slice::<Probe>(&body)
    {
        if let (Some(times), Some(seq)) = (&s.times, probe.seq) {
            times.received(seq);
        }
        if let (Some(order), Some(key), Some(pos)) = (&s.order, &probe.key, probe.pos) {
            order.received(key, pos);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_message_after_a_later_one_of_its_key_is_late() {
        let order = KeyOrder::default();
        for (key, pos) in [("a", 0), ("b", 0), ("a", 1), ("a", 1), ("b", 2), ("a", 3)] {
            order.received(key, pos);
        }
        assert_eq!(order.late.load(Ordering::Relaxed), 0, "in order, a repeat of the latest allowed");
        order.received("b", 1);
        order.received("a", 0);
        order.received("c", 0);
        assert_eq!(order.late.load(Ordering::Relaxed), 2);
    }
}
