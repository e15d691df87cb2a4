//! The dispatcher's side of the store: claiming due deliveries under a lease
//! and recording attempts.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, opt_ts_value};
use super::sql::Sql;
use super::{SqliteStore, tenants};
use crate::domain::delivery::{DeliveryRow, DeliveryState, Recorded, record};
use crate::domain::health;
use crate::domain::model::{DeliveryStatus, Endpoint, Message};
use crate::domain::time::Timestamp;
use crate::store::listing::{Cond, ENDPOINT_COLS, MESSAGE_COLS, Param};
use crate::store::sealing::Keyring;
use crate::store::{
    AttemptEffects, AttemptRecord, DeliveryKey, DeliveryTask, DispatchStore, EndpointDisabled, Lease,
    StoreResult,
};

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        let (lease, skip, keys) = (lease.clone(), skip_endpoints.to_vec(), Arc::clone(&self.keys));
        self.write(move |c| claim_due(c, now, &lease, limit, &skip, &keys)).await
    }

    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        let skip = skip_endpoints.to_vec();
        self.read(move |c| {
            let mut q = Sql::new("SELECT MIN(d.due_at) FROM deliveries d");
            q.where_all(&[Cond::Sql("d.due_at IS NOT NULL"), skipping(&skip)]);
            let min: Vec<Option<i64>> = q.rows(c, |r| r.get(0))?;
            Ok(min.into_iter().flatten().next().map(Timestamp::from_millis))
        })
        .await
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET due_at = ?, lease_owner = NULL
                 WHERE msg_id = ? AND endpoint_id = ? AND status = ? AND lease_owner IS NOT NULL",
            )?;
            for k in keys {
                stmt.execute(params![
                    due.as_millis(),
                    k.msg_id,
                    k.endpoint_id,
                    DeliveryStatus::Pending.code()
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let owner = owner.map(str::to_owned);
        // The attempt a lease was taken for is still owed: due at its original time.
        self.write(move |c| {
            let n = match owner {
                Some(o) => c
                    .prepare_cached(
                        "UPDATE deliveries SET due_at = COALESCE(next_attempt, due_at), lease_owner = NULL
                         WHERE lease_owner = ?",
                    )?
                    .execute([o])?,
                None => c
                    .prepare_cached(
                        "UPDATE deliveries SET due_at = COALESCE(next_attempt, due_at), lease_owner = NULL
                         WHERE lease_owner IS NOT NULL",
                    )?
                    .execute([])?,
            };
            Ok(n as u64)
        })
        .await
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        let (owner, keys) = (owner.to_owned(), keys.to_vec());
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET due_at = ? WHERE msg_id = ? AND endpoint_id = ? AND lease_owner = ?",
            )?;
            let mut n = 0;
            for k in keys {
                n += stmt.execute(params![until.as_millis(), k.msg_id, k.endpoint_id, owner])?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        let cache = Arc::clone(&self.cache);
        self.write_checked_first(move |c| {
            let effects = record_attempt(c, record)?;
            if effects.endpoint_disabled.is_some() {
                cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            Ok(effects)
        })
        .await
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE due_at IS NOT NULL")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

/// Leave out the deliveries of these endpoints (their lanes are full).
fn skipping(endpoints: &[String]) -> Cond {
    Cond::NotIn("d.endpoint_id", endpoints.iter().cloned().map(Param::Text).collect())
}

fn claim_due(
    c: &Connection,
    now: Timestamp,
    lease: &Lease,
    limit: usize,
    skip_endpoints: &[String],
    keys: &Keyring,
) -> StoreResult<Vec<DeliveryTask>> {
    let mut q = Sql::new("SELECT d.msg_id, d.endpoint_id, d.app_id FROM deliveries d");
    q.where_all(&[
        Cond::Sql("d.due_at IS NOT NULL"),
        Cond::Cmp("d.due_at", "<=", now.into()),
        skipping(skip_endpoints),
    ])
    .push(" ORDER BY d.due_at LIMIT ?", [Value::Integer(limit as i64)]);
    let due = q.rows(c, |r| {
        Ok((DeliveryKey { msg_id: r.get(0)?, endpoint_id: r.get(1)? }, r.get::<_, String>(2)?))
    })?;

    let mut messages: HashMap<String, Option<Arc<Message>>> = HashMap::new();
    let mut endpoints: HashMap<String, Option<Arc<Endpoint>>> = HashMap::new();
    let mut take = c.prepare_cached(
        "UPDATE deliveries SET due_at = ?, lease_owner = ? WHERE msg_id = ? AND endpoint_id = ?",
    )?;
    let mut tasks = Vec::with_capacity(due.len());
    for (key, app_id) in due {
        let message = match messages.get(&key.msg_id) {
            Some(m) => m.clone(),
            None => {
                let m = load_message(c, &app_id, &key.msg_id)?.map(Arc::new);
                messages.insert(key.msg_id.clone(), m.clone());
                m
            }
        };
        let endpoint = match endpoints.get(&key.endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let e = load_endpoint(c, &key.endpoint_id, keys)?.map(Arc::new);
                endpoints.insert(key.endpoint_id.clone(), e.clone());
                e
            }
        };
        match (message, endpoint) {
            (Some(message), Some(endpoint)) if !endpoint.disabled => {
                take.execute(params![lease.until.as_millis(), lease.owner, key.msg_id, key.endpoint_id])?;
                tasks.push(DeliveryTask { message, endpoint });
            }
            // Its endpoint or message is gone or disabled: nothing to send, ever.
            _ => settle_failed(c, &key, now)?,
        }
    }
    Ok(tasks)
}

fn load_message(c: &Connection, app_id: &str, id: &str) -> StoreResult<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = ? AND m.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([app_id, id], |r| rows::message(r, 0)).optional()?)
}

fn load_endpoint(c: &Connection, id: &str, keys: &Keyring) -> StoreResult<Option<Endpoint>> {
    let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::endpoint(r, 0, keys)).optional()?)
}

