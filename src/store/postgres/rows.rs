//! Row ↔ model mapping and error translation. The column lists are shared
//! with SQLite (`store::listing`), so every query that decodes a model
//! selects the same columns in the same order.
//!
//! Decoding never panics: a column of the wrong type, a JSON column that
//! does not parse or an integer out of its model's range is a `Backend`
//! error, since several binaries (maybe of other versions) share the data.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::domain::model::{
    App, Attempt, Delivery, DeliveryStatus, Endpoint, EventType, Message, Task, TraceContext, Trigger,
};
use crate::domain::ordering::OnFailure;
use crate::domain::retry::{RetryPolicy, RetryPolicyJson};
use crate::domain::time::Timestamp;
use crate::store::sealing::{self, Keyring};
use crate::store::{StoreError, StoreResult};

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// The text SQLite's store gives a uniqueness conflict it has no better
/// words for (a repeated primary key).
pub const GENERIC_CONFLICT: &str = "an object with this identifier already exists";

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if unique_violation(&e).is_some() {
            return StoreError::Conflict(GENERIC_CONFLICT.into());
        }
        StoreError::Backend(e.to_string())
    }
}

/// The constraint (or unique index) a unique violation broke, if `e` is one.
pub fn unique_violation(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            Some(db.constraint().unwrap_or(""))
        }
        _ => None,
    }
}

/// `e` as a store error, with `text` when it broke `constraint`.
pub fn conflict_on(e: sqlx::Error, constraint: &str, text: impl FnOnce() -> String) -> StoreError {
    match unique_violation(&e) {
        Some(c) if c == constraint => StoreError::Conflict(text()),
        _ => e.into(),
    }
}

pub fn to_json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("cannot encode JSON column: {e}")))
}

pub fn opt_json<T: Serialize>(v: &Option<T>) -> StoreResult<Option<String>> {
    v.as_ref().map(to_json).transpose()
}

pub fn retry_policy_json(p: &Option<RetryPolicy>) -> StoreResult<Option<String>> {
    opt_json(&p.as_ref().map(RetryPolicyJson::from))
}

/// PostgreSQL text cannot hold NUL characters, which a lossily decoded
/// response body may contain: they are stored as U+FFFD.
pub fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}").into() } else { s.into() }
}

pub fn opt_ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_millis)
}

/// Column `idx` of a row; a decoding failure is a `Backend` error.
pub fn col<'r, T>(row: &'r PgRow, idx: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    Ok(row.try_get(idx)?)
}

fn parse_json<T: DeserializeOwned>(s: &str, idx: usize) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("bad JSON in column {idx}: {e}")))
}

fn json_col<T: DeserializeOwned>(row: &PgRow, idx: usize) -> StoreResult<T> {
    parse_json(&col::<String>(row, idx)?, idx)
}

fn opt_json_col<T: DeserializeOwned>(row: &PgRow, idx: usize) -> StoreResult<Option<T>> {
    col::<Option<String>>(row, idx)?.map(|s| parse_json(&s, idx)).transpose()
}

fn ts(row: &PgRow, idx: usize) -> StoreResult<Timestamp> {
    col::<i64>(row, idx).map(Timestamp::from_millis)
}

fn opt_ts_col(row: &PgRow, idx: usize) -> StoreResult<Option<Timestamp>> {
    Ok(col::<Option<i64>>(row, idx)?.map(Timestamp::from_millis))
}

/// An INTEGER column narrowed to the model's type.
fn int<T: TryFrom<i32>>(row: &PgRow, idx: usize) -> StoreResult<T> {
    let v: i32 = col(row, idx)?;
    T::try_from(v).map_err(|_| StoreError::Backend(format!("column {idx}: {v} is out of range")))
}

fn opt_int<T: TryFrom<i32>>(row: &PgRow, idx: usize) -> StoreResult<Option<T>> {
    match col::<Option<i32>>(row, idx)? {
        None => Ok(None),
        Some(v) => T::try_from(v)
            .map(Some)
            .map_err(|_| StoreError::Backend(format!("column {idx}: {v} is out of range"))),
    }
}

