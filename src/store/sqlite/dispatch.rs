//! The dispatcher's side of the store: claiming due deliveries under a lease
//! and recording attempts.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::flow;
use super::rows::{self, opt_ts_value};
use super::sql::Sql;
use super::{SqliteStore, charts, tenants};
use crate::domain::delivery::{DeliveryRow, DeliveryState, Recorded, record};
use crate::domain::flow::Flow;
use crate::domain::flow::Signal;
use crate::domain::health;
use crate::domain::model::{DeliveryStatus, Endpoint, Message};
use crate::domain::ordering::{self, OnFailure};
use crate::domain::time::Timestamp;
use crate::store::listing::{Cond, ENDPOINT_COLS, MESSAGE_COLS, Param};
use crate::store::sealing::Keyring;
use crate::store::{
    AttemptEffects, AttemptRecord, DeliveryKey, DeliveryTask, DispatchStore, EndpointDisabled, Lease,
    StoreResult,
};

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        let (lease, skip, keys) = (lease.clone(), skip_endpoints.to_vec(), Arc::clone(&self.keys));
        self.write(move |c| claim_due(c, now, &lease, limit, &skip, &keys)).await
    }

    async fn next_due(&self, now: Timestamp, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        let skip = skip_endpoints.to_vec();
        self.read(move |c| {
            // The earliest due delivery, or parked ones whose endpoint may
            // send. With endpoints skipped, only what falls due after `now`
            // (see the trait): walking a saturated endpoint's backlog on
            // every probe made a backlog slow its own draining.
            let mut q = Sql::new("SELECT MIN(d.due_at) FROM deliveries d");
            if skip.is_empty() {
                q.where_all(&[Cond::Sql("d.due_at IS NOT NULL")]);
            } else {
                q.where_all(&[Cond::Cmp("d.due_at", ">", Param::Int(now.as_millis()))]);
            }
            let mut parked = Sql::new("SELECT MIN(f.wake_at) FROM endpoint_flow f");
            let skip_flows = Cond::NotIn("f.endpoint_id", skip.iter().cloned().map(Param::Text).collect());
            parked.where_all(&[Cond::Sql("f.wake_at IS NOT NULL"), skip_flows]);
            let mut min: Vec<Option<i64>> = q.rows(c, |r| r.get(0))?;
            min.extend(parked.rows(c, |r| r.get::<_, Option<i64>>(0))?);
            Ok(min.into_iter().flatten().min().map(Timestamp::from_millis))
        })
        .await
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET due_at = ?, lease_owner = NULL
                 WHERE msg_id = ? AND endpoint_id = ? AND status = ? AND lease_owner IS NOT NULL",
            )?;
            for k in keys {
                stmt.execute(params![
                    due.as_millis(),
                    k.msg_id,
                    k.endpoint_id,
                    DeliveryStatus::Pending.code()
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let owner = owner.map(str::to_owned);
        // The attempt a lease was taken for is still owed: due at its original time.
        self.write(move |c| {
            let n = match owner {
                Some(o) => c
                    .prepare_cached(
                        "UPDATE deliveries SET due_at = COALESCE(next_attempt, due_at), lease_owner = NULL
                         WHERE lease_owner = ?",
                    )?
                    .execute([o])?,
                None => c
                    .prepare_cached(
                        "UPDATE deliveries SET due_at = COALESCE(next_attempt, due_at), lease_owner = NULL
                         WHERE lease_owner IS NOT NULL",
                    )?
                    .execute([])?,
            };
            Ok(n as u64)
        })
        .await
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        let (owner, keys) = (owner.to_owned(), keys.to_vec());
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET due_at = ? WHERE msg_id = ? AND endpoint_id = ? AND lease_owner = ?",
            )?;
            let mut n = 0;
            for k in keys {
                n += stmt.execute(params![until.as_millis(), k.msg_id, k.endpoint_id, owner])?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        let (cache, keys) = (Arc::clone(&self.cache), Arc::clone(&self.keys));
        self.write_checked_first(move |c| {
            let effects = record_attempt(c, record, &keys)?;
            if effects.endpoint_disabled.is_some() {
                cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            Ok(effects)
        })
        .await
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE due_at IS NOT NULL")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

/// Leave out the deliveries of these endpoints (their lanes are full).
fn skipping(endpoints: &[String]) -> Cond {
    Cond::NotIn("d.endpoint_id", endpoints.iter().cloned().map(Param::Text).collect())
}

/// Claim what may go now: first parked deliveries whose endpoint may send
/// again, then due ones in due order. Deliveries of an endpoint whose flow
/// is bounded take from its bucket; those it has no room for are parked.
fn claim_due(
    c: &Connection,
    now: Timestamp,
    lease: &Lease,
    limit: usize,
    skip_endpoints: &[String],
    keys: &Keyring,
) -> StoreResult<Vec<DeliveryTask>> {
    let mut batch = Batch::new(c, now, lease, keys);
    let mut q = Sql::new("SELECT f.endpoint_id FROM endpoint_flow f");
    q.where_all(&[
        Cond::Sql("f.wake_at IS NOT NULL"),
        Cond::Cmp("f.wake_at", "<=", now.into()),
        Cond::NotIn("f.endpoint_id", skip_endpoints.iter().cloned().map(Param::Text).collect()),
    ])
    .push(" ORDER BY f.wake_at LIMIT ?", [Value::Integer(limit as i64)]);
    for endpoint_id in q.rows(c, |r| r.get::<_, String>(0))? {
        let room = limit.saturating_sub(batch.tasks.len());
        if room == 0 {
            break;
        }
        batch.unpark(&endpoint_id, room)?;
    }

    let room = limit.saturating_sub(batch.tasks.len());
    if room > 0 {
        let mut q = Sql::new("SELECT d.msg_id, d.endpoint_id, d.app_id FROM deliveries d");
        q.where_all(&[
            Cond::Sql("d.due_at IS NOT NULL"),
            Cond::Cmp("d.due_at", "<=", now.into()),
            skipping(skip_endpoints),
        ])
        .push(" ORDER BY d.due_at LIMIT ?", [Value::Integer(room as i64)]);
        let due = q.rows(c, |r| {
            Ok((DeliveryKey { msg_id: r.get(0)?, endpoint_id: r.get(1)? }, r.get::<_, String>(2)?))
        })?;
        for (key, app_id) in due {
            batch.claim(key, &app_id)?;
        }
    }
    batch.finish()
}

/// An endpoint with its limit (its `throttleRate`, else its application's).
type LimitedEndpoint = (Arc<Endpoint>, Option<u32>);

/// One claim's work: endpoints, messages and flows read once each.
struct Batch<'c> {
    c: &'c Connection,
    now: Timestamp,
    lease: &'c Lease,
    /// Opens the endpoints' sealed secrets.
    keys: &'c Keyring,
    messages: HashMap<String, Option<Arc<Message>>>,
    endpoints: HashMap<String, Option<LimitedEndpoint>>,
    /// Flows as read and as changed since.
    flows: HashMap<String, (Flow, Flow)>,
    tasks: Vec<DeliveryTask>,
}

impl<'c> Batch<'c> {
    fn new(c: &'c Connection, now: Timestamp, lease: &'c Lease, keys: &'c Keyring) -> Self {
        Batch {
            c,
            now,
            lease,
            keys,
            messages: HashMap::new(),
            endpoints: HashMap::new(),
            flows: HashMap::new(),
            tasks: Vec::new(),
        }
    }

    fn message(&mut self, app_id: &str, id: &str) -> StoreResult<Option<Arc<Message>>> {
        if let Some(m) = self.messages.get(id) {
            return Ok(m.clone());
        }
        let m = load_message(self.c, app_id, id)?.map(Arc::new);
        self.messages.insert(id.to_owned(), m.clone());
        Ok(m)
    }

    fn endpoint(&mut self, id: &str) -> StoreResult<Option<LimitedEndpoint>> {
        if let Some(e) = self.endpoints.get(id) {
            return Ok(e.clone());
        }
        let e = match load_endpoint(self.c, id, self.keys)? {
            Some(ep) => Some((Arc::new(ep), flow::limit(self.c, id)?)),
            None => None,
        };
        self.endpoints.insert(id.to_owned(), e.clone());
        Ok(e)
    }

    fn flow(&mut self, endpoint_id: &str) -> StoreResult<&mut Flow> {
        if !self.flows.contains_key(endpoint_id) {
            let read = flow::load(self.c, endpoint_id)?;
            self.flows.insert(endpoint_id.to_owned(), (read.clone(), read));
        }
        Ok(&mut self.flows.get_mut(endpoint_id).expect("just loaded").1)
    }

    fn lease_to_us(
        &mut self,
        key: &DeliveryKey,
        message: Arc<Message>,
        endpoint: Arc<Endpoint>,
        paced: bool,
    ) -> StoreResult<()> {
        self.c
            .prepare_cached(
                "UPDATE deliveries SET gate = NULL, due_at = ?, lease_owner = ? WHERE msg_id = ? AND endpoint_id = ?",
            )?
            .execute(params![self.lease.until.as_millis(), self.lease.owner, key.msg_id, key.endpoint_id])?;
        self.tasks.push(DeliveryTask { message, endpoint, paced });
        Ok(())
    }

    /// A due delivery: claim it, park it behind its endpoint's flow, or
    /// settle it when its endpoint or message is gone.
    fn claim(&mut self, key: DeliveryKey, app_id: &str) -> StoreResult<()> {
        let (message, endpoint) = (self.message(app_id, &key.msg_id)?, self.endpoint(&key.endpoint_id)?);
        let (Some(message), Some((endpoint, limit))) = (message, endpoint) else {
            return settle_failed(self.c, &key, self.now);
        };
        if endpoint.disabled {
            return settle_failed(self.c, &key, self.now);
        }
        let now = self.now;
        let flow = self.flow(&endpoint.id)?;
        let paced = flow.is_limited(limit, now);
        if paced && !flow.admit_one(limit, now) {
            flow.parked(limit, now);
            return flow::park(self.c, &key);
        }
        self.lease_to_us(&key, message, endpoint, paced)
    }

    /// Take up to `room` of the endpoint's parked deliveries, as its bucket
    /// allows, in the order they were parked.
    fn unpark(&mut self, endpoint_id: &str, room: usize) -> StoreResult<()> {
        let now = self.now;
        let Some((endpoint, limit)) = self.endpoint(endpoint_id)?.filter(|(e, _)| !e.disabled) else {
            self.flow(endpoint_id)?.wake_at = None; // gone or disabled: nothing parked is owed
            return Ok(());
        };
        let granted = self.flow(endpoint_id)?.state.take(limit, now, room);
        let parked: Vec<(String, String)> = self
            .c
            .prepare_cached(
                "SELECT msg_id, app_id FROM deliveries WHERE endpoint_id = ? AND gate = ? ORDER BY msg_id LIMIT ?",
            )?
            .query_map(params![endpoint_id, flow::PARKED, granted as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let found = parked.len();
        for (msg_id, app_id) in parked {
            let key = DeliveryKey { msg_id, endpoint_id: endpoint_id.to_owned() };
            match self.message(&app_id, &key.msg_id)? {
                Some(message) => self.lease_to_us(&key, message, Arc::clone(&endpoint), true)?,
                None => settle_failed(self.c, &key, now)?,
            }
        }
        self.flow(endpoint_id)?.unparked(limit, now, granted, found);
        Ok(())
    }

    fn finish(self) -> StoreResult<Vec<DeliveryTask>> {
        for (endpoint_id, (read, now)) in &self.flows {
            if read != now {
                flow::save(self.c, endpoint_id, now, self.now)?;
            }
        }
        Ok(self.tasks)
    }
}

fn load_message(c: &Connection, app_id: &str, id: &str) -> StoreResult<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = ? AND m.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([app_id, id], |r| rows::message(r, 0)).optional()?)
}

fn load_endpoint(c: &Connection, id: &str, keys: &Keyring) -> StoreResult<Option<Endpoint>> {
    let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::endpoint(r, 0, keys)).optional()?)
}

/// For the operational event of a disabled endpoint: no secrets needed.
fn load_endpoint_redacted(c: &Connection, id: &str) -> StoreResult<Option<Endpoint>> {
    let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.id = ?");
    Ok(c.prepare_cached(&sql)?.query_row([id], |r| rows::endpoint_redacted(r, 0)).optional()?)
}

fn settle_failed(c: &Connection, key: &DeliveryKey, now: Timestamp) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE deliveries SET status = ?, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = ?
         WHERE msg_id = ? AND endpoint_id = ?",
    )?
    .execute(params![DeliveryStatus::Fail.code(), now.as_millis(), key.msg_id, key.endpoint_id])?;
    Ok(())
}

