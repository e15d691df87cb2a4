//! Recording attempts with group commit.
//!
//! Each `record_attempt` call hands its record to one background task per
//! store and waits for its own answer. The task takes whatever records are
//! waiting (at most [`MAX_BATCH`]; batches form while the previous
//! transaction runs) and records them all in one transaction with a fixed
//! number of statements, in the order they came. When only a few are
//! waiting and none is awaited (see [`gather`]), it first waits up to
//! [`LINGER`] for company: at moderate rates each transaction would
//! otherwise carry two or three records, and its commit, not its
//! statements, is most of what PostgreSQL spends on it. The steps:
//!
//! 1. the endpoints' health, read without a lock; the ones whose row the
//!    batch will change (failure streak, disabling) are then locked
//!    (`FOR UPDATE`, by id) and read again, and the batch is planned
//!    against what is stored;
//! 2. those changes written in one statement and, for endpoints the batch
//!    disables, their other pending deliveries settled in another;
//! 3. the batch's delivery rows locked (`FOR UPDATE`, by key);
//! 4. [`decide`] applied to each record in order, so two records for one
//!    delivery or one endpoint chain as if recorded one after the other;
//! 5. every delivery upsert, attempt insert and at most one `due:`
//!    notification (the earliest retry) in one statement;
//! 6. the gates ([`gates`]): ordering keys whose head settled move on (or
//!    block), and the endpoints' flows take in what the answers said
//!    (pauses, backoff); the new heads are leased to the recording node,
//!    parked or made due. Only keyed or paced traffic gets here.
//! 7. the batch's counts added to the charts' minutes (`charts`).
//!
//! Lock order is endpoint, then delivery (as everywhere, see `dispatch`),
//! each by id, then ordering keys, then flows last (see `flow`), so
//! batches of several nodes queue rather than deadlock.
//!
//! When a batch of several fails, its records are recorded again one by
//! one (each a batch of one), so one bad record, or a deadlock with an
//! endpoint update settling deliveries, fails only whom it must.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::rows::{self, col, int4, opt_ts, pg_text};
use super::{charts, flow, notify};
use crate::domain::delivery::{DeliveryRow, DeliveryState, record};
use crate::domain::flow::Signal;
use crate::domain::health;
use crate::domain::model::{DeliveryStatus, Endpoint, Trigger};
use crate::domain::ordering::{self, OnFailure};
use crate::domain::time::Timestamp;
use crate::store::listing::{ENDPOINT_COLS, MESSAGE_COLS};
use crate::store::sealing::Keyring;
use crate::store::{AttemptEffects, AttemptRecord, DeliveryTask, EndpointDisabled, StoreError, StoreResult};

/// Records per transaction at most.
pub const MAX_BATCH: usize = 256;
/// How long a small batch of records nobody awaits waits for company.
/// Measured at 1,000 messages/s on one node (BENCHMARKS.md, issue 21):
/// PostgreSQL's CPU per message 783–789 → 449–476 µs, the node's 392–398
/// → 312–316 µs, end-to-end latency unchanged or lower; at saturation
/// batches are larger than [`LINGER_BELOW`] and nothing changes.
const LINGER: Duration = Duration::from_millis(5);
/// A batch this large commits at once: waiting would not make it cheaper
/// per record by much.
const LINGER_BELOW: usize = 32;

/// An attempt record waiting for the recording task, with where to send its effects.
type RecordRequest = (AttemptRecord, oneshot::Sender<StoreResult<AttemptEffects>>);

/// The store's side of the recording task. The task ends once this is
/// dropped (with the store) and what was queued is recorded.
pub struct Recorder {
    jobs: mpsc::UnboundedSender<RecordRequest>,
}

impl Recorder {
    /// `keys` open the secrets of the endpoints whose next message the
    /// recording node is handed (a key's new head).
    pub fn start(pool: PgPool, keys: Arc<Keyring>) -> Recorder {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue, keys));
        Recorder { jobs }
    }

    pub async fn record(&self, rec: AttemptRecord) -> StoreResult<AttemptEffects> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the attempt recorder stopped".into());
        self.jobs.send((rec, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<RecordRequest>, keys: Arc<Keyring>) {
    let shard = charts::new_shard(&pool).await;
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while gather(&mut queue, &mut jobs, LINGER).await > 0 {
        let (recs, replies): (Vec<_>, Vec<_>) = jobs.drain(..).unzip();
        match record_batch(&pool, &recs, &keys, shard).await {
            Ok(effects) => {
                for (reply, fx) in replies.into_iter().zip(effects) {
                    // A caller that stopped waiting has nobody to tell.
                    let _ = reply.send(Ok(fx));
                }
            }
            Err(e) if recs.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, records = recs.len(), "attempt batch failed, recording one by one");
                for (rec, reply) in recs.iter().zip(replies) {
                    let one = record_batch(&pool, std::slice::from_ref(rec), &keys, shard).await;
                    let _ = reply.send(one.map(|mut fx| fx.remove(0)));
                }
            }
        }
    }
}

