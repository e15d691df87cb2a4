//! Sending an endpoint's messages again, and the numbers that tell you
//! whether to: recover (failed deliveries), replay-missing (messages it
//! never got), bulk-replay (any settled deliveries by filter, with a dry-run
//! count), send-example, stats.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Principal, QueryParams, SvixJson, SvixPath, Validate};
use super::message::MessageOut;
use super::task::TaskOut;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::{DeliveryStatus, NameSet};
use crate::domain::time::Timestamp;
use crate::domain::validate;
use crate::service::ReplayRequest;
use crate::store::{AttemptFilter, RequeueFilter};

pub fn routes() -> Router<ApiState> {
    let ep = "/api/v1/app/{app_id}/endpoint/{endpoint_id}";
    Router::new()
        .route(&format!("{ep}/recover"), post(recover))
        .route(&format!("{ep}/replay-missing"), post(replay_missing))
        .route(&format!("{ep}/bulk-replay"), post(bulk_replay))
        .route(&format!("{ep}/send-example"), post(send_example))
        .route(&format!("{ep}/stats"), get(stats))
        .route(&format!("{ep}/attempt-stats"), get(attempt_stats))
}

/// `{since, until?}`: Svix's `RecoverIn` and `ReplayIn`.
#[derive(Deserialize)]
struct RangeIn {
    since: DateTime<Utc>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

impl RangeIn {
    fn bounds(&self) -> (Timestamp, Option<Timestamp>) {
        (Timestamp::from_datetime(self.since), self.until.map(Timestamp::from_datetime))
    }
}

/// An `until` at or before `since` is an empty range (nothing to send),
/// not an error: JSON Schema cannot say one field must follow another.
impl Validate for RangeIn {
    fn validate(&self) -> ApiResult<()> {
        Ok(())
    }
}

/// How far back a recover may reach, as in Svix (plus five minutes, so
/// `now - 14 days` computed on a client whose clock runs a little behind
/// is still accepted).
const RECOVER_WINDOW: Duration = Duration::from_secs(14 * 86_400 + 5 * 60);

async fn recover(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    SvixJson(body): SvixJson<RangeIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let ep = s.app_endpoint(&who, path).await?;
    let (since, until) = body.bounds();
    if since < s.service.now().minus(RECOVER_WINDOW) {
        return Err(ApiError::invalid(&["body", "since"], "Cannot recover messages more than 14 days old."));
    }
    let task = s.service.recover(&ep, since, until).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

/// Svix's `ReplayIn`, plus the extension `dryRun`: count (in the task's
/// data), send nothing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplayMissingIn {
    #[serde(flatten)]
    range: RangeIn,
    #[serde(default)]
    dry_run: bool,
}

impl Validate for ReplayMissingIn {
    fn validate(&self) -> ApiResult<()> {
        self.range.validate()
    }
}

async fn replay_missing(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    SvixJson(body): SvixJson<ReplayMissingIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let ep = s.app_endpoint(&who, path).await?;
    let (since, until) = body.range.bounds();
    let task = s.service.replay_missing(&ep, since, until, body.dry_run).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

/// Svix's `BulkReplayIn`, plus the extension `dryRun`: count, change nothing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkReplayIn {
    since: DateTime<Utc>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "crate::domain::model::unique_names")]
    event_types: Option<NameSet>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    /// Svix `MessageStatus`: 0 success, 1 pending, 2 fail.
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    status: Option<i64>,
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    status_code_class: Option<u16>,
    #[serde(default)]
    dry_run: bool,
}

impl Validate for BulkReplayIn {
    fn validate(&self) -> ApiResult<()> {
        if let Some(status) = self.status
            && !matches!(
                DeliveryStatus::from_code(status),
                Some(DeliveryStatus::Success | DeliveryStatus::Fail)
            )
        {
            return Err(ApiError::invalid(&["body", "status"], "must be 0 (success) or 2 (fail)"));
        }
        if let Some(class) = self.status_code_class
            && !matches!(class, 0 | 100 | 200 | 300 | 400 | 500)
        {
            return Err(ApiError::invalid(
                &["body", "statusCodeClass"],
                "must be 0, 100, 200, 300, 400 or 500",
            ));
        }
        if let Some(types) = &self.event_types
            && let Err(e) = validate::name_set(types, validate::EVENT_TYPE_MAX, 1000)
        {
            return Err(ApiError::invalid(&["body", "eventTypes"], e));
        }
        RangeIn { since: self.since, until: self.until }.validate()
    }
}

