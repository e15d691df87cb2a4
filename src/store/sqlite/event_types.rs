//! The event type catalogue.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, EVENT_TYPE_COLS, opt_json};
use super::sql::Select;
use crate::domain::model::{EventType, EventTypePatch};
use crate::domain::time::Timestamp;
use crate::store::{Page, PageRequest, StoreError, StoreResult};

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

pub fn insert(c: &Connection, et: &EventType) -> StoreResult<()> {
    match get(c, &et.name)? {
        Some(existing) if !existing.archived => {
            Err(StoreError::Conflict(format!("event type '{}' already exists", et.name)))
        }
        // Creating an archived type brings it back with the new definition.
        _ => write(c, et, "INSERT OR REPLACE"),
    }
}

pub fn get(c: &Connection, name: &str) -> StoreResult<Option<EventType>> {
    let sql = format!("SELECT {EVENT_TYPE_COLS} FROM event_types WHERE name = ?");
    Ok(c.prepare_cached(&sql)?.query_row([name], |r| rows::event_type(r, 0)).optional()?)
}

pub fn list(c: &Connection, include_archived: bool, page: &PageRequest) -> StoreResult<Page<EventType>> {
    let mut q = Select::new(format!("SELECT {EVENT_TYPE_COLS} FROM event_types"));
    if !include_archived {
        q.eq("archived", 0);
    }
    q.page(c, "name", page, |r| rows::event_type(r, 0))
}

pub fn update(c: &Connection, name: &str, patch: EventTypePatch, now: Timestamp) -> StoreResult<EventType> {
    let mut et = get(c, name)?.ok_or(StoreError::NotFound)?;
    patch.apply(&mut et, now);
    write(c, &et, "REPLACE")?;
    Ok(et)
}

pub fn delete(c: &Connection, name: &str) -> StoreResult<()> {
    match c.prepare_cached("DELETE FROM event_types WHERE name = ?")?.execute([name])? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}