/// Take the next batch from `queue` into `jobs` (empty before); 0 once the
/// queue is closed and drained. Waits for the first record; then, while
/// fewer than [`LINGER_BELOW`] are taken and none of them is awaited
/// (`AttemptRecord::awaited`: an ordering key's next message or a lane's
/// queue waits for its commit), up to `linger` for more.
async fn gather(
    queue: &mut mpsc::UnboundedReceiver<RecordRequest>,
    jobs: &mut Vec<RecordRequest>,
    linger: Duration,
) -> usize {
    if queue.recv_many(jobs, MAX_BATCH).await == 0 {
        return 0;
    }
    let waits = |jobs: &[RecordRequest]| jobs.len() < LINGER_BELOW && !jobs.iter().any(|(r, _)| r.awaited);
    if waits(jobs) {
        let more = async {
            while waits(jobs) {
                let room = MAX_BATCH - jobs.len();
                if queue.recv_many(jobs, room).await == 0 {
                    break;
                }
            }
        };
        // Out of time: commit what came (`recv_many` is cancel safe: a
        // record is either in `jobs` or still in the queue).
        let _ = tokio::time::timeout(linger, more).await;
    }
    jobs.len()
}

/// Record `recs`, in this order, in one transaction; their effects in the
/// same order. A batch of one is the plain per-record path.
pub async fn record_batch(
    pool: &PgPool,
    recs: &[AttemptRecord],
    sealing: &Keyring,
    chart_shard: i16,
) -> StoreResult<Vec<AttemptEffects>> {
    let mut tx = pool.begin().await?;

    // 1. Endpoint health: read, plan, and when the plan changes rows, lock
    //    those, read them again and plan against what is stored.
    let mut ids: Vec<&str> = recs.iter().map(|r| r.attempt.endpoint_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut stored = health_of(&mut tx, &ids, false).await?;
    let mut plan = plan_health(&stored, recs);
    if !plan.writes.is_empty() {
        let locking: Vec<&str> = plan.writes.keys().map(String::as_str).collect();
        let mut locked = health_of(&mut tx, &locking, true).await?;
        for id in locking {
            match locked.remove(id) {
                Some(h) => stored.insert(id.to_owned(), h),
                None => stored.remove(id),
            };
        }
        plan = plan_health(&stored, recs);
    }

    // 2. Health changes, and the other pending deliveries of endpoints
    //    this batch disables (its own are settled below, in order).
    let disabled = write_health(&mut tx, &plan.writes, recs).await?;

    // 3. The deliveries, locked.
    let mut keys: Vec<(&str, &str)> =
        recs.iter().map(|r| (r.attempt.msg_id.as_str(), r.attempt.endpoint_id.as_str())).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut slots = lock_deliveries(&mut tx, &keys).await?;

    // 4. Each record in turn against the state the previous ones left.
    let mut effects = Vec::with_capacity(recs.len());
    let mut settled = Vec::new();
    let mut first_retry: Option<Timestamp> = None;
    let mut retried: Vec<&str> = Vec::new();
    for (rec, step) in recs.iter().zip(&plan.steps) {
        let a = &rec.attempt;
        let key = (a.msg_id.as_str(), a.endpoint_id.as_str());
        let slot = slots.get_mut(&key).ok_or_else(|| StoreError::Backend("delivery slot missing".into()))?;
        let done = decide(&slot.stored, rec, step.active, step.exists);
        // A deleted endpoint keeps its attempt history but gets no delivery row.
        if step.exists {
            slot.stored = done.next.clone();
            // A delivery that settles, or falls due by itself, waits for nothing.
            if slot.stored.state.status != DeliveryStatus::Pending || slot.stored.due_at.is_some() {
                slot.gate = None;
            }
            if slot.stored.state.status != DeliveryStatus::Pending
                && let Some(okey) = &slot.okey
                && step.active
            {
                let moves_on =
                    ordering::moves_on(slot.stored.state.status == DeliveryStatus::Success, step.on_failure);
                settled.push(Settled { record: effects.len(), okey: okey.clone(), moves_on });
            }
            slot.exists = true;
            slot.updated_at = a.created_at.as_millis();
            let w =
                slot.written.get_or_insert(Written { app_id: &a.app_id, added: 0, last_code: 0, last_at: 0 });
            w.added += 1;
            w.last_code = i32::from(a.status_code);
            w.last_at = a.created_at.as_millis();
        }
        if let Some(at) = done.retry {
            first_retry = Some(first_retry.map_or(at, |f| f.min(at)));
            retried.push(&a.endpoint_id);
        }
        let endpoint_disabled = match &step.disabled {
            Some(d) => {
                settle_in_batch(&mut slots, key, rec.finished_at);
                let endpoint = disabled
                    .get(&a.endpoint_id)
                    .cloned()
                    .ok_or_else(|| StoreError::Backend("endpoint vanished mid-write".into()))?;
                Some(EndpointDisabled { endpoint, failing_since: d.failing_since, automatic: d.automatic })
            }
            None => None,
        };
        effects.push(AttemptEffects {
            state: done.next.state,
            exhausted: done.exhausted,
            endpoint_disabled,
            endpoint_paused: None,
            next: None,
            wake: None,
        });
    }

    // 5. Everything written at once.
    let wake = first_retry.map(|at| notify::due_payload_for(at, retried));
    write_rows(&mut tx, &keys, &slots, recs, wake.as_deref()).await?;
    // 6. Ordering keys and flows.
    let flowing: Vec<usize> = recs
        .iter()
        .zip(&plan.steps)
        .enumerate()
        .filter(|(_, (rec, step))| {
            step.active
                && match rec.signal {
                    Signal::Neutral => false,
                    Signal::Ok => rec.paced,
                    Signal::Congested | Signal::PauseUntil { .. } => true,
                }
        })
        .map(|(i, _)| i)
        .collect();
    if !settled.is_empty() || !flowing.is_empty() {
        gates(&mut tx, recs, &settled, &flowing, &mut effects, sealing).await?;
    }
    // 7. The charts' minutes.
    charts::count_attempts(&mut tx, recs, chart_shard).await?;
    tx.commit().await?;
    Ok(effects)
}

/// What one attempt does to its delivery.
#[derive(Clone, Debug)]
pub struct Decision {
    pub next: DeliveryRow,
    pub exhausted: bool,
    /// A retry anyone may claim is now scheduled at this time.
    pub retry: Option<Timestamp>,
}

/// The delivery after `rec`, given its row before (`prev`) and whether the
/// endpoint still exists and takes deliveries after the attempt's own
/// health change.
pub fn decide(
    prev: &DeliveryRow,
    rec: &AttemptRecord,
    endpoint_active: bool,
    endpoint_exists: bool,
) -> Decision {
    let a = &rec.attempt;
    let done = record(prev, &rec.result(endpoint_active));
    let retry = match (a.trigger, done.row.due_at) {
        (Trigger::Scheduled, Some(at)) if endpoint_exists => Some(at),
        _ => None,
    };
    Decision { next: done.row, exhausted: done.exhausted, retry }
}

/// The columns of an endpoint that recording an attempt needs.
#[derive(Clone, Copy, Debug)]
struct EndpointHealth {
    disabled: bool,
    failing_since: Option<Timestamp>,
    on_failure: OnFailure,
}

/// An endpoint row's change: its final streak start, and when it was
/// disabled if it was.
#[derive(Clone, Copy, Debug)]
struct HealthWrite {
    failing_since: Option<Timestamp>,
    disabled_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug)]
