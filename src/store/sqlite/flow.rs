//! Flow control on the embedded store: each endpoint's `endpoint_flow` row
//! (the rules are `domain::flow`'s), and parking deliveries that have to
//! wait for it.
//!
//! A row exists only while the endpoint has something to remember: a
//! bucket that is not full, a pause, a backoff, or parked deliveries
//! (`wake_at`: when the claim may take some of them again). Parked
//! deliveries have `gate = 1` and no `due_at`, so the due index never
//! scans them: an endpoint throttled to 1/s with a million waiting costs
//! one index range, read `limit` rows at a time.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::domain::flow::{Flow, FlowState, Signal};
use crate::domain::time::Timestamp;
use crate::store::{DeliveryKey, FlowStore, FlowTotals, FlowView, StoreResult};

/// Deliveries waiting for their endpoint's flow.
pub(super) const PARKED: i64 = 1;

pub(super) fn load(c: &Connection, endpoint_id: &str) -> StoreResult<Flow> {
    let found = c
        .prepare_cached(
            "SELECT tat_us, paused_until, pause_reason, backoff_rate, recover_to, last_decrease, wake_at
             FROM endpoint_flow WHERE endpoint_id = ?",
        )?
        .query_row([endpoint_id], |r| {
            let ts = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(Timestamp::from_millis));
            Ok(Flow {
                state: FlowState {
                    tat_us: r.get(0)?,
                    paused_until: ts(1)?,
                    pause_reason: r.get(2)?,
                    backoff_rate: r.get(3)?,
                    recover_to: r.get(4)?,
                    last_decrease: ts(5)?,
                },
                wake_at: ts(6)?,
            })
        })
        .optional()?;
    Ok(found.unwrap_or_default())
}

/// Write the flow back; a flow with nothing to remember is deleted.
pub(super) fn save(c: &Connection, endpoint_id: &str, flow: &Flow, now: Timestamp) -> StoreResult<()> {
    let mut flow = flow.clone();
    flow.state.tidy(now);
    if flow.is_idle(now) {
        c.prepare_cached("DELETE FROM endpoint_flow WHERE endpoint_id = ?")?.execute([endpoint_id])?;
        return Ok(());
    }
    let s = &flow.state;
    let ms = |t: Option<Timestamp>| t.map(Timestamp::as_millis);
    c.prepare_cached(
        "INSERT OR REPLACE INTO endpoint_flow (endpoint_id, tat_us, paused_until, pause_reason,
            backoff_rate, recover_to, last_decrease, wake_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        endpoint_id,
        s.tat_us,
        ms(s.paused_until),
        s.pause_reason,
        s.backoff_rate,
        s.recover_to,
        ms(s.last_decrease),
        ms(flow.wake_at),
    ])?;
    Ok(())
}

/// The endpoint's limit: its `throttleRate`, else its application's.
pub(super) fn limit(c: &Connection, endpoint_id: &str) -> StoreResult<Option<u32>> {
    let found: Option<Option<i64>> = c
        .prepare_cached(
            "SELECT COALESCE(e.throttle_rate, a.throttle_rate) FROM endpoints e
             JOIN apps a ON a.id = e.app_id WHERE e.id = ?",
        )?
        .query_row([endpoint_id], |r| r.get(0))
        .optional()?;
    Ok(found.flatten().map(|r| r.clamp(0, i64::from(u32::MAX)) as u32))
}

/// Park a pending delivery: not due until its endpoint's flow lets it go.
pub(super) fn park(c: &Connection, key: &DeliveryKey) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE deliveries SET gate = ?, due_at = NULL, lease_owner = NULL
         WHERE msg_id = ? AND endpoint_id = ?",
    )?
    .execute(params![PARKED, key.msg_id, key.endpoint_id])?;
    Ok(())
}

/// Apply an attempt's answer to its endpoint's flow. Returns the new pause
/// end if this answer started or extended a pause.
pub(super) fn after_response(
    c: &Connection,
    endpoint_id: &str,
    signal: &Signal,
    sending_rate: f64,
    at: Timestamp,
) -> StoreResult<Option<Timestamp>> {
    let read = load(c, endpoint_id)?;
    let mut flow = read.clone();
    let paused = flow.after_response(limit(c, endpoint_id)?, signal, at, sending_rate);
    if flow != read {
        save(c, endpoint_id, &flow, at)?;
    }
    Ok(paused)
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn endpoint_flow(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<FlowView> {
        let endpoint_id = endpoint_id.to_owned();
        self.read(move |c| {
            let flow = load(c, &endpoint_id)?;
            let waiting: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ? AND gate = ?")?
                .query_row(params![endpoint_id, PARKED], |r| r.get(0))?;
            let held: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ? AND gate = ?")?
                .query_row(params![endpoint_id, super::ordering::HELD], |r| r.get(0))?;
            Ok(FlowView::new(flow.state, limit(c, &endpoint_id)?, waiting as u64, held as u64, now))
        })
        .await
    }

    async fn charge(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<()> {
        let endpoint_id = endpoint_id.to_owned();
        self.write(move |c| {
            let limit = limit(c, &endpoint_id)?;
            let mut flow = load(c, &endpoint_id)?;
            if flow.state.rate(limit).is_none() {
                return Ok(());
            }
            flow.state.charge(limit, now);
            save(c, &endpoint_id, &flow, now)
        })
        .await
    }

    async fn flow_totals(&self, now: Timestamp) -> StoreResult<FlowTotals> {
        self.read(move |c| {
            let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<u64> {
                Ok(c.prepare_cached(sql)?.query_row(p, |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(FlowTotals {
                paused_endpoints: count(
                    "SELECT COUNT(*) FROM endpoint_flow WHERE paused_until > ?",
                    &[&now.as_millis()],
                )?,
                backing_off_endpoints: count(
                    "SELECT COUNT(*) FROM endpoint_flow WHERE backoff_rate IS NOT NULL",
                    &[],
                )?,
                parked_deliveries: count("SELECT COUNT(*) FROM deliveries WHERE gate = ?", &[&PARKED])?,
                held_deliveries: count(
                    "SELECT COUNT(*) FROM deliveries WHERE gate = ?",
                    &[&super::ordering::HELD],
                )?,
            })
        })
        .await
    }
}
