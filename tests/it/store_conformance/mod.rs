//! The `Store` conformance suite: every implementation must pass all of it.
//! Each check gets a fresh, empty store from the backend's factory. The
//! checks live in one file per part of the `Store` trait; this file has the
//! shared fixtures and the macro that runs every check on every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline::domain::delivery::Outcome;
use hookline::domain::flow::Signal;
use hookline::domain::id;
use hookline::domain::model::{
    App, AppPatch, Attempt, DeliveryStatus, Endpoint, EndpointPatch, EventType, EventTypePatch, Message,
    Scope, Task, Trigger,
};
use hookline::domain::retry::RetryPolicy;
use hookline::domain::steering::Steering;
use hookline::domain::time::Timestamp;
use hookline::store::postgres::PgStore;
use hookline::store::sqlite::SqliteStore;
use hookline::store::{
    AppFilter, AttemptEffects, AttemptFilter, AttemptRecord, CreateMessage, Cursor, DeliveryFilter,
    DeliveryKey, EndpointDisabled, Lease, MessageFilter, Order, PageRequest, RequeueFilter, SharedStore,
    StoreError, StoreEvent, Sweep,
};

mod charts;
use crate::common::join_all as futures_join_all;

mod dispatch;
mod event_types;
mod flow;
mod messages;
mod ordering;
mod redelivery;
mod retention;
mod sealing;
mod tenants;

use self::charts::*;
use self::dispatch::*;
use self::event_types::*;
use self::flow::*;
use self::messages::*;
use self::ordering::*;
use self::redelivery::*;
use self::retention::*;
use self::tenants::*;

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn app(uid: Option<&str>) -> App {
    App {
        id: id::new_id(id::APP, T0),
        uid: uid.map(str::to_owned),
        name: "app".into(),
        metadata: [("k".to_string(), "v".to_string())].into(),
        throttle_rate: None,
        created_at: T0,
        updated_at: T0,
    }
}

fn endpoint(app_id: &str) -> Endpoint {
    Endpoint {
        id: id::new_id(id::ENDPOINT, T0),
        app_id: app_id.into(),
        uid: None,
        url: "https://example.com/hook".into(),
        description: String::new(),
        disabled: false,
        event_types: None,
        channels: None,
        metadata: Default::default(),
        headers: [("X-A".to_string(), "1".to_string())].into(),
        throttle_rate: None,
        max_in_flight: None,
        fifo: false,
        ordering_on_failure: Default::default(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        old_secrets: Vec::new(),
        retry_policy: Some(RetryPolicy::fixed_two_minutes()),
        failing_since: None,
        created_at: T0,
        updated_at: T0,
        disabled_at: None,
    }
}

fn message(event_type: &str, created_at: Timestamp) -> Message {
    Message {
        id: id::new_id(id::MESSAGE, created_at),
        app_id: String::new(),
        event_type: event_type.into(),
        event_id: None,
        channels: None,
        tags: None,
        payload: Some(Bytes::from_static(br#"{"a": 1}"#)),
        created_at,
        deliver_at: None,
        expires_at: Some(created_at.plus(Duration::from_secs(90 * 86_400))),
        ordering_key: None,
        trace: None,
    }
}

fn lease(until: Timestamp) -> Lease {
    Lease { owner: "node-a".into(), until }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn create(store: &SharedStore, app_ref: &str, m: Message, lease: Option<Lease>) -> Arc<Message> {
    store.create_message(request(app_ref, m, lease)).await.unwrap().message
}

fn request(app_ref: &str, message: Message, lease: Option<Lease>) -> CreateMessage {
    CreateMessage {
        app_ref: app_ref.into(),
        new_app: None,
        message,
        lease,
        only_endpoint: None,
        idempotency_key: None,
        busy_endpoints: vec![],
    }
}

fn attempt(m: &Message, ep: &Endpoint, trigger: Trigger, code: u16, at: Timestamp) -> Attempt {
    Attempt {
        id: id::new_id(id::ATTEMPT, at),
        msg_id: m.id.clone(),
        endpoint_id: ep.id.clone(),
        app_id: ep.app_id.clone(),
        url: ep.url.clone(),
        status: if code == 200 { DeliveryStatus::Success } else { DeliveryStatus::Fail },
        status_code: code,
        response: format!("body {code}"),
        duration_ms: 3,
        trigger,
        error: None,
        created_at: at,
    }
}

async fn record(
    store: &SharedStore,
    m: &Message,
    ep: &Endpoint,
    trigger: Trigger,
    code: u16,
    when: Timestamp,
) {
    let policy = ep.retry_policy.clone().unwrap_or_default();
    let outcome = Outcome::classify(&policy, Some(code));
    store.record_attempt(record_of(attempt(m, ep, trigger, code, when), outcome, policy)).await.unwrap();
}

fn record_of(attempt: Attempt, outcome: Outcome, policy: RetryPolicy) -> AttemptRecord {
    let (attempt_code, attempt_at) = (attempt.status_code, attempt.created_at);
    AttemptRecord {
        finished_at: attempt.created_at,
        attempt,
        outcome,
        policy,
        steering: Steering::default(),
        jitter: 0.0,
        auto_disable_after: None,
        signal: Signal::classify(outcome == Outcome::Delivered, Some(attempt_code), None, attempt_at),
        sending_rate: 0.0,
        paced: false,
        lease: None,
        awaited: false,
    }
}

/// One `#[tokio::test]` per check, for a backend given by a factory that
/// returns a fresh store and whatever keeps it alive.
macro_rules! conformance {
    ($backend:ident, $factory:path) => {
        mod $backend {
            conformance!(@each $factory; tokens, applications, pagination, endpoints, message_fan_out,
                claiming_and_leases, attempts_advance_deliveries, listings_filter, dashboard_queries,
                event_types_and_tasks, idempotency_keys, message_idempotency, concurrent_claims,
                requeue_and_replay, missed_while_disabled, recoverable_deliveries, message_without_deliveries, endpoint_health,
                content_erasure, settled_records_go_after_record_retention, record_retention_works_in_batches, notifications, lease_renewal,
                concurrent_attempts, throttles_pace_ingest_and_claims, a_retry_after_pauses_the_endpoint,
                congestion_backs_the_endpoint_off_and_successes_restore_it, a_manual_send_counts_against_the_bucket,
                one_key_goes_in_order_and_others_pass, fifo_endpoints_order_everything, a_failed_head_skips_or_blocks,
                replays_reenter_in_order_and_disabling_forgets_keys, chart_minutes, message_trace_context,
                ingest_follows_configuration_changes, full_lanes_are_not_leased_at_ingest,
                the_next_look_passes_over_full_lanes, messages_to_many_applications_at_once);
        }
    };
    (@each $factory:path; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $factory().await;
                super::$check(store).await;
            }
        )*
    };
}

pub async fn sqlite_store() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).unwrap());
    (store, dir)
}

conformance!(sqlite, super::sqlite_store);

pub async fn postgres_store() -> (SharedStore, ()) {
    let url = crate::pg::fresh_database().await;
    let store: SharedStore = Arc::new(PgStore::connect(&url).await.unwrap());
    (store, ())
}

conformance!(postgres, super::postgres_store);
