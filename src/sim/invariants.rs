//! What the simulation checks, against a model it keeps of what should be
//! true: every delivery's state as the store last reported it, when it may
//! next be attempted, each endpoint's standing (disabled, deleted, paused,
//! its rate limit), each ordering key's queue in ingest order, and what the
//! receivers have seen. Every attempt start and answer is checked as it
//! happens, in O(1) (a throttle's window is a short queue); the driver also
//! reconciles the model with the store now and then and at the end.
//!
//! The invariants (numbers as in RELIABILITY.md):
//! 1. nothing acknowledged is lost: every delivery of an acknowledged
//!    message ends settled, and a success is a success the receiver gave;
//! 2. no attempt before its due time, none of a settled delivery, none
//!    while its endpoint is paused by its receiver;
//! 3. nothing sent to an endpoint after it was disabled or deleted (an
//!    attempt in flight at that moment may finish);
//! 4. per ordering key: one attempt in flight at a time, none before every
//!    earlier message of the key has settled (and, on an endpoint that
//!    blocks, none past a failed one until it is skipped), and receivers
//!    accept them in ingest order;
//! 5. attempts to a throttled endpoint start at most `rate + burst` times
//!    in any second;
//!
//! and no delivery is sent again after a success the store recorded.
//! One its receiver took but the store never heard of (a crash cut the
//! attempt off, its record was lost) may go again: counted as a
//! duplicate, at least once.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::domain::delivery::DeliveryState;
use crate::domain::flow;
use crate::domain::model::DeliveryStatus;
use crate::domain::time::Timestamp;

/// A broken invariant: which one, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

pub const LOST: &str = "1 nothing acknowledged is lost";
pub const EARLY: &str = "2 no attempt before its due time";
pub const DISABLED: &str = "3 nothing sent to a disabled or deleted endpoint";
pub const ORDER: &str = "4 order per key kept";
pub const THROTTLE: &str = "5 throttles respected";
pub const TWICE: &str = "no delivery sent again after its recorded success";

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// A delivery's state as the model knows it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Success,
    Fail,
    /// Its endpoint was deleted while it was pending: the row is gone.
    Deleted,
}

impl Status {
    pub fn settled(self) -> bool {
        self != Status::Pending
    }

    /// The store's status as the model names it (`Sending` is pending
    /// under a lease).
    pub fn of(status: DeliveryStatus) -> Status {
        match status {
            DeliveryStatus::Success => Status::Success,
            DeliveryStatus::Fail => Status::Fail,
            DeliveryStatus::Pending | DeliveryStatus::Sending => Status::Pending,
        }
    }
}

/// The key a FIFO endpoint orders everything by, among message key ids.
pub const FIFO: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Delivery {
    pub msg: u32,
    pub ep: u16,
    pub status: Status,
    /// No scheduled attempt may start before this.
    pub not_before: Timestamp,
    /// The ordering key (a message key id, or [`FIFO`]) and the place in it.
    pub key: Option<(u32, u32)>,
    /// A receiver answered 2xx to it at least once.
    pub accepted: bool,
    pub attempts_in_flight: u32,
}

#[derive(Clone, Debug, Default)]
struct Endpoint {
    disabled: bool,
    deleted: bool,
    /// Its receiver asked for a pause until then, and the store knows.
    paused_until: Option<Timestamp>,
    /// `throttleRate`, and attempt starts within the last second.
    limit: Option<u16>,
    starts: VecDeque<Timestamp>,
    blocks: bool,
    deliveries: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
struct Key {
    /// Deliveries in ingest order.
    order: Vec<u32>,
    /// Every delivery before this place has settled.
    settled_to: usize,
    in_flight: u32,
    /// The place of the latest delivery a receiver accepted.
    accepted_to: Option<u32>,
    /// A failed head holds the key (the endpoint blocks) until skipped.
    blocked: bool,
}

/// One attempt in flight, as the model counts it.
#[derive(Clone, Debug)]
struct Flight {
    delivery: u32,
    /// Counted in its key's in-flight number (not once its endpoint was
    /// disabled: it may finish, and no longer holds the key).
    counts_for_key: bool,
}

#[derive(Default)]
pub struct Model {
    deliveries: Vec<Delivery>,
    index: HashMap<(u32, u16), u32>,
    endpoints: Vec<Endpoint>,
    keys: HashMap<(u16, u32), Key>,
    flights: BTreeMap<u64, Flight>,
    /// Deliveries sent again after a success the store may not know of.
    pub duplicates: u64,
}

impl Model {
    pub fn add_endpoint(&mut self, limit: Option<u16>, blocks: bool) -> u16 {
        self.endpoints.push(Endpoint { limit, blocks, ..Default::default() });
        (self.endpoints.len() - 1) as u16
    }

