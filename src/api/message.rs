//! `/api/v1/app/{app_id}/msg`: sending and reading messages.
//!
//! The payload is kept as the exact JSON bytes the client sent (whitespace
//! and key order included): that is what receivers get and what they verify
//! signatures against.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::application::ApplicationIn;
use super::error::Checks;
use super::extract::{Principal, QueryParams, SvixJson, SvixPath, Validate};
use super::idempotency::REPLAYED;
use super::pagination::ListResponse;
use super::task::TaskOut;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::{Message, NameSet, NewMessage, Scope, unique_names};
use crate::domain::time::Timestamp;
use crate::domain::{filter, id, ordering, validate};
use crate::store::{Cursor, MessageFilter, Order};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/app/{app_id}/msg", get(list).post(create))
        .route("/api/v1/app/{app_id}/msg/{msg_id}", get(read))
        .route("/api/v1/app/{app_id}/msg/{msg_id}/content", delete(expunge))
        .route("/api/v1/app/{app_id}/msg/expunge-all-contents", post(expunge_all))
        .route("/api/v1/app/{app_id}/msg/bulk-expunge", post(bulk_expunge))
        .route("/api/v1/app/{app_id}/msg/expunge-by-tag", post(expunge_by_tag))
        .route("/api/v1/msg/expunge-by-tag", post(expunge_by_tag_everywhere))
        .route("/api/v1/app/{app_id}/msg/precheck/active", post(precheck))
        .route("/api/v1/app/{app_id}/events", get(events))
}

/// `{tag}`: erase the content of every message carrying this tag.
#[derive(Deserialize)]
struct ExpungeByTagIn {
    tag: String,
}

impl Validate for ExpungeByTagIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        c.check(&["body", "tag"], validate::name(&self.tag, validate::CHANNEL_MAX));
        c.finish()
    }
}

/// Hookline extension: erase the payloads and response bodies of the
/// application's messages tagged `tag` (erasure by subject).
async fn expunge_by_tag(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJson(body): SvixJson<ExpungeByTagIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let app = s.app(&who, &app_ref).await?;
    let task = s.service.expunge_by_tag(Some(&app), &body.tag).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

/// The same across every application (admin only).
async fn expunge_by_tag_everywhere(
    State(s): State<ApiState>,
    who: Principal,
    SvixJson(body): SvixJson<ExpungeByTagIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    who.require_admin()?;
    let task = s.service.expunge_by_tag(None, &body.tag).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

/// Svix's `MessagePrecheckIn`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrecheckIn {
    event_type: String,
    #[serde(default, deserialize_with = "unique_names")]
    channels: Option<NameSet>,
}

impl Validate for PrecheckIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        c.check(&["body", "eventType"], validate::name(&self.event_type, validate::EVENT_TYPE_MAX));
        if let Some(ch) = &self.channels {
            c.check(&["body", "channels"], validate::name_set(ch, validate::CHANNEL_MAX, 5));
        }
        c.finish()
    }
}

#[derive(Serialize)]
struct PrecheckOut {
    active: bool,
}

/// Would a message of this type (and channels) reach any enabled endpoint?
async fn precheck(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJson(body): SvixJson<PrecheckIn>,
) -> ApiResult<Json<PrecheckOut>> {
    let app = s.app(&who, &app_ref).await?;
    let endpoints = s.service.all_endpoints(&app.id).await?;
    let active = endpoints
        .iter()
        .any(|ep| !ep.disabled && filter::wants(ep, &body.event_type, body.channels.as_ref()));
    Ok(Json(PrecheckOut { active }))
}

/// Svix's `MessageEventsOut`: messages oldest first after `iterator`, and
/// the iterator to poll with next.
#[derive(Serialize)]
struct EventsOut {
    data: Vec<MessageOut>,
    done: bool,
    iterator: String,
}