struct Disabling {
    failing_since: Option<Timestamp>,
    automatic: bool,
}

/// One record's view of its endpoint, after the record's own change.
#[derive(Clone, Copy, Debug)]
struct HealthStep {
    exists: bool,
    active: bool,
    /// This record disabled the endpoint.
    disabled: Option<Disabling>,
    on_failure: OnFailure,
}

struct HealthPlan {
    steps: Vec<HealthStep>,
    writes: BTreeMap<String, HealthWrite>,
}

/// Track each endpoint's failure streak through the records in order;
/// disable it when the receiver asked for that or it has failed for too
/// long. A disabled (or missing) endpoint is left alone.
fn plan_health(stored: &HashMap<String, EndpointHealth>, recs: &[AttemptRecord]) -> HealthPlan {
    let mut now = stored.clone();
    let mut writes = BTreeMap::new();
    let steps = recs
        .iter()
        .map(|rec| {
            let id = &rec.attempt.endpoint_id;
            match now.get_mut(id) {
                None => {
                    HealthStep { exists: false, active: false, disabled: None, on_failure: OnFailure::Skip }
                }
                Some(ep) if ep.disabled => {
                    HealthStep { exists: true, active: false, disabled: None, on_failure: ep.on_failure }
                }
                Some(ep) => {
                    let at = rec.finished_at;
                    let health::Change { failing_since, disabled_automatically } =
                        rec.health(ep.failing_since);
                    let changed = failing_since != ep.failing_since;
                    ep.failing_since = failing_since;
                    if let Some(automatic) = disabled_automatically {
                        ep.disabled = true;
                        writes.insert(id.clone(), HealthWrite { failing_since, disabled_at: Some(at) });
                        let disabling = Disabling { failing_since, automatic };
                        HealthStep {
                            exists: true,
                            active: false,
                            disabled: Some(disabling),
                            on_failure: ep.on_failure,
                        }
                    } else {
                        if changed {
                            writes.insert(id.clone(), HealthWrite { failing_since, disabled_at: None });
                        }
                        HealthStep { exists: true, active: true, disabled: None, on_failure: ep.on_failure }
                    }
                }
            }
        })
        .collect();
    HealthPlan { steps, writes }
}

