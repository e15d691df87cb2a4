//! Flow control per endpoint: how fast attempts may start, and what the
//! receiver's answers do to that.
//!
//! - **Limit**: the endpoint's `throttleRate`, else its application's, else
//!   none. Enforced as a token bucket (GCRA: one "theoretical arrival time")
//!   with a burst of a tenth of a second's worth (at least one start): over
//!   any window of `w` seconds at most `rate × w + burst` attempts start, so
//!   a receiver sees the rate it asked for, not a second's worth at once.
//! - **Pause**: 429 or 503 with `Retry-After` stops every attempt to the
//!   endpoint until then (at most [`MAX_PAUSE`]).
//! - **Backoff** (AIMD): 429/502/503/504 without `Retry-After`, timeouts and
//!   connection errors halve the endpoint's allowed rate (at most once per
//!   [`DECREASE_EVERY`], so one burst of failures counts once); each success
//!   raises it by [`INCREASE_STEP`] until it is back at the limit, or at the
//!   rate it was sent at before the congestion for an endpoint without a
//!   limit, and the backoff ends.
//!
//! Pure: the stores keep a [`FlowState`] per endpoint and apply these rules
//! in their transactions (claiming takes from the bucket; recording an
//! attempt applies [`FlowState::after_response`]), so every node of a
//! cluster shares one bucket.

use std::time::Duration;

use super::time::Timestamp;

/// The most requests in flight at once an endpoint may ask for
/// (`maxInFlight`).
pub const MAX_IN_FLIGHT: u16 = 1000;
/// The longest pause a `Retry-After` can ask for.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Backoff never goes below this rate (messages per second).
pub const MIN_RATE: f64 = 1.0;
/// Congestion halves the rate at most this often.
pub const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// What each success adds to a backed-off rate (messages per second).
pub const INCREASE_STEP: f64 = 1.0;

/// What an attempt's answer says about the receiver's load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Delivered: the receiver keeps up.
    Ok,
    /// Says nothing about load (a 4xx, a 500).
    Neutral,
    /// Overloaded or unreachable: 429/502/503/504 without `Retry-After`, a
    /// timeout, a connection error.
    Congested,
    /// 429 or 503 with `Retry-After`: no attempt before `until`.
    PauseUntil { until: Timestamp, reason: String },
}

impl Signal {
    /// `status` is `None` when no response arrived; `retry_after` is the
    /// parsed header of a 429 or 503.
    pub fn classify(
        delivered: bool,
        status: Option<u16>,
        retry_after: Option<Duration>,
        now: Timestamp,
    ) -> Signal {
        match (status, retry_after) {
            _ if delivered => Signal::Ok,
            (Some(code @ (429 | 503)), Some(wait)) => Signal::PauseUntil {
                until: now.plus(wait.min(MAX_PAUSE)),
                reason: format!("{code} with Retry-After: {} s", wait.as_secs()),
            },
            (None | Some(429 | 502 | 503 | 504), _) => Signal::Congested,
            _ => Signal::Neutral,
        }
    }
}

/// An endpoint's flow state, as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowState {
    /// The bucket, as GCRA's theoretical arrival time in microseconds since
    /// the epoch: full again once the clock passes it.
    pub tat_us: i64,
    /// No attempt starts before this.
    pub paused_until: Option<Timestamp>,
    /// Why (e.g. `429 with Retry-After: 30 s`).
    pub pause_reason: Option<String>,
    /// The allowed rate while backing off (messages per second).
    pub backoff_rate: Option<f64>,
    /// The rate at which backoff ends.
    pub recover_to: Option<f64>,
    /// When backoff last halved the rate.
    pub last_decrease: Option<Timestamp>,
}

fn us(t: Timestamp) -> i64 {
    t.as_millis().saturating_mul(1000)
}

