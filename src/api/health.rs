//! `GET /api/v1/health`: 204 while the store answers; `GET /metrics`:
//! Prometheus text. Both unauthenticated, for load balancers and scrapers.
//!
//! The load gauges are read when scraped: attempts in flight and queued
//! from the dispatcher (exact), deliveries waiting from the store (a count
//! at most a second old, so a flood of scrapes costs one count a second).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use super::{ApiResult, ApiState};
use crate::store::{Order, PageRequest};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/health/ping", get(ping))
        .route("/metrics", get(metrics))
}

/// How stale the count of waiting deliveries may be.
const PENDING_FRESH: Duration = Duration::from_secs(1);

/// The last count of waiting deliveries, and when it was taken.
#[derive(Default)]
pub struct PendingCount(Mutex<Option<(Instant, u64)>>);

impl PendingCount {
    async fn get(&self, s: &ApiState) -> ApiResult<u64> {
        let cached = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = cached
            && at.elapsed() < PENDING_FRESH
        {
            return Ok(n);
        }
        let taken = Instant::now();
        let n = s.service.store.count_pending().await?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((taken, n));
        Ok(n)
    }
}

async fn metrics(State(s): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let pending = s.pending.get(&s).await?;
    let (in_flight, queued) = s.service.dispatcher.load();
    let load = crate::telemetry::Load { in_flight, queued, pending };
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render(&load)))
}

async fn health(State(s): State<ApiState>) -> ApiResult<StatusCode> {
    s.service.store.list_apps(&Default::default(), &PageRequest::first(1, Order::Ascending)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}
