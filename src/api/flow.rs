//! Hookline extensions on an endpoint's flow control and ordered delivery
//! (issues 17 and 18): what the endpoint's flow is now, which ordering keys
//! are blocked behind a failed message, and skipping one.
//!
//! - `GET …/endpoint/{id}/flow`: rate limit, allowed rate, backoff, pause,
//!   deliveries waiting on the flow or held behind a key, in flight here.
//! - `GET …/endpoint/{id}/ordering/blocked`: blocked keys, by key, paged.
//! - `POST …/endpoint/{id}/ordering/skip` `{"key"}`: the key moves on past
//!   its failed head (which stays failed); 404 unless the key is blocked.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::Checks;
use super::extract::{Principal, QueryParams, SvixJson, SvixPath, Validate};
use super::pagination::ListResponse;
use super::{ApiResult, ApiState};
use crate::domain::ordering;
use crate::domain::time::Timestamp;
use crate::store::{BlockedKey, FlowView, Order};

pub fn routes() -> Router<ApiState> {
    let ep = "/api/v1/app/{app_id}/endpoint/{endpoint_id}";
    Router::new()
        .route(&format!("{ep}/flow"), get(flow))
        .route(&format!("{ep}/ordering/blocked"), get(blocked))
        .route(&format!("{ep}/ordering/skip"), post(skip))
}

/// `EndpointFlowOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlowOut {
    /// The endpoint's `throttleRate`, else its application's; `null`: none.
    throttle_rate: Option<u32>,
    /// Attempts per second that may start now: the limit, lowered while the
    /// endpoint backs off; `null`: unbounded.
    allowed_rate: Option<f64>,
    /// Slowed down after congestion (429/502/503/504 without `Retry-After`,
    /// timeouts, connection errors); successes raise the rate back.
    backing_off: bool,
    /// No attempt starts before this (a `Retry-After`), if in the future.
    paused_until: Option<String>,
    pause_reason: Option<String>,
    /// Deliveries waiting for the rate limit or the pause.
    waiting: u64,
    /// Deliveries held behind an earlier message of their ordering key.
    held: u64,
    /// Attempts to it running on the node that answered.
    in_flight: usize,
    /// Its `maxInFlight`; `null`: the server's `--endpoint-concurrency`.
    max_in_flight: Option<u16>,
}

async fn flow(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
) -> ApiResult<Json<FlowOut>> {
    let ep = s.app_endpoint(&who, path).await?;
    let (view, in_flight): (FlowView, usize) = s.service.endpoint_flow(&ep).await?;
    Ok(Json(FlowOut {
        throttle_rate: view.limit,
        allowed_rate: view.allowed_rate,
        backing_off: view.backing_off,
        paused_until: view.paused_until.map(Timestamp::to_rfc3339),
        pause_reason: view.pause_reason,
        waiting: view.waiting,
        held: view.held,
        in_flight,
        max_in_flight: ep.max_in_flight,
    }))
}

/// `BlockedKeyOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BlockedKeyOut {
    /// The ordering key (`""`: a FIFO endpoint's one order).
    key: String,
    /// The message that failed for good and holds the key.
    msg_id: String,
    /// When it failed for good.
    blocked_since: String,
}

async fn blocked(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<BlockedKeyOut>>> {
    let ep = s.app_endpoint(&who, path).await?;
    let page = s.service.blocked_keys(&ep, &q.page(Order::Ascending)?).await?;
    Ok(Json(ListResponse::from_page(
        page,
        |b: &BlockedKey| b.key.clone(),
        |b| BlockedKeyOut { key: b.key, msg_id: b.head_msg_id, blocked_since: b.since.to_rfc3339() },
    )))
}

/// `OrderingSkipIn`.
#[derive(Deserialize)]
struct SkipIn {
    key: String,
}

impl Validate for SkipIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        // `""` names a FIFO endpoint's order; any other key is as sent.
        if !self.key.is_empty() {
            c.check(&["body", "key"], ordering::validate_key(&self.key));
        }
        c.finish()
    }
}

async fn skip(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    SvixJson(body): SvixJson<SkipIn>,
) -> ApiResult<StatusCode> {
    let ep = s.app_endpoint(&who, path).await?;
    s.service.skip_blocked_key(&ep, &body.key).await?;
    Ok(StatusCode::NO_CONTENT)
}
