//! The request and response types of the [`Store`](super::Store) traits:
//! errors, pages and cursors, listing filters, what ingest and dispatch hand
//! over and get back.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::delivery::{AttemptResult, DeliveryState, Outcome};
use crate::domain::flow::{FlowState, Signal};
use crate::domain::health;
use crate::domain::model::{App, Attempt, DeliveryStatus, Endpoint, Message};
use crate::domain::retry::RetryPolicy;
use crate::domain::steering::Steering;
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

/// How a listing reads one page by id: a bound on the id (operator and
/// id), the order, and whether it reads backwards. Going backwards (a
/// `prevIterator`) reads in the opposite order and flips the result, so the
/// page is always in display order.
pub struct PageScan<'a> {
    pub bound: Option<(&'static str, &'a str)>,
    pub ascending: bool,
    pub backwards: bool,
}

impl PageRequest {
    pub fn scan(&self) -> PageScan<'_> {
        use Order::*;
        let (bound, ascending, backwards) = match (&self.cursor, self.order) {
            (None, o) => (None, o == Ascending, false),
            (Some(Cursor::After(id)), Descending) => (Some(("<", id.as_str())), false, false),
            (Some(Cursor::After(id)), Ascending) => (Some((">", id.as_str())), true, false),
            (Some(Cursor::Before(id)), Descending) => (Some((">", id.as_str())), true, true),
            (Some(Cursor::Before(id)), Ascending) => (Some(("<", id.as_str())), false, true),
        };
        PageScan { bound, ascending, backwards }
    }

    /// Rows to read: one more than the page, to know whether more follow.
    pub fn rows_to_read(&self) -> usize {
        self.limit + 1
    }
}

impl<T> Page<T> {
    /// The page from up to [`PageRequest::rows_to_read`] rows read as
    /// [`PageRequest::scan`] said.
    pub fn from_rows(mut items: Vec<T>, page: &PageRequest) -> Page<T> {
        let more = items.len() > page.limit;
        items.truncate(page.limit);
        if page.scan().backwards {
            items.reverse();
        }
        Page { items, more }
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
pub struct AppFilter {
    /// Part of the name or uid, or the whole id.
    pub search: Option<String>,
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
    /// Deliver to this endpoint only (send-example), ignoring filters.
    /// An id that names no endpoint of the application (the empty string)
    /// stores the message with no delivery at all (imported history).
    pub only_endpoint: Option<String>,
    /// The client's `idempotency-key`: a message already stored with it in
    /// the last 24 hours is returned instead of creating another.
    pub idempotency_key: Option<String>,
    /// Endpoints whose lane on the creating node is full: their deliveries
    /// are not leased but stored due now, for a claim once there is room
    /// (leasing them would only mean handing them back at once).
    pub busy_endpoints: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct CreatedMessage {
    pub message: Arc<Message>,
    /// The endpoints a delivery was created for.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Of those deliveries, the ones leased to `CreateMessage::lease`: to be
    /// sent at once. The others wait: for a later time (a delayed message),
    /// for their endpoint's flow (throttled or paused) or behind an earlier
    /// message of their ordering key.
    pub send_now: Vec<DeliveryTask>,
    /// When something this created becomes claimable (a delayed message,
    /// parked deliveries), for the scheduler to look then.
    pub wake: Option<Timestamp>,
    /// The message existed already (same idempotency key); nothing was created.
    pub existing: bool,
}

/// Which of an endpoint's deliveries to send again (recover, bulk replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequeueFilter {
    /// Messages created at or after this time…
    pub since: Timestamp,
    /// …and before this one.
    pub until: Option<Timestamp>,
    /// Only deliveries in one of these states (`None`: settled ones, i.e.
    /// success or fail; pending deliveries are already on their way).
    pub statuses: Option<Vec<DeliveryStatus>>,
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    /// Class of the latest attempt's status code (0, 100, …, 500).
    pub status_code_class: Option<u16>,
    /// Only these messages.
    pub msg_ids: Option<Vec<String>>,
}

impl RequeueFilter {
    /// The delivery states to requeue (settled ones unless told).
    pub fn statuses(&self) -> Vec<DeliveryStatus> {
        self.statuses.clone().unwrap_or_else(|| vec![DeliveryStatus::Success, DeliveryStatus::Fail])
    }
}

/// The status codes of a class (0 = no response, 100, …, 500) as a
/// half-open range.
pub fn status_code_range(class: u16) -> (i32, i32) {
    if class == 0 { (0, 1) } else { (i32::from(class), i32::from(class) + 100) }
}

/// What happened to the idempotency key of a request about to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use: the caller runs the request, then `finish`es or `abort`s.
    Started,
    /// Finished before: replay this response.
    Done(StoredResponse),
    /// Another request with this key is running right now.
    InProgress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Everything a dispatcher needs to make one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryTask {
    pub message: Arc<Message>,
    pub endpoint: Arc<Endpoint>,
    /// The endpoint's flow is bounded (a throttle, a pause, a backoff): the
    /// store has counted this attempt against its bucket, so it must start
    /// now or go back, never wait in a queue (where starts could bunch up).
    pub paced: bool,
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
    /// What the receiver asked for; `disable_endpoint` is applied here.
    pub steering: Steering,
    /// Spread for the next delay (see `domain::delivery::retry_delay`).
    pub jitter: f64,
    /// Disable the endpoint once every attempt has failed for this long.
    pub auto_disable_after: Option<Duration>,
    /// What the answer says about the receiver's load (flow control).
    pub signal: Signal,
    /// How fast this node was sending to the endpoint (starts per second):
    /// where a backoff starts for an endpoint without a limit.
    pub sending_rate: f64,
    /// The task was `paced`: its endpoint had flow state to update on success.
    pub paced: bool,
    /// Lease the next delivery of an ordering key to this node when this
    /// attempt lets the key move on, so it goes out without a claim.
    pub lease: Option<Lease>,
    /// Something waits for this record to commit: the next message of its
    /// ordering key, or attempts queued behind it in its endpoint's lane
    /// (its slot is held until then). A store that gathers records into
    /// group commits never holds an awaited one back for company.
    pub awaited: bool,
}

impl AttemptRecord {
    /// What the state machine needs of this record, given whether the
    /// endpoint still takes deliveries once this attempt's own health change
    /// is applied.
    pub fn result(&self, endpoint_active: bool) -> AttemptResult<'_> {
        AttemptResult {
            trigger: self.attempt.trigger,
            outcome: self.outcome,
            policy: &self.policy,
            endpoint_active,
            finished_at: self.finished_at,
            steering: self.steering.clone(),
            jitter: self.jitter,
        }
    }

    /// What this attempt does to its endpoint's health, from the stored
    /// start of its failure streak (the endpoint being active).
    pub fn health(&self, failing_since: Option<Timestamp>) -> health::Change {
        health::after_attempt(
            failing_since,
            self.outcome,
            self.finished_at,
            self.steering.disable_endpoint,
            self.auto_disable_after,
        )
    }
}

/// What recording an attempt changed.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptEffects {
    pub state: DeliveryState,
    /// A scheduled failure used up the schedule just now.
    pub exhausted: bool,
    /// The endpoint was disabled by this attempt (receiver's request or
    /// auto-disable), with the start of its failure streak if any.
    pub endpoint_disabled: Option<EndpointDisabled>,
    /// The endpoint is paused until then (a `Retry-After`): drop what is
    /// queued for it.
    pub endpoint_paused: Option<Timestamp>,
    /// The next delivery of the ordering key, leased to `AttemptRecord::lease`:
    /// send it now.
    pub next: Option<DeliveryTask>,
    /// Something became claimable then (the key's next delivery, parked
    /// ones): the scheduler should look.
    pub wake: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointDisabled {
    pub endpoint: Endpoint,
    pub failing_since: Option<Timestamp>,
    /// `true` for auto-disable, `false` when the receiver asked for it.
    pub automatic: bool,
}

/// Flow control across all endpoints, for the Prometheus gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTotals {
    /// Endpoints whose receiver asked for a pause that is not over.
    pub paused_endpoints: u64,
    /// Endpoints slowed down after congestion.
    pub backing_off_endpoints: u64,
    /// Deliveries parked until their endpoint may send (rate or pause).
    pub parked_deliveries: u64,
    /// Deliveries held behind an earlier message of their ordering key.
    pub held_deliveries: u64,
}

