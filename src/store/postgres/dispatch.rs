//! The dispatcher's side of the store: claiming due deliveries under a lease
//! and recording attempts, with several nodes doing both at once.
//!
//! Lock order: an endpoint row before any of its delivery rows. Every
//! writer that takes both (endpoint update and delete, recording an attempt
//! that changes the endpoint's health) takes them in that order, so they
//! queue rather than deadlock. Updates of many delivery rows by key
//! (release, renewal, settling) lock them in key order (`lock_keys`).
//! Claiming locks delivery rows only and skips locked ones instead of
//! waiting.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};

use super::notify;
use super::rows::{self, ENDPOINT_COLS, MESSAGE_COLS, col, int4, opt_ts, pg_text};
use super::sql::limit;
use super::tenants;
use crate::domain::delivery::{AttemptResult, DeliveryState, Outcome, after_attempt};
use crate::domain::health;
use crate::domain::model::{DeliveryStatus, Endpoint, Trigger};
use crate::domain::time::Timestamp;
use crate::store::{
    AttemptEffects, AttemptRecord, DeliveryKey, DeliveryTask, EndpointDisabled, Lease, StoreError,
    StoreResult,
};

/// Lease the due deliveries in one statement. `SKIP LOCKED` lets nodes
/// claim side by side, each getting rows the others are not taking; a row
/// another node claimed since this statement's snapshot is re-checked
/// against its new `due_at` and left out.
pub async fn claim_due(
    pool: &PgPool,
    now: Timestamp,
    lease: &Lease,
    max: usize,
    skip_endpoints: &[String],
) -> StoreResult<Vec<DeliveryTask>> {
    let claimed = sqlx::query(
        "WITH due AS (
            SELECT msg_id, endpoint_id, due_at FROM deliveries
            WHERE due_at <= $1 AND NOT (endpoint_id = ANY($2))
            ORDER BY due_at LIMIT $3
            FOR UPDATE SKIP LOCKED
         )
         UPDATE deliveries d SET due_at = $4, lease_owner = $5
         FROM due WHERE d.msg_id = due.msg_id AND d.endpoint_id = due.endpoint_id
         RETURNING d.msg_id, d.endpoint_id, due.due_at",
    )
    .bind(now.as_millis())
    .bind(skip_endpoints)
    .bind(limit(max))
    .bind(lease.until.as_millis())
    .bind(&lease.owner)
    .fetch_all(pool)
    .await?;
    if claimed.is_empty() {
        return Ok(vec![]);
    }
    let mut keys = claimed
        .iter()
        .map(|r| Ok((col::<i64>(r, 2)?, DeliveryKey { msg_id: col(r, 0)?, endpoint_id: col(r, 1)? })))
        .collect::<StoreResult<Vec<_>>>()?;
    // In due order, as one SELECT … ORDER BY would have given them.
    keys.sort_by_key(|(due, _)| *due);

    let messages = load(pool, MESSAGE_COLS, "messages m", "m", keys.iter().map(|(_, k)| &k.msg_id), |r| {
        rows::message(r, 0)
    })
    .await?;
    let endpoints =
        load(pool, ENDPOINT_COLS, "endpoints e", "e", keys.iter().map(|(_, k)| &k.endpoint_id), |r| {
            rows::endpoint(r, 0)
        })
        .await?;

    let mut tasks = Vec::with_capacity(keys.len());
    let mut dead = Vec::new();
    for (_, key) in keys {
        match (messages.get(&key.msg_id), endpoints.get(&key.endpoint_id)) {
            (Some(message), Some(endpoint)) if !endpoint.disabled => {
                tasks.push(DeliveryTask { message: Arc::clone(message), endpoint: Arc::clone(endpoint) });
            }
            // Its endpoint or message is gone or disabled: nothing to send, ever.
            _ => dead.push(key),
        }
    }
    if !dead.is_empty() {
        settle_failed(pool, &dead, now, &lease.owner).await?;
    }
    Ok(tasks)
}