/// Microseconds to the next whole millisecond, upwards.
fn to_timestamp(t_us: i64) -> Timestamp {
    Timestamp::from_millis(t_us.div_euclid(1000) + i64::from(t_us.rem_euclid(1000) > 0))
}

impl FlowState {
    /// Nothing left to remember at `now`: no pause in force, no backoff, a
    /// full bucket. A store need not keep such a state at all.
    pub fn is_idle(&self, now: Timestamp) -> bool {
        !self.paused(now) && self.backoff_rate.is_none() && self.tat_us <= us(now)
    }

    pub fn paused(&self, now: Timestamp) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// The rate attempts may start at: the lower of the limit and the
    /// backoff; `None` for no bound.
    pub fn rate(&self, limit: Option<u32>) -> Option<f64> {
        match (limit.map(f64::from), self.backoff_rate) {
            (Some(l), Some(b)) => Some(l.min(b)),
            (l, b) => l.or(b),
        }
    }

    /// Whether starts are bounded at all (by a limit, a backoff or a pause).
    pub fn is_limited(&self, limit: Option<u32>, now: Timestamp) -> bool {
        self.paused(now) || self.rate(limit).is_some()
    }

    /// Take up to `wanted` attempt starts at `now`; returns how many the
    /// bucket (and any pause) allows.
    pub fn take(&mut self, limit: Option<u32>, now: Timestamp, wanted: usize) -> usize {
        if self.paused(now) || wanted == 0 {
            return 0;
        }
        let Some(rate) = self.rate(limit) else { return wanted };
        let (interval, tolerance) = bucket(rate);
        let now_us = us(now);
        let base = self.tat_us.max(now_us);
        if base - now_us > tolerance {
            return 0;
        }
        let fits = ((now_us + tolerance - base) / interval + 1) as usize;
        let n = fits.min(wanted);
        self.tat_us = base + interval * n as i64;
        n
    }

    /// Count one start that goes whatever the bucket says (a manual
    /// resend): later starts wait for it.
    pub fn charge(&mut self, limit: Option<u32>, now: Timestamp) {
        if let Some(rate) = self.rate(limit) {
            let (interval, _) = bucket(rate);
            self.tat_us = self.tat_us.max(us(now)) + interval;
        }
    }

    /// Give back `n` starts taken but not used.
    pub fn give_back(&mut self, limit: Option<u32>, now: Timestamp, n: usize) {
        if let Some(rate) = self.rate(limit) {
            let (interval, _) = bucket(rate);
            self.tat_us = (self.tat_us - interval * n as i64).max(us(now));
        }
    }

    /// When the next attempt may start (`now` if at once).
    pub fn ready_at(&self, limit: Option<u32>, now: Timestamp) -> Timestamp {
        let mut at = now;
        if let Some(rate) = self.rate(limit) {
            let (_, tolerance) = bucket(rate);
            at = at.max(to_timestamp(self.tat_us - tolerance));
        }
        match self.paused_until {
            Some(p) if p > at => p,
            _ => at,
        }
    }

    /// Apply an attempt's answer. `sending_rate` is how fast the node was
    /// sending to the endpoint (starts in the last second): where backoff
    /// starts from for an endpoint without a limit.
    pub fn after_response(&mut self, limit: Option<u32>, signal: &Signal, now: Timestamp, sending_rate: f64) {
        match signal {
            Signal::Neutral => {}
            Signal::Ok => {
                let Some(rate) = self.backoff_rate else { return };
                let raised = rate + INCREASE_STEP;
                if self.recover_to.is_none_or(|r| raised >= r) {
                    self.backoff_rate = None;
                    self.recover_to = None;
                    self.last_decrease = None;
                } else {
                    self.backoff_rate = Some(raised);
                }
            }
            Signal::PauseUntil { until, reason } => {
                if self.paused_until.is_none_or(|p| p < *until) {
                    self.paused_until = Some(*until);
                    self.pause_reason = Some(reason.clone());
                }
            }
            Signal::Congested => {
                if self.last_decrease.is_some_and(|t| now.since(t) < DECREASE_EVERY) {
                    return;
                }
                let current = self.rate(limit).unwrap_or(sending_rate).max(MIN_RATE);
                if self.recover_to.is_none() {
                    self.recover_to = Some(limit.map_or(current, f64::from));
                }
                self.backoff_rate = Some((current / 2.0).max(MIN_RATE));
                self.last_decrease = Some(now);
            }
        }
    }

