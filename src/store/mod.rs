//! Persistence: the [`Store`] trait and its implementations.
//!
//! Everything above this module talks to `dyn Store` only. The trait is
//! shaped for several dispatcher nodes sharing one database: due deliveries
//! are *claimed* with a lease (owner + expiry folded into `due_at`), and
//! state transitions are applied inside the store's transaction against the
//! stored state, never as blind writes of a state computed elsewhere.
//!
//! Implementations own their schema and migrations and must pass the shared
//! conformance suite in `tests/store_conformance.rs`.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::delivery::{DeliveryState, Outcome};
use crate::domain::model::{
    App, AppPatch, Attempt, Delivery, DeliveryStatus, Endpoint, EndpointPatch, Message, Scope,
};
use crate::domain::retry::RetryPolicy;
use crate::domain::time::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (uid, eventId); the text says which.
    #[error("{0}")]
    Conflict(String),
    #[error("storage failure: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Descending,
    Ascending,
}

/// Where a page starts, relative to the listing's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Items after this id (Svix `iterator`).
    After(String),
    /// Items before this id (Svix `-iterator`, i.e. `prevIterator`).
    Before(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub order: Order,
}

impl PageRequest {
    pub fn first(limit: usize, order: Order) -> Self {
        PageRequest { limit, cursor: None, order }
    }
}

/// One page of a listing, in the requested order.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items exist beyond this page in the direction of travel.
    pub more: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub msg_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// 0 (no response), 100, 200, 300, 400 or 500.
    pub status_code_class: Option<u16>,
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
}

/// Filter for an endpoint's messages (its deliveries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
}

/// A claim on deliveries: nobody else may start them before `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub msg_id: String,
    pub endpoint_id: String,
}

/// A message to insert. `message.app_id` is filled in by the store once
/// `app_ref` (an id or uid) is resolved.
#[derive(Clone, Debug)]
pub struct CreateMessage {
    pub app_ref: String,
    /// Inserted if `app_ref` does not resolve (MessageIn's `application`).
    pub new_app: Option<App>,
    pub message: Message,
    /// Lease the new deliveries to this owner when they are due at once, so
    /// the creating node can send them without a round trip to the store.
    pub lease: Option<Lease>,
}

#[derive(Clone, Debug)]
pub struct CreatedMessage {
    pub message: Arc<Message>,
    /// The endpoints a delivery was created for.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Whether those deliveries were leased to `CreateMessage::lease`.
    pub leased: bool,
}

/// Everything a dispatcher needs to make one attempt.
#[derive(Clone, Debug)]
pub struct DeliveryTask {
    pub message: Arc<Message>,
    pub endpoint: Arc<Endpoint>,
}

impl DeliveryTask {
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey { msg_id: self.message.id.clone(), endpoint_id: self.endpoint.id.clone() }
    }
}

/// An attempt to record, with what the store needs to advance the delivery.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub attempt: Attempt,
    pub outcome: Outcome,
    pub policy: RetryPolicy,
    /// When the attempt ended (by the injected clock); retry delays count
    /// from here.
    pub finished_at: Timestamp,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- API tokens (stored as SHA-256 hashes) ---
    async fn insert_token(&self, hash: &str, scope: &Scope, now: Timestamp) -> StoreResult<()>;
    async fn find_token(&self, hash: &str) -> StoreResult<Option<Scope>>;
    async fn has_admin_token(&self) -> StoreResult<bool>;

    // --- applications ---
    /// `Conflict` if the uid is taken.
    async fn insert_app(&self, app: &App) -> StoreResult<()>;
    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>>;
    async fn list_apps(&self, page: &PageRequest) -> StoreResult<Page<App>>;
    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App>;
    /// Removes the application with its endpoints, messages and attempts.
    async fn delete_app(&self, id: &str) -> StoreResult<()>;

    // --- endpoints (`app_id` is a resolved id) ---
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

    // --- messages ---
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

    // --- deliveries and attempts ---
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
    async fn get_attempt(&self, app_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>>;

    // --- dispatch ---
    /// Lease up to `limit` deliveries due at `now` (skipping the given
    /// endpoints, whose queues are full) and return what is needed to send them.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>>;
    /// When the earliest delivery becomes claimable, if any.
    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>>;
    /// Give leased deliveries back, claimable from `due`.
    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()>;
    /// Release every lease held by `owner`, or by anyone when `None` (a
    /// single-node store at start-up: whoever held them is gone).
    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64>;
    /// Record an attempt and advance its delivery (see
    /// [`crate::domain::delivery::after_attempt`]) in one transaction.
    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<DeliveryState>;
}

pub type SharedStore = Arc<dyn Store>;
