//! Delivery: turning stored deliveries into HTTP requests and recording
//! what happened.
//!
//! Two ways in:
//! - the fast path: a freshly ingested message's deliveries, already leased
//!   to this node by the same transaction that stored them, are offered
//!   straight to the lanes ([`Dispatcher::offer`]);
//! - the [`scheduler`]: wakes when the earliest delivery falls due (retries,
//!   delayed messages, leases that expired) and claims batches from the store.
//!
//! Either way an attempt runs in a per-endpoint [`lanes`] slot, is made by
//! the [`sender`], and is recorded through `Store::record_attempt`, which
//! also advances the delivery's state.

mod interrupt;
pub mod lanes;
pub mod record;
mod scheduler;
pub mod sender;
pub mod ssrf;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::lanes::{Admission, Lanes, QueuedAttempt};
use self::sender::Sender;
use self::ssrf::TargetPolicy;
use crate::clock::SharedClock;
use crate::domain::delivery::Outcome;
use crate::domain::flow::Signal;
use crate::domain::id;
use crate::domain::model::{Attempt, DeliveryStatus, Trigger};
use crate::domain::retry::RetryPolicy;
use crate::domain::time::Timestamp;
use crate::operational::{self, Emitter};
use crate::store::{AttemptEffects, DeliveryKey, DeliveryTask, DispatchStore, Lease};
use crate::telemetry;
use crate::traces;

#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Identifies this node's leases.
    pub node_id: String,
    /// Attempts in flight at once per endpoint.
    pub endpoint_concurrency: usize,
    /// Attempts queued in memory per endpoint beyond those in flight, at
    /// least (a lane sending faster queues seconds of its pace, see
    /// `lanes::QUEUE_SECONDS`).
    pub endpoint_queue: usize,
    /// How long a claim keeps other nodes off a delivery. Longer than the
    /// largest attempt timeout plus queueing.
    pub lease: Duration,
    /// Deliveries claimed per store round trip.
    pub claim_batch: usize,
    /// Policy for endpoints that do not set their own.
    pub default_policy: RetryPolicy,
    /// Random spread of retry delays, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
    /// Disable an endpoint once every attempt has failed for this long.
    pub auto_disable_after: Option<Duration>,
    /// Send `message.attempt.failing` after this many failed attempts.
    pub failing_after_attempts: u32,
    pub targets: TargetPolicy,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            node_id: "node".into(),
            endpoint_concurrency: 64,
            endpoint_queue: 1024,
            lease: Duration::from_secs(600),
            claim_batch: 512,
            default_policy: RetryPolicy::default(),
            jitter: 0.2,
            auto_disable_after: Some(Duration::from_secs(5 * 24 * 3600)),
            failing_after_attempts: 4,
            targets: TargetPolicy::default(),
        }
    }
}

/// Handle to the delivery machinery; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// Only the dispatch part of the store: claims, leases, attempt records.
    store: Arc<dyn DispatchStore>,
    clock: SharedClock,
    cfg: DispatchConfig,
    sender: Sender,
    lanes: Mutex<Lanes>,
    /// Wakes the scheduler early (see [`Dispatcher::wake_at`]).
    wake: Notify,
    /// When the scheduler plans to look next, in ms; `i64::MAX` while it is
    /// recomputing, so no hint is dropped in between.
    planned_wake: AtomicI64,
    shutdown: watch::Sender<bool>,
    /// Set when the shutdown grace period ends with attempts still running.
    interrupt: watch::Sender<bool>,
    workers: TaskTracker,
    events: Emitter,
    /// Refused deliveries waiting to be handed back to the store.
    releases: Mutex<Releases>,
}

/// See [`Inner::release_soon`].
#[derive(Default)]
struct Releases {
    keys: Vec<DeliveryKey>,
    /// A task is releasing; it takes whatever is added meanwhile.
    flushing: bool,
}

