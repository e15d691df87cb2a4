//! Ordered delivery: messages of one application with the same
//! `orderingKey` reach each endpoint in the order the API acknowledged them;
//! a FIFO endpoint orders all its messages as if they had one key.
//!
//! Per endpoint and key, one delivery at a time is the *head*: the only one
//! that may be attempted. The others are *held* behind it in their
//! acceptance order (a sequence number the store gives each at ingest).
//! When the head settles (see [`moves_on`]) the next one becomes the head.
//! Deliveries without a key are never held.
//!
//! Pure rules; the stores keep the per-key state and apply them in the
//! transactions that ingest messages and record attempts.

/// Longest `orderingKey`, in characters.
pub const MAX_KEY_CHARS: usize = 256;

/// The key a FIFO endpoint orders every message by (user keys are never
/// empty, so this one cannot collide with them).
pub const FIFO_KEY: &str = "";

/// What happens to a key whose head has failed for good.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnFailure {
    /// The key moves on; the failed message stays failed (and can be sent
    /// again by hand, out of order).
    #[default]
    Skip,
    /// The key waits until the head succeeds (a manual retry, a recover) or
    /// someone skips it.
    Block,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Skip => "skip",
            OnFailure::Block => "block",
        }
    }

    pub fn parse(s: &str) -> Option<OnFailure> {
        match s {
            "skip" => Some(OnFailure::Skip),
            "block" => Some(OnFailure::Block),
            _ => None,
        }
    }
}

/// The key a delivery of a message with `message_key` is ordered by at an
/// endpoint (`fifo`: every message in one order), if any.
pub fn key_for(message_key: Option<&str>, fifo: bool) -> Option<&str> {
    if fifo { Some(FIFO_KEY) } else { message_key }
}

/// An `orderingKey` as the API accepts it: 1 to 256 printable characters
/// (no control characters).
pub fn validate_key(key: &str) -> Result<(), String> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(format!("must be 1 to {MAX_KEY_CHARS} characters long"));
    }
    if key.chars().any(char::is_control) {
        return Err("must be printable characters only (no control characters)".into());
    }
    Ok(())
}

/// Whether a head that has settled (`succeeded`, or failed for good) lets
/// its key move on to the next message: after a success always; after a
/// failure unless the endpoint says to block.
pub fn moves_on(succeeded: bool, on_failure: OnFailure) -> bool {
    succeeded || on_failure == OnFailure::Skip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_endpoints_order_everything_under_one_key() {
        assert_eq!(key_for(Some("order-1"), false), Some("order-1"));
        assert_eq!(key_for(None, false), None);
        assert_eq!(key_for(Some("order-1"), true), Some(FIFO_KEY));
        assert_eq!(key_for(None, true), Some(FIFO_KEY));
        assert!(validate_key(FIFO_KEY).is_err(), "no user key can be the FIFO key");
    }

    #[test]
    fn keys_are_one_to_256_printable_characters() {
        assert!(validate_key("order_123").is_ok());
        assert!(validate_key("ordre-é-№-🦀 with spaces").is_ok());
        assert!(validate_key(&"x".repeat(256)).is_ok());
        assert!(validate_key(&"é".repeat(256)).is_ok(), "counted in characters, not bytes");
        assert!(validate_key(&"x".repeat(257)).is_err());
        assert!(validate_key("").is_err());
        for bad in ["a\nb", "a\u{0}b", "tab\there", "\u{7f}", "\u{1b}[0m"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_moves_on_after_success_and_after_failure_unless_blocking() {
        assert!(moves_on(true, OnFailure::Block));
        assert!(moves_on(false, OnFailure::Skip));
        assert!(!moves_on(false, OnFailure::Block));
    }

    #[test]
    fn policies_round_trip_their_names() {
        for p in [OnFailure::Skip, OnFailure::Block] {
            assert_eq!(OnFailure::parse(p.as_str()), Some(p));
        }
        assert_eq!(OnFailure::parse("Skip"), None);
    }
}
