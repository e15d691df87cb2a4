//! Ordered delivery on PostgreSQL (the rules are `domain::ordering`'s): per
//! endpoint and key an `ordering_keys` row names the head; the others wait
//! with `gate = 2`, in `seq` order, without a `due_at`, so no node can
//! claim them.
//!
//! Ingest takes the key's row with an upsert, which holds its lock until
//! the transaction commits: two nodes ingesting messages of one key
//! serialize on it, so `seq` follows the commit order, which is the order
//! the API acknowledged them in. Settling a head locks the row too, so a
//! key moves on exactly once.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;
use super::rows::col;
use super::sql;
use crate::domain::time::Timestamp;
use crate::store::listing::Listing;
use crate::store::{BlockedKey, DeliveryKey, OrderingStore, Page, PageRequest, StoreError, StoreResult};

/// Deliveries held behind an earlier message of their key.
pub(super) const HELD: i32 = 2;

/// Where a new delivery of a key stands: its `seq`, and whether it is the
/// head (it may be attempted now) or held.
pub(super) struct Queued {
    pub seq: i64,
    pub head: bool,
}

/// Give a delivery of `(endpoint_id, okey)` its place in the key's order.
/// Several at once are given in the order passed; callers pass each
/// transaction's keys sorted, so two transactions lock them in one order.
pub(super) async fn enqueue(
    c: &mut PgConnection,
    endpoint_id: &str,
    okey: &str,
    msg_id: &str,
) -> StoreResult<Queued> {
    let (seq, head_seq): (i64, i64) = sqlx::query_as(
        "INSERT INTO ordering_keys (endpoint_id, okey, last_seq, head_seq, head_msg_id)
         VALUES ($1, $2, 1, 1, $3)
         ON CONFLICT (endpoint_id, okey) DO UPDATE SET last_seq = ordering_keys.last_seq + 1
         RETURNING last_seq, head_seq",
    )
    .bind(endpoint_id)
    .bind(okey)
    .bind(msg_id)
    .fetch_one(c)
    .await?;
    Ok(Queued { seq, head: seq == head_seq })
}

/// The next delivery of a key, now its head, ungated.
pub(super) struct Promoted {
    pub key: DeliveryKey,
    pub app_id: String,
    pub next_attempt: Option<Timestamp>,
}

/// The delivery of `msg_id` to `endpoint_id`, ordered by `okey`, has
/// settled: if it is its key's head, the key moves on (`moves_on`) or
/// blocks. Returns the new head; the caller makes it due, leases it or
/// parks it. Heads are matched by message: a key's numbers start again
/// once it is idle.
pub(super) async fn settled(
    c: &mut PgConnection,
    endpoint_id: &str,
    okey: &str,
    msg_id: &str,
    moves_on: bool,
    now: Timestamp,
) -> StoreResult<Option<Promoted>> {
    let head: Option<String> = sqlx::query_scalar(
        "SELECT head_msg_id FROM ordering_keys WHERE endpoint_id = $1 AND okey = $2 FOR UPDATE",
    )
    .bind(endpoint_id)
    .bind(okey)
    .fetch_optional(&mut *c)
    .await?;
    if head.as_deref() != Some(msg_id) {
        return Ok(None);
    }
    if !moves_on {
        sqlx::query("UPDATE ordering_keys SET blocked_at = $3 WHERE endpoint_id = $1 AND okey = $2")
            .bind(endpoint_id)
            .bind(okey)
            .bind(now.as_millis())
            .execute(c)
            .await?;
        return Ok(None);
    }
    advance(c, endpoint_id, okey).await
}

/// Make the next held delivery of the key (whose row the caller has
/// locked) its head, or forget the key when none waits.
async fn advance(c: &mut PgConnection, endpoint_id: &str, okey: &str) -> StoreResult<Option<Promoted>> {
    let next = sqlx::query(
        "SELECT msg_id, app_id, seq, next_attempt FROM deliveries
         WHERE endpoint_id = $1 AND okey = $2 AND gate = $3 ORDER BY seq LIMIT 1 FOR UPDATE",
    )
    .bind(endpoint_id)
    .bind(okey)
    .bind(HELD)
    .fetch_optional(&mut *c)
    .await?;
    let Some(next) = next else {
        sqlx::query("DELETE FROM ordering_keys WHERE endpoint_id = $1 AND okey = $2")
            .bind(endpoint_id)
            .bind(okey)
            .execute(c)
            .await?;
        return Ok(None);
    };
    let (msg_id, app_id, seq): (String, String, i64) = (col(&next, 0)?, col(&next, 1)?, col(&next, 2)?);
    let next_attempt = col::<Option<i64>>(&next, 3)?.map(Timestamp::from_millis);
    sqlx::query(
        "WITH k AS (
            UPDATE ordering_keys SET head_seq = $3, head_msg_id = $4, blocked_at = NULL
            WHERE endpoint_id = $1 AND okey = $2
         )
         UPDATE deliveries SET gate = NULL WHERE msg_id = $4 AND endpoint_id = $1",
    )
    .bind(endpoint_id)
    .bind(okey)
    .bind(seq)
    .bind(&msg_id)
    .execute(c)
    .await?;
    Ok(Some(Promoted {
        key: DeliveryKey { msg_id, endpoint_id: endpoint_id.to_owned() },
        app_id,
        next_attempt,
    }))
}

