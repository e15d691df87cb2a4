//! Retry policy: how long to wait after each failed attempt, what counts as
//! success, and how long one attempt may take.
//!
//! A policy is the list of delays *between* attempts. The first attempt is
//! always immediate, so a schedule of N delays allows N + 1 attempts:
//! - the default, [`RetryPolicy::exponential`]:
//!   `[5s, 5m, 30m, 2h, 5h, 10h, 10h]`, 8 attempts over about 27.6 hours,
//!   success on any 2xx;
//! - [`RetryPolicy::fixed_two_minutes`]: `[2m, 2m, 2m]`, 4 attempts, success
//!   only on 200.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the receiver must answer for an attempt to count as delivered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SuccessRule {
    /// Any status from 200 to 299.
    #[default]
    #[serde(rename = "2xx")]
    Any2xx,
    /// Exactly 200: any other status, 201 and 204 included, is a failure.
    #[serde(rename = "200")]
    Exactly200,
}

impl SuccessRule {
    pub fn accepts(self, status: u16) -> bool {
        match self {
            SuccessRule::Any2xx => (200..300).contains(&status),
            SuccessRule::Exactly200 => status == 200,
        }
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds enforced on user-supplied policies (see `validate`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MAX_RETRIES: usize = 50;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the 1st, 2nd, … failed attempt.
    pub schedule: Vec<Duration>,
    pub success: SuccessRule,
    /// Budget for one whole attempt: connect, send, headers and body.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential()
    }
}

impl RetryPolicy {
    /// The server default: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h and 10 h after each failure (8 attempts); success on any 2xx.
    pub fn exponential() -> Self {
        let secs = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        RetryPolicy {
            schedule: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            success: SuccessRule::Any2xx,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Three retries two minutes apart (4 attempts), success only on 200.
    pub fn fixed_two_minutes() -> Self {
        RetryPolicy {
            schedule: vec![Duration::from_secs(120); 3],
            success: SuccessRule::Exactly200,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How many attempts the schedule allows in total.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// The wait before the next attempt once `attempts_made` scheduled
    /// attempts have failed, or `None` when the schedule is exhausted.
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let idx = attempts_made.checked_sub(1)? as usize;
        self.schedule.get(idx).copied()
    }

    /// Check user-supplied bounds; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.schedule.len() > MAX_RETRIES {
            return Err(format!("schedule may have at most {MAX_RETRIES} entries"));
        }
        if self.schedule.iter().any(|d| *d > MAX_DELAY) {
            return Err("schedule entries may be at most 30 days (2592000 s)".into());
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err("timeout must be between 1 and 300 seconds".into());
        }
        Ok(())
    }
}

/// Parse delays written for people: `"5s, 5m, 30m, 2h"`; a bare number is
/// seconds.
pub fn parse_delays(text: &str) -> Result<Vec<Duration>, String> {
    text.split([',', ' ']).filter(|s| !s.trim().is_empty()).map(|item| parse_delay(item.trim())).collect()
}

fn parse_delay(item: &str) -> Result<Duration, String> {
    let split = item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len());
    let (number, unit) = item.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{item}' is not a delay like 30s, 5m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{item}' has an unknown unit (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// The inverse of [`parse_delays`], in the largest whole unit.
pub fn format_delays(delays: &[Duration]) -> String {
    let one = |d: &Duration| {
        let s = d.as_secs();
        match s {
            0 => "0s".to_owned(),
            _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            _ if s.is_multiple_of(60) => format!("{}m", s / 60),
            _ => format!("{s}s"),
        }
    };
    delays.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// The wire and storage form: whole seconds, as written in the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyJson {
    /// Seconds to wait after each failed attempt.
    #[serde(deserialize_with = "super::number::whole_list")]
    pub schedule: Vec<u64>,
    #[serde(default)]
    pub success: SuccessRule,
    /// Seconds one attempt may take.
    #[serde(default = "default_timeout_secs", deserialize_with = "super::number::whole")]
    pub timeout: u64,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT.as_secs()
}

impl From<&RetryPolicy> for RetryPolicyJson {
    fn from(p: &RetryPolicy) -> Self {
        RetryPolicyJson {
            schedule: p.schedule.iter().map(|d| d.as_secs()).collect(),
            success: p.success,
            timeout: p.timeout.as_secs(),
        }
    }
}

impl From<RetryPolicyJson> for RetryPolicy {
    fn from(j: RetryPolicyJson) -> Self {
        RetryPolicy {
            schedule: j
                .schedule
                .into_iter()
                .map(|s| Duration::from_secs(s.min(MAX_DELAY.as_secs() + 1)))
                .collect(),
            success: j.success,
            timeout: Duration::from_secs(j.timeout.min(MAX_TIMEOUT.as_secs() + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_exponential_with_eight_attempts() {
        let p = RetryPolicy::default();
        assert_eq!(p, RetryPolicy::exponential());
        assert_eq!(p.max_attempts(), 8);
        let total: u64 = p.schedule.iter().map(|d| d.as_secs()).sum();
        // 5 s + 5 min + 30 min + 2 h + 5 h + 10 h + 10 h
        assert_eq!(total, 5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000);
        assert!(p.success.accepts(201));
        assert_eq!(p.timeout, Duration::from_secs(30));
    }

    #[test]
    fn fixed_two_minutes_makes_four_attempts_and_accepts_only_200() {
        let p = RetryPolicy::fixed_two_minutes();
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.delay_after(1), Some(Duration::from_secs(120)));
        assert_eq!(p.delay_after(3), Some(Duration::from_secs(120)));
        assert_eq!(p.delay_after(4), None);
        assert!(p.success.accepts(200));
        assert!(!p.success.accepts(201));
    }

    #[test]
    fn delay_after_zero_attempts_is_none() {
        assert_eq!(RetryPolicy::default().delay_after(0), None);
        assert_eq!(RetryPolicy::default().delay_after(1), Some(Duration::from_secs(5)));
    }

    #[test]
    fn success_rules() {
        assert!(SuccessRule::Any2xx.accepts(200));
        assert!(SuccessRule::Any2xx.accepts(299));
        assert!(!SuccessRule::Any2xx.accepts(300));
        assert!(!SuccessRule::Any2xx.accepts(199));
        assert!(!SuccessRule::Any2xx.accepts(0));
        assert!(!SuccessRule::Exactly200.accepts(204));
    }

    #[test]
    fn json_form_round_trips_and_rejects_unknown_fields() {
        let j: RetryPolicyJson =
            serde_json::from_str(r#"{"schedule":[120,120,120],"success":"200"}"#).unwrap();
        let p = RetryPolicy::from(j.clone());
        assert_eq!(p, RetryPolicy::fixed_two_minutes());
        assert_eq!(RetryPolicyJson::from(&p), RetryPolicyJson { timeout: 30, ..j });
        assert!(serde_json::from_str::<RetryPolicyJson>(r#"{"schedule":[],"x":1}"#).is_err());
        assert!(serde_json::from_str::<RetryPolicyJson>(r#"{"schedule":[1],"success":"3xx"}"#).is_err());
    }

    #[test]
    fn human_delays_round_trip() {
        let p = RetryPolicy::exponential();
        let text = format_delays(&p.schedule);
        assert_eq!(text, "5s, 5m, 30m, 2h, 5h, 10h, 10h");
        assert_eq!(parse_delays(&text).unwrap(), p.schedule);
        assert_eq!(parse_delays("90, 1d").unwrap(), [Duration::from_secs(90), Duration::from_secs(86_400)]);
        assert!(parse_delays("").unwrap().is_empty());
        assert!(parse_delays("5 minutes").is_err());
        assert!(parse_delays("-5s").is_err());
    }

    #[test]
    fn validation_bounds() {
        let mut p = RetryPolicy::default();
        assert!(p.validate().is_ok());
        p.timeout = Duration::ZERO;
        assert!(p.validate().is_err());
        p.timeout = Duration::from_secs(301);
        assert!(p.validate().is_err());
        let p = RetryPolicy { schedule: vec![Duration::from_secs(1); 51], ..Default::default() };
        assert!(p.validate().is_err());
        let p = RetryPolicy { schedule: vec![MAX_DELAY + Duration::from_secs(1)], ..Default::default() };
        assert!(p.validate().is_err());
    }
}