    /// Forget what no longer applies at `now` (a pause that is over).
    pub fn tidy(&mut self, now: Timestamp) {
        if !self.paused(now) {
            self.paused_until = None;
            self.pause_reason = None;
        }
    }
}

/// GCRA's emission interval and burst tolerance for `rate`, in µs: a burst
/// of a tenth of a second's worth (at least one start).
fn bucket(rate: f64) -> (i64, i64) {
    let interval = (1_000_000.0 / rate.max(0.001)).ceil().max(1.0) as i64;
    (interval, interval * (burst(rate) as i64 - 1))
}

/// Starts allowed at once from a full bucket.
pub fn burst(rate: f64) -> u32 {
    (rate / 10.0).ceil().max(1.0) as u32
}

/// An endpoint's flow as a store keeps it: the state, and when deliveries
/// parked behind it may be claimed again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flow {
    pub state: FlowState,
    /// `None`: nothing is parked.
    pub wake_at: Option<Timestamp>,
}

impl Flow {
    /// A delivery was parked behind this flow: look again once the
    /// endpoint may send.
    pub fn parked(&mut self, limit: Option<u32>, now: Timestamp) {
        let ready = self.state.ready_at(limit, now);
        self.wake_at = Some(self.wake_at.map_or(ready, |w| w.min(ready)));
    }

    /// Whether starts to this endpoint are bounded at `now`, or deliveries
    /// already wait for it (newcomers queue behind them).
    pub fn is_limited(&self, limit: Option<u32>, now: Timestamp) -> bool {
        self.wake_at.is_some() || self.state.is_limited(limit, now)
    }

    /// May one more delivery start now? Takes it from the bucket if so; a
    /// bounded endpoint with parked deliveries lets them go first.
    pub fn admit_one(&mut self, limit: Option<u32>, now: Timestamp) -> bool {
        self.wake_at.is_none() && self.state.take(limit, now, 1) == 1
    }

    /// After an unpark that asked the bucket for `granted` and found `found`
    /// parked deliveries: the rest goes back, and the next look is when the
    /// bucket allows again (or never, when none are left).
    pub fn unparked(&mut self, limit: Option<u32>, now: Timestamp, granted: usize, found: usize) {
        if found < granted {
            self.state.give_back(limit, now, granted - found);
            self.wake_at = None;
        } else {
            self.wake_at = Some(self.state.ready_at(limit, now));
        }
    }

    /// Apply an attempt's answer (see [`FlowState::after_response`]).
    /// Returns the end of a pause this answer started or extended; parked
    /// deliveries wait for it too.
    pub fn after_response(
        &mut self,
        limit: Option<u32>,
        signal: &Signal,
        now: Timestamp,
        sending_rate: f64,
    ) -> Option<Timestamp> {
        let before = self.state.paused_until;
        self.state.after_response(limit, signal, now, sending_rate);
        let paused = self.state.paused_until.filter(|p| Some(*p) != before && *p > now)?;
        self.wake_at = self.wake_at.map(|w| w.max(paused));
        Some(paused)
    }

