//! Persistence: the [`Store`] traits and their two implementations.
//!
//! Everything above this module talks to `dyn Store` (or to the one part of
//! it it needs, like the dispatcher's [`DispatchStore`]) only. `Store` is the
//! sum of eight parts, one per concern, and each backend implements each
//! part in the file of that name (`sqlite/tenants.rs`, `postgres/tenants.rs`,
//! …):
//!
//! | part | what |
//! |---|---|
//! | [`TenantStore`] | API tokens, applications, endpoints |
//! | [`EventTypeStore`] | the event type catalogue |
//! | [`TaskStore`] | background task records, idempotency keys |
//! | [`MessageStore`] | ingest, messages, deliveries and attempts as read by the API |
//! | [`RedeliveryStore`] | sending again (recover, replays) and the counts that decide it |
//! | [`RetentionStore`] | erasing payloads and response bodies; deleting old settled records |
//! | [`DispatchStore`] | claims, leases and attempt records: the dispatcher's side |
//! | [`FlowStore`] | an endpoint's flow (throttle, pause, backoff) as shown, manual charges |
//! | [`OrderingStore`] | ordering keys that are blocked, and skipping their head |
//! | [`ChartStore`] | attempt counts per endpoint and minute, for the dashboard's charts |
//!
//! The traits are shaped for several dispatcher nodes sharing one
//! database: due deliveries are *claimed* with a lease (owner + expiry
//! folded into `due_at`), and state transitions are applied inside the
//! store's transaction against the stored state, never as blind writes of a
//! state computed elsewhere.
//!
//! Implementations own their schema and migrations and must pass the shared
//! conformance suite in `tests/it/store_conformance.rs`. Filtered listings
//! are described once, in [`listing`], and rendered by each backend.

pub mod listing;
pub mod postgres;
pub mod sealing;
pub mod sqlite;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::types::*;
use crate::domain::attempt_stats::{Series, Window};
use crate::domain::model::{
    App, AppPatch, AppSummary, Attempt, Delivery, DeliveryCounts, Endpoint, EndpointPatch, EventType,
    EventTypePatch, Message, Scope, Task,
};
use crate::domain::time::Timestamp;

/// API tokens (stored as SHA-256 hashes), applications and endpoints.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// The token's scope, unless it is unknown or expired at `now`.
    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>>;
    async fn delete_token(&self, hash: &str) -> StoreResult<bool>;
    /// Make every token scoped to the application expire by `at` (those
    /// expiring sooner keep their expiry); returns how many were cut short.
    async fn expire_app_tokens(&self, app_id: &str, at: Timestamp) -> StoreResult<u64>;
    async fn has_admin_token(&self) -> StoreResult<bool>;

    /// `Conflict` if the uid is taken.
    async fn insert_app(&self, app: &App) -> StoreResult<()>;
    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>>;
    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>>;
    /// For each application: endpoints, messages (counted up to `cap`, so
    /// a busy application costs no more than `cap` index entries), last
    /// message time.
    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>>;
    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App>;
    /// Removes the application with its endpoints, messages and attempts.
    async fn delete_app(&self, id: &str) -> StoreResult<()>;

    // Endpoints: `app_id` is a resolved id.
    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()>;
    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>>;
    /// Disabling an endpoint settles its pending deliveries as failed, so no
    /// further attempt is made, including already scheduled ones.
    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint>;
    /// Removes the endpoint and its pending deliveries; attempts are kept.
    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()>;
}

/// The event type catalogue.
#[async_trait]
pub trait EventTypeStore: Send + Sync {
    /// `Conflict` if it exists and is not archived (an archived one is
    /// replaced and brought back).
    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()>;
    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>>;
    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>>;
    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType>;
    async fn delete_event_type(&self, name: &str) -> StoreResult<()>;
}

/// Background task records, and idempotency keys (already scoped to the
/// caller and path).
#[async_trait]
pub trait TaskStore: Send + Sync {
    async fn insert_task(&self, task: &Task) -> StoreResult<()>;
    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>>;
    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>>;

    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin>;
    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    async fn idempotency_abort(&self, key: &str) -> StoreResult<()>;
}

