//! Sending again: recover, bulk replay, replay-missing; and the per-endpoint
//! counts that help decide to.

use std::collections::HashMap;

use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::messages::message_filters;
use super::notify;
use super::rows::{col, int4};
use super::sql::{Select, limit};
use crate::domain::filter;
use crate::domain::model::{DeliveryCounts, DeliveryStatus, Endpoint, NameSet};
use crate::domain::time::Timestamp;
use crate::store::{RequeueFilter, StoreError, StoreResult, status_code_range};

/// Conditions on `deliveries d` and `messages m` for the endpoint's
/// deliveries matching `f`. They apply to the updated rows themselves, so
/// PostgreSQL re-checks them on a row another node changed meanwhile (a
/// delivery claimed since is not requeued under its holder).
fn matching(q: &mut Select, app_id: &str, endpoint_id: &str, f: &RequeueFilter) {
    q.eq("d.app_id", app_id.to_owned()).eq("d.endpoint_id", endpoint_id.to_owned());
    q.cmp("m.created_at", ">=", f.since.as_millis());
    if let Some(until) = f.until {
        q.cmp("m.created_at", "<", until.as_millis());
    }
    let statuses = f.statuses();
    let codes: Vec<i32> = statuses.iter().map(|s| int4(s.code())).collect();
    q.cond().push("d.status = ANY(").push_bind(codes).push(")");
    // Settled ones only: a pending delivery someone holds is being sent.
    q.and("d.lease_owner IS NULL");
    q.and("m.payload IS NOT NULL");
    message_filters(q, &f.event_types, &f.channel);
    if let Some(tag) = &f.tag {
        q.json_contains("m.tags", tag);
    }
    if let Some(class) = f.status_code_class {
        let latest = "(SELECT t.status_code FROM attempts t WHERE t.msg_id = d.msg_id \
                      AND t.endpoint_id = d.endpoint_id ORDER BY t.id DESC LIMIT 1)";
        let (lo, hi) = status_code_range(class);
        q.cond()
            .push(format_args!("{latest} >= "))
            .push_bind(lo)
            .push(format_args!(" AND {latest} < "))
            .push_bind(hi);
    }
}

pub async fn requeue(
    pool: &PgPool,
    app_id: &str,
    endpoint_id: &str,
    f: &RequeueFilter,
    now: Timestamp,
    dry_run: bool,
) -> StoreResult<u64> {
    let n: i64 = if dry_run {
        let mut q = Select::new("SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.msg_id");
        matching(&mut q, app_id, endpoint_id, f);
        let found = q.rows(pool, |r| col::<i64>(r, 0)).await?;
        found.first().copied().unwrap_or(0)
    } else {
        let now = now.as_millis();
        let mut q = Select::new(format!("{}UPDATE deliveries d SET status = ", notify::WITH_DUE_OPEN));
        q.sql()
            .push_bind(int4(DeliveryStatus::Pending.code()))
            .push(", attempts = 0, next_attempt = ")
            .push_bind(now)
            .push(", due_at = ")
            .push_bind(now)
            .push(", lease_owner = NULL, updated_at = ")
            .push_bind(now)
            .push(" FROM messages m");
        q.and("m.id = d.msg_id");
        matching(&mut q, app_id, endpoint_id, f);
        q.sql().push(" RETURNING d.due_at").push(notify::with_due_close());
        let counted = q.rows(pool, |r| col::<i64>(r, 0)).await?;
        counted.first().copied().unwrap_or(0)
    };
    Ok(n.max(0) as u64)
}

pub async fn replay_missing(
    pool: &PgPool,
    endpoint: &Endpoint,
    since: Timestamp,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<u64> {
    let mut q = Select::new("SELECT m.id, m.event_type, m.channels FROM messages m");
    q.eq("m.app_id", endpoint.app_id.clone());
    q.cmp("m.created_at", ">=", since.as_millis());
    if let Some(until) = until {
        q.cmp("m.created_at", "<", until.as_millis());
    }
    q.and("m.payload IS NOT NULL");
    q.cond()
        .push("NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.endpoint_id = ")
        .push_bind(endpoint.id.clone())
        .push(")");
    let candidates = q.rows(pool, candidate).await?;
    let wanted: Vec<String> = candidates
        .into_iter()
        .filter(|(_, event_type, channels)| filter::wants(endpoint, event_type, channels.as_ref()))
        .map(|(id, _, _)| id)
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    // A delivery another node created meanwhile is left alone, not counted.
    let sql = notify::with_due(
        "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
            lease_owner, updated_at)
         SELECT k.id, $1, $2, $3, 0, $4, $4, NULL, $4 FROM UNNEST($5::text[]) AS k(id)
         ON CONFLICT (msg_id, endpoint_id) DO NOTHING
         RETURNING due_at",
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(&endpoint.id)
        .bind(&endpoint.app_id)
        .bind(int4(DeliveryStatus::Pending.code()))
        .bind(now.as_millis())
        .bind(&wanted)
        .fetch_one(pool)
        .await?;
    Ok(n.max(0) as u64)
}

/// (id, event type, channels) of a message, what fan-out filters on.
fn candidate(r: &PgRow) -> StoreResult<(String, String, Option<NameSet>)> {
    let channels = col::<Option<String>>(r, 2)?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Backend(format!("bad channels JSON: {e}")))?;
    Ok((col(r, 0)?, col(r, 1)?, channels))
}

pub async fn endpoint_stats(
    pool: &PgPool,
    app_id: &str,
    endpoint_id: &str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> StoreResult<DeliveryCounts> {
    let mut q = Select::new(
        "SELECT d.status, d.lease_owner IS NOT NULL, count(*) FROM deliveries d \
         JOIN messages m ON m.id = d.msg_id",
    );
    q.eq("d.app_id", app_id.to_owned()).eq("d.endpoint_id", endpoint_id.to_owned());
    if let Some(s) = since {
        q.cmp("m.created_at", ">=", s.as_millis());
    }
    q.time_range("m.created_at", until, None);
    q.sql().push(" GROUP BY 1, 2");
    let rows = q.rows(pool, |r| status_count(r, 0)).await?;
    let mut counts = DeliveryCounts::default();
    for (status, leased, n) in rows {
        add_count(&mut counts, status, leased, n);
    }
    Ok(counts)
}

pub async fn endpoint_recent(
    pool: &PgPool,
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
    .fetch_all(pool)
    .await?;
    counts_by_key(endpoint_ids, &rows)
}

pub async fn message_delivery_counts(
    pool: &PgPool,
    msg_ids: &[String],
) -> StoreResult<HashMap<String, DeliveryCounts>> {
    let rows = sqlx::query(
        "SELECT msg_id, status, lease_owner IS NOT NULL, count(*) FROM deliveries
         WHERE msg_id = ANY($1) GROUP BY 1, 2, 3",
    )
    .bind(msg_ids)
    .fetch_all(pool)
    .await?;
    counts_by_key(msg_ids, &rows)
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
