//! Sending again: recover, bulk replay, replay-missing; and the per-endpoint
//! counts that help decide to.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection, Params, params};

use super::SqliteStore;
use super::messages::{Placed, place};
use super::rows;
use super::sql::{self, Sql};
use crate::domain::filter;
use crate::domain::model::{DeliveryCounts, DeliveryStatus, Endpoint, Message, NameSet};
use crate::domain::time::Timestamp;
use crate::store::listing::{self, DELIVERIES_WITH_MESSAGES, Listing, MESSAGE_COLS};
use crate::store::{
    AttemptFilter, MessageFilter, Page, PageRequest, RedeliveryStore, RequeueFilter, StoreError, StoreResult,
};

#[async_trait]
impl RedeliveryStore for SqliteStore {
    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64> {
        let conds = listing::requeue_matching(app_id, endpoint_id, filter);
        let endpoint_id = endpoint_id.to_owned();
        let run = move |c: &Connection| {
            let mut matching =
                Sql::new(format!("SELECT d.msg_id, d.endpoint_id FROM {DELIVERIES_WITH_MESSAGES}"));
            matching.where_all(&conds);
            if dry_run {
                let mut count = Sql::new("SELECT COUNT(*) FROM (");
                count.push(&matching.text, matching.params).push(")", []);
                let n: Vec<i64> = count.rows(c, |r| r.get(0))?;
                return Ok(n.first().copied().unwrap_or(0) as u64);
            }
            // Keyed ones re-enter their key's order, in their original order.
            let mut keyed = Sql::new("SELECT d.msg_id, d.okey FROM deliveries d WHERE d.okey IS NOT NULL");
            keyed
                .push(" AND (d.msg_id, d.endpoint_id) IN (", [])
                .push(&matching.text, matching.params.clone());
            keyed.push(") ORDER BY d.msg_id", []);
            let keyed: Vec<(String, String)> = keyed.rows(c, |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut update = Sql::new(format!(
                "UPDATE deliveries SET status = {pending}, attempts = 0, next_attempt = {now}, due_at = {now},
                    lease_owner = NULL, updated_at = {now}, gate = NULL
                 WHERE (msg_id, endpoint_id) IN (",
                pending = DeliveryStatus::Pending.code(),
                now = now.as_millis(),
            ));
            update.push(&matching.text, matching.params).push(")", []);
            let n = update.execute(c)? as u64;
            super::ordering::reenter(c, &endpoint_id, &keyed)?;
            Ok(n)
        };
        if dry_run { self.read(run).await } else { self.write(run).await }
    }

    async fn recoverable(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Timestamp,
        until: Option<Timestamp>,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let (listing, page) = (Listing::recoverable(app_id, endpoint_id, since, until), page.clone());
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::message(r, 0))).await
    }

    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let endpoint = endpoint.clone();
        self.write(move |c| {
            let missing = missing(c, &endpoint, since, until, MESSAGE_COLS, None, |r| rows::message(r, 0))?;
            let app_limit = super::tenants::get_app(c, &endpoint.app_id)?.and_then(|a| a.throttle_rate);
            let mut sent = 0;
            for m in missing.iter().filter(|m| filter::wants(&endpoint, &m.event_type, m.channels.as_ref())) {
                // In message order, so keyed ones queue in their original order.
                let _: Placed = place(c, m, &endpoint, app_limit, now, None, false, now)?;
                sent += 1;
            }
            Ok(sent)
        })
        .await
    }

    async fn count_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        cap: Option<usize>,
    ) -> StoreResult<(u64, bool)> {
        let endpoint = endpoint.clone();
        self.read(move |c| {
            // What fan-out filters on, without loading the payloads.
            let mut routing = missing(c, &endpoint, since, until, "m.event_type, m.channels", cap, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let more = cap.is_some_and(|cap| routing.len() > cap);
            routing.truncate(cap.unwrap_or(usize::MAX));
            let mut n = 0;
            for (event_type, channels) in routing {
                let channels: Option<NameSet> = channels
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .map_err(|e| StoreError::Backend(format!("bad channels JSON: {e}")))?;
                n += u64::from(filter::wants(&endpoint, &event_type, channels.as_ref()));
            }
            Ok((n, more))
        })
        .await
    }

    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        let ids = endpoint_ids.to_vec();
        self.read(move |c| endpoint_recent(c, &ids, recent)).await
    }

    async fn count_messages(&self, app_id: &str, filter: &MessageFilter) -> StoreResult<u64> {
        let listing = Listing::messages(app_id, filter);
        self.read(move |c| sql::count(c, &listing)).await
    }

    async fn count_attempts(&self, app_id: &str, filter: &AttemptFilter) -> StoreResult<u64> {
        let listing = Listing::attempts(app_id, filter);
        self.read(move |c| sql::count(c, &listing)).await
    }

    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        let ids = msg_ids.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT status, lease_owner IS NOT NULL, COUNT(*) FROM deliveries WHERE msg_id = ? GROUP BY 1, 2",
            )?;
            let mut out = HashMap::new();
            for id in ids {
                let counts = count_by_status(&mut stmt, [&id])?;
                out.insert(id, counts);
            }
            Ok(out)
        })
        .await
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts> {
        let conds = listing::endpoint_stats(app_id, endpoint_id, since, until);
        self.read(move |c| {
            let mut q = Sql::new(format!(
                "SELECT d.status, d.lease_owner IS NOT NULL, COUNT(*) FROM {DELIVERIES_WITH_MESSAGES}"
            ));
            q.where_all(&conds).push(" GROUP BY 1, 2", []);
            let mut stmt = c.prepare_cached(&q.text)?;
            count_by_status(&mut stmt, rusqlite::params_from_iter(q.params.iter()))
        })
        .await
    }
}

/// The application's messages in [since, until) with no delivery to the
/// endpoint, by id (its filters not yet applied): `cols` of each, read by
/// `row`; with a `cap`, the first `cap + 1` only.
fn missing<T>(
    c: &Connection,
    endpoint: &Endpoint,
    since: Timestamp,
    until: Option<Timestamp>,
    cols: &str,
    cap: Option<usize>,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut q = Sql::new(format!("SELECT {cols} FROM messages m"));
    q.where_all(&listing::missing_for(&endpoint.app_id, since, until)).push(
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.endpoint_id = ?)
         ORDER BY m.id",
        [Value::Text(endpoint.id.clone())],
    );
    if let Some(cap) = cap {
        q.push(" LIMIT ?", [Value::Integer(i64::try_from(cap).unwrap_or(i64::MAX - 1) + 1)]);
    }
    q.rows(c, row)
}

fn endpoint_recent(
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