async fn bulk_replay(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    SvixJson(body): SvixJson<BulkReplayIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let ep = s.app_endpoint(&who, path).await?;
    let filter = RequeueFilter {
        since: Timestamp::from_datetime(body.since),
        until: body.until.map(Timestamp::from_datetime),
        statuses: body.status.and_then(DeliveryStatus::from_code).map(|s| vec![s]),
        event_types: body.event_types.map(|t| t.into_iter().collect()),
        channel: body.channel,
        tag: body.tag,
        status_code_class: body.status_code_class,
        msg_ids: None,
    };
    let (task, _) = s.service.bulk_replay(&ep, &ReplayRequest { filter, dry_run: body.dry_run }).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExampleIn {
    event_type: String,
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    example_index: Option<u64>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

impl Validate for ExampleIn {
    fn validate(&self) -> ApiResult<()> {
        validate::name(&self.event_type, validate::EVENT_TYPE_MAX)
            .map_err(|e| ApiError::invalid(&["body", "eventType"], e))?;
        match &self.payload {
            Some(p) if !p.is_object() => {
                Err(ApiError::invalid(&["body", "payload"], "must be a JSON object"))
            }
            _ => Ok(()),
        }
    }
}

async fn send_example(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    SvixJson(body): SvixJson<ExampleIn>,
) -> ApiResult<Json<MessageOut>> {
    let ep = s.app_endpoint(&who, path).await?;
    let index = body.example_index.unwrap_or(0) as usize;
    let msg = s.service.send_example(&ep, &body.event_type, index, body.payload).await?;
    Ok(Json(MessageOut::new((*msg).clone(), true)))
}

#[derive(Serialize)]
struct StatsOut {
    success: u64,
    pending: u64,
    sending: u64,
    fail: u64,
    canceled: u64,
}

/// Deliveries by status for messages created in [since, until) (default:
/// the last 28 days).
async fn stats(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<StatsOut>> {
    let ep = s.app_endpoint(&who, path).await?;
    let since = q.timestamp("since")?.unwrap_or(s.service.now().minus(Duration::from_secs(28 * 86_400)));
    let until = q.timestamp("until")?;
    let c = s.service.store.endpoint_stats(&ep.app_id, &ep.id, Some(since), until).await?;
    Ok(Json(StatsOut {
        success: c.success,
        pending: c.pending,
        sending: c.sending,
        fail: c.fail,
        canceled: 0,
    }))
}

/// Svix's `EndpointAttemptStats`: the endpoint's attempts made in
/// [since, until) by outcome (default: the last 28 days). Hookline never
/// cancels an attempt, so `canceled` is 0.
#[derive(Serialize)]
struct AttemptStatsOut {
    success: u64,
    fail: u64,
    canceled: u64,
}

async fn attempt_stats(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<AttemptStatsOut>> {
    let ep = s.app_endpoint(&who, path).await?;
    let since = q.timestamp("since")?.unwrap_or(s.service.now().minus(Duration::from_secs(28 * 86_400)));
    let filter = |status| AttemptFilter {
        endpoint_id: Some(ep.id.clone()),
        status: Some(status),
        // `after` is exclusive; since is not.
        after: Some(since.minus(Duration::from_millis(1))),
        before: None,
        ..Default::default()
    };
    let until = q.timestamp("until")?;
    let count = |status| {
        let f = AttemptFilter { before: until, ..filter(status) };
        let store = &s.service.store;
        let app_id = ep.app_id.clone();
        async move { store.count_attempts(&app_id, &f).await }
    };
    Ok(Json(AttemptStatsOut {
        success: count(DeliveryStatus::Success).await?,
        fail: count(DeliveryStatus::Fail).await?,
        canceled: 0,
    }))
}
