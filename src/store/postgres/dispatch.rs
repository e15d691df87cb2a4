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
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, PgPool};
use tokio::sync::broadcast;

use super::rows::{self, col, int4};
use super::sql::limit as limit_param;
use super::{PgStore, flow, notify};
use crate::domain::model::DeliveryStatus;
use crate::domain::time::Timestamp;
use crate::store::listing::{ENDPOINT_COLS, MESSAGE_COLS};
use crate::store::sealing::Keyring;
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

    /// Claim in one transaction: first parked deliveries whose endpoint may
    /// send again, then due ones, leased in one statement. `SKIP LOCKED`
    /// lets nodes claim side by side, each getting rows the others are not
    /// taking; a row another node claimed since this statement's snapshot
    /// is re-checked against its new `due_at` and left out. Deliveries of an
    /// endpoint whose flow is bounded take from its bucket (its row locked
    /// until the commit, so the bucket holds for the cluster); those it has
    /// no room for are parked.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        max: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        let mut claim = Claim {
            now,
            lease,
            keys: &self.keys,
            tasks: Vec::new(),
            flows: flow::Flows::default(),
            dead: Vec::new(),
        };
        // Parked deliveries whose endpoint may send again: in a transaction
        // that holds those endpoints' flows.
        let mut tx = self.pool.begin().await?;
        let waking = flow::lock_waking(&mut tx, &mut claim.flows, now, skip_endpoints, max).await?;
        if !waking.is_empty() {
            for endpoint_id in waking {
                let room = max.saturating_sub(claim.tasks.len());
                if room == 0 {
                    break;
                }
                claim.unpark(&mut tx, &endpoint_id, room).await?;
            }
            std::mem::take(&mut claim.flows).save(&mut tx, now).await?;
            tx.commit().await?;
        }
        // Due deliveries: leased in one statement that commits at once (so
        // other nodes' renewals and releases never wait on it); those of a
        // bounded endpoint are then checked against its bucket.
        let room = max.saturating_sub(claim.tasks.len());
        if room > 0 {
            claim.due(&self.pool, room, skip_endpoints).await?;
        }
        claim.finish(&self.pool).await?;
        Ok(claim.tasks)
    }

    async fn next_due(&self, now: Timestamp, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        // The earliest due delivery, or parked ones whose endpoint may send.
        // With endpoints skipped, only deliveries due after `now`: those
        // due already are the skipped ones' backlog (the claim before this
        // took the rest), and leaving them out of the `due_at` index walk
        // is what keeps a saturated endpoint from costing every probe its
        // whole backlog.
        let min: Option<i64> = sqlx::query_scalar(
            "SELECT LEAST(
                (SELECT MIN(due_at) FROM deliveries
                 WHERE due_at IS NOT NULL AND (cardinality($1::text[]) = 0 OR due_at > $2)),
                (SELECT MIN(wake_at) FROM endpoint_flow WHERE wake_at IS NOT NULL AND NOT (endpoint_id = ANY($1))))",
        )
        .bind(skip_endpoints)
        .bind(now.as_millis())
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
                   RETURNING d.due_at, d.endpoint_id"),
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
        // Locked in key order, like the keyed updates (see `lock_keys`). A
        // lease's expiry is its row's `due_at`: the due index finds them.
        let sql = notify::with_due(
            "WITH l AS (
                SELECT msg_id, endpoint_id FROM deliveries
                WHERE due_at IS NOT NULL AND lease_owner IS NOT NULL
                    AND ($1::text IS NULL OR lease_owner = $1)
                ORDER BY msg_id, endpoint_id FOR UPDATE
             )
             UPDATE deliveries d SET due_at = COALESCE(d.next_attempt, d.due_at), lease_owner = NULL
             FROM l WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id
             RETURNING d.due_at, d.endpoint_id",
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

/// One claim's work, inside its transaction.
struct Claim<'l> {
    now: Timestamp,
    lease: &'l Lease,
    /// Opens the endpoints' sealed secrets.
    keys: &'l Keyring,
    tasks: Vec<DeliveryTask>,
    flows: flow::Flows,
    /// Claimed deliveries whose endpoint or message is gone.
    dead: Vec<DeliveryKey>,
}

