//! Attempt statistics by minute: what the dashboard's charts are drawn
//! from.
//!
//! Each store keeps, per endpoint and minute, how many attempts succeeded,
//! failed and timed out, and a histogram of their durations, adding each
//! attempt as it is recorded. A chart then reads an index range of these
//! rows (at most one per endpoint and minute of its window) and merges them
//! into its intervals here, so a page never scans the attempt table.
//!
//! Latency percentiles come from the histogram: fixed bucket bounds, the
//! estimate interpolated inside the bucket that holds the rank. Counts merge
//! by addition, which is what lets both stores keep them with a plain
//! `count = count + 1` upsert.

use std::time::Duration;

use super::model::{Attempt, DeliveryStatus};
use super::time::Timestamp;

/// Upper bounds (inclusive, ms) of the latency buckets; the last bucket has
/// no upper bound.
pub const LATENCY_BOUNDS_MS: [i64; 13] =
    [10, 25, 50, 100, 200, 350, 500, 750, 1000, 2000, 5000, 10_000, 30_000];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The counters a store keeps per endpoint and minute: success, failure,
/// timeout, then the latency buckets.
pub const COUNTERS: usize = 3 + LATENCY_BUCKETS;

/// Minutes older than this are forgotten: the longest window, and a day.
pub const KEPT: Duration = Duration::from_secs(8 * 24 * 3600);

const MINUTE_MS: i64 = 60_000;

/// The minute (since the epoch) an instant falls in.
pub fn minute_of(at: Timestamp) -> i64 {
    at.as_millis().div_euclid(MINUTE_MS)
}

pub fn minute_start(minute: i64) -> Timestamp {
    Timestamp::from_millis(minute * MINUTE_MS)
}

/// What the charts tell apart. A timeout is a failure the charts show on
/// its own, since it points at a slow receiver rather than a refusing one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Success,
    Failure,
    Timeout,
}

/// The text an attempt that ran out of time records as its error.
pub fn timeout_error(timeout: Duration) -> String {
    format!("{TIMEOUT_PREFIX} {} s without a complete response", timeout.as_secs())
}

const TIMEOUT_PREFIX: &str = "timed out after";

impl Kind {
    pub fn of(attempt: &Attempt) -> Kind {
        if attempt.status == DeliveryStatus::Success {
            Kind::Success
        } else if attempt.status_code == 0
            && attempt.error.as_deref().is_some_and(|e| e.starts_with(TIMEOUT_PREFIX))
        {
            Kind::Timeout
        } else {
            Kind::Failure
        }
    }
}

pub fn latency_bucket(duration_ms: i64) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|&b| duration_ms <= b).unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Attempts of one endpoint in some span of time, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptStats {
    pub success: u64,
    pub failure: u64,
    pub timeout: u64,
    /// Attempts by duration, one count per [`LATENCY_BOUNDS_MS`] bucket.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl AttemptStats {
    /// One attempt's contribution (what a store adds to its minute's row).
    pub fn of(attempt: &Attempt) -> AttemptStats {
        let mut s = AttemptStats::default();
        s.add(attempt);
        s
    }

    pub fn add(&mut self, attempt: &Attempt) {
        match Kind::of(attempt) {
            Kind::Success => self.success += 1,
            Kind::Failure => self.failure += 1,
            Kind::Timeout => self.timeout += 1,
        }
        self.latency[latency_bucket(attempt.duration_ms)] += 1;
    }

    pub fn merge(&mut self, other: &AttemptStats) {
        self.success += other.success;
        self.failure += other.failure;
        self.timeout += other.timeout;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    /// In the order of [`COUNTERS`].
    pub fn counters(&self) -> [u64; COUNTERS] {
        let mut c = [0; COUNTERS];
        c[..3].copy_from_slice(&[self.success, self.failure, self.timeout]);
        c[3..].copy_from_slice(&self.latency);
        c
    }

    pub fn from_counters(c: [u64; COUNTERS]) -> AttemptStats {
        let mut latency = [0; LATENCY_BUCKETS];
        latency.copy_from_slice(&c[3..]);
        AttemptStats { success: c[0], failure: c[1], timeout: c[2], latency }
    }

    pub fn total(&self) -> u64 {
        self.success + self.failure + self.timeout
    }

    /// Share of attempts that succeeded, if there were any.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.success as f64 / total as f64)
    }

    /// The `q` quantile (0 < q ≤ 1) of the durations, in ms, estimated from
    /// the histogram; `None` without attempts. Past the last bound it
    /// answers that bound: the chart says "over 30 s".
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).max(1.0);
        let mut below = 0u64;
        for (i, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] } as f64;
                let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else { return Some(lower) };
                let within = (rank - below as f64) / count as f64;
                return Some(lower + within * (upper as f64 - lower));
            }
            below += count;
        }
        None
    }
}

/// The spans of time a chart can show.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Window {
    #[default]
    Hour,
    Day,
    Week,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
        }
    }

    /// Minutes per interval (one bar or point).
    pub fn step_minutes(self) -> i64 {
        match self {
            Window::Hour => 1,
            Window::Day => 15,
            Window::Week => 120,
        }
    }

    pub fn intervals(self) -> usize {
        match self {
            Window::Hour => 60,
            Window::Day => 96,
            Window::Week => 84,
        }
    }

    /// The minutes [first, end) the window covers when the latest interval
    /// holds `now`: intervals are aligned to their step, so a chart's bars
    /// do not shift as the page refreshes within one interval.
    pub fn minutes(self, now: Timestamp) -> (i64, i64) {
        let step = self.step_minutes();
        let end = (minute_of(now).div_euclid(step) + 1) * step;
        (end - step * self.intervals() as i64, end)
    }
}

