//! The simulated receivers: per endpoint a profile of how it answers
//! (healthy, flaky 5xx, timeouts, resets, slow, 429 with `Retry-After`,
//! 410, `webhook-delivery` directives), drawn from the simulation's seeded
//! generator. An answer is what the real sender would have returned
//! ([`Sent`]) and how long it took; an answer slower than the policy's
//! timeout is a timeout at the timeout.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::dispatch::sender::Sent;

/// How a receiver answers, as chances per attempt (the rest: 200).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub name: &'static str,
    /// 500.
    pub error: f64,
    /// No answer within the timeout.
    pub timeout: f64,
    /// Connection reset: no status, at once.
    pub reset: f64,
    /// 200, after 0.5 to 8 s.
    pub slow: f64,
    /// 429 with `Retry-After` of 1 to 5 s: a pause of the whole endpoint.
    pub retry_after: f64,
    /// 503 without `Retry-After`: congestion (backoff).
    pub congested: f64,
    /// 410 Gone: the endpoint disables itself.
    pub gone: f64,
    /// 400 with `webhook-delivery: abort-message`.
    pub abort: f64,
}

/// The answer to one attempt and how long it took.
pub struct Answer {
    pub sent: Sent,
    pub took: Duration,
    /// What kind of trouble it was, for the report (`None`: a plain 200).
    pub trouble: Option<&'static str>,
}

/// Answers take whole multiples of this, so completions often share an
/// instant (and their records a commit).
pub const TICK_MS: u64 = 50;

impl Profile {
    pub fn answer(&self, rng: &mut StdRng, timeout: Duration) -> Answer {
        let fast = Duration::from_millis(TICK_MS * rng.random_range(1..=4u64));
        let mut u: f64 = rng.random();
        let mut pick = |p: f64| {
            u -= p;
            u < 0.0
        };
        let (status, took, trouble, header): (Option<u16>, Duration, _, _) = if pick(self.gone) {
            (Some(410), fast, Some("net: 410 gone"), None)
        } else if pick(self.abort) {
            (Some(400), fast, Some("net: abort-message"), Some(("directive", "abort-message".to_owned())))
        } else if pick(self.retry_after) {
            let secs = rng.random_range(1..=5u64);
            (Some(429), fast, Some("net: 429 Retry-After"), Some(("retry-after", secs.to_string())))
        } else if pick(self.congested) {
            (Some(503), fast, Some("net: 503"), None)
        } else if pick(self.error) {
            (Some(500), fast, Some("net: 500"), None)
        } else if pick(self.reset) {
            (None, fast, Some("net: reset"), None)
        } else if pick(self.timeout) {
            (None, timeout + Duration::from_secs(1), Some("net: timeout"), None)
        } else if pick(self.slow) {
            (
                Some(200),
                Duration::from_millis(TICK_MS * rng.random_range(10..=160u64)),
                Some("net: slow"),
                None,
            )
        } else {
            (Some(200), fast, None, None)
        };
        if took > timeout {
            let sent = Sent {
                status: None,
                error: Some("timed out".into()),
                duration_ms: timeout.as_millis() as i64,
                ..Sent::default()
            };
            let trouble = if trouble == Some("net: slow") { Some("net: slow, timed out") } else { trouble };
            return Answer { sent, took: timeout, trouble };
        }
        let mut sent = Sent { status, duration_ms: took.as_millis() as i64, ..Sent::default() };
        if status.is_none() {
            sent.error = Some("connection reset by peer".into());
        }
        match header {
            Some(("retry-after", v)) => sent.retry_after = Some(v),
            Some((_, v)) => sent.directive = Some(v),
            None => {}
        }
        Answer { sent, took, trouble }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn answers_follow_the_profile_and_time_out_at_the_timeout() {
        let mut rng = StdRng::seed_from_u64(1);
        let always_slow = Profile { slow: 1.0, ..Default::default() };
        let timeout = Duration::from_secs(2);
        let (mut slow, mut cut) = (0, 0);
        for _ in 0..200 {
            let a = always_slow.answer(&mut rng, timeout);
            assert!(a.took <= timeout);
            match a.sent.status {
                Some(200) => slow += 1,
                None => {
                    cut += 1;
                    assert_eq!(a.took, timeout);
                    assert_eq!(a.sent.error.as_deref(), Some("timed out"));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(slow > 0 && cut > 0, "{slow} slow, {cut} cut off");
        let pausing = Profile { retry_after: 1.0, ..Default::default() }.answer(&mut rng, timeout);
        assert_eq!(pausing.sent.status, Some(429));
        assert!(pausing.sent.retry_after.is_some());
        let healthy = Profile::default().answer(&mut rng, timeout);
        assert_eq!((healthy.sent.status, healthy.trouble), (Some(200), None));
    }
}
