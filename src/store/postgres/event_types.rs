//! The event type catalogue.

use async_trait::async_trait;

use super::rows::{self, opt_json};
use super::{PgStore, notify, sql};
use crate::domain::model::{EventType, EventTypePatch};
use crate::domain::time::Timestamp;
use crate::store::listing::{EVENT_TYPE_COLS, Listing};
use crate::store::{EventTypeStore, Page, PageRequest, StoreError, StoreResult};

#[async_trait]
impl EventTypeStore for PgStore {
    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Creating an archived type brings it back with the new definition; a
        // live one is a conflict. One statement, so two nodes cannot both win.
        if !write(&mut tx, et, "event_types.archived").await? {
            return Err(StoreError::Conflict(format!("event type '{}' already exists", et.name)));
        }
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let sql = format!("SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = $1");
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| rows::event_type(&r, 0)).transpose()
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>> {
        sql::page(&self.pool, &Listing::event_types(include_archived), page, |r| rows::event_type(r, 0)).await
    }

    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = $1 FOR UPDATE");
        let row = sqlx::query(&sql).bind(name).fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?;
        let mut et = rows::event_type(&row, 0)?;
        patch.apply(&mut et, now);
        write(&mut tx, &et, "true").await?;
        notify::changed(&mut tx).await?;
        tx.commit().await?;
        Ok(et)
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM event_types WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }
}

/// Insert, or replace the row where `only_if` holds for the stored one;
/// true if a row was written.
async fn write(c: &mut sqlx::PgConnection, et: &EventType, only_if: &str) -> StoreResult<bool> {
    let sql = format!(
        "INSERT INTO event_types ({EVENT_TYPE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
            archived = EXCLUDED.archived, deprecated = EXCLUDED.deprecated, schemas = EXCLUDED.schemas,
            group_name = EXCLUDED.group_name, feature_flags = EXCLUDED.feature_flags,
            created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
         WHERE {only_if}"
    );
    let n = sqlx::query(&sql)
        .bind(&et.name)
        .bind(&et.description)
        .bind(et.archived)
        .bind(et.deprecated)
        .bind(opt_json(&et.schemas)?)
        .bind(&et.group_name)
        .bind(opt_json(&et.feature_flags)?)
        .bind(et.created_at.as_millis())
        .bind(et.updated_at.as_millis())
        .execute(c)
        .await?;
    Ok(n.rows_affected() > 0)
}