async fn health_of(
    c: &mut PgConnection,
    ids: &[&str],
    lock: bool,
) -> StoreResult<HashMap<String, EndpointHealth>> {
    // One probe of the primary key per id, in the order given (sorted, so
    // locks are taken alike). Not `id = ANY($1)`, nor a lateral join the
    // planner may flatten (`FOR UPDATE` or `OFFSET 0` keep it as it is):
    // with a few dozen ids of 10,000 endpoints, both were planned as a scan
    // of every endpoint (measured: 3 ms a call in the `tenants` scenario,
    // against 0.3 ms for the probes).
    let sql = if lock {
        "SELECT e.id, e.disabled, e.failing_since, e.ordering_on_failure FROM unnest($1::text[]) AS k(id)
         CROSS JOIN LATERAL (SELECT * FROM endpoints WHERE id = k.id FOR UPDATE) e"
    } else {
        "SELECT e.id, e.disabled, e.failing_since, e.ordering_on_failure FROM unnest($1::text[]) AS k(id)
         CROSS JOIN LATERAL (SELECT * FROM endpoints WHERE id = k.id OFFSET 0) e"
    };
    let found = sqlx::query(sql).bind(ids).fetch_all(c).await?;
    found
        .iter()
        .map(|r| {
            let health = EndpointHealth {
                disabled: col(r, 1)?,
                failing_since: col::<Option<i64>>(r, 2)?.map(Timestamp::from_millis),
                on_failure: OnFailure::parse(&col::<String>(r, 3)?).unwrap_or_default(),
            };
            Ok((col(r, 0)?, health))
        })
        .collect()
}

/// Write the planned endpoint changes; the endpoints disabled, by id. The
/// pending deliveries of those, except the batch's own, fail now.
async fn write_health(
    c: &mut PgConnection,
    writes: &BTreeMap<String, HealthWrite>,
    recs: &[AttemptRecord],
) -> StoreResult<HashMap<String, Endpoint>> {
    if writes.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = writes.keys().map(String::as_str).collect();
    let since: Vec<Option<i64>> = writes.values().map(|w| opt_ts(w.failing_since)).collect();
    let disable: Vec<bool> = writes.values().map(|w| w.disabled_at.is_some()).collect();
    let at: Vec<Option<i64>> = writes.values().map(|w| opt_ts(w.disabled_at)).collect();
    let sql = format!(
        "UPDATE endpoints e SET failing_since = k.failing_since, disabled = e.disabled OR k.disable,
            updated_at = CASE WHEN k.disable THEN k.at ELSE e.updated_at END
         FROM UNNEST($1::text[], $2::int8[], $3::bool[], $4::int8[]) AS k(id, failing_since, disable, at)
         WHERE e.id = k.id
         RETURNING {ENDPOINT_COLS}"
    );
    let updated =
        sqlx::query(&sql).bind(&ids).bind(&since).bind(&disable).bind(&at).fetch_all(&mut *c).await?;
    let mut disabled = HashMap::new();
    for r in &updated {
        // For the operational event: no secrets needed (nor opened).
        let ep: Endpoint = rows::endpoint_redacted(r, 0)?;
        if writes.get(&ep.id).is_some_and(|w| w.disabled_at.is_some()) {
            disabled.insert(ep.id.clone(), ep);
        }
    }
    if disabled.is_empty() {
        return Ok(disabled);
    }

    let (eps, ats): (Vec<&str>, Vec<Option<i64>>) = writes
        .iter()
        .filter(|(_, w)| w.disabled_at.is_some())
        .map(|(id, w)| (id.as_str(), opt_ts(w.disabled_at)))
        .unzip();
    let (own_msgs, own_eps): (Vec<&str>, Vec<&str>) =
        recs.iter().map(|r| (r.attempt.msg_id.as_str(), r.attempt.endpoint_id.as_str())).unzip();
    sqlx::query(
        "UPDATE deliveries d SET status = $1, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = k.at, gate = NULL
         FROM UNNEST($2::text[], $3::int8[]) AS k(endpoint_id, at)
         WHERE d.endpoint_id = k.endpoint_id AND d.status = $4
            AND NOT EXISTS (SELECT 1 FROM UNNEST($5::text[], $6::text[]) AS o(msg_id, endpoint_id)
                WHERE o.msg_id = d.msg_id AND o.endpoint_id = d.endpoint_id)",
    )
    .bind(int4(DeliveryStatus::Fail.code()))
    .bind(&eps)
    .bind(&ats)
    .bind(int4(DeliveryStatus::Pending.code()))
    .bind(&own_msgs)
    .bind(&own_eps)
    .execute(&mut *c)
    .await?;
    // Their ordering keys go with their pending deliveries.
    sqlx::query("DELETE FROM ordering_keys WHERE endpoint_id = ANY($1)").bind(&eps).execute(c).await?;
    Ok(disabled)
}

