//! Flow control on PostgreSQL (the rules are `domain::flow`'s): one
//! `endpoint_flow` row per endpoint with something to remember, shared by
//! every node, so a throttle holds for the cluster as a whole. Whoever
//! takes from a bucket holds its row (`FOR UPDATE`) until its transaction
//! commits: the claim, ingest, recording an attempt, a manual charge.
//!
//! Lock order: a flow row is locked after any delivery or ordering-key row
//! its transaction locks, and nobody asks for a delivery lock while
//! holding a flow row (the unparking claim takes parked rows with
//! `SKIP LOCKED`, which never waits). So flow locks cannot deadlock with
//! the rest.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::rows::{col, opt_ts};
use crate::domain::flow::{Flow, FlowState};
use crate::domain::time::Timestamp;
use crate::store::{DeliveryKey, FlowStore, FlowTotals, FlowView, StoreResult};

/// Deliveries waiting for their endpoint's flow.
pub(super) const PARKED: i32 = 1;

const FLOW_COLS: &str = "f.endpoint_id, f.tat_us, f.paused_until, f.pause_reason, f.backoff_rate, f.recover_to, f.last_decrease, f.wake_at";

fn decode(r: &PgRow) -> StoreResult<(String, Flow)> {
    let ts = |i| col::<Option<i64>>(r, i).map(|v| v.map(Timestamp::from_millis));
    let flow = Flow {
        state: FlowState {
            tat_us: col(r, 1)?,
            paused_until: ts(2)?,
            pause_reason: col(r, 3)?,
            backoff_rate: col(r, 4)?,
            recover_to: col(r, 5)?,
            last_decrease: ts(6)?,
        },
        wake_at: ts(7)?,
    };
    Ok((col(r, 0)?, flow))
}

/// The flows of these endpoints, locked until the transaction ends; an
/// endpoint without a row has the empty flow.
pub(super) async fn lock(c: &mut PgConnection, endpoint_ids: &[&str]) -> StoreResult<Flows> {
    let mut ids = endpoint_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    // A row to lock even for an endpoint without one yet, so two nodes
    // starting on a full bucket take turns rather than both taking it.
    sqlx::query(
        "INSERT INTO endpoint_flow (endpoint_id, tat_us) SELECT * FROM UNNEST($1::text[], $2::int8[])
         ON CONFLICT (endpoint_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(vec![0i64; ids.len()])
    .execute(&mut *c)
    .await?;
    let sql = format!(
        "SELECT {FLOW_COLS} FROM endpoint_flow f WHERE f.endpoint_id = ANY($1) ORDER BY 1 FOR UPDATE"
    );
    let found = sqlx::query(&sql).bind(&ids).fetch_all(c).await?;
    let mut flows = Flows::default();
    for r in &found {
        let (id, flow) = decode(r)?;
        flows.read.insert(id.clone(), flow.clone());
        flows.now.insert(id, flow);
    }
    Ok(flows)
}

/// The endpoints whose parked deliveries may be claimed at `now` (not
/// those in `skip`), their flows locked into `flows`. Rows another node is
/// working on are skipped: it is unparking them.
pub(super) async fn lock_waking(
    c: &mut PgConnection,
    flows: &mut Flows,
    now: Timestamp,
    skip: &[String],
    max: usize,
) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT {FLOW_COLS} FROM endpoint_flow f WHERE f.wake_at <= $1 AND NOT (f.endpoint_id = ANY($2))
         ORDER BY f.wake_at LIMIT $3 FOR UPDATE SKIP LOCKED"
    );
    let found =
        sqlx::query(&sql).bind(now.as_millis()).bind(skip).bind(super::sql::limit(max)).fetch_all(c).await?;
    let mut ids = Vec::with_capacity(found.len());
    for r in &found {
        let (id, flow) = decode(r)?;
        flows.read.insert(id.clone(), flow.clone());
        flows.now.insert(id.clone(), flow);
        ids.push(id);
    }
    Ok(ids)
}

