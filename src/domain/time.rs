//! `Timestamp`: milliseconds since the Unix epoch, UTC.
//!
//! Stored as a plain integer in every table so comparisons in SQL are cheap
//! and identical on SQLite and PostgreSQL. Converted to RFC 3339 only at the
//! API edge.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, as used in the `webhook-timestamp` header.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
    }

    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Timestamp(dt.timestamp_millis())
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s).ok().map(|dt| Self::from_datetime(dt.with_timezone(&Utc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_millis() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
    }

    #[test]
    fn arithmetic_saturates_and_since_is_never_negative() {
        let t = Timestamp::from_millis(10_000);
        assert_eq!(t.plus(Duration::from_secs(5)).as_millis(), 15_000);
        assert_eq!(t.minus(Duration::from_secs(5)).as_millis(), 5_000);
        assert_eq!(t.since(Timestamp::from_millis(20_000)), Duration::ZERO);
        assert_eq!(t.as_secs(), 10);
        assert_eq!(Timestamp::from_millis(-1).as_secs(), -1);
    }
}