/// What the batch writes to a delivery row besides its state.
struct Written<'a> {
    app_id: &'a str,
    added: i32,
    last_code: i32,
    last_at: i64,
}

/// A delivery of the batch as the records so far left it.
struct Slot<'a> {
    stored: DeliveryRow,
    /// Its gate (see the schema) and ordering key.
    gate: Option<i32>,
    okey: Option<String>,
    /// The row exists (stored, or written by an earlier record).
    exists: bool,
    updated_at: i64,
    written: Option<Written<'a>>,
}

type Slots<'a> = HashMap<(&'a str, &'a str), Slot<'a>>;

async fn lock_deliveries<'a>(c: &mut PgConnection, keys: &[(&'a str, &'a str)]) -> StoreResult<Slots<'a>> {
    let (msgs, eps): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    // One index probe per delivery, locked in the order given (the caller
    // sorts the keys, so that nodes lock alike).
    // Not `(msg_id, endpoint_id) IN (SELECT * FROM UNNEST(…))`: while the
    // table is small or its statistics old (a fresh database, a burst to
    // many endpoints), that was planned as a scan of every delivery per
    // batch (measured: 6 ms a call in the `tenants` scenario).
    let found = sqlx::query(
        "SELECT d.msg_id, d.endpoint_id, d.status, d.attempts, d.next_attempt, d.due_at, d.lease_owner,
            d.updated_at, d.gate, d.okey
         FROM UNNEST($1::text[], $2::text[]) AS k(m, e)
         CROSS JOIN LATERAL (SELECT * FROM deliveries WHERE msg_id = k.m AND endpoint_id = k.e FOR UPDATE) d",
    )
    .bind(&msgs)
    .bind(&eps)
    .fetch_all(c)
    .await?;
    let mut slots: Slots<'a> = keys
        .iter()
        .map(|k| {
            let slot = Slot {
                stored: DeliveryRow::missing(),
                gate: None,
                okey: None,
                exists: false,
                updated_at: 0,
                written: None,
            };
            (*k, slot)
        })
        .collect();
    for r in &found {
        let (m, e): (String, String) = (col(r, 0)?, col(r, 1)?);
        // `keys` is sorted: find the batch's own key for the row.
        let Ok(i) = keys.binary_search_by(|k| (k.0, k.1).cmp(&(m.as_str(), e.as_str()))) else { continue };
        let Some(slot) = slots.get_mut(&keys[i]) else { continue };
        let status = DeliveryStatus::from_code(col::<i32>(r, 2)?.into()).unwrap_or(DeliveryStatus::Pending);
        slot.stored = DeliveryRow {
            state: DeliveryState {
                status,
                attempts: u32::try_from(col::<i32>(r, 3)?).unwrap_or(0),
                next_attempt: col::<Option<i64>>(r, 4)?.map(Timestamp::from_millis),
            },
            due_at: col::<Option<i64>>(r, 5)?.map(Timestamp::from_millis),
            lease_owner: col(r, 6)?,
        };
        slot.exists = true;
        slot.updated_at = col(r, 7)?;
        slot.gate = col(r, 8)?;
        slot.okey = col(r, 9)?;
    }
    Ok(slots)
}

/// The endpoint of `by` was just disabled: its other pending deliveries in
/// the batch fail now, as the stored ones did in [`write_health`].
fn settle_in_batch(slots: &mut Slots<'_>, by: (&str, &str), at: Timestamp) {
    for (key, slot) in slots.iter_mut() {
        if key.1 == by.1
            && key.0 != by.0
            && slot.exists
            && slot.stored.state.status == DeliveryStatus::Pending
        {
            let attempts = slot.stored.state.attempts;
            slot.stored = DeliveryRow {
                state: DeliveryState { status: DeliveryStatus::Fail, attempts, next_attempt: None },
                due_at: None,
                lease_owner: None,
            };
            slot.gate = None;
            slot.updated_at = at.as_millis();
        }
    }
}