/// For the operational event of a disabled endpoint: no secrets needed.
fn load_endpoint_redacted(c: &Connection, id: &str) -> StoreResult<Option<Endpoint>> {
    let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::endpoint_redacted(r, 0)).optional()?)
}

fn settle_failed(c: &Connection, key: &DeliveryKey, now: Timestamp) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE deliveries SET status = ?, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = ?
         WHERE msg_id = ? AND endpoint_id = ?",
    )?
    .execute(params![DeliveryStatus::Fail.code(), now.as_millis(), key.msg_id, key.endpoint_id])?;
    Ok(())
}

/// Runs without a savepoint: every error after the first write must come
/// from SQLite (see `writer::Guard::ChecksFirst`).
fn record_attempt(c: &Connection, rec: AttemptRecord) -> StoreResult<AttemptEffects> {
    let a = &rec.attempt;
    // Just what the state machine needs; the whole endpoint only if it is
    // about to be disabled (for the operational event).
    let endpoint: Option<EndpointHealth> = c
        .prepare_cached("SELECT disabled, failing_since FROM endpoints WHERE id = ?")?
        .query_row([&a.endpoint_id], |r| {
            Ok(EndpointHealth {
                disabled: r.get(0)?,
                failing_since: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
            })
        })
        .optional()?;
    let stored: Option<DeliveryRow> = c
        .prepare_cached(
            "SELECT status, attempts, next_attempt, due_at, lease_owner FROM deliveries
             WHERE msg_id = ? AND endpoint_id = ?",
        )?
        .query_row([&a.msg_id, &a.endpoint_id], |r| {
            let status = DeliveryStatus::from_code(r.get(0)?).unwrap_or(DeliveryStatus::Pending);
            let state = DeliveryState {
                status,
                attempts: r.get(1)?,
                next_attempt: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_millis),
            };
            Ok(DeliveryRow {
                state,
                due_at: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                lease_owner: r.get(4)?,
            })
        })
        .optional()?;

    let endpoint_disabled = match endpoint.as_ref().filter(|e| !e.disabled) {
        Some(ep) => update_health(c, &a.endpoint_id, ep, &rec)?,
        None => None,
    };
    let endpoint_active = endpoint.as_ref().is_some_and(|e| !e.disabled) && endpoint_disabled.is_none();

    let Recorded { row, exhausted } =
        record(&stored.unwrap_or_else(DeliveryRow::missing), &rec.result(endpoint_active));
    let DeliveryRow { state: next, due_at, lease_owner } = row;

    // A deleted endpoint keeps its attempt history but gets no delivery row.
    if endpoint.is_some() {
        c.prepare_cached(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at, total_attempts, last_code, last_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?9)
             ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = ?4, attempts = ?5,
                next_attempt = ?6, due_at = ?7, lease_owner = ?8, updated_at = ?9,
                total_attempts = total_attempts + 1, last_code = ?10, last_attempt_at = ?9",
        )?
        .execute(params![
            a.msg_id,
            a.endpoint_id,
            a.app_id,
            next.status.code(),
            next.attempts,
            opt_ts_value(next.next_attempt),
            opt_ts_value(due_at),
            lease_owner,
            a.created_at.as_millis(),
            a.status_code,
        ])?;
    }
    insert_attempt(c, &rec)?;
    Ok(AttemptEffects { state: next, exhausted, endpoint_disabled })
}

/// The columns of an endpoint that recording an attempt needs.
struct EndpointHealth {
    disabled: bool,
    failing_since: Option<Timestamp>,
}

/// Track the endpoint's failure streak; disable it when the receiver asked
/// for that or it has failed for too long.
fn update_health(
    c: &Connection,
    endpoint_id: &str,
    ep: &EndpointHealth,
    rec: &AttemptRecord,
) -> StoreResult<Option<EndpointDisabled>> {
    let at = rec.finished_at;
    let health::Change { failing_since, disabled_automatically } = rec.health(ep.failing_since);
    if let Some(automatic) = disabled_automatically {
        c.prepare_cached(
            "UPDATE endpoints SET disabled = 1, failing_since = ?, updated_at = ? WHERE id = ?",
        )?
        .execute(params![opt_ts_value(failing_since), at.as_millis(), endpoint_id])?;
        tenants::settle_pending(c, endpoint_id, at)?;
        // Read a moment ago in this job, so its absence is a store failure
        // (and must be a `Backend` error: this job runs without a savepoint).
        let endpoint = load_endpoint_redacted(c, endpoint_id)?
            .ok_or_else(|| crate::store::StoreError::Backend("endpoint vanished mid-write".into()))?;
        return Ok(Some(EndpointDisabled { endpoint, failing_since, automatic }));
    }
    if failing_since != ep.failing_since {
        c.prepare_cached("UPDATE endpoints SET failing_since = ? WHERE id = ?")?
            .execute(params![opt_ts_value(failing_since), endpoint_id])?;
    }
    Ok(None)
}

fn insert_attempt(c: &Connection, rec: &AttemptRecord) -> StoreResult<()> {
    let a = &rec.attempt;
    c.prepare_cached(
        "INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
            duration_ms, trigger, error, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        a.id,
        a.msg_id,
        a.endpoint_id,
        a.app_id,
        a.url,
        a.status.code(),
        a.status_code,
        a.response,
        a.duration_ms,
        a.trigger.code(),
        a.error,
        a.created_at.as_millis(),
    ])?;
    Ok(())
}