/// Flows as read and as changed since, written back by [`Flows::save`].
#[derive(Default)]
pub(super) struct Flows {
    read: HashMap<String, Flow>,
    now: HashMap<String, Flow>,
}

impl Flows {
    /// Lock (and read) the flows of these endpoints too, those not yet held.
    pub async fn lock_more(&mut self, c: &mut PgConnection, endpoint_ids: &[&str]) -> StoreResult<()> {
        let more: Vec<&str> = endpoint_ids
            .iter()
            .copied()
            .filter(|id| !self.read.contains_key(*id) && !self.now.contains_key(*id))
            .collect();
        if more.is_empty() {
            return Ok(());
        }
        let locked = lock(c, &more).await?;
        self.read.extend(locked.read);
        self.now.extend(locked.now);
        Ok(())
    }

    /// The endpoint's flow (the empty one if it has no row).
    pub fn get(&mut self, endpoint_id: &str) -> &mut Flow {
        self.now.entry(endpoint_id.to_owned()).or_default()
    }

    /// Write what changed: upsert the flows with something to keep, delete
    /// the stored ones with nothing left to keep.
    pub async fn save(self, c: &mut PgConnection, now: Timestamp) -> StoreResult<()> {
        let mut keep = FlowColumns::default();
        let mut gone: Vec<String> = Vec::new();
        for (id, mut flow) in self.now {
            flow.state.tidy(now);
            if flow.is_idle(now) {
                if self.read.contains_key(&id) {
                    gone.push(id);
                }
            } else if self.read.get(&id) != Some(&flow) {
                keep.push(id, &flow);
            }
        }
        if !gone.is_empty() {
            sqlx::query("DELETE FROM endpoint_flow WHERE endpoint_id = ANY($1)")
                .bind(&gone)
                .execute(&mut *c)
                .await?;
        }
        if !keep.ids.is_empty() {
            sqlx::query(
                "INSERT INTO endpoint_flow (endpoint_id, tat_us, paused_until, pause_reason, backoff_rate,
                    recover_to, last_decrease, wake_at)
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::float8[],
                    $6::float8[], $7::int8[], $8::int8[])
                 ON CONFLICT (endpoint_id) DO UPDATE SET tat_us = EXCLUDED.tat_us,
                    paused_until = EXCLUDED.paused_until, pause_reason = EXCLUDED.pause_reason,
                    backoff_rate = EXCLUDED.backoff_rate, recover_to = EXCLUDED.recover_to,
                    last_decrease = EXCLUDED.last_decrease, wake_at = EXCLUDED.wake_at",
            )
            .bind(&keep.ids)
            .bind(&keep.tat)
            .bind(&keep.paused)
            .bind(&keep.reason)
            .bind(&keep.backoff)
            .bind(&keep.recover)
            .bind(&keep.decreased)
            .bind(&keep.wake)
            .execute(c)
            .await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct FlowColumns {
    ids: Vec<String>,
    tat: Vec<i64>,
    paused: Vec<Option<i64>>,
    reason: Vec<Option<String>>,
    backoff: Vec<Option<f64>>,
    recover: Vec<Option<f64>>,
    decreased: Vec<Option<i64>>,
    wake: Vec<Option<i64>>,
}

impl FlowColumns {
    fn push(&mut self, id: String, f: &Flow) {
        self.ids.push(id);
        self.tat.push(f.state.tat_us);
        self.paused.push(opt_ts(f.state.paused_until));
        self.reason.push(f.state.pause_reason.clone());
        self.backoff.push(f.state.backoff_rate);
        self.recover.push(f.state.recover_to);
        self.decreased.push(opt_ts(f.state.last_decrease));
        self.wake.push(opt_ts(f.wake_at));
    }
}

/// Each endpoint's limit (its `throttleRate`, else its application's), and
/// whether it has a flow row at all: what decides if its deliveries are
/// paced. Endpoints that no longer exist are left out.
pub(super) async fn limits(
    c: &mut PgConnection,
    endpoint_ids: &[&str],
) -> StoreResult<HashMap<String, Limit>> {
    let found = sqlx::query(
        "SELECT e.id, COALESCE(e.throttle_rate, a.throttle_rate), f.endpoint_id IS NOT NULL
         FROM endpoints e JOIN apps a ON a.id = e.app_id
         LEFT JOIN endpoint_flow f ON f.endpoint_id = e.id
         WHERE e.id = ANY($1)",
    )
    .bind(endpoint_ids)
    .fetch_all(c)
    .await?;
    found
        .iter()
        .map(|r| {
            let limit = col::<Option<i32>>(r, 1)?.map(|v| v.max(0) as u32);
            Ok((col(r, 0)?, Limit { limit, has_flow: col(r, 2)? }))
        })
        .collect()
}

/// What decides whether an endpoint's deliveries are paced.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Limit {
    pub limit: Option<u32>,
    /// It has a flow row (a pause, a backoff, a bucket not yet full, or
    /// parked deliveries), so its flow must be read.
    pub has_flow: bool,
}