    /// Nothing to keep: a store may delete it.
    pub fn is_idle(&self, now: Timestamp) -> bool {
        self.wake_at.is_none() && self.state.is_idle(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    /// Starts granted one at a time, asking every `step` ms for `span` ms.
    fn starts(state: &mut FlowState, limit: Option<u32>, step: i64, span: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut now = 0;
        while now < span {
            while state.take(limit, t(now), 1) == 1 {
                out.push(now);
            }
            now += step;
        }
        out
    }

    #[test]
    fn no_limit_takes_everything() {
        let mut s = FlowState::default();
        assert_eq!(s.take(None, t(0), 500), 500);
        assert!(s.is_idle(t(0)));
        assert_eq!(s.ready_at(None, t(0)), t(0));
    }

    #[test]
    fn a_bucket_allows_one_seconds_burst_then_the_rate() {
        let mut s = FlowState::default();
        assert_eq!(s.take(Some(50), t(0), 100), 5, "burst of a tenth of a second's worth");
        assert_eq!(s.take(Some(50), t(0), 1), 0);
        assert_eq!(s.ready_at(Some(50), t(0)), t(20));
        assert_eq!(s.take(Some(50), t(20), 5), 1);
        // Over any window of w ms: at most rate × w + burst starts.
        for (rate, burst) in [(10, 1), (50, 5), (1000, 100)] {
            let mut s = FlowState::default();
            let got = starts(&mut s, Some(rate), 1, 12_000);
            for window in [1000, 5000] {
                let most = (rate as usize * window / 1000) + burst;
                for w in (0..12_000 - window as i64).step_by(7) {
                    let n = got.iter().filter(|&&x| x >= w && x < w + window as i64).count();
                    assert!(n <= most, "rate {rate}: {n} starts in [{w}, {w}+{window}) > {most}");
                }
            }
            // And on average the rate.
            let expected = (rate as i64 * 12) + burst as i64;
            assert!((got.len() as i64 - expected).abs() <= 2 + rate as i64 / 100, "{rate}: {}", got.len());
        }
        assert_eq!(burst(0.5), 1);
        assert_eq!(burst(65_535.0), 6554);
    }

    #[test]
    fn a_charged_start_delays_the_next_ones() {
        let mut s = FlowState::default();
        assert_eq!(s.take(Some(2), t(0), 2), 1);
        s.charge(Some(2), t(0));
        assert_eq!(s.take(Some(2), t(999), 1), 0);
        assert_eq!(s.ready_at(Some(2), t(0)), t(1000));
        let mut unlimited = FlowState::default();
        unlimited.charge(None, t(0));
        assert!(unlimited.is_idle(t(0)));
    }

    #[test]
    fn give_back_returns_unused_starts() {
        let mut s = FlowState::default();
        assert_eq!(s.take(Some(50), t(0), 5), 5);
        s.give_back(Some(50), t(0), 2);
        assert_eq!(s.take(Some(50), t(0), 5), 2);
    }

    #[test]
    fn parked_work_goes_first_and_wakes_when_the_bucket_allows() {
        let mut f = Flow::default();
        assert!(!f.is_limited(None, t(0)));
        assert!(f.is_limited(Some(10), t(0)));
        assert!(f.admit_one(Some(10), t(0)));
        assert!(!f.admit_one(Some(10), t(0)), "burst of one at 10/s");
        f.parked(Some(10), t(0));
        assert_eq!(f.wake_at, Some(t(100)));
        // While something is parked, newcomers park behind it.
        assert!(!f.admit_one(Some(10), t(500)));
        let granted = f.state.take(Some(10), t(100), 5);
        f.unparked(Some(10), t(100), granted, granted);
        assert_eq!(f.wake_at, Some(t(200)), "more may be parked: look again");
        let granted = f.state.take(Some(10), t(200), 5);
        f.unparked(Some(10), t(200), granted, 0);
        assert_eq!(f.wake_at, None, "none left");
        assert!(f.is_idle(t(10_000)));
    }

    #[test]
    fn a_pause_stops_everything_until_it_ends() {
        let mut s = FlowState::default();
        let signal = Signal::classify(false, Some(429), Some(Duration::from_secs(30)), t(0));
        assert!(matches!(signal, Signal::PauseUntil { until, .. } if until == t(30_000)));
        s.after_response(None, &signal, t(0), 100.0);
        assert!(s.is_limited(None, t(1)));
        assert_eq!(s.take(None, t(29_999), 1), 0);
        assert_eq!(s.ready_at(None, t(5)), t(30_000));
        assert_eq!(s.take(None, t(30_000), 3), 3);
        s.tidy(t(30_000));
        assert!(s.is_idle(t(30_000)));
        // A shorter pause asked later does not cut a longer one short.
        s.after_response(None, &Signal::PauseUntil { until: t(90_000), reason: "a".into() }, t(0), 1.0);
        s.after_response(None, &Signal::PauseUntil { until: t(40_000), reason: "b".into() }, t(0), 1.0);
        assert_eq!(s.paused_until, Some(t(90_000)));
        assert_eq!(s.pause_reason.as_deref(), Some("a"));
    }

    #[test]
    fn pauses_are_capped_at_an_hour() {
        let long = Signal::classify(false, Some(503), Some(Duration::from_secs(86_400)), t(0));
        assert!(matches!(long, Signal::PauseUntil { until, .. } if until == t(3_600_000)));
    }

    #[test]
    fn what_counts_as_congestion() {
        let now = t(0);
        assert_eq!(Signal::classify(true, Some(200), None, now), Signal::Ok);
        assert_eq!(Signal::classify(false, None, None, now), Signal::Congested);
        for code in [429, 502, 503, 504] {
            assert_eq!(Signal::classify(false, Some(code), None, now), Signal::Congested);
        }
        for code in [400, 404, 500, 201] {
            assert_eq!(Signal::classify(false, Some(code), None, now), Signal::Neutral);
        }
        // Retry-After only counts on 429 and 503.
        assert_eq!(Signal::classify(false, Some(502), Some(Duration::from_secs(5)), now), Signal::Congested);
    }

    #[test]
    fn congestion_halves_once_per_second_and_successes_restore() {
        let mut s = FlowState::default();
        // An unlimited endpoint sent at 80/s: backoff starts from there.
        s.after_response(None, &Signal::Congested, t(0), 80.0);
        assert_eq!(s.rate(None), Some(40.0));
        assert_eq!(s.recover_to, Some(80.0));
        // A burst of failures within the second counts once.
        s.after_response(None, &Signal::Congested, t(500), 80.0);
        assert_eq!(s.rate(None), Some(40.0));
        s.after_response(None, &Signal::Congested, t(1000), 80.0);
        assert_eq!(s.rate(None), Some(20.0));
        for _ in 0..59 {
            s.after_response(None, &Signal::Ok, t(2000), 20.0);
        }
        assert_eq!(s.rate(None), Some(79.0));
        s.after_response(None, &Signal::Ok, t(2000), 20.0);
        assert_eq!(s.rate(None), None, "back to unlimited");
        assert!(s.is_idle(t(0)) || s.tat_us > 0);
    }

    #[test]
    fn backoff_never_exceeds_the_limit_and_ends_at_it() {
        let mut s = FlowState::default();
        s.after_response(Some(10), &Signal::Congested, t(0), 500.0);
        assert_eq!(s.rate(Some(10)), Some(5.0));
        for i in 0..20 {
            s.after_response(Some(10), &Signal::Congested, t(1000 * (i + 1)), 5.0);
        }
        assert_eq!(s.rate(Some(10)), Some(MIN_RATE));
        for _ in 0..9 {
            s.after_response(Some(10), &Signal::Ok, t(0), 1.0);
        }
        assert_eq!(s.backoff_rate, None);
        assert_eq!(s.rate(Some(10)), Some(10.0));
    }

    #[test]
    fn neutral_answers_change_nothing() {
        let mut s = FlowState::default();
        s.after_response(Some(3), &Signal::Neutral, t(0), 3.0);
        assert_eq!(s, FlowState::default());
    }
}
