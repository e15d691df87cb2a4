//! The delivery state machine: what an attempt's result does to a delivery.
//!
//! ```text
//!             scheduled failure, schedule left
//!               ┌──────────────┐
//!               ▼              │
//!   new ──▶ pending ──(attempt)┴──▶ success        (policy accepts status)
//!               │
//!               └──(scheduled failure, schedule exhausted
//!                   or endpoint disabled/deleted)──▶ fail
//! ```
//! Manual attempts (retry/resend) never consume the schedule: a manual
//! success finishes the delivery (and cancels pending retries); a manual
//! failure leaves pending retries alone, and otherwise marks it `fail`.
//!
//! Stores apply [`after_attempt`] inside the same transaction that records
//! the attempt, against the state as stored, so concurrent attempts of one
//! delivery (say a manual retry racing a scheduled one) cannot lose updates.

use std::time::Duration;

use super::flow;
use super::model::{DeliveryStatus, Trigger};
use super::retry::RetryPolicy;
use super::steering::Steering;
use super::time::Timestamp;

/// Whether an attempt delivered the message, by the endpoint's policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
}

impl Outcome {
    /// `status` is `None` when no HTTP response arrived (timeout, connection
    /// or TLS error, refused target).
    pub fn classify(policy: &RetryPolicy, status: Option<u16>) -> Outcome {
        match status {
            Some(code) if policy.success.accepts(code) => Outcome::Delivered,
            _ => Outcome::Failed,
        }
    }

    pub fn attempt_status(self) -> DeliveryStatus {
        match self {
            Outcome::Delivered => DeliveryStatus::Success,
            Outcome::Failed => DeliveryStatus::Fail,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub status: DeliveryStatus,
    /// Scheduled attempts made.
    pub attempts: u32,
    /// When the next scheduled attempt is due; `None` when none is.
    pub next_attempt: Option<Timestamp>,
}

impl DeliveryState {
    /// A delivery waiting for its first attempt at `first_at`.
    pub fn new(first_at: Timestamp) -> Self {
        DeliveryState { status: DeliveryStatus::Pending, attempts: 0, next_attempt: Some(first_at) }
    }

    /// A delivery that has never been scheduled (a manual resend to an
    /// endpoint that did not exist when the message was sent).
    pub fn unscheduled() -> Self {
        DeliveryState { status: DeliveryStatus::Fail, attempts: 0, next_attempt: None }
    }

    /// Retries still to come?
    pub fn is_pending(&self) -> bool {
        self.status == DeliveryStatus::Pending && self.next_attempt.is_some()
    }
}

/// Everything [`after_attempt`] needs to know about the attempt just made.
#[derive(Clone, Debug)]
pub struct AttemptResult<'a> {
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub policy: &'a RetryPolicy,
    /// False once the endpoint is disabled or deleted: no more retries.
    pub endpoint_active: bool,
    /// When the attempt finished; retry delays count from here.
    pub finished_at: Timestamp,
    /// What the receiver asked for (abort, Retry-After).
    pub steering: Steering,
    /// Random spread applied to the next delay, as a fraction (e.g. -0.2
    /// to 0.2). Passed in so this function stays deterministic.
    pub jitter: f64,
}

/// The wait before the next attempt: the scheduled `delay` spread by
/// `jitter`, or the receiver's `Retry-After` when it asks for longer (up to
/// [`flow::MAX_PAUSE`]: the whole endpoint is paused that long anyway, see
/// `domain::flow`), never sooner than the schedule.
pub fn retry_delay(delay: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    match retry_after {
        Some(asked) => asked.min(flow::MAX_PAUSE).max(delay),
        None => delay.mul_f64((1.0 + jitter.clamp(-0.5, 0.5)).max(0.0)),
    }
}

/// A delivery row as recording an attempt reads and writes it: its state
/// and its claim (`due_at`: when a dispatcher may next take it, the lease
/// expiry while `lease_owner` holds it).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRow {
    pub state: DeliveryState,
    pub due_at: Option<Timestamp>,
    pub lease_owner: Option<String>,
}

impl DeliveryRow {
    /// What a missing row is taken for.
    pub fn missing() -> DeliveryRow {
        DeliveryRow { state: DeliveryState::unscheduled(), due_at: None, lease_owner: None }
    }
}