impl Limit {
    pub fn may_pace(&self) -> bool {
        self.limit.is_some() || self.has_flow
    }
}

/// Park pending deliveries: not due until their endpoint's flow lets them go.
pub(super) async fn park(c: &mut PgConnection, keys: &[DeliveryKey]) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let (msgs, eps): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
    sqlx::query(
        "UPDATE deliveries d SET gate = $1, due_at = NULL, lease_owner = NULL
         FROM UNNEST($2::text[], $3::text[]) AS k(msg_id, endpoint_id)
         WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id",
    )
    .bind(PARKED)
    .bind(&msgs)
    .bind(&eps)
    .execute(c)
    .await?;
    Ok(())
}

#[async_trait]
impl FlowStore for PgStore {
    async fn endpoint_flow(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<FlowView> {
        let c = &mut *self.pool.acquire().await?;
        let sql = format!("SELECT {FLOW_COLS} FROM endpoint_flow f WHERE f.endpoint_id = $1");
        let flow = match sqlx::query(&sql).bind(endpoint_id).fetch_optional(&mut *c).await? {
            Some(r) => decode(&r)?.1,
            None => Flow::default(),
        };
        let limit = limits(c, &[endpoint_id]).await?.remove(endpoint_id).unwrap_or_default().limit;
        // Each count is a range of its gate's partial index.
        let (waiting, held): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND gate = 1),
                    (SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND gate = 2)",
        )
        .bind(endpoint_id)
        .fetch_one(&mut *c)
        .await?;
        Ok(FlowView::new(flow.state, limit, waiting as u64, held as u64, now))
    }

    async fn charge(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let limit = limits(&mut tx, &[endpoint_id]).await?.remove(endpoint_id).unwrap_or_default();
        if !limit.may_pace() {
            return Ok(());
        }
        let mut flows = lock(&mut tx, &[endpoint_id]).await?;
        let flow = flows.get(endpoint_id);
        if flow.state.rate(limit.limit).is_none() {
            return Ok(());
        }
        flow.state.charge(limit.limit, now);
        flows.save(&mut tx, now).await?;
        Ok(tx.commit().await?)
    }

    async fn flow_totals(&self, now: Timestamp) -> StoreResult<FlowTotals> {
        let (paused, backing_off, parked, held): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM endpoint_flow WHERE paused_until > $1),
                    (SELECT count(*) FROM endpoint_flow WHERE backoff_rate IS NOT NULL),
                    (SELECT count(*) FROM deliveries WHERE gate = 1),
                    (SELECT count(*) FROM deliveries WHERE gate = 2)",
        )
        .bind(now.as_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(FlowTotals {
            paused_endpoints: paused as u64,
            backing_off_endpoints: backing_off as u64,
            parked_deliveries: parked as u64,
            held_deliveries: held as u64,
        })
    }
}