/// Ingest, and messages, deliveries and attempts as the API reads them.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores the message and one delivery per matching endpoint, durably,
    /// in one transaction. `Conflict` on a repeated `eventId`.
    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage>;
    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>>;
    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>>;

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>>;
    /// A message's deliveries with their endpoints, by endpoint id.
    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>>;
    /// An endpoint's deliveries with their messages, by message id.
    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Message)>>;
    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>>;
    /// The attempt, if it belongs to that application and message.
    async fn get_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str)
    -> StoreResult<Option<Attempt>>;
}

/// Sending again (recover, bulk replay, replay-missing), and the counts by
/// status that tell an operator what there is to send again.
#[async_trait]
pub trait RedeliveryStore: Send + Sync {
    /// Make matching deliveries of the endpoint pending again, due `now`,
    /// with a fresh schedule; returns how many (only counts on `dry_run`).
    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64>;
    /// The endpoint's messages in [since, until) whose latest attempt
    /// failed (settled or waiting for a retry), a page at a time by message
    /// id: what a recover sends again ([`listing::Listing::recoverable`]).
    async fn recoverable(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Timestamp,
        until: Option<Timestamp>,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>>;
    /// Create deliveries, due `now`, for the application's messages in
    /// [since, until) that the endpoint wants but never got.
    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// `replay_missing`'s dry run: how many deliveries it would create now.
    /// With a `cap`, only the first `cap` messages without a delivery are
    /// looked at (bounded work, for a page); the flag says whether more
    /// exist beyond them.
    async fn count_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        cap: Option<usize>,
    ) -> StoreResult<(u64, bool)>;

    /// Each endpoint's latest `recent` deliveries (by message time),
    /// counted by status: recent health at the cost of a bounded index scan.
    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>>;
    /// How many of the application's messages match the filter.
    async fn count_messages(&self, app_id: &str, filter: &MessageFilter) -> StoreResult<u64>;
    /// How many of the application's attempts match the filter.
    async fn count_attempts(&self, app_id: &str, filter: &AttemptFilter) -> StoreResult<u64>;
    /// Each message's deliveries, counted by status.
    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>>;
    /// An endpoint's deliveries by status, for messages created in the range.
    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts>;
}

/// Erasing content: payloads and response bodies, on demand and by age.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// The `limit` retention passes to [`Self::expunge_expired`] and
    /// [`Self::delete_settled`]: how much one call may do, so that a
    /// catch-up of many calls never keeps the store's other writers waiting
    /// long.
    fn retention_batch(&self) -> usize {
        500
    }
    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()>;
    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()>;
    /// Every payload and response body of the application; returns how many
    /// messages were affected.
    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64>;
    /// The payloads of these messages of the application and the response
    /// bodies of their attempts (erasure by subject tag). Returns (payloads,
    /// response bodies) erased; ids that are not the application's are
    /// ignored.
    async fn expunge_messages(&self, app_id: &str, msg_ids: &[String]) -> StoreResult<(u64, u64)>;
    /// Retention: payloads whose `expires_at` has passed, response bodies of
    /// attempts made before `attempts_before` (at most `limit` of each per
    /// call, so one call never holds the writer long), idempotency records
    /// past their expiry. Returns (payloads, response bodies) erased.
    async fn expunge_expired(
        &self,
        now: Timestamp,
        attempts_before: Timestamp,
        limit: usize,
    ) -> StoreResult<(u64, u64)>;
    /// Record retention: of the next `limit` messages created before
    /// `before` (oldest first, continuing after `after`, a [`Sweep::next`]),
    /// delete those whose every delivery is settled (succeeded, or failed
    /// with no retry left; none pending, leased, parked or held) and that
    /// no ordering key waits on, with their deliveries and attempts. One
    /// transaction per call, using the stores' key order, never a scan.
    async fn delete_settled(
        &self,
        before: Timestamp,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Sweep>;
}