/// Runs without a savepoint: every error after the first write must come
/// from SQLite (see `writer::Guard::ChecksFirst`).
fn record_attempt(c: &Connection, rec: AttemptRecord, keys: &Keyring) -> StoreResult<AttemptEffects> {
    let a = &rec.attempt;
    // Just what the state machine needs; the whole endpoint only if it is
    // about to be disabled (for the operational event).
    let endpoint: Option<EndpointHealth> = c
        .prepare_cached("SELECT disabled, failing_since, ordering_on_failure FROM endpoints WHERE id = ?")?
        .query_row([&a.endpoint_id], |r| {
            Ok(EndpointHealth {
                disabled: r.get(0)?,
                failing_since: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
                on_failure: OnFailure::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
            })
        })
        .optional()?;
    let stored: Option<(DeliveryRow, Gating)> = c
        .prepare_cached(
            "SELECT status, attempts, next_attempt, due_at, lease_owner, gate, okey FROM deliveries
             WHERE msg_id = ? AND endpoint_id = ?",
        )?
        .query_row([&a.msg_id, &a.endpoint_id], |r| {
            let status = DeliveryStatus::from_code(r.get(0)?).unwrap_or(DeliveryStatus::Pending);
            let state = DeliveryState {
                status,
                attempts: r.get(1)?,
                next_attempt: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_millis),
            };
            let row = DeliveryRow {
                state,
                due_at: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
                lease_owner: r.get(4)?,
            };
            Ok((row, Gating { gate: r.get(5)?, okey: r.get(6)? }))
        })
        .optional()?;
    let (stored, gating) = stored.unwrap_or_else(|| (DeliveryRow::missing(), Gating::default()));

    let endpoint_disabled = match endpoint.as_ref().filter(|e| !e.disabled) {
        Some(ep) => update_health(c, &a.endpoint_id, ep, &rec)?,
        None => None,
    };
    let endpoint_active = endpoint.as_ref().is_some_and(|e| !e.disabled) && endpoint_disabled.is_none();

    let Recorded { row, exhausted } = record(&stored, &rec.result(endpoint_active));
    let DeliveryRow { state: next, due_at, lease_owner } = row;
    let settled = next.status != DeliveryStatus::Pending;
    // A delivery that settles, or falls due by itself, waits for nothing.
    let gate = if settled || due_at.is_some() { None } else { gating.gate };

    // A deleted endpoint keeps its attempt history but gets no delivery row.
    if endpoint.is_some() {
        c.prepare_cached(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at, total_attempts, last_code, last_attempt_at, gate)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?9, ?11)
             ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = ?4, attempts = ?5,
                next_attempt = ?6, due_at = ?7, lease_owner = ?8, updated_at = ?9,
                total_attempts = total_attempts + 1, last_code = ?10, last_attempt_at = ?9, gate = ?11",
        )?
        .execute(params![
            a.msg_id,
            a.endpoint_id,
            a.app_id,
            next.status.code(),
            next.attempts,
            opt_ts_value(next.next_attempt),
            opt_ts_value(due_at),
            lease_owner,
            a.created_at.as_millis(),
            a.status_code,
            gate,
        ])?;
    }
    insert_attempt(c, &rec)?;
    charts::count_attempt(&rec.attempt);

    let mut effects = AttemptEffects {
        state: next.clone(),
        exhausted,
        endpoint_disabled,
        endpoint_paused: None,
        next: None,
        wake: None,
    };
    let Some(ep) = endpoint.filter(|_| endpoint_active) else { return Ok(effects) };
    let touches_flow = match rec.signal {
        Signal::Neutral => false,
        Signal::Ok => rec.paced,
        Signal::Congested | Signal::PauseUntil { .. } => true,
    };
    if touches_flow {
        effects.endpoint_paused =
            flow::after_response(c, &a.endpoint_id, &rec.signal, rec.sending_rate, rec.finished_at)?;
    }
    if let Some(okey) = gating.okey.filter(|_| settled) {
        let moves_on = ordering::moves_on(next.status == DeliveryStatus::Success, ep.on_failure);
        if let Some(promoted) =
            super::ordering::settled(c, &a.endpoint_id, &okey, &a.msg_id, moves_on, rec.finished_at)?
        {
            promote(c, promoted, rec.lease.as_ref(), rec.finished_at, &mut effects, keys)?;
        }
    }
    Ok(effects)
}