/// What recording one attempt does to its delivery row.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub row: DeliveryRow,
    /// A scheduled failure used up the schedule just now.
    pub exhausted: bool,
}

/// [`after_attempt`] plus what every store writes with it: whether the
/// schedule just ran out, and the row's claim afterwards. A scheduled
/// attempt ends its lease (the row falls due at the next attempt, if any);
/// a manual one leaves any lease and schedule alone unless it settled the
/// delivery.
pub fn record(prev: &DeliveryRow, r: &AttemptResult<'_>) -> Recorded {
    let state = after_attempt(&prev.state, r);
    let exhausted = r.trigger == Trigger::Scheduled
        && r.outcome == Outcome::Failed
        && prev.state.is_pending()
        && state.next_attempt.is_none()
        && r.endpoint_active;
    let (due_at, lease_owner) = match (r.trigger, state.next_attempt) {
        (Trigger::Scheduled, next_at) => (next_at, None),
        (Trigger::Manual, None) => (None, None),
        (Trigger::Manual, Some(_)) => (prev.due_at, prev.lease_owner.clone()),
    };
    Recorded { row: DeliveryRow { state, due_at, lease_owner }, exhausted }
}

/// The delivery's state after an attempt.
pub fn after_attempt(prev: &DeliveryState, r: &AttemptResult<'_>) -> DeliveryState {
    match (r.trigger, r.outcome) {
        // A scheduled attempt raced something that already settled the
        // delivery (a manual success, the endpoint being disabled): a late
        // failure must not bring retries back.
        (Trigger::Scheduled, Outcome::Failed) if prev.next_attempt.is_none() => {
            DeliveryState { attempts: prev.attempts + 1, ..prev.clone() }
        }
        (Trigger::Scheduled, Outcome::Delivered) => {
            DeliveryState { status: DeliveryStatus::Success, attempts: prev.attempts + 1, next_attempt: None }
        }
        (Trigger::Scheduled, Outcome::Failed) => {
            let attempts = prev.attempts + 1;
            let retrying = r.endpoint_active && !r.steering.abort_message;
            let delay = r.policy.delay_after(attempts).filter(|_| retrying);
            match delay {
                Some(d) => DeliveryState {
                    status: DeliveryStatus::Pending,
                    attempts,
                    next_attempt: Some(r.finished_at.plus(retry_delay(d, r.steering.retry_after, r.jitter))),
                },
                None => DeliveryState { status: DeliveryStatus::Fail, attempts, next_attempt: None },
            }
        }
        (Trigger::Manual, Outcome::Delivered) => {
            DeliveryState { status: DeliveryStatus::Success, attempts: prev.attempts, next_attempt: None }
        }
        (Trigger::Manual, Outcome::Failed)
            if prev.is_pending() && r.endpoint_active && !r.steering.abort_message =>
        {
            prev.clone()
        }
        (Trigger::Manual, Outcome::Failed) => {
            DeliveryState { status: DeliveryStatus::Fail, attempts: prev.attempts, next_attempt: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn run(
        prev: &DeliveryState,
        trigger: Trigger,
        outcome: Outcome,
        policy: &RetryPolicy,
        at: Timestamp,
    ) -> DeliveryState {
        after_attempt(prev, &result(trigger, outcome, policy, at))
    }

    fn result(trigger: Trigger, outcome: Outcome, policy: &RetryPolicy, at: Timestamp) -> AttemptResult<'_> {
        AttemptResult {
            trigger,
            outcome,
            policy,
            endpoint_active: true,
            finished_at: at,
            steering: Steering::default(),
            jitter: 0.0,
        }
    }

    /// Drive a policy with every attempt failing; return attempt times.
    fn all_failures(policy: &RetryPolicy) -> Vec<i64> {
        let mut state = DeliveryState::new(t(0));
        let mut times = vec![];
        while let Some(at) = state.next_attempt {
            times.push(at.as_secs());
            state = run(&state, Trigger::Scheduled, Outcome::Failed, policy, at);
        }
        assert_eq!(state.status, DeliveryStatus::Fail);
        assert_eq!(state.attempts, policy.max_attempts());
        times
    }

    #[test]
    fn recording_moves_the_claim_and_reports_exhaustion() {
        let p = RetryPolicy::fixed_two_minutes();
        let leased = |state: DeliveryState| DeliveryRow {
            state,
            due_at: Some(t(600)),
            lease_owner: Some("node-a".into()),
        };
        // A scheduled failure ends the lease: due at the retry, held by nobody.
        let first =
            record(&leased(DeliveryState::new(t(0))), &result(Trigger::Scheduled, Outcome::Failed, &p, t(1)));
        assert_eq!((first.row.due_at, first.row.lease_owner.as_deref()), (Some(t(121)), None));
        assert!(!first.exhausted);
        // A manual failure leaves the claim alone while retries remain…
        let manual =
            record(&leased(first.row.state.clone()), &result(Trigger::Manual, Outcome::Failed, &p, t(2)));
        assert_eq!((manual.row.due_at, manual.row.lease_owner.as_deref()), (Some(t(600)), Some("node-a")));
        // …and clears it once it settles the delivery.
        let ok =
            record(&leased(first.row.state.clone()), &result(Trigger::Manual, Outcome::Delivered, &p, t(2)));
        assert_eq!((ok.row.due_at, ok.row.lease_owner), (None, None));
        assert!(!ok.exhausted, "a success never exhausts");
        // The last scheduled failure exhausts the schedule, once.
        let mut row = first.row;
        let mut exhausted = 0;
        while let Some(at) = row.state.next_attempt {
            let r = record(&row, &result(Trigger::Scheduled, Outcome::Failed, &p, at));
            exhausted += usize::from(r.exhausted);
            row = r.row;
        }
        assert_eq!((exhausted, row.state.status, row.due_at), (1, DeliveryStatus::Fail, None));
        let late = record(&row, &result(Trigger::Scheduled, Outcome::Failed, &p, t(9999)));
        assert!(!late.exhausted, "a late failure of a settled delivery is not news");
    }

    #[test]
    fn default_schedule_attempt_offsets() {
        let times = all_failures(&RetryPolicy::exponential());
        // immediately, +5 s, +5 min, +30 min, +2 h, +5 h, +10 h, +10 h
        let expected = [0, 5, 305, 2105, 9305, 27305, 63305, 99305];
        assert_eq!(times, expected);
    }

    #[test]
    fn exponential_policy_three_failures_then_success_at_35m5s() {
        let p = RetryPolicy::exponential();
        let mut state = DeliveryState::new(t(0));
        for _ in 0..3 {
            let at = state.next_attempt.unwrap();
            state = run(&state, Trigger::Scheduled, Outcome::Failed, &p, at);
        }
        let fourth = state.next_attempt.unwrap();
        assert_eq!(fourth, t(35 * 60 + 5));
        state = run(&state, Trigger::Scheduled, Outcome::Delivered, &p, fourth);
        assert_eq!(state.status, DeliveryStatus::Success);
        assert_eq!(state.attempts, 4);
        assert_eq!(state.next_attempt, None);
    }

    #[test]
    fn fixed_policy_four_attempts_two_minutes_apart() {
        assert_eq!(all_failures(&RetryPolicy::fixed_two_minutes()), [0, 120, 240, 360]);
    }

    #[test]
    fn classification_follows_policy() {
        let fixed = RetryPolicy::fixed_two_minutes();
        let default = RetryPolicy::default();
        assert_eq!(Outcome::classify(&fixed, Some(201)), Outcome::Failed);
        assert_eq!(Outcome::classify(&fixed, Some(200)), Outcome::Delivered);
        assert_eq!(Outcome::classify(&default, Some(201)), Outcome::Delivered);
        assert_eq!(Outcome::classify(&default, None), Outcome::Failed);
        assert_eq!(Outcome::classify(&default, Some(500)), Outcome::Failed);
    }

    #[test]
    fn retry_delay_counts_from_the_end_of_a_slow_attempt() {
        let p = RetryPolicy::default();
        let s = run(&DeliveryState::new(t(0)), Trigger::Scheduled, Outcome::Failed, &p, t(30));
        assert_eq!(s.next_attempt, Some(t(35)));
    }

    #[test]
    fn disabled_endpoint_stops_retries() {
        let p = RetryPolicy::default();
        let s = after_attempt(
            &DeliveryState::new(t(0)),
            &AttemptResult {
                endpoint_active: false,
                ..result(Trigger::Scheduled, Outcome::Failed, &p, t(0))
            },
        );
        assert_eq!(s.status, DeliveryStatus::Fail);
        assert_eq!(s.next_attempt, None);
    }

    #[test]
    fn manual_attempts_do_not_consume_the_schedule() {
        let p = RetryPolicy::default();
        let pending = run(&DeliveryState::new(t(0)), Trigger::Scheduled, Outcome::Failed, &p, t(0));
        assert_eq!(pending.attempts, 1);

        // A failing manual retry leaves the pending schedule untouched.
        let after_manual_fail = run(&pending, Trigger::Manual, Outcome::Failed, &p, t(1));
        assert_eq!(after_manual_fail, pending);

        // A successful manual retry finishes the delivery, counts unchanged.
        let done = run(&pending, Trigger::Manual, Outcome::Delivered, &p, t(2));
        assert_eq!(done.status, DeliveryStatus::Success);
        assert_eq!(done.attempts, 1);
        assert_eq!(done.next_attempt, None);

        // Resending a succeeded message that now fails marks it failed,
        // without starting a new schedule.
        let resent = run(&done, Trigger::Manual, Outcome::Failed, &p, t(3));
        assert_eq!(resent.status, DeliveryStatus::Fail);
        assert_eq!(resent.next_attempt, None);
        assert_eq!(resent.attempts, 1);
    }

    #[test]
    fn late_scheduled_failure_does_not_revive_a_settled_delivery() {
        let p = RetryPolicy::default();
        let pending = DeliveryState::new(t(0));
        let done = run(&pending, Trigger::Manual, Outcome::Delivered, &p, t(1));
        let late = run(&done, Trigger::Scheduled, Outcome::Failed, &p, t(2));
        assert_eq!(late.status, DeliveryStatus::Success);
        assert_eq!(late.next_attempt, None);
        assert_eq!(late.attempts, 1);
    }

    #[test]
    fn abort_message_stops_retries() {
        let p = RetryPolicy::default();
        let abort = Steering { abort_message: true, ..Default::default() };
        let r = AttemptResult {
            steering: abort.clone(),
            ..result(Trigger::Scheduled, Outcome::Failed, &p, t(0))
        };
        let s = after_attempt(&DeliveryState::new(t(0)), &r);
        assert_eq!((s.status, s.next_attempt), (DeliveryStatus::Fail, None));
        // Also when answered to a manual retry while retries were pending.
        let pending = run(&DeliveryState::new(t(0)), Trigger::Scheduled, Outcome::Failed, &p, t(0));
        let r = AttemptResult { steering: abort, ..result(Trigger::Manual, Outcome::Failed, &p, t(1)) };
        assert_eq!(after_attempt(&pending, &r).next_attempt, None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_an_hour_never_sooner_than_the_schedule() {
        let d = Duration::from_secs(300);
        assert_eq!(retry_delay(d, Some(Duration::from_secs(10)), 0.0), d);
        assert_eq!(retry_delay(d, Some(Duration::from_secs(450)), 0.0), Duration::from_secs(450));
        assert_eq!(retry_delay(d, Some(Duration::from_secs(9999)), 0.0), Duration::from_secs(3600));
        let long = Duration::from_secs(7200);
        assert_eq!(retry_delay(long, Some(Duration::from_secs(9999)), 0.0), long, "the schedule, if later");
        // Retry-After is exact: no jitter on top.
        assert_eq!(retry_delay(d, Some(Duration::from_secs(450)), 0.2), Duration::from_secs(450));
        let p = RetryPolicy::default();
        let ask = Steering { retry_after: Some(Duration::from_secs(8)), ..Default::default() };
        let r = AttemptResult { steering: ask, ..result(Trigger::Scheduled, Outcome::Failed, &p, t(0)) };
        assert_eq!(after_attempt(&DeliveryState::new(t(0)), &r).next_attempt, Some(t(8)));
    }

    #[test]
    fn jitter_spreads_within_its_fraction() {
        let d = Duration::from_secs(100);
        assert_eq!(retry_delay(d, None, 0.2), Duration::from_secs(120));
        assert_eq!(retry_delay(d, None, -0.2), Duration::from_secs(80));
        assert_eq!(retry_delay(d, None, 0.0), d);
        // Nonsense jitter is bounded.
        assert_eq!(retry_delay(d, None, 7.0), Duration::from_secs(150));
    }

    #[test]
    fn empty_schedule_means_one_attempt() {
        let p = RetryPolicy { schedule: vec![], ..Default::default() };
        assert_eq!(all_failures(&p), [0]);
    }
}
