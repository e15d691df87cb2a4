//! Erasing content: on request (a message, an attempt, a whole
//! application) and by retention age. Metadata stays; payloads and
//! response bodies go.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::id;
use crate::domain::time::Timestamp;
use crate::store::{StoreError, StoreResult};

pub fn expunge_message(c: &Connection, app_id: &str, msg_id: &str) -> StoreResult<()> {
    match c
        .prepare_cached("UPDATE messages SET payload = NULL WHERE app_id = ? AND id = ?")?
        .execute([app_id, msg_id])?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub fn expunge_attempt(c: &Connection, app_id: &str, attempt_id: &str) -> StoreResult<()> {
    match c
        .prepare_cached("UPDATE attempts SET response = '' WHERE app_id = ? AND id = ?")?
        .execute([app_id, attempt_id])?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub fn expunge_app_content(c: &Connection, app_id: &str) -> StoreResult<u64> {
    let n = c
        .prepare_cached("UPDATE messages SET payload = NULL WHERE app_id = ? AND payload IS NOT NULL")?
        .execute([app_id])?;
    c.prepare_cached("UPDATE attempts SET response = '' WHERE app_id = ? AND response != ''")?
        .execute([app_id])?;
    Ok(n as u64)
}

const ATTEMPT_WATERMARK: &str = "retention.attempts_before";

/// Erase expired payloads, and response bodies of attempts made before
/// `attempts_before`. Attempt ids sort by creation time, so the attempts to
/// erase are an id range: each run only walks the ids since the last run.
pub fn expunge_expired(
    c: &Connection,
    now: Timestamp,
    attempts_before: Timestamp,
) -> StoreResult<(u64, u64)> {
    let payloads = c
        .prepare_cached("UPDATE messages SET payload = NULL WHERE payload IS NOT NULL AND expires_at <= ?")?
        .execute([now.as_millis()])?;

    let upper = id::floor(id::ATTEMPT, attempts_before);
    let lower: String = c
        .prepare_cached("SELECT value FROM meta WHERE key = ?")?
        .query_row([ATTEMPT_WATERMARK], |r| r.get(0))
        .optional()?
        .unwrap_or_default();
    let mut bodies = 0;
    if upper > lower {
        bodies = c
            .prepare_cached("UPDATE attempts SET response = '' WHERE id >= ? AND id < ? AND response != ''")?
            .execute([&lower, &upper])?;
        c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")?
            .execute(params![ATTEMPT_WATERMARK, upper])?;
    }
    c.prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?")?.execute([now.as_millis()])?;
    Ok((payloads as u64, bodies as u64))
}
