//! The dispatcher's side of the store: claiming due deliveries under a lease,
//! with several nodes doing it at once. Recording attempts is in
//! [`super::recorder`].
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

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use tokio::sync::broadcast;

use super::rows::{self, col, int4};
use super::sql::limit;
use super::{PgStore, notify};
use crate::domain::model::DeliveryStatus;
use crate::domain::time::Timestamp;
use crate::store::listing::{ENDPOINT_COLS, MESSAGE_COLS};
use crate::store::{
    AttemptEffects, AttemptRecord, DeliveryKey, DeliveryTask, DispatchStore, Lease, StoreEvent, StoreResult,
};

#[async_trait]
impl DispatchStore for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        self.recorder.record(record).await
    }

    /// Lease the due deliveries in one statement. `SKIP LOCKED` lets nodes
    /// claim side by side, each getting rows the others are not taking; a row
    /// another node claimed since this statement's snapshot is re-checked
    /// against its new `due_at` and left out.
    async fn claim_due(
        &self,
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
        .fetch_all(&self.pool)
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

        let messages =
            load(&self.pool, MESSAGE_COLS, "messages m", "m", keys.iter().map(|(_, k)| &k.msg_id), |r| {
                rows::message(r, 0)
            })
            .await?;
        let endpoints = load(
            &self.pool,
            ENDPOINT_COLS,
            "endpoints e",
            "e",
            keys.iter().map(|(_, k)| &k.endpoint_id),
            |r| rows::endpoint(r, 0, &self.keys),
        )
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
            settle_failed(&self.pool, &dead, now, &lease.owner).await?;
        }
        Ok(tasks)
    }

    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        let min: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(due_at) FROM deliveries WHERE due_at IS NOT NULL AND NOT (endpoint_id = ANY($1))",
        )
        .bind(skip_endpoints)
        .fetch_one(&self.pool)
        .await?;
        Ok(min.map(Timestamp::from_millis))
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
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
        let n: i64 = sqlx::query_scalar(&sql).bind(owner).fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (msgs, eps): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
        let sql = lock_keys(2, "d.lease_owner = $4")
            + "UPDATE deliveries d SET due_at = $1 FROM l
               WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id";
        let done = sqlx::query(&sql)
            .bind(until.as_millis())
            .bind(&msgs)
            .bind(&eps)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE due_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }
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
