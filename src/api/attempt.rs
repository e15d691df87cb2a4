//! Message attempts: the attempt log, where each message went, and resend.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::endpoint::EndpointOut;
use super::extract::{Principal, QueryParams, SvixPath};
use super::message::MessageOut;
use super::pagination::ListResponse;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::{Attempt, Delivery, DeliveryStatus};
use crate::domain::time::Timestamp;
use crate::store::{AttemptFilter, DeliveryFilter, Order};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/app/{app_id}/attempt/msg/{msg_id}", get(list_by_message))
        .route("/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}", get(list_by_endpoint))
        .route("/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}", get(read))
        .route("/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content", delete(expunge))
        .route("/api/v1/app/{app_id}/msg/{msg_id}/endpoint", get(destinations))
        .route("/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg", get(endpoint_messages))
        .route("/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend", post(resend))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptOut {
    id: String,
    msg_id: String,
    endpoint_id: String,
    url: String,
    response: String,
    response_status_code: u16,
    response_duration_ms: i64,
    status: i64,
    status_text: &'static str,
    trigger_type: i64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<MessageOut>,
    /// Hookline extension: why no response arrived (timeout, connection
    /// refused, TLS, refused target); `null` when one did.
    error: Option<String>,
}

impl AttemptOut {
    fn new(a: Attempt, with_content: bool) -> Self {
        AttemptOut {
            id: a.id,
            msg_id: a.msg_id,
            endpoint_id: a.endpoint_id,
            url: a.url,
            response: if with_content { a.response } else { String::new() },
            response_status_code: a.status_code,
            response_duration_ms: a.duration_ms,
            status: a.status.code(),
            status_text: a.status.as_str(),
            trigger_type: a.trigger.code(),
            timestamp: a.created_at.to_rfc3339(),
            msg: None,
            error: a.error,
        }
    }
}

/// Delivery state as it appears on destinations and endpoint messages.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryOut {
    status: i64,
    status_text: &'static str,
    next_attempt: Option<String>,
    /// Hookline extension: held back behind this earlier message of its
    /// ordering key (issue 18); absent when not held.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<String>,
}

impl From<&Delivery> for DeliveryOut {
    fn from(d: &Delivery) -> Self {
        DeliveryOut {
            status: d.status.code(),
            status_text: d.status.as_str(),
            next_attempt: match d.status {
                DeliveryStatus::Success | DeliveryStatus::Fail => None,
                _ => d.next_attempt.map(Timestamp::to_rfc3339),
            },
            waiting_for: d.waiting_for.clone(),
        }
    }
}

#[derive(Serialize)]
struct WithDelivery<T> {
    #[serde(flatten)]
    item: T,
    #[serde(flatten)]
    delivery: DeliveryOut,
}

fn attempt_filter(q: &QueryParams) -> ApiResult<AttemptFilter> {
    Ok(AttemptFilter {
        status: q.status("status")?,
        status_code_class: q.status_code_class()?,
        event_types: q.list("event_types"),
        channel: q.string("channel"),
        before: q.timestamp("before")?,
        after: q.timestamp("after")?,
        ..Default::default()
    })
}

async fn list_by_message(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, msg_ref)): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    let app = s.app(&who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    let mut filter = attempt_filter(&q)?;
    filter.msg_id = Some(msg.id);
    if let Some(ep_ref) = q.string("endpoint_id") {
        filter.endpoint_id = Some(s.endpoint(&app, &ep_ref).await?.id);
    }
    let with_content = q.bool("with_content", true)?;
    let page = s.service.store.list_attempts(&app.id, &filter, &q.page(Order::Descending)?).await?;
    Ok(Json(ListResponse::from_page(page, |a| a.id.clone(), |a| AttemptOut::new(a, with_content))))
}

async fn list_by_endpoint(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, ep_ref)): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    let app = s.app(&who, &app_ref).await?;
    let ep = s.endpoint(&app, &ep_ref).await?;
    let mut filter = attempt_filter(&q)?;
    filter.endpoint_id = Some(ep.id);
    let with_content = q.bool("with_content", true)?;
    let with_msg = q.bool("with_msg", false)?;
    let page = s.service.store.list_attempts(&app.id, &filter, &q.page(Order::Descending)?).await?;
    let mut out = ListResponse::from_page(page, |a| a.id.clone(), |a| AttemptOut::new(a, with_content));
    if with_msg {
        // Message details without payloads, as in Svix.
        for attempt in &mut out.data {
            if let Some(m) = s.service.store.get_message(&app.id, &attempt.msg_id).await? {
                attempt.msg = Some(MessageOut::new(m, false));
            }
        }
    }
    Ok(Json(out))
}

async fn read(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String, String)>,
) -> ApiResult<Json<AttemptOut>> {
    let (_, attempt) = find(&s, &who, path).await?;
    Ok(Json(AttemptOut::new(attempt, true)))
}

/// The attempt `(app, msg, attempt)` names, if the caller may see it.
async fn find(
    s: &ApiState,
    who: &Principal,
    (app_ref, msg_ref, attempt_id): (String, String, String),
) -> ApiResult<(String, Attempt)> {
    let app = s.app(who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    let attempt = s
        .service
        .store
        .get_attempt(&app.id, &msg.id, &attempt_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Attempt"))?;
    Ok((app.id, attempt))
}

/// Erase the attempt's response body.
async fn expunge(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(path): SvixPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let (app_id, attempt) = find(&s, &who, path).await?;
    s.service.expunge_attempt(&app_id, &attempt.msg_id, &attempt.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a message went: each endpoint with its delivery status and next
/// attempt time.
async fn destinations(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, msg_ref)): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<WithDelivery<EndpointOut>>>> {
    let app = s.app(&who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    let page = s.service.store.list_message_deliveries(&app.id, &msg.id, &q.page(Order::Ascending)?).await?;
    Ok(Json(ListResponse::from_page(
        page,
        |(d, _)| d.endpoint_id.clone(),
        |(d, e)| WithDelivery { delivery: DeliveryOut::from(&d), item: EndpointOut::from(e) },
    )))
}

/// An endpoint's messages, each with its delivery status and next attempt.
async fn endpoint_messages(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, ep_ref)): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<WithDelivery<MessageOut>>>> {
    let app = s.app(&who, &app_ref).await?;
    let ep = s.endpoint(&app, &ep_ref).await?;
    let filter = DeliveryFilter {
        status: q.status("status")?,
        event_types: q.list("event_types"),
        channel: q.string("channel"),
        before: q.timestamp("before")?,
        after: q.timestamp("after")?,
    };
    let with_content = q.bool("with_content", true)?;
    let page = s
        .service
        .store
        .list_endpoint_deliveries(&app.id, &ep.id, &filter, &q.page(Order::Descending)?)
        .await?;
    Ok(Json(ListResponse::from_page(
        page,
        |(d, _)| d.msg_id.clone(),
        |(d, m)| WithDelivery { delivery: DeliveryOut::from(&d), item: MessageOut::new(m, with_content) },
    )))
}

#[derive(Serialize)]
struct Empty {}

/// Send the message to the endpoint again now, as a manual attempt.
async fn resend(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, msg_ref, ep_ref)): SvixPath<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<Empty>)> {
    let app = s.app(&who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    let ep = s.endpoint(&app, &ep_ref).await?;
    s.service.resend(msg, ep).await?;
    Ok((StatusCode::ACCEPTED, Json(Empty {})))
}
