//! Row ↔ model mapping. The column lists are shared with PostgreSQL
//! (`store::listing`), so every query that decodes a model selects the same
//! columns in the same order.

use bytes::Bytes;
use rusqlite::Row;
use rusqlite::types::{Type, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::model::{
    App, Attempt, Delivery, DeliveryStatus, Endpoint, EventType, Message, Task, TraceContext, Trigger,
};
use crate::domain::ordering::OnFailure;
use crate::domain::retry::{RetryPolicy, RetryPolicyJson};
use crate::domain::time::Timestamp;
use crate::store::StoreError;
use crate::store::sealing::{self, Keyring};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::ConstraintViolation
        {
            return StoreError::Conflict("an object with this identifier already exists".into());
        }
        StoreError::Backend(e.to_string())
    }
}

pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("models serialize")
}

pub fn opt_json<T: Serialize>(v: &Option<T>) -> Value {
    match v {
        Some(v) => Value::Text(to_json(v)),
        None => Value::Null,
    }
}

fn json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn opt_json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))),
    }
}

fn ts(row: &Row, idx: usize) -> rusqlite::Result<Timestamp> {
    row.get::<_, i64>(idx).map(Timestamp::from_millis)
}

fn opt_ts(row: &Row, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(Timestamp::from_millis))
}

pub fn opt_ts_value(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::Integer(t.as_millis()))
}

pub fn app(row: &Row, o: usize) -> rusqlite::Result<App> {
    Ok(App {
        id: row.get(o)?,
        uid: row.get(o + 1)?,
        name: row.get(o + 2)?,
        metadata: json_col(row, o + 3)?,
        throttle_rate: row.get(o + 4)?,
        created_at: ts(row, o + 5)?,
        updated_at: ts(row, o + 6)?,
    })
}

/// An endpoint with its secrets and credential headers opened with `keys`.
pub fn endpoint(row: &Row, o: usize, keys: &Keyring) -> rusqlite::Result<Endpoint> {
    keys.open_endpoint(stored_endpoint(row, o)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(o + 11, Type::Text, Box::new(e)))
}

/// An endpoint for listings: no secrets, no credential header values.
pub fn endpoint_redacted(row: &Row, o: usize) -> rusqlite::Result<Endpoint> {
    Ok(sealing::redacted(stored_endpoint(row, o)?))
}

fn stored_endpoint(row: &Row, o: usize) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: row.get(o)?,
        app_id: row.get(o + 1)?,
        uid: row.get(o + 2)?,
        url: row.get(o + 3)?,
        description: row.get(o + 4)?,
        disabled: row.get(o + 5)?,
        event_types: opt_json_col(row, o + 6)?,
        channels: opt_json_col(row, o + 7)?,
        metadata: json_col(row, o + 8)?,
        headers: json_col(row, o + 9)?,
        throttle_rate: row.get(o + 10)?,
        secret: row.get(o + 11)?,
        old_secrets: json_col(row, o + 12)?,
        retry_policy: opt_json_col::<RetryPolicyJson>(row, o + 13)?.map(RetryPolicy::from),
        failing_since: opt_ts(row, o + 14)?,
        created_at: ts(row, o + 15)?,
        updated_at: ts(row, o + 16)?,
        max_in_flight: row.get(o + 17)?,
        fifo: row.get(o + 18)?,
        ordering_on_failure: on_failure(row, o + 19)?,
        disabled_at: opt_ts(row, o + 20)?,
    })
}

fn on_failure(row: &Row, idx: usize) -> rusqlite::Result<OnFailure> {
    let text: String = row.get(idx)?;
    OnFailure::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("orderingOnFailure {text:?}").into(),
        )
    })
}

pub fn retry_policy_value(p: &Option<RetryPolicy>) -> Value {
    opt_json(&p.as_ref().map(RetryPolicyJson::from))
}

pub fn message(row: &Row, o: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(o)?,
        app_id: row.get(o + 1)?,
        event_type: row.get(o + 2)?,
        event_id: row.get(o + 3)?,
        channels: opt_json_col(row, o + 4)?,
        tags: opt_json_col(row, o + 5)?,
        payload: row.get::<_, Option<String>>(o + 6)?.map(Bytes::from),
        created_at: ts(row, o + 7)?,
        deliver_at: opt_ts(row, o + 8)?,
        expires_at: opt_ts(row, o + 9)?,
        ordering_key: row.get(o + 10)?,
        trace: row
            .get::<_, Option<String>>(o + 11)?
            .map(|traceparent| TraceContext { traceparent, tracestate: row.get(o + 12).ok().flatten() }),
    })
}

pub fn delivery(row: &Row, o: usize) -> rusqlite::Result<Delivery> {
    let status = status(row, o + 3)?;
    let leased = row.get::<_, Option<String>>(o + 6)?.is_some();
    Ok(Delivery {
        msg_id: row.get(o)?,
        endpoint_id: row.get(o + 1)?,
        app_id: row.get(o + 2)?,
        // A pending delivery that a dispatcher holds is being sent.
        status: if leased && status == DeliveryStatus::Pending { DeliveryStatus::Sending } else { status },
        attempts: row.get(o + 4)?,
        next_attempt: opt_ts(row, o + 5)?,
        updated_at: ts(row, o + 7)?,
        total_attempts: row.get(o + 8)?,
        last_code: row.get(o + 9)?,
        last_attempt_at: opt_ts(row, o + 10)?,
        waiting_for: row.get(o + 11)?,
    })
}

fn status(row: &Row, idx: usize) -> rusqlite::Result<DeliveryStatus> {
    let code: i64 = row.get(idx)?;
    DeliveryStatus::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(idx, code))
}

pub fn attempt(row: &Row, o: usize) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: row.get(o)?,
        msg_id: row.get(o + 1)?,
        endpoint_id: row.get(o + 2)?,
        app_id: row.get(o + 3)?,
        url: row.get(o + 4)?,
        status: status(row, o + 5)?,
        status_code: row.get(o + 6)?,
        response: row.get(o + 7)?,
        duration_ms: row.get(o + 8)?,
        trigger: Trigger::from_code(row.get(o + 9)?),
        error: row.get(o + 10)?,
        created_at: ts(row, o + 11)?,
    })
}

pub fn event_type(row: &Row, o: usize) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: row.get(o)?,
        description: row.get(o + 1)?,
        archived: row.get(o + 2)?,
        deprecated: row.get(o + 3)?,
        schemas: opt_json_col(row, o + 4)?,
        group_name: row.get(o + 5)?,
        feature_flags: opt_json_col(row, o + 6)?,
        created_at: ts(row, o + 7)?,
        updated_at: ts(row, o + 8)?,
    })
}

pub fn task(row: &Row, o: usize) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(o)?,
        kind: row.get(o + 1)?,
        status: row.get(o + 2)?,
        data: json_col(row, o + 3)?,
        created_at: ts(row, o + 4)?,
        updated_at: ts(row, o + 5)?,
    })
}
