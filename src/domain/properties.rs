//! Property tests (proptest) of the domain's parsers, validators,
//! signatures and delivery state machine: hostile input never panics, and
//! what is accepted is what the rest of the system can use.

use std::time::Duration;

use proptest::prelude::*;

use super::delivery::{AttemptResult, DeliveryState, Outcome, after_attempt};
use super::model::{DeliveryStatus, Headers, Trigger};
use super::retry::{RetryPolicy, SuccessRule, parse_delays};
use super::signing::{self, SecretKind};
use super::steering::Steering;
use super::time::Timestamp;
use super::validate;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Names are accepted exactly when they match `^[a-zA-Z0-9\-_.]{1,max}$`.
    #[test]
    fn names_follow_their_pattern(s in "\\PC{0,40}", max in 1usize..32) {
        let expected = !s.is_empty() && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        prop_assert_eq!(validate::name(&s, max).is_ok(), expected);
    }

    /// Accepted custom headers always become a valid HTTP header, within
    /// the limits: the sender never meets one it cannot send.
    #[test]
    fn accepted_headers_can_be_sent(
        pairs in proptest::collection::btree_map("\\PC{0,24}", "\\PC{0,64}", 0..60)
    ) {
        let headers: Headers = pairs;
        if validate::custom_headers(&headers).is_ok() {
            prop_assert!(headers.len() <= validate::MAX_HEADERS);
            for (k, v) in &headers {
                prop_assert!(http::HeaderName::try_from(k.as_str()).is_ok(), "{k:?}");
                prop_assert!(http::HeaderValue::try_from(v.as_str()).is_ok(), "{v:?}");
                prop_assert!(!validate::RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()));
            }
        }
    }

    /// Endpoint URLs: any text is judged without panicking; what passes is
    /// http(s) with a host.
    #[test]
    fn endpoint_urls_never_panic(s in "\\PC{0,80}") {
        if validate::endpoint_url(&s).is_ok() {
            let url = url::Url::parse(&s).unwrap();
            prop_assert!(matches!(url.scheme(), "http" | "https") && url.host().is_some());
        }
    }

    /// Delays typed by people: parsing never panics.
    #[test]
    fn delay_text_never_panics(s in "\\PC{0,40}") {
        let _ = parse_delays(&s);
    }

    /// Any secret the API would take signs, and its signature verifies with
    /// the key receivers get; a changed body or id does not.
    #[test]
    fn signatures_verify_and_bind_the_content(
        key in proptest::collection::vec(any::<u8>(), 24..=64),
        ed25519 in any::<bool>(),
        id in "[a-z0-9_]{1,30}",
        ts in 0i64..4_000_000_000,
        body in bytes(),
        flip in any::<prop::sample::Index>(),
    ) {
        use base64::Engine as _;
        let secret = if ed25519 {
            signing::generate_secret(SecretKind::Ed25519)
        } else {
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key))
        };
        let secret = signing::normalize_secret(&secret).unwrap();
        let header = signing::signature_header([secret.as_str()], &id, ts, &body).unwrap();
        let public = signing::verification_key(&secret).unwrap();
        prop_assert!(signing::verify(&public, &id, ts, &body, &header));
        let other_id = format!("{id}x");
        prop_assert!(!signing::verify(&public, &other_id, ts, &body, &header));
        prop_assert!(!signing::verify(&public, &id, ts + 1, &body, &header));
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1;
            prop_assert!(!signing::verify(&public, &id, ts, &changed, &header));
        }
    }

    /// Secrets and signature headers from anywhere: parsed and checked
    /// without panicking.
    #[test]
    fn hostile_secrets_and_headers_never_panic(secret in "\\PC{0,100}", header in "\\PC{0,200}", body in bytes()) {
        let _ = signing::normalize_secret(&secret);
        let _ = signing::verification_key(&secret);
        let _ = signing::verify(&secret, "msg_1", 1, &body, &header);
    }

    /// The state machine, over any run of attempts: scheduled attempts never
    /// exceed the schedule, a late scheduled failure never changes a settled
    /// delivery nor revives it (only a manual attempt restates it), a
    /// pending one is due no earlier than its last attempt, a success
    /// settles, and manual attempts never use up the schedule.
    #[test]
    fn delivery_states_stay_coherent(
        schedule in proptest::collection::vec(0u64..100_000, 0..8),
        steps in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 0u64..3600), 1..30),
    ) {
        let policy = RetryPolicy {
            schedule: schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
            success: SuccessRule::Any2xx,
            timeout: Duration::from_secs(30),
        };
        let mut now = Timestamp::from_millis(1_000_000);
        let mut state = DeliveryState::new(now);
        for (manual, delivered, active, abort, wait) in steps {
            now = now.plus(Duration::from_secs(wait));
            let trigger = if manual { Trigger::Manual } else { Trigger::Scheduled };
            let outcome = if delivered { Outcome::Delivered } else { Outcome::Failed };
            let steering = Steering { abort_message: abort, ..Steering::default() };
            let r = AttemptResult {
                trigger, outcome, policy: &policy, endpoint_active: active, finished_at: now, steering, jitter: 0.0,
            };
            let next = after_attempt(&state, &r);
            if manual {
                prop_assert_eq!(next.attempts, state.attempts, "a manual attempt used the schedule");
            } else {
                prop_assert_eq!(next.attempts, state.attempts + 1);
            }
            prop_assert!(next.attempts as usize <= schedule.len() + 1 || !state.is_pending());
            if !manual && !state.is_pending() && !delivered {
                prop_assert_eq!(next.status, state.status, "a late scheduled failure changed a settled delivery");
            }
            if !state.is_pending() && next.is_pending() {
                prop_assert!(false, "a settled delivery became pending again: {state:?} -> {next:?}");
            }
            if let Some(at) = next.next_attempt.filter(|_| next.status == DeliveryStatus::Pending) {
                prop_assert!(at >= now || manual, "due before its last attempt");
            }
            if delivered {
                prop_assert_eq!(next.status, DeliveryStatus::Success);
                prop_assert_eq!(next.next_attempt, None);
            }
            state = next;
        }
    }
}

proptest! {
    /// Duration flags: any input gives a value or an error, never a panic;
    /// every duration in range reads back from its written form.
    #[test]
    fn durations_parse_or_refuse(s in "\\PC{0,24}") {
        let _ = super::duration::parse(&s);
    }

    #[test]
    fn durations_read_back(secs in 1u64..=100 * 365 * 86_400) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(super::duration::parse(&super::duration::format(d)), Ok(d));
    }
}
