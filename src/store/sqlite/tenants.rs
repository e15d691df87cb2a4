//! Tokens, applications and endpoints: the slowly changing configuration.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::{self, opt_json, opt_ts_value, retry_policy_value, to_json};
use super::sql;
use crate::domain::model::{App, AppPatch, AppSummary, DeliveryStatus, Endpoint, EndpointPatch, Scope};
use crate::domain::time::Timestamp;
use crate::store::listing::{APP_COLS, Cond, ENDPOINT_COLS, ENDPOINT_NCOLS, Listing, Param};
use crate::store::sealing::Keyring;
use crate::store::{AppFilter, Page, PageRequest, StoreError, StoreResult, TenantStore};

#[async_trait]
impl TenantStore for SqliteStore {
    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let hash = hash.to_owned();
        let app_id = match scope {
            Scope::Admin => None,
            Scope::App(id) => Some(id.clone()),
        };
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO tokens (hash, app_id, expires_at, created_at) VALUES (?, ?, ?, ?)",
            )?
            .execute(params![hash, app_id, opt_ts_value(expires_at), now.as_millis()])?;
            Ok(())
        })
        .await
    }

    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let row: Option<Option<String>> = c
                .prepare_cached(
                    "SELECT app_id FROM tokens WHERE hash = ? AND (expires_at IS NULL OR expires_at > ?)",
                )?
                .query_row(params![hash, now.as_millis()], |r| r.get(0))
                .optional()?;
            Ok(row.map(|app| app.map_or(Scope::Admin, Scope::App)))
        })
        .await
    }

    async fn delete_token(&self, hash: &str) -> StoreResult<bool> {
        let hash = hash.to_owned();
        self.write(move |c| Ok(c.prepare_cached("DELETE FROM tokens WHERE hash = ?")?.execute([hash])? > 0))
            .await
    }

    async fn expire_app_tokens(&self, app_id: &str, at: Timestamp) -> StoreResult<u64> {
        let app_id = app_id.to_owned();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE tokens SET expires_at = ?1
                     WHERE app_id = ?2 AND (expires_at IS NULL OR expires_at > ?1)",
                )?
                .execute(params![at.as_millis(), app_id])?;
            Ok(n as u64)
        })
        .await
    }

    async fn has_admin_token(&self) -> StoreResult<bool> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE app_id IS NULL)")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn insert_app(&self, app: &App) -> StoreResult<()> {
        let app = app.clone();
        self.write_config(move |c| insert_app(c, &app)).await
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>> {
        let key = id_or_uid.to_owned();
        self.read(move |c| get_app(c, &key)).await
    }

    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>> {
        let (listing, page) = (Listing::apps(filter), page.clone());
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::app(r, 0))).await
    }

    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
        let ids = app_ids.to_vec();
        self.read(move |c| app_summaries(c, &ids, cap)).await
    }

    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
        let id = id.to_owned();
        self.write_config(move |c| update_app(c, &id, patch, now)).await
    }

    async fn delete_app(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write_config(move |c| {
            let n = c.prepare_cached("DELETE FROM apps WHERE id = ?")?.execute([&id])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            for table in ["endpoint_flow", "ordering_keys"] {
                c.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE endpoint_id IN (SELECT id FROM endpoints WHERE app_id = ?)"
                ))?
                .execute([&id])?;
            }
            for table in ["endpoints", "deliveries", "attempts", "messages", "tokens"] {
                c.prepare_cached(&format!("DELETE FROM {table} WHERE app_id = ?"))?.execute([&id])?;
            }
            Ok(())
        })
        .await
    }

    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        let (ep, keys) = (ep.clone(), Arc::clone(&self.keys));
        self.write_config(move |c| {
            check_endpoint_uid(c, &ep)?;
            c.prepare_cached(&format!(
                "INSERT INTO endpoints ({}) VALUES ({})",
                ENDPOINT_COLS.replace("e.", ""),
                ["?"; ENDPOINT_NCOLS].join(", ")
            ))?
            .execute(rusqlite::params_from_iter(endpoint_values(&keys.seal_endpoint(&ep))))?;
            Ok(())
        })
        .await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let (app_id, key, keys) = (app_id.to_owned(), id_or_uid.to_owned(), Arc::clone(&self.keys));
        self.read(move |c| get_endpoint(c, &app_id, &key, &keys)).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        let (listing, page, keys) = (Listing::endpoints(app_id), page.clone(), Arc::clone(&self.keys));
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::endpoint(r, 0, &keys))).await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        let keys = Arc::clone(&self.keys);
        self.write_config(move |c| update_endpoint(c, &app_id, &id, patch, now, &keys)).await
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.write_config(move |c| {
            let n = c
                .prepare_cached("DELETE FROM endpoints WHERE app_id = ? AND id = ?")?
                .execute([&app_id, &id])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            c.prepare_cached("DELETE FROM deliveries WHERE endpoint_id = ?")?.execute([&id])?;
            c.prepare_cached("DELETE FROM endpoint_flow WHERE endpoint_id = ?")?.execute([&id])?;
            super::ordering::forget_endpoint(c, &id)?;
            Ok(())
        })
        .await
    }
}