/// The new head of an ordering key: leased to the recording node when it
/// may go at once (and its endpoint's flow allows), else due or parked.
fn promote(
    c: &Connection,
    promoted: super::ordering::Promoted,
    lease: Option<&Lease>,
    now: Timestamp,
    effects: &mut AttemptEffects,
    keys: &Keyring,
) -> StoreResult<()> {
    let key = promoted.key;
    let due = promoted.next_attempt.map_or(now, |t| t.max(now));
    let found = (load_message(c, &promoted.app_id, &key.msg_id)?, load_endpoint(c, &key.endpoint_id, keys)?);
    let (Some(message), Some(endpoint)) = found else {
        return settle_failed(c, &key, now);
    };
    let limit = flow::limit(c, &endpoint.id)?;
    let mut flow = flow::load(c, &endpoint.id)?;
    let paced = flow.is_limited(limit, now);
    let set_due = |due_at: Option<Timestamp>, owner: Option<&str>| -> StoreResult<()> {
        c.prepare_cached(
            "UPDATE deliveries SET due_at = ?, lease_owner = ? WHERE msg_id = ? AND endpoint_id = ?",
        )?
        .execute(params![opt_ts_value(due_at), owner, key.msg_id, key.endpoint_id])?;
        Ok(())
    };
    if due > now {
        effects.wake = Some(due);
        return set_due(Some(due), None);
    }
    if paced && !flow.admit_one(limit, now) {
        flow.parked(limit, now);
        flow::save(c, &endpoint.id, &flow, now)?;
        effects.wake = flow.wake_at;
        return flow::park(c, &key);
    }
    if paced {
        flow::save(c, &endpoint.id, &flow, now)?;
    }
    match lease {
        Some(l) => {
            set_due(Some(l.until), Some(&l.owner))?;
            effects.next =
                Some(DeliveryTask { message: Arc::new(message), endpoint: Arc::new(endpoint), paced });
        }
        None => {
            effects.wake = Some(now);
            set_due(Some(now), None)?;
        }
    }
    Ok(())
}

