//! Erasing content: on request (a message, an attempt, a whole
//! application) and by retention age. Metadata stays; payloads and
//! response bodies go.

use rusqlite::Connection;

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

pub fn expunge_attempt(c: &Connection, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
    match c
        .prepare_cached("UPDATE attempts SET response = '' WHERE msg_id = ? AND id = ? AND app_id = ?")?
        .execute([msg_id, attempt_id, app_id])?
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

/// Erase expired payloads, and response bodies of attempts made before
/// `attempts_before`. Both use partial indexes that hold only rows with
/// content left, so each run touches what is due and nothing else.
pub fn expunge_expired(
    c: &Connection,
    now: Timestamp,
    attempts_before: Timestamp,
) -> StoreResult<(u64, u64)> {
    let payloads = c
        .prepare_cached("UPDATE messages SET payload = NULL WHERE payload IS NOT NULL AND expires_at <= ?")?
        .execute([now.as_millis()])?;
    let bodies = c
        .prepare_cached("UPDATE attempts SET response = '' WHERE response != '' AND created_at < ?")?
        .execute([attempts_before.as_millis()])?;
    c.prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?")?.execute([now.as_millis()])?;
    Ok((payloads as u64, bodies as u64))
}