pub fn status_code(code: i32) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::from_code(code.into())
        .ok_or_else(|| StoreError::Backend(format!("unknown delivery status {code}")))
}

fn status(row: &PgRow, idx: usize) -> StoreResult<DeliveryStatus> {
    status_code(col(row, idx)?)
}

/// A model's small integer (status, code, trigger) as bound to INTEGER.
pub fn int4(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub fn app(row: &PgRow, o: usize) -> StoreResult<App> {
    Ok(App {
        id: col(row, o)?,
        uid: col(row, o + 1)?,
        name: col(row, o + 2)?,
        metadata: json_col(row, o + 3)?,
        throttle_rate: opt_int(row, o + 4)?,
        created_at: ts(row, o + 5)?,
        updated_at: ts(row, o + 6)?,
    })
}

/// An endpoint with its secrets and credential headers opened with `keys`.
pub fn endpoint(row: &PgRow, o: usize, keys: &Keyring) -> StoreResult<Endpoint> {
    keys.open_endpoint(stored_endpoint(row, o)?)
}

/// An endpoint for listings and events: no secrets, no credential header
/// values.
pub fn endpoint_redacted(row: &PgRow, o: usize) -> StoreResult<Endpoint> {
    Ok(sealing::redacted(stored_endpoint(row, o)?))
}

fn stored_endpoint(row: &PgRow, o: usize) -> StoreResult<Endpoint> {
    Ok(Endpoint {
        id: col(row, o)?,
        app_id: col(row, o + 1)?,
        uid: col(row, o + 2)?,
        url: col(row, o + 3)?,
        description: col(row, o + 4)?,
        disabled: col(row, o + 5)?,
        event_types: opt_json_col(row, o + 6)?,
        channels: opt_json_col(row, o + 7)?,
        metadata: json_col(row, o + 8)?,
        headers: json_col(row, o + 9)?,
        throttle_rate: opt_int(row, o + 10)?,
        secret: col(row, o + 11)?,
        old_secrets: json_col(row, o + 12)?,
        retry_policy: opt_json_col::<RetryPolicyJson>(row, o + 13)?.map(RetryPolicy::from),
        failing_since: opt_ts_col(row, o + 14)?,
        created_at: ts(row, o + 15)?,
        updated_at: ts(row, o + 16)?,
        max_in_flight: opt_int(row, o + 17)?,
        fifo: col(row, o + 18)?,
        ordering_on_failure: {
            let text: String = col(row, o + 19)?;
            OnFailure::parse(&text)
                .ok_or_else(|| StoreError::Backend(format!("orderingOnFailure {text:?}")))?
        },
        disabled_at: opt_ts_col(row, o + 20)?,
    })
}

/// The endpoint's columns in `ENDPOINT_COLS` order, bound to `$1`…`$21`;
/// made from the endpoint as stored (`Keyring::seal_endpoint`).
pub struct EndpointValues {
    pub event_types: Option<String>,
    pub channels: Option<String>,
    pub metadata: String,
    pub headers: String,
    pub old_secrets: String,
    pub retry_policy: Option<String>,
}

impl EndpointValues {
    pub fn of(ep: &Endpoint) -> StoreResult<Self> {
        Ok(EndpointValues {
            event_types: opt_json(&ep.event_types)?,
            channels: opt_json(&ep.channels)?,
            metadata: to_json(&ep.metadata)?,
            headers: to_json(&ep.headers)?,
            old_secrets: to_json(&ep.old_secrets)?,
            retry_policy: retry_policy_json(&ep.retry_policy)?,
        })
    }

    pub fn bind<'q>(
        self,
        ep: &'q Endpoint,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&ep.id)
            .bind(&ep.app_id)
            .bind(&ep.uid)
            .bind(&ep.url)
            .bind(&ep.description)
            .bind(ep.disabled)
            .bind(self.event_types)
            .bind(self.channels)
            .bind(self.metadata)
            .bind(self.headers)
            .bind(ep.throttle_rate.map(i32::from))
            .bind(&ep.secret)
            .bind(self.old_secrets)
            .bind(self.retry_policy)
            .bind(opt_ts(ep.failing_since))
            .bind(ep.created_at.as_millis())
            .bind(ep.updated_at.as_millis())
            .bind(ep.max_in_flight.map(i32::from))
            .bind(ep.fifo)
            .bind(ep.ordering_on_failure.as_str())
            .bind(opt_ts(ep.disabled_at))
    }
}