impl Dispatcher {
    /// Start the scheduler; returns at once.
    pub fn start(
        store: Arc<dyn DispatchStore>,
        clock: SharedClock,
        cfg: DispatchConfig,
        events: Emitter,
    ) -> Dispatcher {
        let inner = Arc::new(Inner {
            sender: Sender::new(cfg.targets.clone()),
            lanes: Mutex::new(Lanes::new(cfg.endpoint_concurrency, cfg.endpoint_queue)),
            store,
            clock,
            cfg,
            wake: Notify::new(),
            planned_wake: AtomicI64::new(i64::MAX),
            shutdown: watch::Sender::new(false),
            interrupt: watch::Sender::new(false),
            workers: TaskTracker::new(),
            events,
            releases: Mutex::new(Releases::default()),
        });
        inner.workers.spawn(scheduler::run(Arc::clone(&inner)));
        if inner.store.shared() {
            inner.workers.spawn(renew_leases(Arc::clone(&inner)));
        }
        Dispatcher { inner }
    }

    /// The lease to put on deliveries this node will send right away.
    pub fn fresh_lease(&self) -> Lease {
        self.inner.lease(self.inner.clock.now())
    }

    /// Endpoints whose lane is full now: ingest leaves their deliveries
    /// to a later claim rather than leasing them to this node.
    pub fn busy_endpoints(&self) -> Vec<String> {
        self.inner.lock_lanes().full_endpoints()
    }

    /// Send deliveries already leased to this node. Those a full lane cannot
    /// take are handed back to the store, due now, for the scheduler.
    ///
    /// Returns before those are released: a saturated node refuses nearly
    /// every message it ingests, and releasing each on its own would cost
    /// the store a statement per message; they are released together (see
    /// [`Inner::release_soon`]).
    pub async fn offer(&self, tasks: Vec<DeliveryTask>) {
        let busy = self
            .inner
            .admit_all(tasks.into_iter().map(|task| QueuedAttempt { task, trigger: Trigger::Scheduled }));
        self.inner.release_soon(busy);
    }

    /// A manual attempt (retry / resend): queued behind the endpoint's
    /// in-flight attempts but never refused, and not counted by the schedule.
    pub fn resend(&self, task: DeliveryTask) {
        let attempt = QueuedAttempt { task, trigger: Trigger::Manual };
        let admission = self.inner.lock_lanes().admit(attempt, true);
        if let Admission::Run(attempt) = admission {
            self.inner.spawn_worker(attempt);
        }
    }

    /// Something became due at `at` (a retry, a delayed message, released
    /// work): make sure the scheduler looks no later than that.
    pub fn wake_at(&self, at: Timestamp) {
        self.inner.wake_at(at);
    }

    /// Deliveries of these endpoints (`None`: of any) became due at `at`,
    /// by another node's hand: look then, unless this node's lanes for all
    /// of them are full (a lane that frees up wakes the scheduler itself).
    pub fn wake_for(&self, at: Timestamp, endpoints: Option<&[String]>) {
        self.inner.wake_for(at, endpoints.map(|eps| eps.iter().map(String::as_str)));
    }

    /// The endpoint was disabled or deleted: forget what is queued for it.
    /// (The store has already settled its pending deliveries.)
    pub fn endpoint_stopped(&self, endpoint_id: &str) {
        let dropped = self.inner.lock_lanes().drop_queued(endpoint_id);
        if !dropped.is_empty() {
            tracing::debug!(endpoint_id, dropped = dropped.len(), "dropped queued attempts");
        }
    }

    /// Which addresses webhooks may go to.
    /// Attempts to `endpoint_id` running on this node now.
    pub fn in_flight_to(&self, endpoint_id: &str) -> usize {
        self.inner.lock_lanes().in_flight_to(endpoint_id)
    }

    pub fn targets(&self) -> &TargetPolicy {
        &self.inner.cfg.targets
    }

    /// Attempts in flight and queued in memory.
    pub fn load(&self) -> (usize, usize) {
        let lanes = self.inner.lock_lanes();
        (lanes.in_flight(), lanes.queued())
    }