impl Claim<'_> {
    /// Take up to `room` of the endpoint's parked deliveries, as its bucket
    /// allows, in the order they were parked.
    async fn unpark(&mut self, c: &mut PgConnection, endpoint_id: &str, room: usize) -> StoreResult<()> {
        let now = self.now;
        let endpoint =
            load(&mut *c, ENDPOINT_COLS, "endpoints e", "e", [&endpoint_id.to_owned()].into_iter(), |r| {
                rows::endpoint(r, 0, self.keys)
            })
            .await?
            .remove(endpoint_id)
            .filter(|e| !e.disabled);
        let Some(endpoint) = endpoint else {
            self.flows.get(endpoint_id).wake_at = None; // gone or disabled: nothing parked is owed
            return Ok(());
        };
        let limit = flow::limits(c, &[endpoint_id]).await?.remove(endpoint_id).unwrap_or_default().limit;
        let granted = self.flows.get(endpoint_id).state.take(limit, now, room);
        let taken = sqlx::query(
            "WITH p AS (
                SELECT msg_id FROM deliveries WHERE endpoint_id = $1 AND gate = $2
                ORDER BY msg_id LIMIT $3 FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d SET gate = NULL, due_at = $4, lease_owner = $5
             FROM p WHERE d.msg_id = p.msg_id AND d.endpoint_id = $1
             RETURNING d.msg_id",
        )
        .bind(endpoint_id)
        .bind(flow::PARKED)
        .bind(limit_param(granted))
        .bind(self.lease.until.as_millis())
        .bind(&self.lease.owner)
        .fetch_all(&mut *c)
        .await?;
        let mut ids = taken.iter().map(|r| col::<String>(r, 0)).collect::<StoreResult<Vec<_>>>()?;
        ids.sort();
        self.flows.get(endpoint_id).unparked(limit, now, granted, ids.len());
        let messages =
            load(&mut *c, MESSAGE_COLS, "messages m", "m", ids.iter(), |r| rows::message(r, 0)).await?;
        let endpoint = Arc::new(endpoint);
        for msg_id in ids {
            match messages.get(&msg_id) {
                Some(m) => self.tasks.push(DeliveryTask {
                    message: Arc::clone(m),
                    endpoint: Arc::clone(&endpoint),
                    paced: true,
                }),
                None => self.dead.push(DeliveryKey { msg_id, endpoint_id: endpoint_id.to_owned() }),
            }
        }
        Ok(())
    }

    /// Lease up to `room` due deliveries, in due order.
    async fn due(&mut self, pool: &PgPool, room: usize, skip_endpoints: &[String]) -> StoreResult<()> {
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
        .bind(self.now.as_millis())
        .bind(skip_endpoints)
        .bind(limit_param(room))
        .bind(self.lease.until.as_millis())
        .bind(&self.lease.owner)
        .fetch_all(pool)
        .await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let mut keys = claimed
            .iter()
            .map(|r| Ok((col::<i64>(r, 2)?, DeliveryKey { msg_id: col(r, 0)?, endpoint_id: col(r, 1)? })))
            .collect::<StoreResult<Vec<_>>>()?;
        // In due order, as one SELECT … ORDER BY would have given them.
        keys.sort_by_key(|(due, _)| *due);

        let messages =
            load(pool, MESSAGE_COLS, "messages m", "m", keys.iter().map(|(_, k)| &k.msg_id), |r| {
                rows::message(r, 0)
            })
            .await?;
        let endpoints =
            load(pool, ENDPOINT_COLS, "endpoints e", "e", keys.iter().map(|(_, k)| &k.endpoint_id), |r| {
                rows::endpoint(r, 0, self.keys)
            })
            .await?;
        let ids: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        let limits = flow::limits(&mut *pool.acquire().await?, &ids).await?;
        let paced: Vec<&str> =
            limits.iter().filter(|(_, l)| l.may_pace()).map(|(id, _)| id.as_str()).collect();
        // Only a batch with paced endpoints holds their flows, in a
        // transaction of its own; plain traffic needs none.
        let mut tx = if paced.is_empty() { None } else { Some(pool.begin().await?) };
        let mut flows = flow::Flows::default();
        if let Some(tx) = &mut tx {
            flows.lock_more(tx, &paced).await?;
        }

        let now = self.now;
        let mut parked = Vec::new();
        for (_, key) in keys {
            match (messages.get(&key.msg_id), endpoints.get(&key.endpoint_id)) {
                (Some(message), Some(endpoint)) if !endpoint.disabled => {
                    let limit = limits.get(&endpoint.id).copied().unwrap_or_default();
                    let mut bounded = false;
                    if limit.may_pace() {
                        let f = flows.get(&endpoint.id);
                        bounded = f.is_limited(limit.limit, now);
                        if bounded && !f.admit_one(limit.limit, now) {
                            f.parked(limit.limit, now);
                            parked.push(key);
                            continue;
                        }
                    }
                    self.tasks.push(DeliveryTask {
                        message: Arc::clone(message),
                        endpoint: Arc::clone(endpoint),
                        paced: bounded,
                    });
                }
                // Its endpoint or message is gone or disabled: nothing to send, ever.
                _ => self.dead.push(key),
            }
        }
        if let Some(mut tx) = tx {
            flow::park(&mut tx, &parked).await?;
            flows.save(&mut tx, now).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn finish(&mut self, pool: &PgPool) -> StoreResult<()> {
        if !self.dead.is_empty() {
            settle_failed(&mut *pool.acquire().await?, &self.dead, self.now, &self.lease.owner).await?;
        }
        Ok(())
    }
}

/// Rows of `table` (aliased `alias`) whose id is one of `ids`, by id.
pub(super) async fn load<'a, 'e, T>(
    db: impl PgExecutor<'e>,
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
    let found = sqlx::query(&sql).bind(&ids).fetch_all(db).await?;
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
async fn settle_failed(
    c: &mut PgConnection,
    keys: &[DeliveryKey],
    now: Timestamp,
    owner: &str,
) -> StoreResult<()> {
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
        .execute(c)
        .await?;
    Ok(())
}
