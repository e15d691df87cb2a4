//! Background task records and idempotency keys.

use async_trait::async_trait;

use super::rows::{self, col, to_json};
use super::{PgStore, sql};
use crate::domain::model::Task;
use crate::domain::time::Timestamp;
use crate::store::listing::{Listing, TASK_COLS};
use crate::store::{IdempotencyBegin, Page, PageRequest, StoreError, StoreResult, StoredResponse, TaskStore};

#[async_trait]
impl TaskStore for PgStore {
    async fn insert_task(&self, t: &Task) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO tasks ({TASK_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(&t.id)
            .bind(&t.kind)
            .bind(&t.status)
            .bind(to_json(&t.data)?)
            .bind(t.created_at.as_millis())
            .bind(t.updated_at.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| rows::task(&r, 0)).transpose()
    }

    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>> {
        sql::page(&self.pool, &Listing::tasks(), page, |r| rows::task(r, 0)).await
    }

    /// Take the key unless someone holds it or has finished with it, in one
    /// statement: the upsert only replaces a lapsed row, so of two nodes
    /// racing for a key exactly one starts. The row as it was before the
    /// statement says what the loser sees.
    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin> {
        let row = sqlx::query(
            "WITH taken AS (
                INSERT INTO idempotency (key, done, status, content_type, body, expires_at)
                VALUES ($1, false, NULL, NULL, NULL, $3)
                ON CONFLICT (key) DO UPDATE SET done = false, status = NULL, content_type = NULL,
                    body = NULL, expires_at = EXCLUDED.expires_at
                WHERE idempotency.expires_at <= $2
                RETURNING 1
             )
             SELECT EXISTS (SELECT 1 FROM taken), i.done, i.status, i.content_type, i.body
             FROM (SELECT 1) one LEFT JOIN idempotency i ON i.key = $1",
        )
        .bind(key)
        .bind(now.as_millis())
        .bind(lock_until.as_millis())
        .fetch_one(&self.pool)
        .await?;
        if col::<bool>(&row, 0)? {
            return Ok(IdempotencyBegin::Started);
        }
        match col::<Option<bool>>(&row, 1)? {
            Some(true) => {
                let status = col::<Option<i32>>(&row, 2)?.unwrap_or(200);
                Ok(IdempotencyBegin::Done(StoredResponse {
                    status: u16::try_from(status).map_err(|_| {
                        StoreError::Backend(format!("stored status {status} is out of range"))
                    })?,
                    content_type: col(&row, 3)?,
                    body: col::<Option<Vec<u8>>>(&row, 4)?.unwrap_or_default(),
                }))
            }
            // Held, or taken by a request that committed after this
            // statement's snapshot: running either way.
            Some(false) | None => Ok(IdempotencyBegin::InProgress),
        }
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency (key, done, status, content_type, body, expires_at)
             VALUES ($1, true, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET done = true, status = EXCLUDED.status,
                content_type = EXCLUDED.content_type, body = EXCLUDED.body, expires_at = EXCLUDED.expires_at",
        )
        .bind(key)
        .bind(i32::from(response.status))
        .bind(&response.content_type)
        .bind(&response.body)
        .bind(expires_at.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND NOT done")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
