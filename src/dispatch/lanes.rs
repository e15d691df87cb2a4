//! Per-endpoint lanes: at most `concurrency` attempts in flight per
//! endpoint (its `maxInFlight`, else the server's default), and a bounded
//! queue behind them: the server's `endpoint_queue`, or what the lane sent
//! in its last whole second times [`QUEUE_SECONDS`] if that is more.
//!
//! This is what keeps one slow or dead endpoint from delaying the others:
//! its attempts wait in its own lane, never in a shared queue. When a lane's
//! queue is full, new work for it stays in the store (the scheduler skips
//! that endpoint) instead of piling up in memory.
//!
//! Paced attempts (the endpoint's flow is bounded, and the store counted
//! each against its bucket when it handed it over) never wait in the
//! queue: they start at once or go back, so starts cannot bunch up behind
//! a slow request. A lane can also be *held* (a receiver just asked for a
//! pause): nothing starts until the hold is lifted.
//!
//! Plain data, no I/O and no locking: the dispatcher wraps it in a mutex
//! that is never held across an await.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::domain::model::Trigger;
use crate::store::{DeliveryKey, DeliveryTask};

/// A lane may queue this many seconds of its own pace when that is more
/// than the server's `endpoint_queue`. A burst to a fast receiver then
/// waits here, leased to this node as it is ingested, rather than in the
/// store for a claim: on PostgreSQL a claim writes a new version of every
/// row it takes (measured: a third of the database's CPU per message at
/// saturation). Memory stays bounded by seconds of sending, not by the
/// burst: a slow lane keeps the fixed cap, and a lane's pace is what it
/// sent in a whole second, so the cap shrinks at the first start after
/// the receiver slows down or hangs, and what is queued beyond it goes
/// back to the store (see `started`).
pub const QUEUE_SECONDS: usize = 5;

/// A delivery to attempt, with its trigger: `Scheduled` (offered on the
/// fast path or claimed by the scheduler) or `Manual` (a resend, outside
/// the schedule). A lane holds it from admission until the attempt is
/// made: waiting in the lane's queue, then in flight.
#[derive(Clone, Debug)]
pub struct QueuedAttempt {
    pub task: DeliveryTask,
    pub trigger: Trigger,
}

impl QueuedAttempt {
    fn key(&self) -> Option<DeliveryKey> {
        // Manual attempts are extra; only scheduled ones are deduplicated.
        (self.trigger == Trigger::Scheduled).then(|| self.task.key())
    }
}

#[derive(Debug)]
pub enum Admission {
    /// Start it now; the caller owns one slot of the lane until `finish`.
    Run(QueuedAttempt),
    Queued,
    /// The lane is full (or the dispatcher is shutting down).
    Busy(QueuedAttempt),
    /// This delivery is already queued or in flight here.
    AlreadyHeld,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<QueuedAttempt>,
    in_flight: usize,
    /// Attempts in flight at most (the endpoint's `maxInFlight`, as of the
    /// latest admission).
    concurrency: usize,
    /// The latest admission was paced: the lane is full once all its slots
    /// are busy, since paced work never queues.
    paced: bool,
    /// Refuses everything but manual attempts until lifted (see `hold`).
    held: bool,
    /// Starts in second `.0` and in the second before, for the rate this
    /// node sends at and the queue's cap (`cap`), both as of the latest
    /// start.
    starts: (i64, u32, u32),
    /// The queue reached its cap and has not yet drained to half of it.
    /// Until then the lane counts as full: the scheduler's next claim for it
    /// then has room for half a queue, instead of one delivery and a claim
    /// batch to hand back.
    filled: bool,
}

impl Lane {
    /// How many attempts may wait in this lane's queue: the server's cap,
    /// or the starts of the second before the latest start ×
    /// [`QUEUE_SECONDS`] if more.
    fn cap(&self, queue_cap: usize) -> usize {
        queue_cap.max(self.starts.2 as usize * QUEUE_SECONDS)
    }

    fn is_full(&self, queue_cap: usize) -> bool {
        self.held
            || self.filled
            || self.queue.len() >= self.cap(queue_cap)
            || (self.paced && self.in_flight >= self.concurrency)
    }
}