/// Rows of `table` (aliased `alias`) whose id is one of `ids`, by id.
async fn load<'a, T>(
    pool: &PgPool,
    cols: &str,
    table: &str,
    alias: &str,
    ids: impl Iterator<Item = &'a String>,
    decode: impl Fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<HashMap<String, Arc<T>>> {
    let mut ids: Vec<&str> = ids.map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!("SELECT {cols} FROM {table} WHERE {alias}.id = ANY($1)");
    let found = sqlx::query(&sql).bind(&ids).fetch_all(pool).await?;
    found.iter().map(|r| Ok((col(r, 0)?, Arc::new(decode(r)?)))).collect()
}

/// A CTE `l` of the delivery rows named by two text arrays (message ids in
/// `$first`, endpoint ids in the next parameter) that pass `filter`, locked
/// in key order. Every multi-row update of deliveries takes its locks in
/// this order, so two of them (a node's release and its lease renewal, or
/// two nodes' releases) queue instead of deadlocking.
fn lock_keys(first: usize, filter: &str) -> String {
    format!(
        "WITH l AS (
            SELECT d.msg_id, d.endpoint_id FROM deliveries d
            JOIN UNNEST(${first}::text[], ${}::text[]) AS k(msg_id, endpoint_id)
              ON d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id
            WHERE {filter}
            ORDER BY d.msg_id, d.endpoint_id FOR UPDATE OF d
         ) ",
        first + 1
    )
}

/// Settle deliveries we hold that can never be sent.
async fn settle_failed(pool: &PgPool, keys: &[DeliveryKey], now: Timestamp, owner: &str) -> StoreResult<()> {
    let (msgs, eps): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
    let sql = lock_keys(3, "d.lease_owner = $5")
        + "UPDATE deliveries d SET status = $1, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = $2
         FROM l WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id";
    sqlx::query(&sql)
        .bind(int4(DeliveryStatus::Fail.code()))
        .bind(now.as_millis())
        .bind(&msgs)
        .bind(&eps)
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn next_due(pool: &PgPool, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
    let min: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(due_at) FROM deliveries WHERE due_at IS NOT NULL AND NOT (endpoint_id = ANY($1))",
    )
    .bind(skip_endpoints)
    .fetch_one(pool)
    .await?;
    Ok(min.map(Timestamp::from_millis))
}

pub async fn release(pool: &PgPool, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let (msgs, eps): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
    let sql = notify::with_due(
        &(lock_keys(2, "d.status = $4 AND d.lease_owner IS NOT NULL")
            + "UPDATE deliveries d SET due_at = $1, lease_owner = NULL
               FROM l WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id
               RETURNING d.due_at"),
    );
    sqlx::query(&sql)
        .bind(due.as_millis())
        .bind(&msgs)
        .bind(&eps)
        .bind(int4(DeliveryStatus::Pending.code()))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn release_all(pool: &PgPool, owner: Option<&str>) -> StoreResult<u64> {
    // The attempt a lease was taken for is still owed: due at its original time.
    // Locked in key order, like the keyed updates (see `lock_keys`).
    let sql = notify::with_due(
        "WITH l AS (
            SELECT msg_id, endpoint_id FROM deliveries
            WHERE lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)
            ORDER BY msg_id, endpoint_id FOR UPDATE
         )
         UPDATE deliveries d SET due_at = COALESCE(d.next_attempt, d.due_at), lease_owner = NULL
         FROM l WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id
         RETURNING d.due_at",
    );
    let n: i64 = sqlx::query_scalar(&sql).bind(owner).fetch_one(pool).await?;
    Ok(n.max(0) as u64)
}

pub async fn renew_leases(
    pool: &PgPool,
    owner: &str,
    keys: &[DeliveryKey],
    until: Timestamp,
) -> StoreResult<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let (msgs, eps): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
    let sql = lock_keys(2, "d.lease_owner = $4")
        + "UPDATE deliveries d SET due_at = $1 FROM l
           WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id";
    let done =
        sqlx::query(&sql).bind(until.as_millis()).bind(&msgs).bind(&eps).bind(owner).execute(pool).await?;
    Ok(done.rows_affected())
}

