//! Ordered delivery on the embedded store (the rules are
//! `domain::ordering`'s): per endpoint and key, an `ordering_keys` row says
//! which delivery is the head, and the others wait with `gate = 2`, in
//! `seq` order, without a `due_at`. The row goes once the key is idle, so
//! what is stored grows with the keys that have something waiting, not
//! with every key ever used.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::domain::time::Timestamp;
use crate::store::listing::Listing;
use crate::store::{BlockedKey, DeliveryKey, OrderingStore, Page, PageRequest, StoreError, StoreResult};

/// Deliveries held behind an earlier message of their key.
pub(super) const HELD: i64 = 2;

/// Where a new delivery of a key stands.
pub(super) struct Queued {
    pub seq: i64,
    /// It is the head: it may be attempted now. Otherwise it is held.
    pub head: bool,
}

/// Give a delivery of `okey` its place: the head if the key is idle, else
/// held behind the others. The caller writes `seq` (and the gate when held)
/// on the delivery row.
pub(super) fn enqueue(c: &Connection, endpoint_id: &str, okey: &str, msg_id: &str) -> StoreResult<Queued> {
    let (seq, head_seq): (i64, i64) = c
        .prepare_cached(
            "INSERT INTO ordering_keys (endpoint_id, okey, last_seq, head_seq, head_msg_id)
             VALUES (?1, ?2, 1, 1, ?3)
             ON CONFLICT (endpoint_id, okey) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq, head_seq",
        )?
        .query_row(params![endpoint_id, okey, msg_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Queued { seq, head: seq == head_seq })
}

/// Hold a delivery row behind its key's head.
pub(super) fn hold(c: &Connection, key: &DeliveryKey, okey: &str, seq: i64) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE deliveries SET gate = ?, okey = ?, seq = ?, due_at = NULL, lease_owner = NULL
         WHERE msg_id = ? AND endpoint_id = ?",
    )?
    .execute(params![HELD, okey, seq, key.msg_id, key.endpoint_id])?;
    Ok(())
}

/// The next delivery of a key, now its head.
pub(super) struct Promoted {
    pub key: DeliveryKey,
    pub app_id: String,
    /// When it was due to be attempted (a delayed message may be later).
    pub next_attempt: Option<Timestamp>,
}

/// The delivery of `msg_id` to `endpoint_id`, ordered by `okey`, has
/// settled: if it was its key's head, the key moves on (`moves_on`, see
/// `domain::ordering::moves_on`) or blocks. Returns the new head, ungated:
/// the caller makes it due (or leases or parks it). Heads are matched by
/// message, not by `seq`: a key's numbers start again once it is idle.
pub(super) fn settled(
    c: &Connection,
    endpoint_id: &str,
    okey: &str,
    msg_id: &str,
    moves_on: bool,
    now: Timestamp,
) -> StoreResult<Option<Promoted>> {
    let head: Option<String> = c
        .prepare_cached("SELECT head_msg_id FROM ordering_keys WHERE endpoint_id = ? AND okey = ?")?
        .query_row([endpoint_id, okey], |r| r.get(0))
        .optional()?;
    if head.as_deref() != Some(msg_id) {
        return Ok(None); // not the head (a manual attempt on a held one)
    }
    if !moves_on {
        c.prepare_cached("UPDATE ordering_keys SET blocked_at = ? WHERE endpoint_id = ? AND okey = ?")?
            .execute(params![now.as_millis(), endpoint_id, okey])?;
        return Ok(None);
    }
    advance(c, endpoint_id, okey)
}

/// Make the next held delivery of the key its head, or forget the key if
/// none waits.
fn advance(c: &Connection, endpoint_id: &str, okey: &str) -> StoreResult<Option<Promoted>> {
    let next = c
        .prepare_cached(
            "SELECT msg_id, app_id, seq, next_attempt FROM deliveries
             WHERE endpoint_id = ? AND okey = ? AND gate = ? ORDER BY seq LIMIT 1",
        )?
        .query_row(params![endpoint_id, okey, HELD], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .optional()?;
    let Some((msg_id, app_id, seq, next_attempt)) = next else {
        c.prepare_cached("DELETE FROM ordering_keys WHERE endpoint_id = ? AND okey = ?")?
            .execute([endpoint_id, okey])?;
        return Ok(None);
    };
    c.prepare_cached(
        "UPDATE ordering_keys SET head_seq = ?, head_msg_id = ?, blocked_at = NULL
         WHERE endpoint_id = ? AND okey = ?",
    )?
    .execute(params![seq, msg_id, endpoint_id, okey])?;
    c.prepare_cached("UPDATE deliveries SET gate = NULL WHERE msg_id = ? AND endpoint_id = ?")?
        .execute([&msg_id, endpoint_id])?;
    Ok(Some(Promoted {
        key: DeliveryKey { msg_id, endpoint_id: endpoint_id.to_owned() },
        app_id,
        next_attempt: next_attempt.map(Timestamp::from_millis),
    }))
}

/// The endpoint no longer takes deliveries (disabled or deleted): its keys
/// are forgotten with its pending deliveries.
pub(super) fn forget_endpoint(c: &Connection, endpoint_id: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM ordering_keys WHERE endpoint_id = ?")?.execute([endpoint_id])?;
    Ok(())
}

/// Deliveries sent again (recover, bulk replay) re-enter their key's order
/// behind what is waiting, in their original (acceptance) order.
pub(super) fn reenter(c: &Connection, endpoint_id: &str, rows: &[(String, String)]) -> StoreResult<()> {
    for (msg_id, okey) in rows {
        let q = enqueue(c, endpoint_id, okey, msg_id)?;
        let key = DeliveryKey { msg_id: msg_id.clone(), endpoint_id: endpoint_id.to_owned() };
        if q.head {
            c.prepare_cached("UPDATE deliveries SET seq = ? WHERE msg_id = ? AND endpoint_id = ?")?
                .execute(params![q.seq, msg_id, endpoint_id])?;
        } else {
            hold(c, &key, okey, q.seq)?;
        }
    }
    Ok(())
}

#[async_trait]
impl OrderingStore for SqliteStore {
    async fn blocked_keys(&self, endpoint_id: &str, page: &PageRequest) -> StoreResult<Page<BlockedKey>> {
        let listing = Listing::blocked_keys(endpoint_id);
        let page = page.clone();
        self.read(move |c| {
            super::sql::page(c, &listing, &page, |r| {
                Ok(BlockedKey {
                    key: r.get(0)?,
                    head_msg_id: r.get(1)?,
                    since: Timestamp::from_millis(r.get(2)?),
                })
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
        let (endpoint_id, key) = (endpoint_id.to_owned(), key.to_owned());
        self.write(move |c| {
            let blocked: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM ordering_keys
                     WHERE endpoint_id = ? AND okey = ? AND blocked_at IS NOT NULL)",
                )?
                .query_row([&endpoint_id, &key], |r| r.get(0))?;
            if !blocked {
                return Err(StoreError::NotFound);
            }
            let Some(next) = advance(c, &endpoint_id, &key)? else { return Ok(None) };
            let due = next.next_attempt.map_or(now, |t| t.max(now));
            c.prepare_cached("UPDATE deliveries SET due_at = ? WHERE msg_id = ? AND endpoint_id = ?")?
                .execute(params![due.as_millis(), next.key.msg_id, endpoint_id])?;
            Ok(Some(next.key))
        })
        .await
    }
}