pub struct Lanes {
    lanes: HashMap<String, Lane>,
    /// Endpoints whose lane is full (see `Lane::is_full`), kept up to date
    /// by every change to a lane, so ingest can ask per message.
    full: HashSet<String>,
    held: HashSet<DeliveryKey>,
    concurrency: usize,
    queue_cap: usize,
    closed: bool,
}

impl Lanes {
    pub fn new(concurrency: usize, queue_cap: usize) -> Self {
        Lanes {
            lanes: HashMap::new(),
            full: HashSet::new(),
            held: HashSet::new(),
            concurrency: concurrency.max(1),
            queue_cap,
            closed: false,
        }
    }

    /// `force` queues past the cap (manual retries are never refused).
    pub fn admit(&mut self, attempt: QueuedAttempt, force: bool) -> Admission {
        let endpoint_id = attempt.task.endpoint.id.clone();
        let admission = self.admit_to_lane(attempt, force);
        self.note_fullness(&endpoint_id);
        admission
    }

    /// Keep `full` in step with the lane of `endpoint_id`.
    fn note_fullness(&mut self, endpoint_id: &str) {
        match self.lanes.get(endpoint_id) {
            Some(lane) if lane.is_full(self.queue_cap) => {
                if !self.full.contains(endpoint_id) {
                    self.full.insert(endpoint_id.to_owned());
                }
            }
            _ => {
                self.full.remove(endpoint_id);
            }
        }
    }

    fn admit_to_lane(&mut self, attempt: QueuedAttempt, force: bool) -> Admission {
        if self.closed {
            return Admission::Busy(attempt);
        }
        let key = attempt.key();
        if key.as_ref().is_some_and(|k| self.held.contains(k)) {
            return Admission::AlreadyHeld;
        }
        let lane = self.lanes.entry(attempt.task.endpoint.id.clone()).or_default();
        lane.concurrency =
            attempt.task.endpoint.max_in_flight.map_or(self.concurrency, |n| usize::from(n).max(1));
        if attempt.trigger == Trigger::Scheduled {
            lane.paced = attempt.task.paced;
        }
        if lane.held && !force {
            return Admission::Busy(attempt);
        }
        let admission = if lane.in_flight < lane.concurrency && !lane.held {
            lane.in_flight += 1;
            Admission::Run(attempt)
        } else if force || (!attempt.task.paced && lane.queue.len() < lane.cap(self.queue_cap)) {
            lane.queue.push_back(attempt);
            lane.filled |= lane.queue.len() >= lane.cap(self.queue_cap);
            Admission::Queued
        } else {
            return Admission::Busy(attempt);
        };
        if let Some(k) = key {
            self.held.insert(k);
        }
        admission
    }

    /// A running attempt is done. Returns the next attempt to run in its
    /// slot, and whether its lane just stopped being full.
    pub fn finish(&mut self, done: &QueuedAttempt) -> (Option<QueuedAttempt>, bool) {
        if let Some(k) = done.key() {
            self.held.remove(&k);
        }
        let endpoint_id = &done.task.endpoint.id;
        let Some(lane) = self.lanes.get_mut(endpoint_id) else {
            return (None, false);
        };
        let was_full = lane.is_full(self.queue_cap);
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let next = if self.closed || lane.held { None } else { lane.queue.pop_front() };
        lane.filled &= lane.queue.len() > lane.cap(self.queue_cap) / 2;
        if next.is_some() {
            lane.in_flight += 1;
        }
        let freed = was_full && !lane.is_full(self.queue_cap);
        if lane.in_flight == 0 && lane.queue.is_empty() && !lane.held {
            self.lanes.remove(endpoint_id);
        }
        self.note_fullness(endpoint_id);
        (next, freed)
    }

    /// Endpoints whose lane is full: the scheduler leaves their work in
    /// the store for now, and ingest does not lease theirs to this node.
    pub fn full_endpoints(&self) -> Vec<String> {
        self.full.iter().cloned().collect()
    }

