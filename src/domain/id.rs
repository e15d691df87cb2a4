//! Public identifiers: `app_…`, `ep_…`, `msg_…`, `atmpt_…`.
//!
//! The part after the prefix is a 27-character base62 KSUID: 4 bytes of
//! seconds since the KSUID epoch followed by 16 bytes whose top 10 bits are
//! the millisecond within that second. Ids therefore sort by creation time,
//! which is what cursor pagination (`iterator`) relies on. Within one process
//! ids are also strictly increasing, even when the (possibly frozen, in
//! tests) clock does not move: a new id that would not sort after the last
//! one is bumped past it.

use std::sync::Mutex;

use super::time::Timestamp;

pub const APP: &str = "app";
pub const ENDPOINT: &str = "ep";
pub const MESSAGE: &str = "msg";
pub const ATTEMPT: &str = "atmpt";
pub const TASK: &str = "qtask";

const KSUID_EPOCH_SECS: i64 = 1_400_000_000;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ENCODED_LEN: usize = 27;

/// The last (seconds, payload) handed out, for monotonicity.
static LAST: Mutex<(u32, u128)> = Mutex::new((0, 0));

/// A new id `"{prefix}_{ksuid}"` for an object created at `now`.
pub fn new_id(prefix: &str, now: Timestamp) -> String {
    let (secs, payload) = ksuid(now, rand::random::<u128>());
    let (secs, payload) = next_after_last(&mut LAST.lock().unwrap_or_else(|e| e.into_inner()), secs, payload);
    format_id(prefix, secs, payload)
}

/// Ids from a caller's own random bits and monotonic sequence, apart from
/// the process-wide one: the deterministic simulation (`crate::sim`) makes
/// the same ids for the same seed, however many runs came before.
#[derive(Debug, Default)]
pub struct Sequence {
    last: (u32, u128),
}

impl Sequence {
    /// Like [`new_id`], with `random` in place of fresh random bits.
    pub fn next_id(&mut self, prefix: &str, now: Timestamp, random: u128) -> String {
        let (secs, payload) = ksuid(now, random);
        let (secs, payload) = next_after_last(&mut self.last, secs, payload);
        format_id(prefix, secs, payload)
    }
}

/// KSUID seconds and payload for `now`: the millisecond, then random bits.
fn ksuid(now: Timestamp, random: u128) -> (u32, u128) {
    let secs = (now.as_secs() - KSUID_EPOCH_SECS).clamp(0, u32::MAX as i64) as u32;
    let millis = now.as_millis().rem_euclid(1000) as u128;
    (secs, (millis << 118) | (random >> 10))
}

fn format_id(prefix: &str, secs: u32, payload: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    out.push_str(&encode(secs, payload));
    out
}

fn next_after_last(last: &mut (u32, u128), secs: u32, payload: u128) -> (u32, u128) {
    let next = if (secs, payload) > *last {
        (secs, payload)
    } else if last.1 == u128::MAX {
        (last.0.saturating_add(1), 0)
    } else {
        (last.0, last.1 + 1)
    };
    *last = next;
    next
}

/// Base62 of the 160-bit big-endian number `secs || payload`, zero-padded.
fn encode(secs: u32, payload: u128) -> String {
    // Five 32-bit limbs, most significant first; repeated division by 62.
    let mut limbs =
        [secs, (payload >> 96) as u32, (payload >> 64) as u32, (payload >> 32) as u32, payload as u32];
    let mut digits = [b'0'; ENCODED_LEN];
    for slot in digits.iter_mut().rev() {
        let mut rem: u64 = 0;
        for limb in limbs.iter_mut() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / 62) as u32;
            rem = cur % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    String::from_utf8(digits.to_vec()).expect("alphabet is ASCII")
}

/// Does `s` look like an id of the given kind (as opposed to a `uid`)?
pub fn has_prefix(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 1 + ENCODED_LEN && s.starts_with(prefix) && s.as_bytes()[prefix.len()] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_fixed_length() {
        let id = new_id(MESSAGE, Timestamp::from_millis(1_700_000_000_000));
        assert!(id.starts_with("msg_"));
        assert_eq!(id.len(), 4 + 27);
        assert!(has_prefix(&id, MESSAGE));
        assert!(!has_prefix("msg_short", MESSAGE));
        assert!(!has_prefix(&id, APP));
    }

    #[test]
    fn ids_sort_by_time_and_are_strictly_increasing_on_a_frozen_clock() {
        let frozen = Timestamp::from_millis(1_700_000_000_000);
        let ids: Vec<String> = (0..1000).map(|_| new_id(MESSAGE, frozen)).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        let later = new_id(MESSAGE, frozen.plus(std::time::Duration::from_secs(1)));
        assert!(ids.last().unwrap() < &later);
    }

    #[test]
    fn a_sequence_makes_the_same_ids_from_the_same_draws_whatever_came_before() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        let make = || {
            let mut seq = Sequence::default();
            [seq.next_id(ATTEMPT, t, 42), seq.next_id(ATTEMPT, t, 7), seq.next_id(ATTEMPT, t, 42)]
        };
        let first = make();
        let _ = new_id(ATTEMPT, t.plus(std::time::Duration::from_secs(3600)));
        assert_eq!(first, make(), "independent of the process-wide sequence");
        assert!(first[0] < first[1] && first[1] < first[2], "strictly increasing: {first:?}");
        assert!(has_prefix(&first[0], ATTEMPT));
        assert_ne!(Sequence::default().next_id(ATTEMPT, t, 43 << 10), first[0]);
    }

    #[test]
    fn encoding_is_zero_padded_and_ordered() {
        assert_eq!(encode(0, 0), "0".repeat(27));
        assert!(encode(0, 1) < encode(0, 2));
        assert!(encode(0, u128::MAX) < encode(1, 0));
        // The largest 160-bit value fits in 27 base62 digits.
        assert_eq!(encode(u32::MAX, u128::MAX), "aWgEPTl1tmebfsQzFP4bxwgy80V");
    }
}
