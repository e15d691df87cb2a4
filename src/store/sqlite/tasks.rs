//! Background task records and idempotency keys.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{self, to_json};
use super::sql;
use crate::domain::model::Task;
use crate::domain::time::Timestamp;
use crate::store::listing::{Listing, TASK_COLS};
use crate::store::{IdempotencyBegin, Page, PageRequest, StoreResult, StoredResponse, TaskStore};

#[async_trait]
impl TaskStore for SqliteStore {
    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        let t = task.clone();
        self.write(move |c| {
            c.prepare_cached(&format!("INSERT INTO tasks ({TASK_COLS}) VALUES (?, ?, ?, ?, ?, ?)"))?
                .execute(params![
                    t.id,
                    t.kind,
                    t.status,
                    to_json(&t.data),
                    t.created_at.as_millis(),
                    t.updated_at.as_millis(),
                ])?;
            Ok(())
        })
        .await
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?");
            Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::task(r, 0)).optional()?)
        })
        .await
    }

    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>> {
        let page = page.clone();
        self.read(move |c| sql::page(c, &Listing::tasks(), &page, |r| rows::task(r, 0))).await
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin> {
        let key = key.to_owned();
        self.write(move |c| {
            // (done, expires_at, the stored response when done)
            let row: Option<(bool, i64, StoredResponse)> = c
                .prepare_cached(
                    "SELECT done, expires_at, status, content_type, body FROM idempotency WHERE key = ?",
                )?
                .query_row([&key], |r| {
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
                Some((false, expires, _)) if expires > now.as_millis() => {
                    return Ok(IdempotencyBegin::InProgress);
                }
                _ => {}
            }
            c.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (key, done, status, content_type, body, expires_at)
                 VALUES (?, 0, NULL, NULL, NULL, ?)",
            )?
            .execute(params![key, lock_until.as_millis()])?;
            Ok(IdempotencyBegin::Started)
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let (key, response) = (key.to_owned(), response.clone());
        self.write(move |c| {
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
        })
        .await
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM idempotency WHERE key = ? AND done = 0")?.execute([key])?;
            Ok(())
        })
        .await
    }
}