    /// Whether every one of these endpoints' lanes is full (false for none).
    pub fn all_full<'a>(&self, mut endpoint_ids: impl Iterator<Item = &'a str>) -> bool {
        let mut any = false;
        endpoint_ids.all(|id| {
            any = true;
            self.full.contains(id)
        }) && any
    }

    /// Start nothing more for this endpoint (its receiver asked for a
    /// pause, not yet recorded); returns what was queued, to hand back.
    pub fn hold(&mut self, endpoint_id: &str) -> Vec<QueuedAttempt> {
        let dropped = self.drop_queued(endpoint_id);
        self.lanes.entry(endpoint_id.to_owned()).or_default().held = true;
        self.note_fullness(endpoint_id);
        dropped
    }

    /// Lift a hold (the store knows of the pause now and parks the work).
    pub fn release_hold(&mut self, endpoint_id: &str) {
        if let Some(lane) = self.lanes.get_mut(endpoint_id) {
            lane.held = false;
            if lane.in_flight == 0 && lane.queue.is_empty() {
                self.lanes.remove(endpoint_id);
            }
        }
        self.note_fullness(endpoint_id);
    }

    /// An attempt to the endpoint started in second `now_secs`. The first
    /// start of a second sets the lane's cap from the second before; when
    /// the cap shrank below what is queued (the receiver slowed down or
    /// hung), the newest attempts beyond it are returned, for the caller
    /// to hand back to the store: the lane then holds no more than a slow
    /// lane may, however fast it was before.
    #[must_use]
    pub fn started(&mut self, endpoint_id: &str, now_secs: i64) -> Vec<QueuedAttempt> {
        let Some(lane) = self.lanes.get_mut(endpoint_id) else { return Vec::new() };
        let (sec, this, prev) = lane.starts;
        let last_second = match now_secs - sec {
            0 => {
                lane.starts = (sec, this + 1, prev);
                return Vec::new();
            }
            1 => this,
            _ => 0,
        };
        lane.starts = (now_secs, 1, last_second);
        let cap = lane.cap(self.queue_cap);
        let mut shed = Vec::new();
        if lane.queue.len() > cap {
            // Manual attempts stay: they were never refused, and the store
            // has nothing to hand them back to.
            for attempt in lane.queue.split_off(cap) {
                match attempt.key() {
                    Some(k) => {
                        self.held.remove(&k);
                        shed.push(attempt);
                    }
                    None => lane.queue.push_back(attempt),
                }
            }
        }
        self.note_fullness(endpoint_id);
        shed
    }

    /// How fast this node has been starting attempts to the endpoint, per
    /// second: the busier of the current and the previous second.
    pub fn sending_rate(&self, endpoint_id: &str, now_secs: i64) -> f64 {
        let Some(lane) = self.lanes.get(endpoint_id) else { return 0.0 };
        let (sec, this, prev) = lane.starts;
        match now_secs - sec {
            0 => f64::from(this.max(prev)),
            1 => f64::from(this),
            _ => 0.0,
        }
    }

    /// Attempts in flight to one endpoint.
    pub fn in_flight_to(&self, endpoint_id: &str) -> usize {
        self.lanes.get(endpoint_id).map_or(0, |l| l.in_flight)
    }

    /// Attempts queued for one endpoint, waiting for a slot.
    pub fn queued_to(&self, endpoint_id: &str) -> usize {
        self.lanes.get(endpoint_id).map_or(0, |l| l.queue.len())
    }

    /// Drop what is queued for an endpoint (it was disabled or deleted).
    pub fn drop_queued(&mut self, endpoint_id: &str) -> Vec<QueuedAttempt> {
        let Some(lane) = self.lanes.get_mut(endpoint_id) else {
            return Vec::new();
        };
        let dropped: Vec<QueuedAttempt> = lane.queue.drain(..).collect();
        lane.filled = false;
        if lane.in_flight == 0 && !lane.held {
            self.lanes.remove(endpoint_id);
        }
        self.note_fullness(endpoint_id);
        for attempt in &dropped {
            if let Some(k) = attempt.key() {
                self.held.remove(&k);
            }
        }
        dropped
    }

    /// Stop admitting; hand back everything queued.
    pub fn close(&mut self) -> Vec<QueuedAttempt> {
        self.closed = true;
        let ids: Vec<String> = self.lanes.keys().cloned().collect();
        ids.iter().flat_map(|id| self.drop_queued(id)).collect()
    }

    /// Scheduled deliveries queued or in flight here: the leases this node
    /// must keep.
    pub fn held(&self) -> Vec<DeliveryKey> {
        self.held.iter().cloned().collect()
    }

    pub fn in_flight(&self) -> usize {
        self.lanes.values().map(|l| l.in_flight).sum()
    }

    pub fn queued(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::fixtures;

    fn attempt(ep: &str, msg: &str, trigger: Trigger) -> QueuedAttempt {
        let task = DeliveryTask {
            message: Arc::new(fixtures::message(msg)),
            endpoint: Arc::new(fixtures::endpoint(ep)),
            paced: false,
        };
        QueuedAttempt { task, trigger }
    }

    fn paced(ep: &str, msg: &str, max_in_flight: Option<u16>) -> QueuedAttempt {
        let mut a = attempt(ep, msg, Trigger::Scheduled);
        a.task.paced = true;
        Arc::make_mut(&mut a.task.endpoint).max_in_flight = max_in_flight;
        a
    }

    #[test]
    fn max_in_flight_is_per_endpoint_and_paced_work_never_queues() {
        let mut lanes = Lanes::new(64, 10);
        let a = run(lanes.admit(paced("p", "m1", Some(2)), false));
        run(lanes.admit(paced("p", "m2", Some(2)), false));
        assert!(matches!(lanes.admit(paced("p", "m3", Some(2)), false), Admission::Busy(_)));
        assert_eq!(lanes.full_endpoints(), vec!["p".to_string()], "skipped by the scheduler while full");
        // Manual attempts still queue.
        let mut manual = attempt("p", "m9", Trigger::Manual);
        Arc::make_mut(&mut manual.task.endpoint).max_in_flight = Some(2);
        assert!(matches!(lanes.admit(manual, true), Admission::Queued));
        let (next, _) = lanes.finish(&a);
        assert_eq!(next.unwrap().task.message.id, "m9");
    }

    #[test]
    fn a_held_lane_starts_nothing_until_released() {
        let mut lanes = Lanes::new(1, 10);
        let a = run(lanes.admit(attempt("e", "m1", Trigger::Scheduled), false));
        assert!(matches!(lanes.admit(attempt("e", "m2", Trigger::Scheduled), false), Admission::Queued));
        let dropped = lanes.hold("e");
        assert_eq!(dropped.len(), 1, "queued work goes back");
        assert!(matches!(lanes.admit(attempt("e", "m3", Trigger::Scheduled), false), Admission::Busy(_)));
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);
        assert!(lanes.finish(&a).0.is_none());
        lanes.release_hold("e");
        run(lanes.admit(attempt("e", "m3", Trigger::Scheduled), false));
    }

    /// The kept set of full lanes agrees with the lanes themselves after
    /// every kind of change.
    #[test]
    fn the_full_set_follows_every_change() {
        let mut lanes = Lanes::new(1, 2);
        let check = |lanes: &Lanes| {
            let mut kept = lanes.full_endpoints();
            kept.sort();
            let mut actual: Vec<String> = lanes
                .lanes
                .iter()
                .filter(|(_, l)| l.is_full(lanes.queue_cap))
                .map(|(id, _)| id.clone())
                .collect();
            actual.sort();
            assert_eq!(kept, actual);
            kept
        };
        let first = run(lanes.admit(attempt("e", "m1", Trigger::Scheduled), false));
        lanes.admit(attempt("e", "m2", Trigger::Scheduled), false);
        assert!(check(&lanes).is_empty());
        lanes.admit(attempt("e", "m3", Trigger::Scheduled), false);
        assert_eq!(check(&lanes), vec!["e".to_string()], "queue at its cap");
        let (second, freed) = lanes.finish(&first);
        assert!(freed);
        assert!(check(&lanes).is_empty());
        lanes.hold("f");
        assert_eq!(check(&lanes), vec!["f".to_string()], "a held lane is full");
        lanes.release_hold("f");
        lanes.admit(attempt("e", "m4", Trigger::Scheduled), false);
        assert_eq!(check(&lanes), vec!["e".to_string()]);
        lanes.drop_queued("e");
        assert!(check(&lanes).is_empty());
        lanes.finish(&second.unwrap());
        assert!(check(&lanes).is_empty());
        assert!(lanes.lanes.is_empty(), "idle lanes are forgotten");
    }

    /// A lane whose queue reached its cap stays full until half of it has
    /// drained, so the claim that follows has room for half a queue.
    #[test]
    fn a_filled_queue_counts_as_full_until_half_drained() {
        let mut lanes = Lanes::new(1, 4);
        let running = run(lanes.admit(attempt("e", "m0", Trigger::Scheduled), false));
        for i in 1..=4 {
            assert!(matches!(
                lanes.admit(attempt("e", &format!("m{i}"), Trigger::Scheduled), false),
                Admission::Queued
            ));
        }
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);
        let (next, freed) = lanes.finish(&running);
        assert!(!freed, "3 queued of 4: still full");
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);
        let (_, freed) = lanes.finish(&next.unwrap());
        assert!(freed, "2 queued of 4: room for half a queue");
        assert!(lanes.full_endpoints().is_empty());
    }

    #[test]
    fn the_sending_rate_counts_starts_per_second() {
        let mut lanes = Lanes::new(100, 10);
        for i in 0..30 {
            run(lanes.admit(attempt("e", &format!("m{i}"), Trigger::Scheduled), false));
            assert!(lanes.started("e", if i < 20 { 7 } else { 8 }).is_empty());
        }
        assert_eq!(lanes.sending_rate("e", 8), 20.0);
        assert_eq!(lanes.sending_rate("e", 9), 10.0);
        assert_eq!(lanes.sending_rate("e", 11), 0.0);
        assert_eq!(lanes.sending_rate("other", 8), 0.0);
    }

    #[test]
    fn a_lane_queues_seconds_of_its_own_pace_beyond_the_server_cap() {
        let mut lanes = Lanes::new(1, 4);
        let queue = |lanes: &mut Lanes, from: usize, n: usize| {
            (from..from + n)
                .filter(|i| {
                    !matches!(
                        lanes.admit(attempt("e", &format!("m{i}"), Trigger::Scheduled), false),
                        Admission::Busy(_)
                    )
                })
                .count()
        };
        let first = run(lanes.admit(attempt("e", "m0", Trigger::Scheduled), false));
        assert_eq!(queue(&mut lanes, 1, 10), 4, "no pace yet: the server's cap");
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);

        // 3 starts in second 7: from second 8 on, 3 × QUEUE_SECONDS may wait.
        for _ in 0..3 {
            assert!(lanes.started("e", 7).is_empty());
        }
        assert!(lanes.started("e", 8).is_empty());
        let cap = 3 * QUEUE_SECONDS;
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()], "full until an attempt finishes");
        let (next, freed) = lanes.finish(&first);
        assert!(next.is_some());
        assert!(freed, "3 queued of {cap}: the scheduler is woken");
        assert!(lanes.full_endpoints().is_empty());
        assert_eq!(queue(&mut lanes, 100, 100), cap - 3);
        assert_eq!(lanes.queued_to("e"), cap);
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);

        // A manual resend queues past any cap.
        assert!(matches!(lanes.admit(attempt("e", "resend", Trigger::Manual), true), Admission::Queued));

        // The receiver hung: nothing started in second 9, so from second
        // 10 the server's cap holds again; the newest scheduled attempts
        // beyond it go back (to the store), the resend stays, and the lane
        // is full.
        let shed = lanes.started("e", 10);
        let shed: Vec<&str> = shed.iter().map(|a| a.task.message.id.as_str()).collect();
        let newest: Vec<String> = (100 + 4 - 3..100 + cap - 3).map(|i| format!("m{i}")).collect();
        assert_eq!(shed, newest.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(lanes.queued_to("e"), 4 + 1);
        assert_eq!(lanes.held().len(), 1 + 4, "one in flight, four scheduled queued");
        assert_eq!(queue(&mut lanes, 300, 1), 0);
        assert_eq!(lanes.full_endpoints(), vec!["e".to_string()]);
    }

    fn run(a: Admission) -> QueuedAttempt {
        match a {
            Admission::Run(j) => j,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn concurrency_per_endpoint_then_queue_then_busy() {
        let mut lanes = Lanes::new(2, 1);
        let a = run(lanes.admit(attempt("slow", "m1", Trigger::Scheduled), false));
        let _b = run(lanes.admit(attempt("slow", "m2", Trigger::Scheduled), false));
        assert!(matches!(lanes.admit(attempt("slow", "m3", Trigger::Scheduled), false), Admission::Queued));
        assert!(matches!(lanes.admit(attempt("slow", "m4", Trigger::Scheduled), false), Admission::Busy(_)));
        assert_eq!(lanes.full_endpoints(), vec!["slow".to_string()]);

        // Another endpoint is unaffected by the slow one.
        run(lanes.admit(attempt("fast", "m1", Trigger::Scheduled), false));

        // Manual retries are queued even past the cap.
        assert!(matches!(lanes.admit(attempt("slow", "m9", Trigger::Manual), true), Admission::Queued));

        let (next, freed) = lanes.finish(&a);
        assert_eq!(next.unwrap().task.message.id, "m3");
        assert!(!freed, "still has the manual retry queued");
        assert_eq!(lanes.in_flight(), 3);
    }

    #[test]
    fn duplicates_are_refused_and_released_on_finish() {
        let mut lanes = Lanes::new(4, 10);
        let a = run(lanes.admit(attempt("e", "m", Trigger::Scheduled), false));
        assert!(matches!(lanes.admit(attempt("e", "m", Trigger::Scheduled), false), Admission::AlreadyHeld));
        // A manual resend of the same delivery is allowed alongside.
        run(lanes.admit(attempt("e", "m", Trigger::Manual), true));
        lanes.finish(&a);
        run(lanes.admit(attempt("e", "m", Trigger::Scheduled), false));
    }

    #[test]
    fn held_lists_the_scheduled_deliveries_in_flight_or_queued() {
        let mut lanes = Lanes::new(1, 10);
        let a = run(lanes.admit(attempt("e", "m1", Trigger::Scheduled), false));
        assert!(matches!(lanes.admit(attempt("e", "m2", Trigger::Scheduled), false), Admission::Queued));
        assert!(matches!(lanes.admit(attempt("e", "m3", Trigger::Manual), true), Admission::Queued));
        let mut held: Vec<String> = lanes.held().into_iter().map(|k| k.msg_id).collect();
        held.sort();
        assert_eq!(held, ["m1", "m2"], "manual attempts hold no lease");
        let (next, _) = lanes.finish(&a);
        assert_eq!(lanes.held().len(), 1);
        lanes.finish(&next.unwrap());
        lanes.drop_queued("e");
        assert!(lanes.held().is_empty());
    }

    #[test]
    fn finishing_a_full_lane_reports_freed_and_idle_lanes_vanish() {
        let mut lanes = Lanes::new(1, 1);
        let a = run(lanes.admit(attempt("e", "m1", Trigger::Scheduled), false));
        lanes.admit(attempt("e", "m2", Trigger::Scheduled), false);
        let (next, freed) = lanes.finish(&a);
        assert!(freed);
        let b = next.unwrap();
        let (next, _) = lanes.finish(&b);
        assert!(next.is_none());
        assert!(lanes.lanes.is_empty());
        assert!(lanes.held.is_empty());
    }

    #[test]
    fn drop_and_close() {
        let mut lanes = Lanes::new(1, 10);
        let a = run(lanes.admit(attempt("e", "m1", Trigger::Scheduled), false));
        lanes.admit(attempt("e", "m2", Trigger::Scheduled), false);
        lanes.admit(attempt("e", "m3", Trigger::Scheduled), false);
        assert_eq!(lanes.drop_queued("e").len(), 2);
        assert_eq!(lanes.queued(), 0);
        lanes.admit(attempt("e", "m4", Trigger::Scheduled), false);
        assert_eq!(lanes.close().len(), 1);
        assert!(matches!(lanes.admit(attempt("x", "m5", Trigger::Scheduled), false), Admission::Busy(_)));
        assert!(lanes.finish(&a).0.is_none());
    }
}