/// An endpoint's flow as the API and the dashboard show it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowView {
    /// Its `throttleRate`, else its application's.
    pub limit: Option<u32>,
    /// The rate attempts may start at now (the limit, lowered by a
    /// backoff); `None`: no bound.
    pub allowed_rate: Option<f64>,
    /// Congestion backoff in force.
    pub backing_off: bool,
    pub paused_until: Option<Timestamp>,
    pub pause_reason: Option<String>,
    /// Deliveries parked until the endpoint may send.
    pub waiting: u64,
    /// Deliveries held behind an earlier message of their ordering key.
    pub held: u64,
}

impl FlowView {
    pub fn new(state: FlowState, limit: Option<u32>, waiting: u64, held: u64, now: Timestamp) -> FlowView {
        let paused = state.paused(now);
        FlowView {
            limit,
            allowed_rate: state.rate(limit),
            backing_off: state.backoff_rate.is_some(),
            paused_until: state.paused_until.filter(|_| paused),
            pause_reason: state.pause_reason.filter(|_| paused),
            waiting,
            held,
        }
    }
}

/// An ordering key whose head failed for good on an endpoint that blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedKey {
    /// The key (`""` for a FIFO endpoint's one order).
    pub key: String,
    /// The message it waits on.
    pub head_msg_id: String,
    pub since: Timestamp,
}

/// What another process sharing the store changed, for this one to react.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Deliveries became claimable at `at` (released, requeued, replayed,
    /// scheduled): the dispatcher should look then. `endpoints` names their
    /// endpoints when they are few (`None`: any endpoint), so a node whose
    /// lanes for all of them are full need not look at all.
    Due { at: Timestamp, endpoints: Option<Vec<String>> },
    /// Applications, endpoints or tokens changed: drop what is cached.
    Changed,
}

/// What one call of record retention ([`super::RetentionStore::delete_settled`])
/// deleted, and where the next call continues.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Messages looked at (deleted or kept because something is unsettled).
    pub examined: u64,
    pub messages: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Where the next call continues (the store's own cursor). `None` once
    /// the pass reached messages young enough to keep: the next pass starts
    /// again from the oldest, so messages kept because they were unsettled
    /// are looked at again.
    pub next: Option<String>,
}