fn app_uid_taken(c: &Connection, uid: &str, except_id: &str) -> StoreResult<bool> {
    Ok(c.prepare_cached("SELECT EXISTS (SELECT 1 FROM apps WHERE uid = ? AND id != ?)")?
        .query_row([uid, except_id], |r| r.get(0))?)
}

fn check_app_uid(c: &Connection, app: &App) -> StoreResult<()> {
    if let Some(uid) = &app.uid
        && app_uid_taken(c, uid, &app.id)?
    {
        return Err(StoreError::Conflict(format!("an application with uid '{uid}' already exists")));
    }
    Ok(())
}

pub(super) fn insert_app(c: &Connection, app: &App) -> StoreResult<()> {
    check_app_uid(c, app)?;
    c.prepare_cached(
        "INSERT INTO apps (id, uid, name, metadata, throttle_rate, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        app.id,
        app.uid,
        app.name,
        to_json(&app.metadata),
        app.throttle_rate,
        app.created_at.as_millis(),
        app.updated_at.as_millis()
    ])?;
    Ok(())
}

pub(super) fn get_app(c: &Connection, id_or_uid: &str) -> StoreResult<Option<App>> {
    for col in ["id", "uid"] {
        let sql = format!("SELECT {APP_COLS} FROM apps a WHERE a.{col} = ?");
        let found = c.prepare_cached(&sql)?.query_row([id_or_uid], |r| rows::app(r, 0)).optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn app_summaries(c: &Connection, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
    let mut endpoints = c.prepare_cached("SELECT COUNT(*) FROM endpoints WHERE app_id = ?")?;
    let mut messages =
        c.prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE app_id = ? LIMIT ?)")?;
    // Ids sort by creation time: the newest message is the largest id, an
    // index lookup, where MAX(created_at) would read every message.
    let mut last =
        c.prepare_cached("SELECT created_at FROM messages WHERE app_id = ? ORDER BY id DESC LIMIT 1")?;
    let mut out = HashMap::new();
    for id in app_ids {
        let summary = AppSummary {
            endpoints: endpoints.query_row([id], |r| r.get::<_, i64>(0))? as u64,
            messages: messages.query_row(params![id, cap as i64], |r| r.get::<_, i64>(0))? as u64,
            last_message_at: last
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()?
                .map(Timestamp::from_millis),
        };
        out.insert(id.clone(), summary);
    }
    Ok(out)
}

fn update_app(c: &Connection, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
    let mut app = get_app(c, id)?.filter(|a| a.id == id).ok_or(StoreError::NotFound)?;
    patch.apply(&mut app, now);
    check_app_uid(c, &app)?;
    c.prepare_cached(
        "UPDATE apps SET uid = ?, name = ?, metadata = ?, throttle_rate = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(params![
        app.uid,
        app.name,
        to_json(&app.metadata),
        app.throttle_rate,
        app.updated_at.as_millis(),
        app.id
    ])?;
    Ok(app)
}

fn endpoint_uid_taken(c: &Connection, app_id: &str, uid: &str, except_id: &str) -> StoreResult<bool> {
    Ok(c.prepare_cached("SELECT EXISTS (SELECT 1 FROM endpoints WHERE app_id = ? AND uid = ? AND id != ?)")?
        .query_row([app_id, uid, except_id], |r| r.get(0))?)
}

fn check_endpoint_uid(c: &Connection, ep: &Endpoint) -> StoreResult<()> {
    if let Some(uid) = &ep.uid
        && endpoint_uid_taken(c, &ep.app_id, uid, &ep.id)?
    {
        return Err(StoreError::Conflict(format!("an endpoint with uid '{uid}' already exists")));
    }
    Ok(())
}