    /// Stop: no new claims, queued work handed back to the store, in-flight
    /// attempts given up to `grace` to finish; those still running then are
    /// cut off and recorded as interrupted.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let queued: Vec<QueuedAttempt> = self.inner.lock_lanes().close();
        self.inner.give_back(queued).await;
        self.inner.workers.close();
        let finished = tokio::time::timeout(grace, self.inner.workers.wait()).await.is_ok();
        if !finished {
            let (in_flight, _) = self.load();
            tracing::warn!(
                in_flight,
                "attempts still running at the end of the grace period: interrupting them"
            );
            self.inner.interrupt.send_replace(true);
            if tokio::time::timeout(interrupt::RECORD_WAIT, self.inner.workers.wait()).await.is_err() {
                tracing::error!("interrupted attempts could not all be recorded; their leases cover them");
            }
        }
        if self.inner.store.shared() {
            // Whatever this node still holds goes to the other nodes now,
            // not when the leases expire.
            match self.inner.store.release_all(Some(&self.inner.cfg.node_id)).await {
                Ok(n) => tracing::info!(released = n, "leases released"),
                Err(e) => tracing::error!(error = %e, "could not release leases; they will expire"),
            }
        }
    }
}

/// Keep this node's leases alive while it runs (shared stores only). A
/// node that dies stops renewing, and the others claim its deliveries once
/// the leases run out: the lease length bounds how late they are.
async fn renew_leases(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let every = inner.cfg.lease / 3;
    loop {
        // On the injected clock, like the leases themselves.
        let wake = inner.clock.now().plus(every);
        tokio::select! {
            _ = inner.clock.sleep_until(wake) => {}
            _ = shutdown.changed() => break,
        }
        let until = inner.clock.now().plus(inner.cfg.lease);
        let held = inner.lock_lanes().held();
        if let Err(e) = inner.store.renew_leases(&inner.cfg.node_id, &held, until).await {
            tracing::error!(error = %e, "renewing leases failed; other nodes may take over this node's deliveries");
        }
    }
}