/// Record the attempt and advance its delivery in one transaction.
///
/// The endpoint's health is read first, without a lock: most attempts
/// change nothing there (a success of a healthy endpoint, one more failure
/// of a failing one), and a lock would make all of an endpoint's attempts
/// queue behind each other. Only when a change is due is the row locked and
/// read again, so the change is made against the stored state. Then the
/// delivery row is locked (`FOR UPDATE`) and the state machine applied to it
/// as stored, so a manual retry racing a scheduled attempt loses no update.
pub async fn record_attempt(pool: &PgPool, rec: AttemptRecord) -> StoreResult<AttemptEffects> {
    let a = &rec.attempt;
    let mut tx = pool.begin().await?;
    let mut endpoint = health_of(&mut tx, &a.endpoint_id, false).await?;
    if endpoint.as_ref().is_some_and(|ep| !ep.disabled && health_changes(ep, &rec)) {
        endpoint = health_of(&mut tx, &a.endpoint_id, true).await?;
    }
    let endpoint_disabled = match endpoint.as_ref().filter(|e| !e.disabled) {
        Some(ep) => update_health(&mut tx, &a.endpoint_id, &a.msg_id, ep, &rec).await?,
        None => None,
    };
    let endpoint_active = endpoint.as_ref().is_some_and(|e| !e.disabled) && endpoint_disabled.is_none();

    let stored = sqlx::query(
        "SELECT status, attempts, next_attempt, due_at, lease_owner FROM deliveries
         WHERE msg_id = $1 AND endpoint_id = $2 FOR UPDATE",
    )
    .bind(&a.msg_id)
    .bind(&a.endpoint_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (prev, due_at, lease_owner) = match &stored {
        Some(r) => {
            let status =
                DeliveryStatus::from_code(col::<i32>(r, 0)?.into()).unwrap_or(DeliveryStatus::Pending);
            let state = DeliveryState {
                status,
                attempts: u32::try_from(col::<i32>(r, 1)?).unwrap_or(0),
                next_attempt: col::<Option<i64>>(r, 2)?.map(Timestamp::from_millis),
            };
            (state, col::<Option<i64>>(r, 3)?, col::<Option<String>>(r, 4)?)
        }
        None => (DeliveryState::unscheduled(), None, None),
    };

    let next = after_attempt(
        &prev,
        &AttemptResult {
            trigger: a.trigger,
            outcome: rec.outcome,
            policy: &rec.policy,
            endpoint_active,
            finished_at: rec.finished_at,
            steering: rec.steering.clone(),
            jitter: rec.jitter,
        },
    );
    let exhausted = a.trigger == Trigger::Scheduled
        && rec.outcome == Outcome::Failed
        && prev.is_pending()
        && next.next_attempt.is_none()
        && endpoint_active;
    // A scheduled attempt ends its lease. A manual one leaves any lease and
    // schedule alone unless it settled the delivery.
    let (due_at, lease_owner) = match (a.trigger, next.next_attempt) {
        (Trigger::Scheduled, next_at) => (next_at, None),
        (Trigger::Manual, None) => (None, None),
        (Trigger::Manual, Some(_)) => (due_at.map(Timestamp::from_millis), lease_owner),
    };
    // A retry anyone may claim is now scheduled: tell the other nodes when.
    let retry = match (a.trigger, due_at) {
        (Trigger::Scheduled, Some(at)) if endpoint.is_some() => Some(notify::due_payload(at)),
        _ => None,
    };

    // A deleted endpoint keeps its attempt history but gets no delivery row.
    sqlx::query(
        "WITH d AS (
            INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at, total_attempts, last_code, last_attempt_at)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $9 WHERE $11
            ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = EXCLUDED.status,
                attempts = EXCLUDED.attempts, next_attempt = EXCLUDED.next_attempt,
                due_at = EXCLUDED.due_at, lease_owner = EXCLUDED.lease_owner,
                updated_at = EXCLUDED.updated_at, total_attempts = deliveries.total_attempts + 1,
                last_code = EXCLUDED.last_code, last_attempt_at = EXCLUDED.last_attempt_at
         ), t AS (
            INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
                duration_ms, trigger, error, created_at)
            VALUES ($12, $1, $2, $3, $13, $14, $10, $15, $16, $17, $18, $9)
         )
         SELECT pg_notify($19, $20) WHERE $20::text IS NOT NULL",
    )
    .bind(&a.msg_id)
    .bind(&a.endpoint_id)
    .bind(&a.app_id)
    .bind(int4(next.status.code()))
    .bind(i32::try_from(next.attempts).unwrap_or(i32::MAX))
    .bind(opt_ts(next.next_attempt))
    .bind(opt_ts(due_at))
    .bind(lease_owner)
    .bind(a.created_at.as_millis())
    .bind(i32::from(a.status_code))
    .bind(endpoint.is_some())
    .bind(&a.id)
    .bind(&a.url)
    .bind(int4(a.status.code()))
    .bind(pg_text(&a.response))
    .bind(a.duration_ms)
    .bind(int4(a.trigger.code()))
    .bind(a.error.as_deref().map(pg_text))
    .bind(notify::CHANNEL)
    .bind(retry)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(AttemptEffects { state: next, exhausted, endpoint_disabled })
}

