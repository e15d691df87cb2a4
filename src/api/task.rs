//! `/api/v1/background-task`: results of bulk operations (recover, replay,
//! bulk replay, content purge). Hookline runs them inside one transaction,
//! so they are `finished` by the time the request that started them returns.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::extract::{Principal, QueryParams, SvixPath};
use super::pagination::ListResponse;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::Task;
use crate::store::Order;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/background-task", get(list))
        .route("/api/v1/background-task/{task_id}", get(read))
}

/// Svix's `BackgroundTaskOut`; the recover/replay responses are the same
/// minus `data`. Extension: `count`, what the task touched.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOut {
    id: String,
    status: String,
    task: String,
    data: serde_json::Value,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

impl From<Task> for TaskOut {
    fn from(t: Task) -> Self {
        TaskOut {
            count: t.data.get("count").and_then(serde_json::Value::as_u64),
            id: t.id,
            status: t.status,
            task: t.kind,
            data: t.data,
            updated_at: t.updated_at.to_rfc3339(),
        }
    }
}

async fn list(
    State(s): State<ApiState>,
    who: Principal,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<TaskOut>>> {
    who.require_admin()?;
    let page = s.service.store.list_tasks(&q.page(Order::Descending)?).await?;
    Ok(Json(ListResponse::from_page(page, |t| t.id.clone(), TaskOut::from)))
}

async fn read(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
) -> ApiResult<Json<TaskOut>> {
    who.require_admin()?;
    let task = s.service.store.get_task(&id).await?.ok_or_else(|| ApiError::not_found("Background task"))?;
    Ok(Json(task.into()))
}