    /// A message the store holds, with a delivery to each of `endpoints`,
    /// first attempt not before `first_at`. `key`: its ordering key's id.
    pub fn add_message(
        &mut self,
        msg: u32,
        key: Option<u32>,
        fifo: &[bool],
        endpoints: &[u16],
        first_at: Timestamp,
    ) {
        for &ep in endpoints {
            let id = self.deliveries.len() as u32;
            let key = if fifo[usize::from(ep)] { Some(FIFO) } else { key };
            let key = key.map(|k| {
                let q = self.keys.entry((ep, k)).or_default();
                q.order.push(id);
                (k, (q.order.len() - 1) as u32)
            });
            self.deliveries.push(Delivery {
                msg,
                ep,
                status: Status::Pending,
                not_before: first_at,
                key,
                accepted: false,
                attempts_in_flight: 0,
            });
            self.index.insert((msg, ep), id);
            self.endpoints[usize::from(ep)].deliveries.push(id);
        }
    }

    pub fn delivery_id(&self, msg: u32, ep: u16) -> Option<u32> {
        self.index.get(&(msg, ep)).copied()
    }

    pub fn delivery(&self, id: u32) -> &Delivery {
        &self.deliveries[id as usize]
    }

    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    pub fn endpoint_deliveries(&self, ep: u16) -> &[u32] {
        &self.endpoints[usize::from(ep)].deliveries
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Attempt `flight` of delivery `id` starts at `now`; `accepted`: the
    /// receiver will answer it with a success.
    pub fn start(&mut self, flight: u64, id: u32, now: Timestamp, accepted: bool) -> Result<(), Violation> {
        let d = self.deliveries[id as usize].clone();
        let ep = &mut self.endpoints[usize::from(d.ep)];
        let what = || format!("message #{} to endpoint #{}", d.msg, d.ep);
        if ep.deleted || ep.disabled {
            let state = if ep.deleted { "deleted" } else { "disabled" };
            return Err(violation(DISABLED, format!("{} started while its endpoint is {state}", what())));
        }
        match d.status {
            Status::Success => {
                return Err(violation(TWICE, format!("{} sent again after its recorded success", what())));
            }
            Status::Fail | Status::Deleted => {
                return Err(violation(EARLY, format!("{} sent after it settled ({:?})", what(), d.status)));
            }
            Status::Pending => {}
        }
        if d.accepted {
            // Its receiver has it, but the store never heard (a crash cut
            // the attempt off, or its record was lost): at least once.
            self.duplicates += 1;
        }
        if now < d.not_before {
            let early = d.not_before.as_millis() - now.as_millis();
            return Err(violation(EARLY, format!("{} started {early} ms before it was due", what())));
        }
        if let Some(until) = ep.paused_until.filter(|u| *u > now) {
            let left = until.as_millis() - now.as_millis();
            return Err(violation(
                EARLY,
                format!("{} started {left} ms before its endpoint's pause ends", what()),
            ));
        }
        if let Some(limit) = ep.limit {
            while ep.starts.front().is_some_and(|t| t.as_millis() <= now.as_millis() - 1000) {
                ep.starts.pop_front();
            }
            ep.starts.push_back(now);
            let most = u32::from(limit) + flow::burst(f64::from(limit));
            if ep.starts.len() as u32 > most {
                let n = ep.starts.len();
                return Err(violation(
                    THROTTLE,
                    format!(
                        "endpoint #{} started {n} attempts within a second (throttleRate {limit}: {most} at most)",
                        d.ep
                    ),
                ));
            }
        }
        if let Some((k, place)) = d.key {
            let order_violation = self.key_check(d.ep, k, place, accepted);
            if let Err(detail) = order_violation {
                return Err(violation(ORDER, format!("{}: {detail}", what())));
            }
        }
        self.deliveries[id as usize].attempts_in_flight += 1;
        self.flights.insert(flight, Flight { delivery: id, counts_for_key: d.key.is_some() });
        Ok(())
    }

    /// An attempt the node could not have known to hold back (its
    /// endpoint was disabled by a record whose reply was lost): counted in
    /// flight, not checked.
    pub fn start_untracked(&mut self, flight: u64, id: u32) {
        self.deliveries[id as usize].attempts_in_flight += 1;
        self.flights.insert(flight, Flight { delivery: id, counts_for_key: false });
    }

    fn key_check(&mut self, ep: u16, k: u32, place: u32, accepted: bool) -> Result<(), String> {
        let deliveries = &self.deliveries;
        let q = self.keys.get_mut(&(ep, k)).expect("every keyed delivery has its key");
        while q.settled_to < q.order.len() && deliveries[q.order[q.settled_to] as usize].status.settled() {
            q.settled_to += 1;
        }
        if q.in_flight > 0 {
            return Err("a second attempt of its ordering key in flight".into());
        }
        if q.settled_to < place as usize {
            let earlier = deliveries[q.order[q.settled_to] as usize].msg;
            return Err(format!("started before the earlier message #{earlier} of its key settled"));
        }
        if q.blocked {
            return Err("started while its key is blocked by a failed message".into());
        }
        if accepted {
            if q.accepted_to.is_some_and(|a| a > place) {
                return Err("accepted after a later message of its key".into());
            }
            q.accepted_to = Some(place);
        }
        q.in_flight += 1;
        Ok(())
    }

    /// The attempt's answer arrived (or a crash cut it off); `accepted`:
    /// the receiver took it.
    pub fn answered(&mut self, flight: u64, accepted: bool) {
        let Some(f) = self.flights.remove(&flight) else { return };
        let d = &mut self.deliveries[f.delivery as usize];
        d.attempts_in_flight -= 1;
        d.accepted |= accepted;
        if f.counts_for_key
            && let Some((k, _)) = d.key
            && let Some(q) = self.keys.get_mut(&(d.ep, k))
        {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }

    /// The store recorded an attempt of delivery `id` and says its state is
    /// now `state`; `blocks_key`: a failure that holds its key.
    pub fn recorded(&mut self, id: u32, state: &DeliveryState) -> Result<(), Violation> {
        let d = &self.deliveries[id as usize];
        let ep = &self.endpoints[usize::from(d.ep)];
        if ep.deleted {
            return Ok(()); // no row any more: nothing to follow
        }
        let status = Status::of(state.status);
        if status == Status::Success && !d.accepted {
            return Err(violation(
                LOST,
                format!(
                    "message #{} to endpoint #{} recorded as delivered, but its receiver never accepted it",
                    d.msg, d.ep
                ),
            ));
        }
        let was_pending = d.status == Status::Pending;
        let (blocks, disabled) = (ep.blocks, ep.disabled);
        let d = &mut self.deliveries[id as usize];
        d.status = status;
        if let Some(next) = state.next_attempt {
            d.not_before = next;
        }
        if was_pending
            && status == Status::Fail
            && blocks
            && !disabled
            && let Some((k, _)) = d.key
            && let Some(q) = self.keys.get_mut(&(d.ep, k))
        {
            q.blocked = true;
        }
        Ok(())
    }

    /// The store's view of a delivery, read after a call whose answer was
    /// lost: the model follows it.
    pub fn sync(&mut self, id: u32, status: Option<DeliveryStatus>, next_attempt: Option<Timestamp>) {
        let ep = usize::from(self.deliveries[id as usize].ep);
        if self.endpoints[ep].deleted {
            return;
        }
        let d = &mut self.deliveries[id as usize];
        if let Some(s) = status {
            d.status = Status::of(s);
        }
        if let Some(next) = next_attempt {
            d.not_before = next;
        }
    }

    pub fn paused(&mut self, ep: u16, until: Timestamp) {
        let e = &mut self.endpoints[usize::from(ep)];
        e.paused_until = Some(e.paused_until.map_or(until, |u| u.max(until)));
    }

    /// The endpoint was disabled: the store settles its pending deliveries
    /// as failed and forgets its keys; attempts in flight may finish.
    pub fn disabled(&mut self, ep: u16) {
        self.stop(ep, Status::Fail);
        self.endpoints[usize::from(ep)].disabled = true;
    }

    pub fn deleted(&mut self, ep: u16) {
        self.stop(ep, Status::Deleted);
        self.endpoints[usize::from(ep)].deleted = true;
    }

    fn stop(&mut self, ep: u16, settle_as: Status) {
        let e = &self.endpoints[usize::from(ep)];
        for &id in &e.deliveries {
            let d = &mut self.deliveries[id as usize];
            if d.status == Status::Pending {
                d.status = settle_as;
            }
        }
        for f in self.flights.values_mut() {
            if self.deliveries[f.delivery as usize].ep == ep && f.counts_for_key {
                f.counts_for_key = false;
            }
        }
        for ((key_ep, _), q) in self.keys.iter_mut() {
            if *key_ep == ep {
                q.in_flight = 0;
                q.blocked = false;
            }
        }
    }

    pub fn enabled(&mut self, ep: u16) {
        self.endpoints[usize::from(ep)].disabled = false;
    }

    pub fn is_disabled(&self, ep: u16) -> bool {
        self.endpoints[usize::from(ep)].disabled
    }

    pub fn is_deleted(&self, ep: u16) -> bool {
        self.endpoints[usize::from(ep)].deleted
    }

    /// An operator skipped a blocked key: it moves on.
    pub fn skipped(&mut self, ep: u16, key: u32) {
        if let Some(q) = self.keys.get_mut(&(ep, key)) {
            q.blocked = false;
        }
    }

    /// Cheap checks after every step: the attempts the node has in flight
    /// are the ones the model counts.
    pub fn check_step(&self, node_in_flight: usize) -> Result<(), Violation> {
        if node_in_flight != self.flights.len() {
            return Err(violation(
                LOST,
                format!("the node has {node_in_flight} attempts in flight, the model {}", self.flights.len()),
            ));
        }
        Ok(())
    }

    /// Compare one delivery with what the store holds (`None`: no row).
    pub fn reconcile(&self, id: u32, stored: Option<DeliveryStatus>, at_end: bool) -> Result<(), Violation> {
        let d = &self.deliveries[id as usize];
        let what = format!("message #{} to endpoint #{}", d.msg, d.ep);
        if d.attempts_in_flight > 0 && !at_end {
            return Ok(()); // its answer may change it any moment
        }
        let stored = stored.map(Status::of);
        match (d.status, stored) {
            (Status::Deleted, _) => Ok(()),
            (_, None) if self.endpoints[usize::from(d.ep)].deleted => Ok(()),
            (_, None) => Err(violation(LOST, format!("{what}: the store has no delivery"))),
            (_, Some(Status::Pending)) if at_end => {
                Err(violation(LOST, format!("{what}: still pending once everything due was done")))
            }
            (_, Some(Status::Success)) if !d.accepted => {
                Err(violation(LOST, format!("{what}: stored as delivered, never accepted by its receiver")))
            }
            (m, Some(s)) if m != s => {
                Err(violation(LOST, format!("{what}: the store says {s:?}, the model {m:?}")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn pending(next: i64) -> DeliveryState {
        DeliveryState { status: DeliveryStatus::Pending, attempts: 1, next_attempt: Some(t(next)) }
    }

    fn done(status: DeliveryStatus) -> DeliveryState {
        DeliveryState { status, attempts: 1, next_attempt: None }
    }

    #[test]
    fn attempts_before_their_due_time_or_during_a_pause_are_caught() {
        let mut m = Model::default();
        let ep = m.add_endpoint(None, false);
        m.add_message(0, None, &[false], &[ep], t(1_000));
        let err = m.start(1, 0, t(999), false).unwrap_err();
        assert_eq!(err.invariant, EARLY);
        m.start(1, 0, t(1_000), false).unwrap();
        m.answered(1, false);
        m.recorded(0, &pending(5_000)).unwrap();
        assert_eq!(m.start(2, 0, t(4_000), false).unwrap_err().invariant, EARLY);
        m.paused(ep, t(6_000));
        assert!(m.start(2, 0, t(5_500), false).unwrap_err().detail.contains("pause"));
        m.start(2, 0, t(6_000), true).unwrap();
        m.answered(2, true);
        m.recorded(0, &done(DeliveryStatus::Success)).unwrap();
        assert_eq!(m.start(3, 0, t(7_000), true).unwrap_err().invariant, TWICE);
    }

    #[test]
    fn a_success_the_store_never_heard_of_may_go_again_and_is_counted() {
        let mut m = Model::default();
        let ep = m.add_endpoint(None, false);
        m.add_message(0, None, &[false], &[ep], t(0));
        m.start(1, 0, t(0), true).unwrap();
        m.answered(1, true); // cut off by a crash: never recorded
        m.start(2, 0, t(10), true).unwrap();
        assert_eq!(m.duplicates, 1);
        m.answered(2, true);
        m.recorded(0, &done(DeliveryStatus::Success)).unwrap();
        assert_eq!(m.start(3, 0, t(20), true).unwrap_err().invariant, TWICE);
    }

    #[test]
    fn disabled_and_deleted_endpoints_get_nothing_more() {
        let mut m = Model::default();
        let (a, b) = (m.add_endpoint(None, false), m.add_endpoint(None, false));
        m.add_message(0, None, &[false, false], &[a, b], t(0));
        m.disabled(a);
        assert_eq!(m.delivery(0).status, Status::Fail, "disabling settles what was pending");
        assert_eq!(m.start(1, 0, t(1), false).unwrap_err().invariant, DISABLED);
        m.deleted(b);
        assert_eq!(m.start(1, 1, t(1), false).unwrap_err().invariant, DISABLED);
        m.reconcile(1, None, true).unwrap();
    }

    #[test]
    fn order_per_key_one_in_flight_earlier_settled_first_and_blocks_until_skipped() {
        let mut m = Model::default();
        let ep = m.add_endpoint(None, true);
        for msg in 0..3 {
            m.add_message(msg, Some(7), &[false], &[ep], t(0));
        }
        let err = m.start(1, 1, t(0), false).unwrap_err();
        assert!(err.detail.contains("earlier message #0"), "{err:?}");
        m.start(1, 0, t(0), false).unwrap();
        assert!(m.start(2, 0, t(0), false).unwrap_err().detail.contains("second attempt"));
        m.answered(1, false);
        m.recorded(0, &done(DeliveryStatus::Fail)).unwrap();
        assert!(m.start(2, 1, t(1), false).unwrap_err().detail.contains("blocked"));
        m.skipped(ep, 7);
        m.start(2, 1, t(1), true).unwrap();
        m.answered(2, true);
        m.recorded(1, &done(DeliveryStatus::Success)).unwrap();
        m.start(3, 2, t(2), true).unwrap();
        m.answered(3, true);
    }

    #[test]
    fn a_receiver_accepting_out_of_order_is_caught() {
        let mut m = Model::default();
        let ep = m.add_endpoint(None, false);
        m.add_message(0, None, &[true], &[ep], t(0));
        m.add_message(1, None, &[true], &[ep], t(0));
        // The store let #0 go as failed (skip), #1 was accepted; #0 must not
        // be accepted after it.
        m.start(1, 0, t(0), false).unwrap();
        m.answered(1, false);
        m.recorded(0, &done(DeliveryStatus::Fail)).unwrap();
        m.start(2, 1, t(1), true).unwrap();
        m.answered(2, true);
        m.sync(0, Some(DeliveryStatus::Pending), None);
        assert!(m.start(3, 0, t(2), true).unwrap_err().detail.contains("accepted after a later message"));
    }

    #[test]
    fn throttles_count_starts_in_any_second() {
        let mut m = Model::default();
        let ep = m.add_endpoint(Some(10), false);
        for msg in 0..20 {
            m.add_message(msg, None, &[false], &[ep], t(0));
        }
        // 10/s with a burst of 1: 11 in one second pass, the 12th does not.
        for i in 0..11 {
            m.start(i, i as u32, t(i as i64 * 90), false).unwrap();
        }
        assert_eq!(m.start(11, 11, t(990), false).unwrap_err().invariant, THROTTLE);
        // A second later the window has moved on.
        let later = t(990).plus(Duration::from_secs(1));
        m.start(12, 12, later, false).unwrap();
    }

    #[test]
    fn reconciliation_finds_lost_and_invented_successes() {
        let mut m = Model::default();
        let ep = m.add_endpoint(None, false);
        m.add_message(0, None, &[false], &[ep], t(0));
        assert_eq!(m.reconcile(0, Some(DeliveryStatus::Pending), true).unwrap_err().invariant, LOST);
        assert!(
            m.reconcile(0, Some(DeliveryStatus::Success), false)
                .unwrap_err()
                .detail
                .contains("never accepted")
        );
        assert!(m.reconcile(0, None, false).unwrap_err().detail.contains("no delivery"));
        m.reconcile(0, Some(DeliveryStatus::Sending), false).unwrap();
        assert!(m.check_step(1).is_err());
    }
}
