//! Attempt counts per endpoint and minute, for the dashboard's charts.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use super::PgStore;
use super::rows::col;
use crate::domain::attempt_stats::{self, AttemptStats, COUNTERS, Series, Window};
use crate::domain::time::Timestamp;
use crate::store::listing::ATTEMPT_STAT_COLS;
use crate::store::{AttemptRecord, ChartStore, StoreResult};

/// Adds a batch's counts to their minutes' rows of the recorder's shard: one
/// statement, rows in key order (batches touching the same rows queue,
/// never deadlock; another node's recorder has rows of its own).
static COUNT: LazyLock<String> = LazyLock::new(|| {
    let cols = ATTEMPT_STAT_COLS.join(", ");
    let arrays: Vec<String> = (0..COUNTERS).map(|i| format!("${}::int8[]", i + 5)).collect();
    let add: Vec<String> =
        ATTEMPT_STAT_COLS.iter().map(|c| format!("{c} = attempt_minutes.{c} + EXCLUDED.{c}")).collect();
    format!(
        "INSERT INTO attempt_minutes (shard, endpoint_id, minute, app_id, {cols})
         SELECT $4, * FROM UNNEST($1::text[], $2::int8[], $3::text[], {})
         ON CONFLICT (endpoint_id, minute, shard) DO UPDATE SET {}",
        arrays.join(", "),
        add.join(", ")
    )
});

/// One endpoint's minutes in [first, end), summed by interval (and so over
/// the shards).
static SERIES: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = ATTEMPT_STAT_COLS.iter().map(|c| format!("SUM({c})::int8")).collect();
    format!(
        "SELECT (minute - $1) / $3, {} FROM attempt_minutes
         WHERE endpoint_id = $4 AND minute >= $1 AND minute < $2 GROUP BY 1",
        sums.join(", ")
    )
});

/// A recorder's rows of the chart counts: the next of `chart_shards`, so
/// that nodes' recorders do not share rows (until 32,767 recorders have
/// started and the numbers cycle). Without the database at hand, any
/// number does: sharing a row costs waiting, never a wrong count.
pub(super) async fn new_shard(pool: &PgPool) -> i16 {
    match sqlx::query_scalar::<_, i16>("SELECT nextval('chart_shards')::int2").fetch_one(pool).await {
        Ok(shard) => shard,
        Err(e) => {
            tracing::debug!(error = %e, "no chart shard from the database; taking a random one");
            rand::random()
        }
    }
}

/// Called by the recorder, in the batch's transaction, with its shard.
pub(super) async fn count_attempts(
    c: &mut PgConnection,
    recs: &[AttemptRecord],
    shard: i16,
) -> StoreResult<()> {
    let mut minutes: BTreeMap<(&str, i64), (&str, AttemptStats)> = BTreeMap::new();
    for a in recs.iter().map(|r| &r.attempt) {
        let key = (a.endpoint_id.as_str(), attempt_stats::minute_of(a.created_at));
        minutes.entry(key).or_insert_with(|| (a.app_id.as_str(), AttemptStats::default())).1.add(a);
    }
    let mut endpoints = Vec::with_capacity(minutes.len());
    let mut at = Vec::with_capacity(minutes.len());
    let mut apps = Vec::with_capacity(minutes.len());
    let mut counters: Vec<Vec<i64>> = (0..COUNTERS).map(|_| Vec::with_capacity(minutes.len())).collect();
    for ((endpoint, minute), (app, stats)) in minutes {
        endpoints.push(endpoint);
        at.push(minute);
        apps.push(app);
        for (column, n) in counters.iter_mut().zip(stats.counters()) {
            column.push(n as i64);
        }
    }
    let mut q = sqlx::query(&COUNT).bind(endpoints).bind(at).bind(apps).bind(shard);
    for column in counters {
        q = q.bind(column);
    }
    q.execute(c).await?;
    Ok(())
}

#[async_trait]
impl ChartStore for PgStore {
    async fn attempt_series(
        &self,
        endpoint_ids: &[String],
        window: Window,
        now: Timestamp,
    ) -> StoreResult<HashMap<String, Series>> {
        let (first, end) = window.minutes(now);
        let step = window.step_minutes();
        let mut out = HashMap::new();
        for id in endpoint_ids {
            let rows =
                sqlx::query(&SERIES).bind(first).bind(end).bind(step).bind(id).fetch_all(&self.pool).await?;
            let mut series = Series::empty(window, now);
            for r in rows {
                let mut counters = [0u64; COUNTERS];
                for (i, n) in counters.iter_mut().enumerate() {
                    *n = col::<i64>(&r, i + 1)?.max(0) as u64;
                }
                let interval: i64 = col(&r, 0)?;
                series.add(first + interval * step, &AttemptStats::from_counters(counters));
            }
            out.insert(id.clone(), series);
        }
        Ok(out)
    }

    async fn prune_attempt_stats(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM attempt_minutes WHERE minute < $1")
            .bind(attempt_stats::minute_of(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