/// Svix's `message.events`: read the application's messages as a stream,
/// from an iterator (a message id) onwards.
async fn events(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    q: QueryParams,
) -> ApiResult<Json<EventsOut>> {
    let app = s.app(&who, &app_ref).await?;
    let channels = q.list("channels").unwrap_or_default();
    if channels.len() > 1 {
        return Err(ApiError::invalid(
            &["query", "channels"],
            "Hookline filters events on one channel at a time",
        ));
    }
    let filter = MessageFilter {
        event_types: q.list("event_types"),
        channel: channels.into_iter().next().or(q.string("channel")),
        tag: q.string("tag"),
        before: q.timestamp("before")?,
        after: q.timestamp("after")?,
    };
    let mut page = q.page(Order::Ascending)?;
    page.order = Order::Ascending;
    let from = match page.cursor.take() {
        Some(Cursor::After(id)) | Some(Cursor::Before(id)) => Some(id),
        None => None,
    };
    page.cursor = from.clone().map(Cursor::After);
    let found = s.service.store.list_messages(&app.id, &filter, &page).await?;
    // With nothing new, keep polling from where the caller was (or from now).
    let iterator = found
        .items
        .last()
        .map(|m| m.id.clone())
        .or(from)
        .unwrap_or_else(|| id::new_id(id::MESSAGE, s.service.now()));
    Ok(Json(EventsOut {
        done: !found.more,
        data: found.items.into_iter().map(|m| MessageOut::new(m, true)).collect(),
        iterator,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIn {
    event_type: String,
    payload: Box<RawValue>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default, deserialize_with = "crate::domain::model::unique_names")]
    channels: Option<NameSet>,
    #[serde(default, deserialize_with = "crate::domain::model::unique_names")]
    tags: Option<NameSet>,
    #[serde(default)]
    application: Option<ApplicationIn>,
    #[serde(default)]
    deliver_at: Option<DateTime<Utc>>,
    /// Days to keep the payload (at most the server's retention).
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    payload_retention_period: Option<i64>,
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    payload_retention_hours: Option<i64>,
    /// Hookline extension: messages with the same key reach each endpoint
    /// in the order they were accepted.
    #[serde(default)]
    ordering_key: Option<String>,
}

impl MessageIn {
    fn retention(&self) -> Option<Duration> {
        let hours = self.payload_retention_hours.or(self.payload_retention_period.map(|d| d * 24))?;
        Some(Duration::from_secs(hours.max(1) as u64 * 3600))
    }
}

impl Validate for MessageIn {
    fn validate(&self) -> ApiResult<()> {
        let payload = self.payload.get();
        if payload.len() > super::payload_limit() {
            return Err(ApiError::payload_too_large(super::payload_limit()));
        }
        let mut c = Checks::default();
        c.check(&["body", "eventType"], validate::name(&self.event_type, validate::EVENT_TYPE_MAX));
        if !payload.trim_start().starts_with('{') {
            c.check(&["body", "payload"], Err("must be a JSON object".into()));
        }
        if let Some(id) = &self.event_id {
            c.check(&["body", "eventId"], validate::name(id, validate::UID_MAX));
        }
        if let Some(ch) = &self.channels {
            c.check(&["body", "channels"], validate::name_set(ch, validate::CHANNEL_MAX, 5));
        }
        if let Some(tags) = &self.tags {
            c.check(&["body", "tags"], validate::name_set(tags, validate::CHANNEL_MAX, 5));
        }
        if self.payload_retention_period.is_some_and(|d| !(1..=90).contains(&d)) {
            c.check(&["body", "payloadRetentionPeriod"], Err("must be between 1 and 90 days".into()));
        }
        if let Some(key) = &self.ordering_key {
            c.check(&["body", "orderingKey"], ordering::validate_key(key));
        }
        if self.payload_retention_hours.is_some_and(|h| !(1..=90 * 24).contains(&h)) {
            c.check(&["body", "payloadRetentionHours"], Err("must be between 1 and 2160 hours".into()));
        }
        c.finish()?;
        if let Some(app) = &self.application {
            app.validate()?;
        }
        Ok(())
    }
}

/// A message as Svix renders it; shared with the attempt listings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    id: String,
    event_type: String,
    event_id: Option<String>,
    payload: Box<RawValue>,
    channels: Option<NameSet>,
    tags: Option<NameSet>,
    timestamp: String,
    deliver_at: Option<String>,
    /// Hookline extension (absent when the message has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
}

impl MessageOut {
    /// `with_content = false` renders the payload as `{}` (Svix does the
    /// same; the SDKs ask for that by default on listings).
    pub fn new(m: Message, with_content: bool) -> Self {
        let payload = match (&m.payload, with_content) {
            (Some(bytes), true) => raw_json(bytes),
            _ => raw_json(&Bytes::from_static(b"{}")),
        };
        MessageOut {
            id: m.id,
            event_type: m.event_type,
            event_id: m.event_id,
            payload,
            channels: m.channels,
            tags: m.tags,
            timestamp: m.created_at.to_rfc3339(),
            deliver_at: m.deliver_at.map(Timestamp::to_rfc3339),
            ordering_key: m.ordering_key,
        }
    }
}

fn raw_json(bytes: &Bytes) -> Box<RawValue> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}