fn endpoint_values(ep: &Endpoint) -> [Value; ENDPOINT_NCOLS] {
    [
        Value::Text(ep.id.clone()),
        Value::Text(ep.app_id.clone()),
        ep.uid.clone().map_or(Value::Null, Value::Text),
        Value::Text(ep.url.clone()),
        Value::Text(ep.description.clone()),
        Value::Integer(ep.disabled as i64),
        opt_json(&ep.event_types),
        opt_json(&ep.channels),
        Value::Text(to_json(&ep.metadata)),
        Value::Text(to_json(&ep.headers)),
        ep.throttle_rate.map_or(Value::Null, |r| Value::Integer(r.into())),
        Value::Text(ep.secret.clone()),
        Value::Text(to_json(&ep.old_secrets)),
        retry_policy_value(&ep.retry_policy),
        opt_ts_value(ep.failing_since),
        Value::Integer(ep.created_at.as_millis()),
        Value::Integer(ep.updated_at.as_millis()),
        ep.max_in_flight.map_or(Value::Null, |n| Value::Integer(n.into())),
        Value::Integer(ep.fifo.into()),
        Value::Text(ep.ordering_on_failure.as_str().into()),
        opt_ts_value(ep.disabled_at),
    ]
}

pub(super) fn get_endpoint(
    c: &Connection,
    app_id: &str,
    id_or_uid: &str,
    keys: &Keyring,
) -> StoreResult<Option<Endpoint>> {
    for col in ["id", "uid"] {
        let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.app_id = ? AND e.{col} = ?");
        let found = c
            .prepare_cached(&sql)?
            .query_row([app_id, id_or_uid], |r| rows::endpoint(r, 0, keys))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// All enabled endpoints of an application (fan-out at ingest).
pub(super) fn enabled_endpoints(c: &Connection, app_id: &str, keys: &Keyring) -> StoreResult<Vec<Endpoint>> {
    let listing = Listing::endpoints(app_id).and(Cond::eq("e.disabled", Param::Bool(false)));
    sql::all(c, &listing, |r| rows::endpoint(r, 0, keys))
}

fn update_endpoint(
    c: &Connection,
    app_id: &str,
    id: &str,
    patch: EndpointPatch,
    now: Timestamp,
    keys: &Keyring,
) -> StoreResult<Endpoint> {
    let mut ep = get_endpoint(c, app_id, id, keys)?.filter(|e| e.id == id).ok_or(StoreError::NotFound)?;
    let was_disabled = ep.disabled;
    patch.apply(&mut ep, now);
    check_endpoint_uid(c, &ep)?;
    c.prepare_cached(
        "UPDATE endpoints SET id = ?1, app_id = ?2, uid = ?3, url = ?4, description = ?5,
            disabled = ?6, event_types = ?7, channels = ?8, metadata = ?9, headers = ?10,
            throttle_rate = ?11, secret = ?12, old_secrets = ?13, retry_policy = ?14, failing_since = ?15,
            created_at = ?16, updated_at = ?17, max_in_flight = ?18, fifo = ?19, ordering_on_failure = ?20,
            disabled_at = ?21
         WHERE id = ?1",
    )?
    .execute(rusqlite::params_from_iter(endpoint_values(&keys.seal_endpoint(&ep))))?;
    if ep.disabled && !was_disabled {
        settle_pending(c, &ep.id, now)?;
    }
    Ok(ep)
}

/// No more attempts for the endpoint's pending deliveries: they fail now,
/// held and parked ones too, and its ordering keys and parked work are
/// forgotten with them.
pub(super) fn settle_pending(c: &Connection, endpoint_id: &str, now: Timestamp) -> StoreResult<()> {
    super::ordering::forget_endpoint(c, endpoint_id)?;
    c.prepare_cached("UPDATE endpoint_flow SET wake_at = NULL WHERE endpoint_id = ?")?
        .execute([endpoint_id])?;
    c.prepare_cached(
        "UPDATE deliveries SET status = ?, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = ?, gate = NULL
         WHERE endpoint_id = ? AND status = ?",
    )?
    .execute(params![
        DeliveryStatus::Fail.code(),
        now.as_millis(),
        endpoint_id,
        DeliveryStatus::Pending.code()
    ])?;
    Ok(())
}