pub fn message(row: &PgRow, o: usize) -> StoreResult<Message> {
    Ok(Message {
        id: col(row, o)?,
        app_id: col(row, o + 1)?,
        event_type: col(row, o + 2)?,
        event_id: col(row, o + 3)?,
        channels: opt_json_col(row, o + 4)?,
        tags: opt_json_col(row, o + 5)?,
        payload: col::<Option<String>>(row, o + 6)?.map(Bytes::from),
        created_at: ts(row, o + 7)?,
        deliver_at: opt_ts_col(row, o + 8)?,
        expires_at: opt_ts_col(row, o + 9)?,
        ordering_key: col(row, o + 10)?,
        trace: col::<Option<String>>(row, o + 11)?
            .map(|traceparent| TraceContext { traceparent, tracestate: col(row, o + 12).ok().flatten() }),
    })
}

pub fn delivery(row: &PgRow, o: usize) -> StoreResult<Delivery> {
    let status = status(row, o + 3)?;
    let leased = col::<Option<String>>(row, o + 6)?.is_some();
    Ok(Delivery {
        msg_id: col(row, o)?,
        endpoint_id: col(row, o + 1)?,
        app_id: col(row, o + 2)?,
        // A pending delivery that a dispatcher holds is being sent.
        status: if leased && status == DeliveryStatus::Pending { DeliveryStatus::Sending } else { status },
        attempts: int(row, o + 4)?,
        next_attempt: opt_ts_col(row, o + 5)?,
        updated_at: ts(row, o + 7)?,
        total_attempts: int(row, o + 8)?,
        last_code: opt_int(row, o + 9)?,
        last_attempt_at: opt_ts_col(row, o + 10)?,
        waiting_for: col(row, o + 11)?,
    })
}

pub fn attempt(row: &PgRow, o: usize) -> StoreResult<Attempt> {
    Ok(Attempt {
        id: col(row, o)?,
        msg_id: col(row, o + 1)?,
        endpoint_id: col(row, o + 2)?,
        app_id: col(row, o + 3)?,
        url: col(row, o + 4)?,
        status: status(row, o + 5)?,
        status_code: int(row, o + 6)?,
        response: col(row, o + 7)?,
        duration_ms: col(row, o + 8)?,
        trigger: Trigger::from_code(col::<i32>(row, o + 9)?.into()),
        error: col(row, o + 10)?,
        created_at: ts(row, o + 11)?,
    })
}

pub fn event_type(row: &PgRow, o: usize) -> StoreResult<EventType> {
    Ok(EventType {
        name: col(row, o)?,
        description: col(row, o + 1)?,
        archived: col(row, o + 2)?,
        deprecated: col(row, o + 3)?,
        schemas: opt_json_col(row, o + 4)?,
        group_name: col(row, o + 5)?,
        feature_flags: opt_json_col(row, o + 6)?,
        created_at: ts(row, o + 7)?,
        updated_at: ts(row, o + 8)?,
    })
}

pub fn task(row: &PgRow, o: usize) -> StoreResult<Task> {
    Ok(Task {
        id: col(row, o)?,
        kind: col(row, o + 1)?,
        status: col(row, o + 2)?,
        data: json_col(row, o + 3)?,
        created_at: ts(row, o + 4)?,
        updated_at: ts(row, o + 5)?,
    })
}