async fn create(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    q: QueryParams,
    headers: HeaderMap,
    SvixJson(body): SvixJson<MessageIn>,
) -> ApiResult<(StatusCode, [(&'static str, &'static str); 1], Json<MessageOut>)> {
    // Admin tokens skip the pre-read: the store resolves the app in the
    // same transaction as the insert.
    if who.0 != Scope::Admin {
        s.app(&who, &app_ref).await?;
    }
    let with_content = q.bool("with_content", true)?;
    // Extension: `deliver=false` stores the message without sending it
    // (what `hookline import` brings over is history, already delivered).
    let deliver = q.bool("deliver", true)?;
    let retention = body.retention();
    let new = NewMessage {
        event_type: body.event_type,
        event_id: body.event_id,
        channels: body.channels,
        tags: body.tags,
        payload: Bytes::from(body.payload.get().to_owned()),
        deliver_at: body.deliver_at.map(Timestamp::from_datetime),
        create_app: body.application.map(ApplicationIn::into_spec),
        retention,
        ordering_key: body.ordering_key,
        trace: crate::traces::context::for_new_message(&headers),
    };
    // Also stored with the message, so even a retry after a crash between
    // the commit and the response cannot create a second message.
    let key = super::idempotency::key_of(&headers);
    let accepted = match deliver {
        true => s.service.create_message(&app_ref, new, key).await,
        false => s.service.import_message(&app_ref, new).await,
    };
    let accepted = accepted.map_err(|e| match e {
        crate::service::ServiceError::NotFound => ApiError::not_found("Application"),
        other => other.into(),
    })?;
    let replayed = [(REPLAYED, if accepted.replayed { "true" } else { "false" })];
    Ok((StatusCode::ACCEPTED, replayed, Json(MessageOut::new((*accepted.message).clone(), with_content))))
}

async fn list(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    let app = s.app(&who, &app_ref).await?;
    let filter = MessageFilter {
        event_types: q.list("event_types"),
        channel: q.string("channel"),
        tag: q.string("tag"),
        before: q.timestamp("before")?,
        after: q.timestamp("after")?,
    };
    let with_content = q.bool("with_content", true)?;
    let page = s.service.store.list_messages(&app.id, &filter, &q.page(Order::Descending)?).await?;
    Ok(Json(ListResponse::from_page(page, |m| m.id.clone(), |m| MessageOut::new(m, with_content))))
}

async fn read(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, msg_ref)): SvixPath<(String, String)>,
    q: QueryParams,
) -> ApiResult<Json<MessageOut>> {
    let app = s.app(&who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    Ok(Json(MessageOut::new(msg, q.bool("with_content", true)?)))
}

async fn expunge(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath((app_ref, msg_ref)): SvixPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = s.app(&who, &app_ref).await?;
    let msg = s.message(&app, &msg_ref).await?;
    s.service.expunge_message(&app.id, &msg.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Erase every payload and response body of the application now.
async fn expunge_all(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let app = s.app(&who, &app_ref).await?;
    let task = s.service.expunge_app(&app).await?;
    Ok((StatusCode::ACCEPTED, Json(task.into())))
}

#[derive(Deserialize)]
struct BulkExpungeIn {
    /// As sent: the limit counts repeats too (each is answered once).
    #[serde(default)]
    ids: Option<Vec<String>>,
}

impl Validate for BulkExpungeIn {
    fn validate(&self) -> ApiResult<()> {
        match &self.ids {
            Some(ids) if ids.len() > 1000 => Err(ApiError::invalid(&["body", "ids"], "at most 1000 ids")),
            _ => Ok(()),
        }
    }
}

#[derive(Serialize)]
struct BulkExpungeOut {
    results: BTreeMap<String, &'static str>,
}

async fn bulk_expunge(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJson(body): SvixJson<BulkExpungeIn>,
) -> ApiResult<Json<BulkExpungeOut>> {
    let app = s.app(&who, &app_ref).await?;
    let mut results = BTreeMap::new();
    for msg_ref in body.ids.unwrap_or_default().into_iter().collect::<BTreeSet<_>>() {
        let found = s.service.store.get_message(&app.id, &msg_ref).await?;
        let outcome = match found {
            Some(m) => {
                s.service.expunge_message(&app.id, &m.id).await?;
                "expunged"
            }
            None => "not-found",
        };
        results.insert(msg_ref, outcome);
    }
    Ok(Json(BulkExpungeOut { results }))
}
