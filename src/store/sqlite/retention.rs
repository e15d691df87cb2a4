//! Erasing content: on request (a message, an attempt, a whole
//! application) and by retention age. Metadata stays; payloads and
//! response bodies go.

use async_trait::async_trait;

use super::SqliteStore;
use crate::domain::time::Timestamp;
use crate::store::{RetentionStore, StoreError, StoreResult};

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        let (app_id, msg_id) = (app_id.to_owned(), msg_id.to_owned());
        self.write(move |c| {
            match c
                .prepare_cached("UPDATE messages SET payload = NULL WHERE app_id = ? AND id = ?")?
                .execute([app_id, msg_id])?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let (app_id, msg_id, attempt_id) = (app_id.to_owned(), msg_id.to_owned(), attempt_id.to_owned());
        self.write(move |c| {
            match c
                .prepare_cached(
                    "UPDATE attempts SET response = '' WHERE msg_id = ? AND id = ? AND app_id = ?",
                )?
                .execute([msg_id, attempt_id, app_id])?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        let app_id = app_id.to_owned();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE messages SET payload = NULL WHERE app_id = ? AND payload IS NOT NULL",
                )?
                .execute([&app_id])?;
            c.prepare_cached("UPDATE attempts SET response = '' WHERE app_id = ? AND response != ''")?
                .execute([&app_id])?;
            Ok(n as u64)
        })
        .await
    }

    async fn expunge_messages(&self, app_id: &str, msg_ids: &[String]) -> StoreResult<(u64, u64)> {
        let (app_id, ids) = (app_id.to_owned(), msg_ids.to_vec());
        self.write(move |c| {
            let mut payload = c.prepare_cached(
                "UPDATE messages SET payload = NULL WHERE app_id = ? AND id = ? AND payload IS NOT NULL",
            )?;
            let mut bodies = c.prepare_cached(
                "UPDATE attempts SET response = '' WHERE msg_id = ? AND app_id = ? AND response != ''",
            )?;
            let (mut payloads, mut responses) = (0, 0);
            for id in &ids {
                payloads += payload.execute([&app_id, id])? as u64;
                responses += bodies.execute([id, &app_id])? as u64;
            }
            Ok((payloads, responses))
        })
        .await
    }

    /// Both statements use partial indexes that hold only rows with content
    /// left, so each run touches what is due and nothing else.
    async fn expunge_expired(&self, now: Timestamp, attempts_before: Timestamp) -> StoreResult<(u64, u64)> {
        self.write(move |c| {
            let payloads = c
                .prepare_cached(
                    "UPDATE messages SET payload = NULL WHERE payload IS NOT NULL AND expires_at <= ?",
                )?
                .execute([now.as_millis()])?;
            let bodies = c
                .prepare_cached("UPDATE attempts SET response = '' WHERE response != '' AND created_at < ?")?
                .execute([attempts_before.as_millis()])?;
            c.prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?")?.execute([now.as_millis()])?;
            Ok((payloads as u64, bodies as u64))
        })
        .await
    }
}
