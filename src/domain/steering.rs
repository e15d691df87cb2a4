//! Receivers steering delivery through their answers.
//!
//! - `410 Gone`: the endpoint is gone; disable it.
//! - `webhook-delivery: abort-message`: stop retrying this message.
//! - `webhook-delivery: disable`: disable the endpoint.
//! - `Retry-After` on 429 or 503: no attempt to the endpoint before then
//!   (at most an hour; see `flow`), and this message not before its
//!   scheduled delay either (see `delivery::retry_delay`).

use std::time::{Duration, UNIX_EPOCH};

use super::time::Timestamp;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    pub abort_message: bool,
    pub disable_endpoint: bool,
    pub retry_after: Option<Duration>,
}

impl Steering {
    /// Read the steering out of a response. `status` is `None` when no
    /// response arrived; header values are as received.
    pub fn from_response(
        status: Option<u16>,
        retry_after: Option<&str>,
        directive: Option<&str>,
        now: Timestamp,
    ) -> Steering {
        let directive = directive.map(|d| d.trim().to_ascii_lowercase());
        Steering {
            abort_message: directive.as_deref() == Some("abort-message"),
            disable_endpoint: status == Some(410) || directive.as_deref() == Some("disable"),
            retry_after: match status {
                Some(429 | 503) => retry_after.and_then(|v| parse_retry_after(v, now)),
                _ => None,
            },
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(Timestamp::from_millis(at_ms).since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_445_412_480_000); // 2015-10-21T07:28:00Z

    #[test]
    fn gone_and_directives() {
        let s = Steering::from_response(Some(410), None, None, NOW);
        assert!(s.disable_endpoint && !s.abort_message);
        let s = Steering::from_response(Some(500), None, Some(" Abort-Message "), NOW);
        assert!(s.abort_message && !s.disable_endpoint);
        let s = Steering::from_response(Some(200), None, Some("disable"), NOW);
        assert!(s.disable_endpoint);
        assert_eq!(Steering::from_response(None, Some("5"), None, NOW), Steering::default());
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let s = Steering::from_response(Some(429), Some("120"), None, NOW);
        assert_eq!(s.retry_after, Some(Duration::from_secs(120)));
        let s = Steering::from_response(Some(503), Some("Wed, 21 Oct 2015 07:30:00 GMT"), None, NOW);
        assert_eq!(s.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(Steering::from_response(Some(500), Some("120"), None, NOW).retry_after, None);
        assert_eq!(Steering::from_response(Some(429), Some("soon"), None, NOW).retry_after, None);
        // A date in the past means "now".
        let past = Steering::from_response(Some(429), Some("Wed, 21 Oct 2015 07:00:00 GMT"), None, NOW);
        assert_eq!(past.retry_after, Some(Duration::ZERO));
    }
}
