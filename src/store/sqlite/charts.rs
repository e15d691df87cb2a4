//! Attempt counts per endpoint and minute, for the dashboard's charts.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::SqliteStore;
use crate::domain::attempt_stats::{self, AttemptStats, COUNTERS, Series, Window};
use crate::domain::model::Attempt;
use crate::domain::time::Timestamp;
use crate::store::listing::ATTEMPT_STAT_COLS;
use crate::store::{ChartStore, StoreResult};

/// Adds the attempt to its minute's row: one upsert, no read.
static COUNT: LazyLock<String> = LazyLock::new(|| {
    let cols = ATTEMPT_STAT_COLS.join(", ");
    let marks = vec!["?"; COUNTERS].join(", ");
    let add: Vec<String> = ATTEMPT_STAT_COLS.iter().map(|c| format!("{c} = {c} + excluded.{c}")).collect();
    format!(
        "INSERT INTO attempt_minutes (endpoint_id, minute, app_id, {cols}) VALUES (?, ?, ?, {marks})
         ON CONFLICT (endpoint_id, minute) DO UPDATE SET {}",
        add.join(", ")
    )
});

/// One endpoint's minutes in [first, end), summed by interval: an index
/// range of at most one row per minute.
static SERIES: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = ATTEMPT_STAT_COLS.iter().map(|c| format!("SUM({c})")).collect();
    format!(
        "SELECT (minute - ?1) / ?3, {} FROM attempt_minutes
         WHERE endpoint_id = ?4 AND minute >= ?1 AND minute < ?2 GROUP BY 1",
        sums.join(", ")
    )
});

thread_local! {
    /// Counts of the writer's current batch, by (endpoint, minute), with
    /// the endpoint's application. Only the writer thread fills it.
    static BATCH: RefCell<BTreeMap<(String, i64), (String, AttemptStats)>> =
        const { RefCell::new(BTreeMap::new()) };
}

/// Called by `record_attempt`, in its transaction (it runs without a
/// savepoint: only SQLite itself may fail after it). Adds the attempt to
/// the batch's counts; [`flush_counts`] writes them once per batch, so a
/// group commit of many attempts to one endpoint costs one upsert, not one
/// per attempt.
pub(super) fn count_attempt(a: &Attempt) {
    let key = (a.endpoint_id.clone(), attempt_stats::minute_of(a.created_at));
    BATCH.with_borrow_mut(|batch| {
        batch.entry(key).or_insert_with(|| (a.app_id.clone(), AttemptStats::default())).1.add(a)
    });
}

/// Write the batch's counts (the writer calls it before COMMIT), in key
/// order.
pub(super) fn flush_counts(c: &Connection) -> rusqlite::Result<()> {
    let batch = BATCH.take();
    if batch.is_empty() {
        return Ok(());
    }
    let mut count = c.prepare_cached(&COUNT)?;
    for ((endpoint_id, minute), (app_id, stats)) in batch {
        let mut values: Vec<Value> = Vec::with_capacity(3 + COUNTERS);
        values.extend([endpoint_id.into(), minute.into(), app_id.into()]);
        values.extend(stats.counters().map(|n| Value::Integer(n as i64)));
        count.execute(params_from_iter(values))?;
    }
    Ok(())
}

/// The batch was rolled back: its counts go with it.
pub(super) fn forget_counts() {
    BATCH.take();
}

#[async_trait]
impl ChartStore for SqliteStore {
    async fn attempt_series(
        &self,
        endpoint_ids: &[String],
        window: Window,
        now: Timestamp,
    ) -> StoreResult<HashMap<String, Series>> {
        let ids = endpoint_ids.to_vec();
        self.read(move |c| {
            let (first, end) = window.minutes(now);
            let step = window.step_minutes();
            let mut stmt = c.prepare_cached(&SERIES)?;
            let mut out = HashMap::new();
            for id in ids {
                let mut series = Series::empty(window, now);
                let rows = stmt.query_map(params![first, end, step, id], |r| {
                    let mut counters = [0u64; COUNTERS];
                    for (i, n) in counters.iter_mut().enumerate() {
                        *n = r.get::<_, i64>(i + 1)?.max(0) as u64;
                    }
                    Ok((r.get::<_, i64>(0)?, AttemptStats::from_counters(counters)))
                })?;
                for row in rows {
                    let (interval, stats) = row?;
                    series.add(first + interval * step, &stats);
                }
                out.insert(id, series);
            }
            Ok(out)
        })
        .await
    }

    async fn prune_attempt_stats(&self, before: Timestamp) -> StoreResult<u64> {
        let minute = attempt_stats::minute_of(before);
        self.write(move |c| {
            let n = c.prepare_cached("DELETE FROM attempt_minutes WHERE minute < ?")?.execute([minute])?;
            Ok(n as u64)
        })
        .await
    }
}
