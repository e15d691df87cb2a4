//! `GET /api/v1/health`: 204 while the store answers; `GET /metrics`:
//! Prometheus text. Both unauthenticated, for load balancers and scrapers.

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

async fn metrics() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render())
}

async fn health(State(s): State<ApiState>) -> ApiResult<StatusCode> {
    s.service.store.list_apps(&Default::default(), &PageRequest::first(1, Order::Ascending)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}
