//! Sending again: recover, bulk replay, replay-missing; and the per-endpoint
//! counts that help decide to.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::PgRow;

use super::rows::{self, col, int4};
use super::sql::{self, Sql, limit};
use super::{PgStore, notify};
use crate::domain::model::{DeliveryCounts, DeliveryStatus, Endpoint, Message, NameSet};
use crate::domain::time::Timestamp;
use crate::domain::{filter, ordering};
use crate::store::listing::{self, DELIVERIES_WITH_MESSAGES, Listing};
use crate::store::{
    AttemptFilter, MessageFilter, Page, PageRequest, RedeliveryStore, RequeueFilter, StoreError, StoreResult,
};

#[async_trait]
impl RedeliveryStore for PgStore {
    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64> {
        // The conditions apply to the updated rows themselves, so PostgreSQL
        // re-checks them on a row another node changed meanwhile (a delivery
        // claimed since is not requeued under its holder).
        let conds = listing::requeue_matching(app_id, endpoint_id, filter);
        let n: i64 = if dry_run {
            let mut q = Sql::new(format!("SELECT count(*) FROM {DELIVERIES_WITH_MESSAGES}"));
            q.where_all(&conds);
            let found = q.rows(&self.pool, |r| col::<i64>(r, 0)).await?;
            found.first().copied().unwrap_or(0)
        } else {
            let mut tx = self.pool.begin().await?;
            let at = now.as_millis();
            let mut q = Sql::new("UPDATE deliveries d SET status = ");
            q.qb.push_bind(int4(DeliveryStatus::Pending.code()))
                .push(", attempts = 0, next_attempt = ")
                .push_bind(at)
                .push(", due_at = ")
                .push_bind(at)
                .push(", lease_owner = NULL, gate = NULL, updated_at = ")
                .push_bind(at)
                .push(" FROM messages m WHERE m.app_id = d.app_id AND m.id = d.msg_id");
            q.and_all(&conds, " AND ");
            q.qb.push(" RETURNING d.msg_id, d.okey");
            let mut requeued =
                q.rows(&mut *tx, |r| Ok((col::<String>(r, 0)?, col::<Option<String>>(r, 1)?))).await?;
            // Keyed ones re-enter their key's order, in their original order.
            requeued.sort();
            let keyed: Vec<(String, String)> =
                requeued.iter().filter_map(|(m, k)| Some((m.clone(), k.clone()?))).collect();
            super::ordering::reenter(&mut tx, endpoint_id, &keyed).await?;
            if !requeued.is_empty() {
                notify::due(&mut tx, now).await?;
            }
            tx.commit().await?;
            requeued.len() as i64
        };
        Ok(n.max(0) as u64)
    }

    async fn recoverable(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Timestamp,
        until: Option<Timestamp>,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let listing = Listing::recoverable(app_id, endpoint_id, since, until);
        sql::page(&self.pool, &listing, page, |r| rows::message(r, 0)).await
    }

    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let wanted: Vec<(String, Option<String>)> = self
            .missing(endpoint, since, until, None)
            .await?
            .into_iter()
            .filter(|c| filter::wants(endpoint, &c.event_type, c.channels.as_ref()))
            .map(|c| (c.id, c.ordering_key))
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        // A delivery another node created meanwhile is left alone, not
        // counted; the keyed ones then take their place in their key's
        // order, in message order.
        let ids: Vec<&str> = wanted.iter().map(|(id, _)| id.as_str()).collect();
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at)
             SELECT k.id, $1, $2, $3, 0, $4, $4, NULL, $4 FROM UNNEST($5::text[]) AS k(id)
             ON CONFLICT (msg_id, endpoint_id) DO NOTHING
             RETURNING msg_id",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.app_id)
        .bind(int4(DeliveryStatus::Pending.code()))
        .bind(now.as_millis())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let keyed: Vec<(String, String)> = wanted
            .iter()
            .filter(|(id, _)| inserted.contains(id))
            .filter_map(|(id, key)| {
                Some((id.clone(), ordering::key_for(key.as_deref(), endpoint.fifo)?.to_owned()))
            })
            .collect();
        super::ordering::reenter(&mut tx, &endpoint.id, &keyed).await?;
        if !inserted.is_empty() {
            notify::due(&mut tx, now).await?;
        }
        tx.commit().await?;
        Ok(inserted.len() as u64)
    }

    async fn count_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        cap: Option<usize>,
    ) -> StoreResult<(u64, bool)> {
        let mut candidates = self.missing(endpoint, since, until, cap).await?;
        let more = cap.is_some_and(|cap| candidates.len() > cap);
        candidates.truncate(cap.unwrap_or(usize::MAX));
        let n =
            candidates.iter().filter(|c| filter::wants(endpoint, &c.event_type, c.channels.as_ref())).count();
        Ok((n as u64, more))
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts> {
        let mut q = Sql::new(format!(
            "SELECT d.status, d.lease_owner IS NOT NULL, count(*) FROM {DELIVERIES_WITH_MESSAGES}"
        ));
        q.where_all(&listing::endpoint_stats(app_id, endpoint_id, since, until));
        q.qb.push(" GROUP BY 1, 2");
        let rows = q.rows(&self.pool, |r| status_count(r, 0)).await?;
        let mut counts = DeliveryCounts::default();
        for (status, leased, n) in rows {
            add_count(&mut counts, status, leased, n);
        }
        Ok(counts)
    }

    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        // The latest deliveries by message id (time order): a bounded index
        // scan per endpoint, all in one round trip.
        let rows = sqlx::query(
            "SELECT k.id, r.status, r.leased, count(*) FROM UNNEST($1::text[]) AS k(id)
             CROSS JOIN LATERAL (
                SELECT status, lease_owner IS NOT NULL AS leased FROM deliveries
                WHERE endpoint_id = k.id ORDER BY msg_id DESC LIMIT $2
             ) r
             GROUP BY 1, 2, 3",
        )
        .bind(endpoint_ids)
        .bind(limit(recent))
        .fetch_all(&self.pool)
        .await?;
        counts_by_key(endpoint_ids, &rows)
    }

    async fn count_messages(&self, app_id: &str, filter: &MessageFilter) -> StoreResult<u64> {
        sql::count(&self.pool, &Listing::messages(app_id, filter)).await
    }

    async fn count_attempts(&self, app_id: &str, filter: &AttemptFilter) -> StoreResult<u64> {
        sql::count(&self.pool, &Listing::attempts(app_id, filter)).await
    }

    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        let rows = sqlx::query(
            "SELECT msg_id, status, lease_owner IS NOT NULL, count(*) FROM deliveries
             WHERE msg_id = ANY($1) GROUP BY 1, 2, 3",
        )
        .bind(msg_ids)
        .fetch_all(&self.pool)
        .await?;
        counts_by_key(msg_ids, &rows)
    }
}

