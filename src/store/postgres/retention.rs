//! Erasing content: on request (a message, an attempt, a whole
//! application) and by retention age. Metadata stays; payloads and
//! response bodies go.

use async_trait::async_trait;

use super::PgStore;
use super::rows::col;
use crate::domain::time::Timestamp;
use crate::store::{RetentionStore, StoreError, StoreResult};

#[async_trait]
impl RetentionStore for PgStore {
    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        let n = sqlx::query("UPDATE messages SET payload = NULL WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(msg_id)
            .execute(&self.pool)
            .await?;
        if n.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let n =
            sqlx::query("UPDATE attempts SET response = '' WHERE app_id = $1 AND msg_id = $2 AND id = $3")
                .bind(app_id)
                .bind(msg_id)
                .bind(attempt_id)
                .execute(&self.pool)
                .await?;
        if n.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Both tables in one statement, so the erasure is all or nothing.
    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "WITH m AS (
                UPDATE messages SET payload = NULL WHERE app_id = $1 AND payload IS NOT NULL RETURNING 1
             ), t AS (
                UPDATE attempts SET response = '' WHERE app_id = $1 AND response <> '' RETURNING 1
             )
             SELECT count(*) FROM m",
        )
        .bind(app_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// Both tables in one statement, so the erasure is all or nothing.
    async fn expunge_messages(&self, app_id: &str, msg_ids: &[String]) -> StoreResult<(u64, u64)> {
        let row = sqlx::query(
            "WITH m AS (
                UPDATE messages SET payload = NULL
                WHERE app_id = $1 AND id = ANY($2) AND payload IS NOT NULL RETURNING 1
             ), t AS (
                UPDATE attempts SET response = ''
                WHERE app_id = $1 AND msg_id = ANY($2) AND response <> '' RETURNING 1
             )
             SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM t)",
        )
        .bind(app_id)
        .bind(msg_ids)
        .fetch_one(&self.pool)
        .await?;
        Ok((col::<i64>(&row, 0)?.max(0) as u64, col::<i64>(&row, 1)?.max(0) as u64))
    }

    /// Erase expired payloads, and response bodies of attempts made before
    /// `attempts_before`; drop lapsed idempotency records. Both erasures use
    /// partial indexes that hold only rows with content left, so each run
    /// touches what is due and nothing else.
    async fn expunge_expired(&self, now: Timestamp, attempts_before: Timestamp) -> StoreResult<(u64, u64)> {
        let row = sqlx::query(
            "WITH m AS (
                UPDATE messages SET payload = NULL WHERE payload IS NOT NULL AND expires_at <= $1 RETURNING 1
             ), t AS (
                UPDATE attempts SET response = '' WHERE response <> '' AND created_at < $2 RETURNING 1
             ), i AS (
                DELETE FROM idempotency WHERE expires_at <= $1
             )
             SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM t)",
        )
        .bind(now.as_millis())
        .bind(attempts_before.as_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok((col::<i64>(&row, 0)?.max(0) as u64, col::<i64>(&row, 1)?.max(0) as u64))
    }
}