async fn write_rows(
    c: &mut PgConnection,
    keys: &[(&str, &str)],
    slots: &Slots<'_>,
    recs: &[AttemptRecord],
    wake: Option<&str>,
) -> StoreResult<()> {
    let mut d = DeliveryColumns::default();
    for key in keys {
        let Some(slot) = slots.get(key) else { continue };
        let Some(w) = &slot.written else { continue };
        let s = &slot.stored;
        d.msg.push(key.0);
        d.ep.push(key.1);
        d.app.push(w.app_id);
        d.status.push(int4(s.state.status.code()));
        d.attempts.push(i32::try_from(s.state.attempts).unwrap_or(i32::MAX));
        d.next.push(opt_ts(s.state.next_attempt));
        d.due.push(opt_ts(s.due_at));
        d.lease.push(s.lease_owner.as_deref());
        d.updated.push(slot.updated_at);
        d.added.push(w.added);
        d.code.push(w.last_code);
        d.last_at.push(w.last_at);
        d.gate.push(slot.gate);
    }
    let attempts = recs.iter().map(|r| &r.attempt);
    let ids: Vec<&str> = attempts.clone().map(|a| a.id.as_str()).collect();
    let msgs: Vec<&str> = attempts.clone().map(|a| a.msg_id.as_str()).collect();
    let eps: Vec<&str> = attempts.clone().map(|a| a.endpoint_id.as_str()).collect();
    let apps: Vec<&str> = attempts.clone().map(|a| a.app_id.as_str()).collect();
    let urls: Vec<&str> = attempts.clone().map(|a| a.url.as_str()).collect();
    let status: Vec<i32> = attempts.clone().map(|a| int4(a.status.code())).collect();
    let codes: Vec<i32> = attempts.clone().map(|a| i32::from(a.status_code)).collect();
    let responses: Vec<String> = attempts.clone().map(|a| pg_text(&a.response).into_owned()).collect();
    let durations: Vec<i64> = attempts.clone().map(|a| a.duration_ms).collect();
    let triggers: Vec<i32> = attempts.clone().map(|a| int4(a.trigger.code())).collect();
    let errors: Vec<Option<String>> =
        attempts.clone().map(|a| a.error.as_deref().map(|e| pg_text(e).into_owned())).collect();
    let created: Vec<i64> = attempts.map(|a| a.created_at.as_millis()).collect();

    sqlx::query(
        "WITH d AS (
            INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at, total_attempts, last_code, last_attempt_at, gate)
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int8[],
                $7::int8[], $8::text[], $9::int8[], $10::int4[], $11::int4[], $12::int8[], $27::int4[])
            ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = EXCLUDED.status,
                attempts = EXCLUDED.attempts, next_attempt = EXCLUDED.next_attempt,
                due_at = EXCLUDED.due_at, lease_owner = EXCLUDED.lease_owner,
                updated_at = EXCLUDED.updated_at,
                total_attempts = deliveries.total_attempts + EXCLUDED.total_attempts,
                last_code = EXCLUDED.last_code, last_attempt_at = EXCLUDED.last_attempt_at,
                gate = EXCLUDED.gate
         ), t AS (
            INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
                duration_ms, trigger, error, created_at)
            SELECT * FROM UNNEST($13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
                $18::int4[], $19::int4[], $20::text[], $21::int8[], $22::int4[], $23::text[], $24::int8[])
         )
         SELECT pg_notify($25, $26) WHERE $26::text IS NOT NULL",
    )
    .bind(&d.msg)
    .bind(&d.ep)
    .bind(&d.app)
    .bind(&d.status)
    .bind(&d.attempts)
    .bind(&d.next)
    .bind(&d.due)
    .bind(&d.lease)
    .bind(&d.updated)
    .bind(&d.added)
    .bind(&d.code)
    .bind(&d.last_at)
    .bind(&ids)
    .bind(&msgs)
    .bind(&eps)
    .bind(&apps)
    .bind(&urls)
    .bind(&status)
    .bind(&codes)
    .bind(&responses)
    .bind(&durations)
    .bind(&triggers)
    .bind(&errors)
    .bind(&created)
    .bind(notify::CHANNEL)
    .bind(wake)
    .bind(&d.gate)
    .execute(c)
    .await?;
    Ok(())
}

