//! `/api/v1/stats`: Svix's usage statistics, as background tasks that are
//! finished by the time the request returns (like Hookline's other tasks).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Principal, SvixJson, Validate};
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::Task;
use crate::domain::time::Timestamp;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/stats/usage/app", post(app_usage))
        .route("/api/v1/stats/usage/event-types", put(event_types))
}

/// Svix's `AppUsageStatsIn`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppUsageIn {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    #[serde(default)]
    app_ids: Option<Vec<String>>,
}

impl Validate for AppUsageIn {
    fn validate(&self) -> ApiResult<()> {
        if self.app_ids.as_ref().is_some_and(|ids| ids.len() > 1000) {
            return Err(ApiError::invalid(&["body", "appIds"], "at most 1000 applications"));
        }
        Ok(())
    }
}

/// Svix's `AppUsageStatsOut` (a task, plus the names that did not resolve).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppUsageOut {
    #[serde(flatten)]
    task: TaskHead,
    unresolved_app_ids: Vec<String>,
}

/// What Svix returns about a task it started: no `data` (read it with
/// `GET /api/v1/background-task/{id}`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHead {
    id: String,
    status: String,
    task: String,
    updated_at: String,
}

impl From<Task> for TaskHead {
    fn from(t: Task) -> Self {
        TaskHead { id: t.id, status: t.status, task: t.kind, updated_at: t.updated_at.to_rfc3339() }
    }
}

/// Messages per application in [since, until): the counts are in the
/// task's `data`.
async fn app_usage(
    State(s): State<ApiState>,
    who: Principal,
    SvixJson(body): SvixJson<AppUsageIn>,
) -> ApiResult<(StatusCode, Json<AppUsageOut>)> {
    who.require_admin()?;
    let (since, until) = (Timestamp::from_datetime(body.since), Timestamp::from_datetime(body.until));
    let (task, unresolved_app_ids) = s.service.app_usage_stats(since, until, body.app_ids).await?;
    Ok((StatusCode::ACCEPTED, Json(AppUsageOut { task: task.into(), unresolved_app_ids })))
}

/// The event types endpoints subscribe to, across all applications.
async fn event_types(State(s): State<ApiState>, who: Principal) -> ApiResult<(StatusCode, Json<TaskHead>)> {
    who.require_admin()?;
    let task = s.service.aggregate_event_types().await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}