/// A chart's data: one [`AttemptStats`] per interval of the window, oldest
/// first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub first_minute: i64,
    pub step_minutes: i64,
    pub intervals: Vec<AttemptStats>,
}

impl Series {
    pub fn empty(window: Window, now: Timestamp) -> Series {
        let (first_minute, _) = window.minutes(now);
        Series {
            first_minute,
            step_minutes: window.step_minutes(),
            intervals: vec![AttemptStats::default(); window.intervals()],
        }
    }

    /// Add a minute's (or an interval's) counts; outside the window, ignored.
    pub fn add(&mut self, minute: i64, stats: &AttemptStats) {
        let i = (minute - self.first_minute).div_euclid(self.step_minutes);
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.intervals.get_mut(i)) {
            slot.merge(stats);
        }
    }

    pub fn start_of(&self, i: usize) -> Timestamp {
        minute_start(self.first_minute + i as i64 * self.step_minutes)
    }

    pub fn total(&self) -> AttemptStats {
        let mut all = AttemptStats::default();
        for s in &self.intervals {
            all.merge(s);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Trigger;

    fn attempt(status: DeliveryStatus, code: u16, error: Option<String>, ms: i64) -> Attempt {
        Attempt {
            id: "atmpt_1".into(),
            msg_id: "msg_1".into(),
            endpoint_id: "ep_1".into(),
            app_id: "app_1".into(),
            url: "http://x".into(),
            status,
            status_code: code,
            response: String::new(),
            duration_ms: ms,
            trigger: Trigger::Scheduled,
            error,
            created_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn results_tell_timeouts_from_other_failures() {
        assert_eq!(Kind::of(&attempt(DeliveryStatus::Success, 200, None, 5)), Kind::Success);
        assert_eq!(Kind::of(&attempt(DeliveryStatus::Fail, 500, None, 5)), Kind::Failure);
        let refused = attempt(DeliveryStatus::Fail, 0, Some("connection refused".into()), 1);
        assert_eq!(Kind::of(&refused), Kind::Failure);
        let slow = attempt(DeliveryStatus::Fail, 0, Some(timeout_error(Duration::from_secs(15))), 15_000);
        assert_eq!(Kind::of(&slow), Kind::Timeout);
    }

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10), 0);
        assert_eq!(latency_bucket(11), 1);
        assert_eq!(latency_bucket(30_000), LATENCY_BOUNDS_MS.len() - 1);
        assert_eq!(latency_bucket(30_001), LATENCY_BOUNDS_MS.len());
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut s = AttemptStats::default();
        assert_eq!(s.latency_quantile(0.5), None);
        // 100 attempts: 50 in (50, 100], 50 in (100, 200].
        s.latency[3] = 50;
        s.latency[4] = 50;
        assert_eq!(s.latency_quantile(0.5), Some(100.0));
        assert_eq!(s.latency_quantile(0.25), Some(75.0));
        assert_eq!(s.latency_quantile(0.95), Some(190.0));
        let mut slow = AttemptStats::default();
        slow.latency[LATENCY_BUCKETS - 1] = 3;
        assert_eq!(slow.latency_quantile(0.5), Some(30_000.0));
    }

    #[test]
    fn stats_merge_by_addition() {
        let mut a = AttemptStats::of(&attempt(DeliveryStatus::Success, 200, None, 5));
        a.merge(&AttemptStats::of(&attempt(DeliveryStatus::Fail, 503, None, 70)));
        assert_eq!((a.success, a.failure, a.timeout, a.total()), (1, 1, 0, 2));
        assert_eq!(a.success_rate(), Some(0.5));
        assert_eq!(a.latency.iter().sum::<u64>(), 2);
        assert_eq!(AttemptStats::default().success_rate(), None);
        assert_eq!(AttemptStats::from_counters(a.counters()), a);
    }

    #[test]
    fn windows_are_aligned_to_their_step() {
        let now = minute_start(1_000_007).plus(Duration::from_secs(30));
        assert_eq!(Window::Hour.minutes(now), (1_000_008 - 60, 1_000_008));
        let (first, end) = Window::Day.minutes(now);
        assert_eq!((end - first, end % 15), (96 * 15, 0));
        assert!(first <= 1_000_007 && 1_000_007 < end);
        assert_eq!(Window::parse("week"), Some(Window::Week));
        assert_eq!(Window::parse("year"), None);
    }

    #[test]
    fn a_series_sums_minutes_into_intervals_and_drops_the_rest() {
        let now = minute_start(1_000_000);
        let mut s = Series::empty(Window::Day, now);
        let one = AttemptStats::of(&attempt(DeliveryStatus::Success, 200, None, 5));
        let last = s.first_minute + 95 * 15;
        s.add(last, &one);
        s.add(last + 14, &one);
        s.add(s.first_minute, &one);
        s.add(s.first_minute - 1, &one);
        s.add(last + 15, &one);
        assert_eq!(s.intervals[95].success, 2);
        assert_eq!(s.intervals[0].success, 1);
        assert_eq!(s.total().success, 3);
        assert_eq!(s.start_of(95), minute_start(last));
    }
}
