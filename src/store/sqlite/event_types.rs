//! The event type catalogue.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::{self, opt_json};
use super::sql;
use crate::domain::model::{EventType, EventTypePatch};
use crate::domain::time::Timestamp;
use crate::store::listing::{EVENT_TYPE_COLS, Listing};
use crate::store::{EventTypeStore, Page, PageRequest, StoreError, StoreResult};

#[async_trait]
impl EventTypeStore for SqliteStore {
    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()> {
        let et = et.clone();
        self.write(move |c| match get(c, &et.name)? {
            Some(existing) if !existing.archived => {
                Err(StoreError::Conflict(format!("event type '{}' already exists", et.name)))
            }
            // Creating an archived type brings it back with the new definition.
            _ => write(c, &et, "INSERT OR REPLACE"),
        })
        .await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |c| get(c, &name)).await
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>> {
        let (listing, page) = (Listing::event_types(include_archived), page.clone());
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::event_type(r, 0))).await
    }

    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType> {
        let name = name.to_owned();
        self.write(move |c| {
            let mut et = get(c, &name)?.ok_or(StoreError::NotFound)?;
            patch.apply(&mut et, now);
            write(c, &et, "REPLACE")?;
            Ok(et)
        })
        .await
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| {
            match c.prepare_cached("DELETE FROM event_types WHERE name = ?")?.execute([name])? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }
}

fn write(c: &Connection, et: &EventType, verb: &str) -> StoreResult<()> {
    let sql = format!("{verb} INTO event_types ({EVENT_TYPE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    c.prepare_cached(&sql)?.execute(params![
        et.name,
        et.description,
        et.archived,
        et.deprecated,
        opt_json(&et.schemas),
        et.group_name,
        opt_json(&et.feature_flags),
        et.created_at.as_millis(),
        et.updated_at.as_millis(),
    ])?;
    Ok(())
}

fn get(c: &Connection, name: &str) -> StoreResult<Option<EventType>> {
    let sql = format!("SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = ?");
    Ok(c.prepare_cached(&sql)?.query_row([name], |r| rows::event_type(r, 0)).optional()?)
}
