//! Sending again: recover, bulk replay, replay-missing; and the per-endpoint
//! counts that help decide to.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection, Params, params, params_from_iter};

use super::messages::{insert_delivery, message_filters};
use super::rows::{self, MESSAGE_COLS};
use super::sql::{DELIVERIES_WITH_MESSAGES, Select};
use crate::domain::filter;
use crate::domain::model::{DeliveryCounts, DeliveryStatus, Endpoint};
use crate::domain::time::Timestamp;
use crate::store::{RequeueFilter, StoreResult, status_code_range};

/// The endpoint's deliveries matching `f`, as (msg_id, endpoint_id) rows.
fn matching(app_id: &str, endpoint_id: &str, f: &RequeueFilter) -> Select {
    let mut q = Select::new(format!("SELECT d.msg_id, d.endpoint_id FROM {DELIVERIES_WITH_MESSAGES}"));
    q.eq("d.app_id", app_id.to_owned()).eq("d.endpoint_id", endpoint_id.to_owned());
    q.and("m.created_at >= ?", [Value::Integer(f.since.as_millis())]);
    if let Some(until) = f.until {
        q.and("m.created_at < ?", [Value::Integer(until.as_millis())]);
    }
    let statuses = f.statuses();
    let codes: Vec<String> = statuses.iter().map(|s| s.code().to_string()).collect();
    q.and(&format!("d.status IN ({})", codes.join(", ")), []);
    // Settled ones only: a pending delivery someone holds is being sent.
    q.and("d.lease_owner IS NULL", []);
    q.and("m.payload IS NOT NULL", []);
    message_filters(&mut q, &f.event_types, &f.channel);
    if let Some(tag) = &f.tag {
        q.json_contains("m.tags", tag);
    }
    if let Some(class) = f.status_code_class {
        let latest = "(SELECT t.status_code FROM attempts t WHERE t.msg_id = d.msg_id \
                      AND t.endpoint_id = d.endpoint_id ORDER BY t.id DESC LIMIT 1)";
        let (lo, hi) = status_code_range(class);
        q.and(
            &format!("{latest} >= ? AND {latest} < ?"),
            [Value::Integer(lo.into()), Value::Integer(hi.into())],
        );
    }
    q
}

pub fn requeue(
    c: &Connection,
    app_id: &str,
    endpoint_id: &str,
    f: &RequeueFilter,
    now: Timestamp,
    dry_run: bool,
) -> StoreResult<u64> {
    let (select, params) = matching(app_id, endpoint_id, f).into_parts();
    if dry_run {
        let sql = format!("SELECT COUNT(*) FROM ({select})");
        let n: i64 = c.prepare_cached(&sql)?.query_row(params_from_iter(params.iter()), |r| r.get(0))?;
        return Ok(n as u64);
    }
    let sql = format!(
        "UPDATE deliveries SET status = {pending}, attempts = 0, next_attempt = {now}, due_at = {now},
            lease_owner = NULL, updated_at = {now}
         WHERE (msg_id, endpoint_id) IN ({select})",
        pending = DeliveryStatus::Pending.code(),
        now = now.as_millis(),
    );
    Ok(c.prepare_cached(&sql)?.execute(params_from_iter(params.iter()))? as u64)
}

pub fn replay_missing(
    c: &Connection,
    endpoint: &Endpoint,
    since: Timestamp,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<u64> {
    let mut q = Select::new(format!("SELECT {MESSAGE_COLS} FROM messages m"));
    q.eq("m.app_id", endpoint.app_id.clone());
    q.and("m.created_at >= ?", [Value::Integer(since.as_millis())]);
    if let Some(until) = until {
        q.and("m.created_at < ?", [Value::Integer(until.as_millis())]);
    }
    q.and("m.payload IS NOT NULL", []);
    q.and(
        "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.endpoint_id = ?)",
        [Value::Text(endpoint.id.clone())],
    );
    let missing = q.rows(c, |r| rows::message(r, 0))?;
    let mut sent = 0;
    for m in missing.iter().filter(|m| filter::wants(endpoint, &m.event_type, m.channels.as_ref())) {
        insert_delivery(c, &m.id, &endpoint.id, &m.app_id, now, now, None, now)?;
        sent += 1;
    }
    Ok(sent)
}

pub fn endpoint_stats(
    c: &Connection,
    app_id: &str,
    endpoint_id: &str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> StoreResult<DeliveryCounts> {
    let mut q = Select::new(format!(
        "SELECT d.status, d.lease_owner IS NOT NULL, COUNT(*) FROM {DELIVERIES_WITH_MESSAGES}"
    ));
    q.eq("d.app_id", app_id.to_owned()).eq("d.endpoint_id", endpoint_id.to_owned());
    if let Some(s) = since {
        q.and("m.created_at >= ?", [Value::Integer(s.as_millis())]);
    }
    q.time_range("m.created_at", until, None);
    let (sql, params) = q.into_parts();
    let mut stmt = c.prepare_cached(&format!("{sql} GROUP BY 1, 2"))?;
    count_by_status(&mut stmt, params_from_iter(params.iter()))
}

pub fn endpoint_recent(
    c: &Connection,
    endpoint_ids: &[String],
    recent: usize,
) -> StoreResult<HashMap<String, DeliveryCounts>> {
    // The latest deliveries by message id (time order): a bounded index scan.
    let mut stmt = c.prepare_cached(
        "SELECT status, leased, COUNT(*) FROM (
            SELECT status, lease_owner IS NOT NULL AS leased FROM deliveries WHERE endpoint_id = ?
            ORDER BY msg_id DESC LIMIT ?
         ) GROUP BY 1, 2",
    )?;
    let mut out = HashMap::new();
    for id in endpoint_ids {
        out.insert(id.clone(), count_by_status(&mut stmt, params![id, recent as i64])?);
    }
    Ok(out)
}

pub fn message_delivery_counts(
    c: &Connection,
    msg_ids: &[String],
) -> StoreResult<HashMap<String, DeliveryCounts>> {
    let mut stmt = c.prepare_cached(
        "SELECT status, lease_owner IS NOT NULL, COUNT(*) FROM deliveries WHERE msg_id = ? GROUP BY 1, 2",
    )?;
    let mut out = HashMap::new();
    for id in msg_ids {
        out.insert(id.clone(), count_by_status(&mut stmt, [id])?);
    }
    Ok(out)
}

/// Sum rows of `(status, leased, count)` into counts by status.
fn count_by_status(stmt: &mut CachedStatement<'_>, params: impl Params) -> StoreResult<DeliveryCounts> {
    let rows = stmt
        .query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(2)? as u64)))?;
    let mut counts = DeliveryCounts::default();
    for row in rows {
        let (status, leased, n) = row?;
        add_count(&mut counts, status, leased, n);
    }
    Ok(counts)
}

/// Count `n` deliveries of stored `status` (pending + leased = sending).
fn add_count(counts: &mut DeliveryCounts, status: i64, leased: bool, n: u64) {
    match DeliveryStatus::from_code(status) {
        Some(DeliveryStatus::Success) => counts.success += n,
        Some(DeliveryStatus::Fail) => counts.fail += n,
        Some(DeliveryStatus::Pending) if leased => counts.sending += n,
        _ => counts.pending += n,
    }
}
