//! A fast local webhook receiver for benchmarks: keep-alive HTTP/1,
//! answers at once, counts what it gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;

pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<AtomicU64>,
}

impl Receiver {
    /// Answer 200, except every `fail_every`-th request gets 500 (0: never).
    pub async fn start(fail_every: u64) -> anyhow::Result<Receiver> {
        let received = Arc::new(AtomicU64::new(0));
        let state = (Arc::clone(&received), fail_every);
        let app = axum::Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr, received })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

async fn answer(State((received, fail_every)): State<(Arc<AtomicU64>, u64)>) -> StatusCode {
    let n = received.fetch_add(1, Ordering::Relaxed) + 1;
    if fail_every > 0 && n % fail_every == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}