/// The columns of an endpoint that recording an attempt needs.
struct EndpointHealth {
    disabled: bool,
    failing_since: Option<Timestamp>,
}

async fn health_of(c: &mut PgConnection, id: &str, lock: bool) -> StoreResult<Option<EndpointHealth>> {
    let sql = if lock {
        "SELECT disabled, failing_since FROM endpoints WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT disabled, failing_since FROM endpoints WHERE id = $1"
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(c).await?;
    row.map(|r| {
        Ok(EndpointHealth {
            disabled: col(&r, 0)?,
            failing_since: col::<Option<i64>>(&r, 1)?.map(Timestamp::from_millis),
        })
    })
    .transpose()
}

/// Would this attempt change the endpoint's row (streak start, disabled)?
fn health_changes(ep: &EndpointHealth, rec: &AttemptRecord) -> bool {
    let at = rec.finished_at;
    let failing_since = health::failing_since(ep.failing_since, rec.outcome, at);
    rec.steering.disable_endpoint
        || health::should_disable(failing_since, at, rec.auto_disable_after)
        || failing_since != ep.failing_since
}

/// Track the endpoint's failure streak; disable it when the receiver asked
/// for that or it has failed for too long. `ep` was read under lock
/// whenever this writes (see [`health_changes`]).
async fn update_health(
    c: &mut PgConnection,
    endpoint_id: &str,
    msg_id: &str,
    ep: &EndpointHealth,
    rec: &AttemptRecord,
) -> StoreResult<Option<EndpointDisabled>> {
    let at = rec.finished_at;
    let failing_since = health::failing_since(ep.failing_since, rec.outcome, at);
    let automatic = health::should_disable(failing_since, at, rec.auto_disable_after);
    if rec.steering.disable_endpoint || automatic {
        let sql = format!(
            "UPDATE endpoints e SET disabled = true, failing_since = $1, updated_at = $2 WHERE e.id = $3
             RETURNING {ENDPOINT_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(opt_ts(failing_since))
            .bind(at.as_millis())
            .bind(endpoint_id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or_else(|| StoreError::Backend("endpoint vanished mid-write".into()))?;
        let endpoint: Endpoint = rows::endpoint(&row, 0)?;
        // This attempt's own delivery is settled by the caller, from its
        // state before the endpoint went away.
        tenants::settle_pending(c, endpoint_id, at, Some(msg_id)).await?;
        return Ok(Some(EndpointDisabled {
            endpoint,
            failing_since,
            automatic: !rec.steering.disable_endpoint,
        }));
    }
    if failing_since != ep.failing_since {
        sqlx::query("UPDATE endpoints SET failing_since = $1 WHERE id = $2")
            .bind(opt_ts(failing_since))
            .bind(endpoint_id)
            .execute(c)
            .await?;
    }
    Ok(None)
}

pub async fn count_pending(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE due_at IS NOT NULL")
        .fetch_one(pool)
        .await?;
    Ok(n.max(0) as u64)
}
