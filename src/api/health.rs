//! `GET /api/v1/health`: 204 while the store answers; `GET /metrics`:
//! Prometheus text. Both unauthenticated, for load balancers and scrapers.
//!
//! The load gauges are read when scraped: attempts in flight and queued
//! from the dispatcher, deliveries waiting from the store (one count over
//! the due index).

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

async fn metrics(State(s): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let pending = s.service.store.count_pending().await?;
    let (in_flight, queued) = s.service.dispatcher.load();
    let flow = s.service.store.flow_totals(s.service.now()).await?;
    let load = crate::telemetry::Load {
        in_flight,
        queued,
        pending,
        paused_endpoints: flow.paused_endpoints,
        backing_off_endpoints: flow.backing_off_endpoints,
        parked_deliveries: flow.parked_deliveries,
        held_deliveries: flow.held_deliveries,
    };
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render(&load)))
}

async fn health(State(s): State<ApiState>) -> ApiResult<StatusCode> {
    s.service.store.list_apps(&Default::default(), &PageRequest::first(1, Order::Ascending)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}