#[derive(Default)]
struct DeliveryColumns<'a> {
    msg: Vec<&'a str>,
    ep: Vec<&'a str>,
    app: Vec<&'a str>,
    status: Vec<i32>,
    attempts: Vec<i32>,
    next: Vec<Option<i64>>,
    due: Vec<Option<i64>>,
    lease: Vec<Option<&'a str>>,
    updated: Vec<i64>,
    added: Vec<i32>,
    code: Vec<i32>,
    last_at: Vec<i64>,
    gate: Vec<Option<i32>>,
}

/// A record whose delivery settled, for its ordering key.
struct Settled {
    /// Index of the record in the batch.
    record: usize,
    okey: String,
    moves_on: bool,
}

/// Step 6: the ordering keys whose head settled move on or block; the
/// flows take in the answers (`flowing`: indexes of the records whose
/// answer touches their endpoint's flow), in record order; the new heads
/// are leased to the recording node, parked behind their flow, or made due.
async fn gates(
    c: &mut PgConnection,
    recs: &[AttemptRecord],
    settled: &[Settled],
    flowing: &[usize],
    effects: &mut [AttemptEffects],
    keys: &Keyring,
) -> StoreResult<()> {
    let mut promoted = Vec::new();
    for s in settled {
        let a = &recs[s.record].attempt;
        let at = recs[s.record].finished_at;
        if let Some(p) =
            super::ordering::settled(c, &a.endpoint_id, &s.okey, &a.msg_id, s.moves_on, at).await?
        {
            promoted.push((s.record, p));
        }
    }
    let mut ids: Vec<&str> = flowing.iter().map(|&i| recs[i].attempt.endpoint_id.as_str()).collect();
    ids.extend(promoted.iter().map(|(_, p)| p.key.endpoint_id.as_str()));
    ids.sort_unstable();
    ids.dedup();
    let limits = flow::limits(&mut *c, &ids).await?;
    let paced: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| {
            flowing.iter().any(|&i| recs[i].attempt.endpoint_id == *id)
                || limits.get(*id).is_some_and(|l| l.may_pace())
        })
        .collect();
    let mut flows = flow::lock(&mut *c, &paced).await?;
    for &i in flowing {
        let rec = &recs[i];
        let limit = limits.get(&rec.attempt.endpoint_id).and_then(|l| l.limit);
        let f = flows.get(&rec.attempt.endpoint_id);
        effects[i].endpoint_paused = f.after_response(limit, &rec.signal, rec.finished_at, rec.sending_rate);
        if let Some(until) = effects[i].endpoint_paused {
            effects[i].wake = Some(until);
        }
    }

    let mut parked = Vec::new();
    let mut wakes = Vec::new();
    for (i, p) in promoted {
        let rec = &recs[i];
        let now = rec.finished_at;
        let due = p.next_attempt.map_or(now, |t| t.max(now));
        let limit = limits.get(&p.key.endpoint_id).copied().unwrap_or_default();
        let mut bounded = false;
        if due <= now && limit.may_pace() {
            let f = flows.get(&p.key.endpoint_id);
            bounded = f.is_limited(limit.limit, now);
            if bounded && !f.admit_one(limit.limit, now) {
                f.parked(limit.limit, now);
                effects[i].wake = f.wake_at;
                wakes.extend(f.wake_at);
                parked.push(p.key);
                continue;
            }
        }
        let lease = rec.lease.as_ref().filter(|_| due <= now);
        let task = match lease {
            Some(_) => next_task(c, &p, keys).await?,
            None => None,
        };
        let (due_at, owner) = match (&task, lease) {
            (Some(_), Some(l)) => (l.until, Some(l.owner.as_str())),
            _ => {
                effects[i].wake = Some(due);
                wakes.push(due);
                (due, None)
            }
        };
        sqlx::query(
            "UPDATE deliveries SET due_at = $3, lease_owner = $4 WHERE msg_id = $1 AND endpoint_id = $2",
        )
        .bind(&p.key.msg_id)
        .bind(&p.key.endpoint_id)
        .bind(due_at.as_millis())
        .bind(owner)
        .execute(&mut *c)
        .await?;
        effects[i].next = task.map(|(message, endpoint)| DeliveryTask { message, endpoint, paced: bounded });
    }
    flow::park(&mut *c, &parked).await?;
    let now = recs.last().map_or(Timestamp::from_millis(0), |r| r.finished_at);
    flows.save(&mut *c, now).await?;
    if let Some(first) = wakes.into_iter().min() {
        notify::due(c, first).await?;
    }
    Ok(())
}

