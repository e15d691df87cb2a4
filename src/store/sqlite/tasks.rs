//! Background task records and idempotency keys.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, TASK_COLS, to_json};
use super::sql::Select;
use crate::domain::model::Task;
use crate::domain::time::Timestamp;
use crate::store::{IdempotencyBegin, Page, PageRequest, StoreResult, StoredResponse};

pub fn insert(c: &Connection, t: &Task) -> StoreResult<()> {
    c.prepare_cached(&format!("INSERT INTO tasks ({TASK_COLS}) VALUES (?, ?, ?, ?, ?, ?)"))?.execute(params![
        t.id,
        t.kind,
        t.status,
        to_json(&t.data),
        t.created_at.as_millis(),
        t.updated_at.as_millis(),
    ])?;
    Ok(())
}

pub fn get(c: &Connection, id: &str) -> StoreResult<Option<Task>> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::task(r, 0)).optional()?)
}

pub fn list(c: &Connection, page: &PageRequest) -> StoreResult<Page<Task>> {
    Select::new(format!("SELECT {TASK_COLS} FROM tasks")).page(c, "id", page, |r| rows::task(r, 0))
}

pub fn idempotency_begin(
    c: &Connection,
    key: &str,
    now: Timestamp,
    lock_until: Timestamp,
) -> StoreResult<IdempotencyBegin> {
    // (done, expires_at, the stored response when done)
    let row: Option<(bool, i64, StoredResponse)> = c
        .prepare_cached("SELECT done, expires_at, status, content_type, body FROM idempotency WHERE key = ?")?
        .query_row([key], |r| {
            let response = StoredResponse {
                status: r.get::<_, Option<u16>>(2)?.unwrap_or(200),
                content_type: r.get(3)?,
                body: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
            };
            Ok((r.get(0)?, r.get(1)?, response))
        })
        .optional()?;
    match row {
        Some((true, expires, response)) if expires > now.as_millis() => {
            return Ok(IdempotencyBegin::Done(response));
        }
        // Someone holds the key and their lock has not lapsed.
        Some((false, expires, _)) if expires > now.as_millis() => return Ok(IdempotencyBegin::InProgress),
        _ => {}
    }
    c.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, done, status, content_type, body, expires_at)
         VALUES (?, 0, NULL, NULL, NULL, ?)",
    )?
    .execute(params![key, lock_until.as_millis()])?;
    Ok(IdempotencyBegin::Started)
}

pub fn idempotency_finish(
    c: &Connection,
    key: &str,
    response: &StoredResponse,
    expires_at: Timestamp,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, done, status, content_type, body, expires_at)
         VALUES (?, 1, ?, ?, ?, ?)",
    )?
    .execute(params![
        key,
        response.status,
        response.content_type,
        response.body,
        expires_at.as_millis()
    ])?;
    Ok(())
}

pub fn idempotency_abort(c: &Connection, key: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM idempotency WHERE key = ? AND done = 0")?.execute([key])?;
    Ok(())
}