/// Hold deliveries behind their keys' heads: `(key, okey, seq)` each.
pub(super) async fn hold(c: &mut PgConnection, held: &[(DeliveryKey, String, i64)]) -> StoreResult<()> {
    if held.is_empty() {
        return Ok(());
    }
    let msgs: Vec<&str> = held.iter().map(|(k, _, _)| k.msg_id.as_str()).collect();
    let eps: Vec<&str> = held.iter().map(|(k, _, _)| k.endpoint_id.as_str()).collect();
    let okeys: Vec<&str> = held.iter().map(|(_, o, _)| o.as_str()).collect();
    let seqs: Vec<i64> = held.iter().map(|(_, _, s)| *s).collect();
    sqlx::query(
        "UPDATE deliveries d SET gate = $1, okey = k.okey, seq = k.seq, due_at = NULL, lease_owner = NULL
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[]) AS k(msg_id, endpoint_id, okey, seq)
         WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id",
    )
    .bind(HELD)
    .bind(&msgs)
    .bind(&eps)
    .bind(&okeys)
    .bind(&seqs)
    .execute(c)
    .await?;
    Ok(())
}

/// Deliveries sent again (recover, bulk replay) re-enter their key's order
/// behind what waits, in their original order: `(msg_id, okey)` each, in
/// message order. The heads among them keep their due time.
pub(super) async fn reenter(
    c: &mut PgConnection,
    endpoint_id: &str,
    rows: &[(String, String)],
) -> StoreResult<()> {
    let mut held = Vec::new();
    let mut heads = Vec::new();
    for (msg_id, okey) in rows {
        let q = enqueue(c, endpoint_id, okey, msg_id).await?;
        let key = DeliveryKey { msg_id: msg_id.clone(), endpoint_id: endpoint_id.to_owned() };
        if q.head {
            heads.push((key, okey.clone(), q.seq));
        } else {
            held.push((key, okey.clone(), q.seq));
        }
    }
    hold(c, &held).await?;
    for (key, okey, seq) in heads {
        sqlx::query("UPDATE deliveries SET okey = $3, seq = $4 WHERE msg_id = $1 AND endpoint_id = $2")
            .bind(&key.msg_id)
            .bind(&key.endpoint_id)
            .bind(&okey)
            .bind(seq)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl OrderingStore for PgStore {
    async fn blocked_keys(&self, endpoint_id: &str, page: &PageRequest) -> StoreResult<Page<BlockedKey>> {
        let listing = Listing::blocked_keys(endpoint_id);
        sql::page(&self.pool, &listing, page, |r| {
            Ok(BlockedKey {
                key: col(r, 0)?,
                head_msg_id: col(r, 1)?,
                since: Timestamp::from_millis(col(r, 2)?),
            })
        })
        .await
    }

    async fn skip_blocked(
        &self,
        endpoint_id: &str,
        key: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DeliveryKey>> {
        let mut tx = self.pool.begin().await?;
        let blocked: Option<i64> = sqlx::query_scalar(
            "SELECT blocked_at FROM ordering_keys WHERE endpoint_id = $1 AND okey = $2 FOR UPDATE",
        )
        .bind(endpoint_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if blocked.is_none() {
            return Err(StoreError::NotFound);
        }
        let Some(next) = advance(&mut tx, endpoint_id, key).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let due = next.next_attempt.map_or(now, |t| t.max(now));
        let sql = super::notify::with_due(
            "UPDATE deliveries SET due_at = $3 WHERE msg_id = $1 AND endpoint_id = $2 RETURNING due_at, endpoint_id",
        );
        sqlx::query(&sql)
            .bind(&next.key.msg_id)
            .bind(endpoint_id)
            .bind(due.as_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(next.key))
    }
}
