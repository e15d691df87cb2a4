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
}