impl PgStore {
    /// The application's messages in [since, until) with no delivery to
    /// the endpoint, by id (its filters not yet applied); with a `cap`, the
    /// first `cap + 1` only.
    async fn missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        cap: Option<usize>,
    ) -> StoreResult<Vec<Candidate>> {
        let mut q = Sql::new("SELECT m.id, m.event_type, m.channels, m.ordering_key FROM messages m");
        q.where_all(&listing::missing_for(&endpoint.app_id, since, until));
        q.qb.push(" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.endpoint_id = ")
            .push_bind(endpoint.id.clone())
            .push(")");
        q.qb.push(" ORDER BY m.id");
        if let Some(cap) = cap {
            q.qb.push(" LIMIT ").push_bind(limit(cap).saturating_add(1));
        }
        q.rows(&self.pool, candidate).await
    }
}

/// A message replay-missing may send: what fan-out filters on, and its key.
struct Candidate {
    id: String,
    event_type: String,
    channels: Option<NameSet>,
    ordering_key: Option<String>,
}

fn candidate(r: &PgRow) -> StoreResult<Candidate> {
    let channels = col::<Option<String>>(r, 2)?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Backend(format!("bad channels JSON: {e}")))?;
    Ok(Candidate { id: col(r, 0)?, event_type: col(r, 1)?, channels, ordering_key: col(r, 3)? })
}

/// Rows of `(key, status, leased, count)` summed per key; every key in
/// `keys` gets an entry, zero if it had no rows.
fn counts_by_key(keys: &[String], rows: &[PgRow]) -> StoreResult<HashMap<String, DeliveryCounts>> {
    let mut out: HashMap<String, DeliveryCounts> =
        keys.iter().map(|k| (k.clone(), DeliveryCounts::default())).collect();
    for r in rows {
        let (status, leased, n) = status_count(r, 1)?;
        add_count(out.entry(col(r, 0)?).or_default(), status, leased, n);
    }
    Ok(out)
}

/// `(status, leased, count)` from columns `o`, `o + 1`, `o + 2`.
fn status_count(r: &PgRow, o: usize) -> StoreResult<(i32, bool, u64)> {
    Ok((col(r, o)?, col(r, o + 1)?, col::<i64>(r, o + 2)?.max(0) as u64))
}

/// Count `n` deliveries of stored `status` (pending + leased = sending).
fn add_count(counts: &mut DeliveryCounts, status: i32, leased: bool, n: u64) {
    match DeliveryStatus::from_code(status.into()) {
        Some(DeliveryStatus::Success) => counts.success += n,
        Some(DeliveryStatus::Fail) => counts.fail += n,
        Some(DeliveryStatus::Pending) if leased => counts.sending += n,
        _ => counts.pending += n,
    }
}