/// The message and endpoint of a new head, to send it; `None` if either is
/// gone (the claim settles it when it falls due).
async fn next_task(
    c: &mut PgConnection,
    p: &super::ordering::Promoted,
    keys: &Keyring,
) -> StoreResult<Option<(Arc<crate::domain::model::Message>, Arc<Endpoint>)>> {
    let messages =
        super::dispatch::load(&mut *c, MESSAGE_COLS, "messages m", "m", [&p.key.msg_id].into_iter(), |r| {
            rows::message(r, 0)
        })
        .await?;
    let endpoints = super::dispatch::load(
        &mut *c,
        ENDPOINT_COLS,
        "endpoints e",
        "e",
        [&p.key.endpoint_id].into_iter(),
        |r| rows::endpoint(r, 0, keys),
    )
    .await?;
    Ok(match (messages.get(&p.key.msg_id), endpoints.get(&p.key.endpoint_id)) {
        (Some(m), Some(e)) if !e.disabled && m.app_id == p.app_id => Some((Arc::clone(m), Arc::clone(e))),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::Outcome;
    use crate::domain::model::Attempt;
    use crate::domain::retry::RetryPolicy;
    use crate::domain::steering::Steering;

    fn record(n: usize, awaited: bool) -> AttemptRecord {
        let at = Timestamp::from_millis(0);
        AttemptRecord {
            attempt: Attempt {
                id: format!("atmpt_{n}"),
                msg_id: format!("msg_{n}"),
                endpoint_id: "ep_1".into(),
                app_id: "app_1".into(),
                url: "https://example.com/hook".into(),
                status: DeliveryStatus::Success,
                status_code: 200,
                response: String::new(),
                duration_ms: 1,
                trigger: Trigger::Scheduled,
                error: None,
                created_at: at,
            },
            outcome: Outcome::Delivered,
            policy: RetryPolicy::default(),
            finished_at: at,
            steering: Steering::default(),
            jitter: 0.0,
            auto_disable_after: None,
            signal: Signal::Ok,
            sending_rate: 0.0,
            paced: false,
            lease: None,
            awaited,
        }
    }

    type Queue = (mpsc::UnboundedSender<RecordRequest>, mpsc::UnboundedReceiver<RecordRequest>);

    fn send(q: &Queue, n: usize, awaited: bool) {
        q.0.send((record(n, awaited), oneshot::channel().0)).unwrap();
    }

    fn taken(jobs: &[RecordRequest]) -> Vec<String> {
        jobs.iter().map(|(r, _)| r.attempt.msg_id.clone()).collect()
    }

    /// On tokio's paused clock: a lone record waits for company, and what
    /// arrives within the linger commits with it.
    #[tokio::test(start_paused = true)]
    async fn a_small_batch_waits_for_company_until_the_linger_ends() {
        let mut q: Queue = mpsc::unbounded_channel();
        send(&q, 1, false);
        let tx = q.0.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send((record(2, false), oneshot::channel().0)).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send((record(3, false), oneshot::channel().0)).unwrap();
        });
        let (start, mut jobs) = (tokio::time::Instant::now(), Vec::new());
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 2);
        assert_eq!(
            taken(&jobs),
            ["msg_1", "msg_2"],
            "the one that came after the linger waits for the next batch"
        );
        assert_eq!(start.elapsed(), LINGER);
        late.await.unwrap();
        jobs.clear();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 1);
        assert_eq!(taken(&jobs), ["msg_3"]);
    }

    /// An awaited record (an ordering key's next message, a lane's queue
    /// waits for it) commits at once, whether it came first or joined a
    /// lingering batch; so does a batch already large.
    #[tokio::test(start_paused = true)]
    async fn awaited_records_and_large_batches_do_not_wait() {
        let mut q: Queue = mpsc::unbounded_channel();
        let mut jobs = Vec::new();
        send(&q, 1, true);
        let start = tokio::time::Instant::now();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);

        jobs.clear();
        send(&q, 2, false);
        let tx = q.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send((record(3, true), oneshot::channel().0)).unwrap();
        });
        let start = tokio::time::Instant::now();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 2);
        assert_eq!(start.elapsed(), Duration::from_millis(1), "committed when the awaited one joined");

        jobs.clear();
        for n in 0..LINGER_BELOW {
            send(&q, 10 + n, false);
        }
        let start = tokio::time::Instant::now();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, LINGER_BELOW);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Once every sender is gone and the queue drained, the task ends.
    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_ends_the_task() {
        let mut q: Queue = mpsc::unbounded_channel();
        send(&q, 1, false);
        drop(q.0);
        let mut jobs = Vec::new();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 1);
        jobs.clear();
        assert_eq!(gather(&mut q.1, &mut jobs, LINGER).await, 0);
    }
}