/// The dispatcher's side: claiming due deliveries under a lease, giving
/// them back, recording attempts.
#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// Several processes may share this store (PostgreSQL): leases found at
    /// start-up may belong to live nodes and must be left to expire.
    fn shared(&self) -> bool {
        false
    }

    /// Changes made by the other processes sharing the store (due work,
    /// configuration). `None` for a store this process has to itself.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }

    /// Lease up to `limit` deliveries due at `now` (skipping the given
    /// endpoints, whose queues are full) and return what is needed to send them.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>>;
    /// When the scheduler should claim next, if ever: the earliest time a
    /// delivery of an endpoint not skipped becomes claimable. Asked right
    /// after a claim at `now` that took all it could, so when endpoints are
    /// skipped a store may leave out deliveries already due at `now` (the
    /// claim just looked; whatever became due since comes with a
    /// [`StoreEvent::Due`]) rather than walk past the skipped endpoints'
    /// backlog to find them.
    async fn next_due(&self, now: Timestamp, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>>;
    /// Give leased deliveries back, claimable from `due`.
    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()>;
    /// Release every lease held by `owner`, or by anyone when `None` (a
    /// single-node store at start-up: whoever held them is gone).
    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64>;
    /// Extend `owner`'s leases on these deliveries to `until`: a live node
    /// keeps what it is working on, a dead one stops renewing and loses it
    /// at expiry. Only the given keys: a lease the node lost track of (its
    /// attempt could not be recorded, its release failed) must still lapse.
    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64>;
    /// Record an attempt and advance its delivery (see
    /// [`crate::domain::delivery::after_attempt`]) and its endpoint's health
    /// (steering, auto-disable) in one transaction.
    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects>;
    /// Deliveries waiting for an attempt (a gauge for metrics).
    async fn count_pending(&self) -> StoreResult<u64>;
}

/// Flow control as operators see and steer it (the rules applied on the
/// claim and record paths live with those, in `DispatchStore`).
#[async_trait]
pub trait FlowStore: Send + Sync {
    /// The endpoint's flow state and how many deliveries wait on it.
    async fn endpoint_flow(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<FlowView>;
    /// Count one attempt that starts whatever the bucket says (a manual
    /// resend) against the endpoint's bucket.
    async fn charge(&self, endpoint_id: &str, now: Timestamp) -> StoreResult<()>;
    /// Totals over every endpoint (`/metrics`): counted on the flow rows and
    /// the gates' partial indexes, never a scan of the deliveries.
    async fn flow_totals(&self, now: Timestamp) -> StoreResult<FlowTotals>;
}

/// Ordered delivery as operators see and steer it.
#[async_trait]
pub trait OrderingStore: Send + Sync {
    /// The endpoint's ordering keys whose head failed for good while the
    /// endpoint blocks on failure, by key.
    async fn blocked_keys(&self, endpoint_id: &str, page: &PageRequest) -> StoreResult<Page<BlockedKey>>;
    /// Let a blocked key move on past its failed head (which stays failed);
    /// `NotFound` unless the key is blocked. Returns the new head's delivery,
    /// if one waited, due at `now`.
    async fn skip_blocked(
        &self,
        endpoint_id: &str,
        key: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DeliveryKey>>;
}

/// Attempt counts per endpoint and minute (see
/// [`crate::domain::attempt_stats`]), added by `record_attempt` in the
/// attempt's own transaction: what the dashboard's charts read, at the cost
/// of an index range, never a scan of the attempts.
#[async_trait]
pub trait ChartStore: Send + Sync {
    /// Each endpoint's attempts in the window ending at `now`, by interval;
    /// an endpoint without any gets an empty series.
    async fn attempt_series(
        &self,
        endpoint_ids: &[String],
        window: Window,
        now: Timestamp,
    ) -> StoreResult<HashMap<String, Series>>;
    /// Forget the minutes before `before`; returns how many rows went.
    async fn prune_attempt_stats(&self, before: Timestamp) -> StoreResult<u64>;
}

/// The whole store: every part. Implemented for anything that implements
/// them all.
pub trait Store:
    TenantStore
    + EventTypeStore
    + TaskStore
    + MessageStore
    + RedeliveryStore
    + RetentionStore
    + DispatchStore
    + FlowStore
    + OrderingStore
    + ChartStore
    + 'static
{
}

impl<T> Store for T where
    T: TenantStore
        + EventTypeStore
        + TaskStore
        + MessageStore
        + RedeliveryStore
        + RetentionStore
        + DispatchStore
        + FlowStore
        + OrderingStore
        + ChartStore
        + 'static
{
}

pub type SharedStore = Arc<dyn Store>;