/// A delivery's place in flow control and ordering, as stored.
#[derive(Default)]
struct Gating {
    gate: Option<i64>,
    okey: Option<String>,
}

/// The columns of an endpoint that recording an attempt needs.
struct EndpointHealth {
    disabled: bool,
    failing_since: Option<Timestamp>,
    on_failure: OnFailure,
}

/// Track the endpoint's failure streak; disable it when the receiver asked
/// for that or it has failed for too long.
fn update_health(
    c: &Connection,
    endpoint_id: &str,
    ep: &EndpointHealth,
    rec: &AttemptRecord,
) -> StoreResult<Option<EndpointDisabled>> {
    let at = rec.finished_at;
    let health::Change { failing_since, disabled_automatically } = rec.health(ep.failing_since);
    if let Some(automatic) = disabled_automatically {
        c.prepare_cached(
            "UPDATE endpoints SET disabled = 1, failing_since = ?, updated_at = ? WHERE id = ?",
        )?
        .execute(params![opt_ts_value(failing_since), at.as_millis(), endpoint_id])?;
        tenants::settle_pending(c, endpoint_id, at)?;
        // Read a moment ago in this job, so its absence is a store failure
        // (and must be a `Backend` error: this job runs without a savepoint).
        let endpoint = load_endpoint_redacted(c, endpoint_id)?
            .ok_or_else(|| crate::store::StoreError::Backend("endpoint vanished mid-write".into()))?;
        return Ok(Some(EndpointDisabled { endpoint, failing_since, automatic }));
    }
    if failing_since != ep.failing_since {
        c.prepare_cached("UPDATE endpoints SET failing_since = ? WHERE id = ?")?
            .execute(params![opt_ts_value(failing_since), endpoint_id])?;
    }
    Ok(None)
}

fn insert_attempt(c: &Connection, rec: &AttemptRecord) -> StoreResult<()> {
    let a = &rec.attempt;
    c.prepare_cached(
        "INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
            duration_ms, trigger, error, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        a.id,
        a.msg_id,
        a.endpoint_id,
        a.app_id,
        a.url,
        a.status.code(),
        a.status_code,
        a.response,
        a.duration_ms,
        a.trigger.code(),
        a.error,
        a.created_at.as_millis(),
    ])?;
    Ok(())
}