impl Inner {
    fn lock_lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, now: Timestamp) -> Lease {
        record::lease(&self.cfg, now)
    }

    fn wake_at(&self, at: Timestamp) {
        if at.as_millis() < self.planned_wake.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// [`Dispatcher::wake_for`].
    fn wake_for<'a>(&self, at: Timestamp, endpoints: Option<impl Iterator<Item = &'a str>>) {
        if let Some(endpoints) = endpoints
            && self.lock_lanes().all_full(endpoints)
        {
            return;
        }
        self.wake_at(at);
    }

    /// Admit attempts; start those that may run, return those refused.
    fn admit_all(self: &Arc<Self>, attempts: impl Iterator<Item = QueuedAttempt>) -> Vec<QueuedAttempt> {
        let mut busy = Vec::new();
        let mut start = Vec::new();
        {
            let mut lanes = self.lock_lanes();
            for attempt in attempts {
                match lanes.admit(attempt, false) {
                    Admission::Run(attempt) => start.push(attempt),
                    Admission::Busy(attempt) => busy.push(attempt),
                    Admission::Queued | Admission::AlreadyHeld => {}
                }
            }
        }
        for attempt in start {
            self.spawn_worker(attempt);
        }
        busy
    }

    /// Whether a delivery leased to this node by an attempt record is still
    /// this node's, its lease renewed from now. On a shared store the
    /// record may commit after the lease it was given ran out (its clock
    /// started when the attempt finished, and commits can queue behind
    /// other nodes' locks); another node may then have claimed the
    /// delivery, and sending it here too would put two requests of one
    /// ordering key in flight. The renewal only succeeds while this node
    /// is still the owner, and a claim that lost the race sees a lease in
    /// the future, so exactly one node sends it.
    async fn still_leased(&self, task: &DeliveryTask) -> bool {
        if !self.store.shared() {
            return true; // one process: nobody else claims
        }
        let until = self.clock.now().plus(self.cfg.lease);
        match self.store.renew_leases(&self.cfg.node_id, &[task.key()], until).await {
            Ok(n) => n == 1,
            Err(e) => {
                tracing::error!(error = %e, msg_id = %task.message.id, "could not confirm a lease; leaving it to its expiry");
                false
            }
        }
    }

    /// [`Inner::give_back`] without waiting, batched: one task releases
    /// what has been refused so far in one store call, then what was
    /// refused meanwhile, until nothing is left (like the store's group
    /// commits, nothing waits for company). Until then the deliveries stay
    /// leased to this node, so nobody else sends them either; shutdown
    /// waits for the task.
    fn release_soon(self: &Arc<Self>, attempts: Vec<QueuedAttempt>) {
        let keys = attempts.into_iter().filter(|a| a.trigger == Trigger::Scheduled).map(|a| a.task.key());
        let start = {
            let mut pending = self.releases.lock().unwrap_or_else(|e| e.into_inner());
            pending.keys.extend(keys);
            let start = !pending.flushing && !pending.keys.is_empty();
            pending.flushing |= start;
            start
        };
        if !start {
            return;
        }
        let inner = Arc::clone(self);
        self.workers.spawn(async move {
            loop {
                let keys = {
                    let mut pending = inner.releases.lock().unwrap_or_else(|e| e.into_inner());
                    if pending.keys.is_empty() {
                        pending.flushing = false;
                        return;
                    }
                    std::mem::take(&mut pending.keys)
                };
                let now = inner.clock.now();
                match inner.store.release(&keys, now).await {
                    Ok(()) => inner.wake_for(now, Some(keys.iter().map(|k| k.endpoint_id.as_str()))),
                    Err(e) => tracing::error!(error = %e, "could not release leases; they will expire"),
                }
            }
        });
    }

    /// Return leased-but-unsent deliveries to the store, due now.
    async fn give_back(&self, attempts: Vec<QueuedAttempt>) {
        let keys: Vec<DeliveryKey> =
            attempts.iter().filter(|a| a.trigger == Trigger::Scheduled).map(|a| a.task.key()).collect();
        if keys.is_empty() {
            return;
        }
        let now = self.clock.now();
        match self.store.release(&keys, now).await {
            Ok(()) => self.wake_for(now, Some(keys.iter().map(|k| k.endpoint_id.as_str()))),
            Err(e) => tracing::error!(error = %e, "could not release leases; they will expire"),
        }
    }

    /// A worker owns one lane slot: it makes its attempt, then those the
    /// lane queued behind it, so a busy endpoint costs no extra task spawns.
    fn spawn_worker(self: &Arc<Self>, first: QueuedAttempt) {
        let inner = Arc::clone(self);
        self.workers.spawn(async move {
            let mut current = first;
            loop {
                inner.attempt(&current).await;
                let (next, freed) = inner.lock_lanes().finish(&current);
                if freed {
                    // The scheduler skipped this endpoint while its lane was full.
                    inner.wake.notify_one();
                }
                match next {
                    Some(n) => current = n,
                    None => break,
                }
            }
        });
    }

    async fn attempt(self: &Arc<Self>, queued: &QueuedAttempt) {
        let task = &queued.task;
        let policy = record::policy(task, &self.cfg);
        let span = traces::spans::attempt(&task.message, &task.endpoint, queued.trigger);
        let trace = traces::context::outgoing(&span, task.message.trace.as_ref());
        let started = self.clock.now();
        let shed = self.lock_lanes().started(&task.endpoint.id, started.as_secs());
        if !shed.is_empty() {
            self.release_soon(shed);
        }
        let sending =
            self.sender.send(&*self.clock, task, &policy, started, trace.as_ref()).instrument(span.clone());
        let sent = interrupt::unless_interrupted(sending, &self.interrupt).await;
        let finished_at = self.clock.now();
        let done = record::Finished { task, trigger: queued.trigger, policy, sent, started, finished_at };
        let draws =
            record::Draws { attempt_id: id::new_id(id::ATTEMPT, started), jitter: rand::random::<f64>() };
        let (sending_rate, queued_behind) = {
            let lanes = self.lock_lanes();
            (
                lanes.sending_rate(&task.endpoint.id, finished_at.as_secs()),
                lanes.queued_to(&task.endpoint.id) > 0,
            )
        };
        let record = record::record_for(done, &self.cfg, draws, sending_rate, queued_behind);
        let attempt = record.attempt.clone();
        let delivered = record.outcome == Outcome::Delivered;
        let pausing = matches!(record.signal, Signal::PauseUntil { .. });
        if pausing {
            // Nothing more starts here until the store knows of the pause.
            let queued_behind = self.lock_lanes().hold(&task.endpoint.id);
            self.give_back(queued_behind).await;
        }
        telemetry::attempt(
            delivered,
            queued.trigger == Trigger::Manual,
            Duration::from_millis(attempt.duration_ms.max(0) as u64),
            &attempt.endpoint_id,
        );
        if delivered && queued.trigger == Trigger::Scheduled {
            telemetry::delivered(finished_at.since(task.message.created_at));
        }
        // In the attempt's span: the line carries its trace and span ids.
        span.in_scope(|| {
            tracing::debug!(
                msg_id = %attempt.msg_id,
                endpoint_id = %attempt.endpoint_id,
                status_code = attempt.status_code,
                ok = delivered,
                "attempt"
            );
        });
        let recorded = self.store.record_attempt(record).instrument(span.clone()).await;
        if pausing {
            self.lock_lanes().release_hold(&task.endpoint.id);
        }
        traces::spans::attempt_done(&span, &attempt, recorded.as_ref().ok().map(|fx| fx.state.attempts));
        match recorded {
            Ok(effects) => self.after_record(task, &attempt, effects).instrument(span).await,
            Err(e) => span.in_scope(|| {
                tracing::error!(
                    error = %e,
                    msg_id = %task.message.id,
                    endpoint_id = %task.endpoint.id,
                    "could not record attempt; the delivery will be retried when its lease expires"
                )
            }),
        }
    }

    /// Act on what recording the attempt changed.
    async fn after_record(self: &Arc<Self>, task: &DeliveryTask, attempt: &Attempt, effects: AttemptEffects) {
        for at in [effects.state.next_attempt, effects.wake].into_iter().flatten() {
            self.wake_at(at);
        }
        if let Some(until) = effects.endpoint_paused {
            tracing::info!(endpoint_id = %task.endpoint.id, until = %until.to_rfc3339(), "endpoint paused by its receiver");
            let queued = self.lock_lanes().drop_queued(&task.endpoint.id);
            self.give_back(queued).await;
        }
        if let Some(next) = effects.next
            && self.still_leased(&next).await
        {
            // The ordering key's next message, leased to this node.
            let busy =
                self.admit_all(std::iter::once(QueuedAttempt { task: next, trigger: Trigger::Scheduled }));
            self.give_back(busy).await;
        }
        if effects.exhausted {
            self.events.emit(operational::attempt_event("message.attempt.exhausted", &task.message, attempt));
        } else if attempt.trigger == Trigger::Scheduled
            && attempt.status == DeliveryStatus::Fail
            && effects.state.attempts == self.cfg.failing_after_attempts
        {
            self.events.emit(operational::attempt_event("message.attempt.failing", &task.message, attempt));
        }
        if let Some(d) = effects.endpoint_disabled {
            tracing::warn!(endpoint_id = %d.endpoint.id, automatic = d.automatic, "endpoint disabled");
            telemetry::endpoint_disabled(d.automatic);
            self.lock_lanes().drop_queued(&d.endpoint.id);
            self.events.emit(operational::endpoint_disabled(&d.endpoint, d.failing_since, d.automatic));
        }
    }
}
