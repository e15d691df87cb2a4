//! Endpoint health: how long an endpoint has failed without a single
//! success, and when that is long enough to disable it automatically.

use std::time::Duration;

use super::delivery::Outcome;
use super::time::Timestamp;

/// The start of the current failure streak after an attempt at `at`.
pub fn failing_since(prev: Option<Timestamp>, outcome: Outcome, at: Timestamp) -> Option<Timestamp> {
    match outcome {
        Outcome::Delivered => None,
        Outcome::Failed => Some(prev.unwrap_or(at)),
    }
}

/// Has every attempt failed for at least `threshold` (when set)?
pub fn should_disable(failing_since: Option<Timestamp>, at: Timestamp, threshold: Option<Duration>) -> bool {
    match (failing_since, threshold) {
        (Some(since), Some(limit)) => at.since(since) >= limit,
        _ => false,
    }
}

/// An endpoint's health after one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The start of the failure streak, `None` after a success.
    pub failing_since: Option<Timestamp>,
    /// The attempt disables the endpoint: `Some(true)` by the automatic
    /// rule, `Some(false)` because the receiver asked.
    pub disabled_automatically: Option<bool>,
}

/// What an attempt at `at` does to an active endpoint whose streak started
/// at `prev` (the one rule both stores apply).
pub fn after_attempt(
    prev: Option<Timestamp>,
    outcome: Outcome,
    at: Timestamp,
    receiver_asked_to_disable: bool,
    threshold: Option<Duration>,
) -> Change {
    let failing_since = failing_since(prev, outcome, at);
    let automatic = should_disable(failing_since, at, threshold);
    let disabled_automatically =
        (receiver_asked_to_disable || automatic).then_some(!receiver_asked_to_disable);
    Change { failing_since, disabled_automatically }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u64) -> Timestamp {
        Timestamp::from_millis(0).plus(Duration::from_secs(d * 86_400))
    }

    #[test]
    fn streak_starts_at_first_failure_and_ends_at_a_success() {
        let s = failing_since(None, Outcome::Failed, day(1));
        assert_eq!(s, Some(day(1)));
        assert_eq!(failing_since(s, Outcome::Failed, day(3)), Some(day(1)));
        assert_eq!(failing_since(s, Outcome::Delivered, day(3)), None);
    }

    #[test]
    fn disables_after_the_threshold_only() {
        let five_days = Some(Duration::from_secs(5 * 86_400));
        assert!(!should_disable(Some(day(1)), day(5), five_days));
        assert!(should_disable(Some(day(1)), day(6), five_days));
        assert!(!should_disable(Some(day(1)), day(60), None));
        assert!(!should_disable(None, day(60), five_days));
    }

    #[test]
    fn an_attempt_disables_when_asked_or_after_the_threshold() {
        let five_days = Some(Duration::from_secs(5 * 86_400));
        let failed = |prev, asked| after_attempt(prev, Outcome::Failed, day(6), asked, five_days);
        assert_eq!(
            failed(Some(day(2)), false),
            Change { failing_since: Some(day(2)), disabled_automatically: None }
        );
        assert_eq!(failed(Some(day(1)), false).disabled_automatically, Some(true));
        assert_eq!(
            failed(Some(day(1)), true).disabled_automatically,
            Some(false),
            "the receiver's request wins"
        );
        let ok = after_attempt(Some(day(1)), Outcome::Delivered, day(6), true, five_days);
        assert_eq!(ok, Change { failing_since: None, disabled_automatically: Some(false) });
    }
}
