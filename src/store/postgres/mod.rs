//! The shared store: PostgreSQL, for several Hookline nodes on one database.
//!
//! Unlike SQLite there is no single writer to serialise everything, so
//! correctness between nodes rests on the database: each write is one
//! statement or one transaction; read-modify-write happens under a row lock
//! (`FOR UPDATE`) or as an expression over the current row; claiming uses
//! `FOR UPDATE SKIP LOCKED`; uniqueness (uids, eventId, idempotency keys) is
//! left to unique indexes, whose violations become `Conflict`s. Hot paths
//! (ingest, claiming, recording attempts, token and application lookups)
//! take few round trips: batched with arrays, one statement where possible.
//! sqlx prepares each statement once per connection and caches it.
//!
//! Writes that another node must react to notify it (see [`notify`]).

mod dispatch;
mod event_types;
mod messages;
mod notify;
mod recorder;
mod redelivery;
mod retention;
mod rows;
mod schema;
mod sql;
mod tasks;
mod tenants;

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::{
    AppFilter, AttemptEffects, AttemptFilter, AttemptRecord, CreateMessage, CreatedMessage, DeliveryFilter,
    DeliveryKey, DeliveryTask, IdempotencyBegin, Lease, MessageFilter, Page, PageRequest, RequeueFilter,
    Store, StoreEvent, StoreResult, StoredResponse,
};
use crate::domain::model::{
    App, AppPatch, AppSummary, Attempt, Delivery, DeliveryCounts, Endpoint, EndpointPatch, EventType,
    EventTypePatch, Message, Scope, Task,
};
use crate::domain::time::Timestamp;

/// Connections per node unless told otherwise: enough for the dispatcher,
/// the API and the listener's neighbours without crowding a server shared
/// by several nodes (PostgreSQL's default limit is 100).
const DEFAULT_MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
    events: broadcast::Sender<StoreEvent>,
    /// The notification listener, stopped with the store.
    listener: AbortHandle,
    /// Records attempts in batches; its task ends with the store.
    recorder: recorder::Recorder,
}

impl PgStore {
    /// Connect to `url` (`postgres://…`), bring the schema up to date and
    /// start listening for other nodes' notifications.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`PgStore::connect`] with a pool of at most `max_connections`
    /// (besides the listener's own connection).
    pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        let pool = PgPoolOptions::new().max_connections(max_connections.max(1)).connect(url).await?;
        schema::migrate(&mut *pool.acquire().await?).await?;
        let (events, _) = broadcast::channel(notify::CAPACITY);
        let listener = notify::start(url, events.clone()).await?;
        let recorder = recorder::Recorder::start(pool.clone());
        Ok(PgStore { pool, events, listener, recorder })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Apply pending migrations to the database at `url`; returns how many ran
/// (`hookline migrate`).
pub async fn migrate(url: &str) -> StoreResult<usize> {
    let mut conn = PgConnection::connect(url).await?;
    let n = schema::migrate(&mut conn).await?;
    conn.close().await?;
    Ok(n)
}

#[async_trait]
impl Store for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }

    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        tenants::insert_token(&self.pool, hash, scope, expires_at, now).await
    }

    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>> {
        tenants::find_token(&self.pool, hash, now).await
    }

    async fn delete_token(&self, hash: &str) -> StoreResult<bool> {
        tenants::delete_token(&self.pool, hash).await
    }

    async fn has_admin_token(&self) -> StoreResult<bool> {
        tenants::has_admin_token(&self.pool).await
    }

    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()> {
        event_types::insert(&self.pool, et).await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        event_types::get(&self.pool, name).await
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>> {
        event_types::list(&self.pool, include_archived, page).await
    }

    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType> {
        event_types::update(&self.pool, name, patch, now).await
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        event_types::delete(&self.pool, name).await
    }

    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        tasks::insert(&self.pool, task).await
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        tasks::get(&self.pool, id).await
    }

    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>> {
        tasks::list(&self.pool, page).await
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin> {
        tasks::idempotency_begin(&self.pool, key, now, lock_until).await
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        tasks::idempotency_finish(&self.pool, key, response, expires_at).await
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        tasks::idempotency_abort(&self.pool, key).await
    }

    async fn insert_app(&self, app: &App) -> StoreResult<()> {
        tenants::insert_app(&self.pool, app).await
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>> {
        tenants::get_app(&self.pool, id_or_uid).await
    }

    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>> {
        tenants::list_apps(&self.pool, filter, page).await
    }

    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
        tenants::app_summaries(&self.pool, app_ids, cap).await
    }

    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
        tenants::update_app(&self.pool, id, patch, now).await
    }

    async fn delete_app(&self, id: &str) -> StoreResult<()> {
        tenants::delete_app(&self.pool, id).await
    }

    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        tenants::insert_endpoint(&self.pool, ep).await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        tenants::get_endpoint(&self.pool, app_id, id_or_uid).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        tenants::list_endpoints(&self.pool, app_id, page).await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint> {
        tenants::update_endpoint(&self.pool, app_id, id, patch, now).await
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        tenants::delete_endpoint(&self.pool, app_id, id).await
    }

    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        messages::create_message(&self.pool, req).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        messages::get_message(&self.pool, app_id, id_or_event_id).await
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        messages::list_messages(&self.pool, app_id, filter, page).await
    }

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>> {
        messages::get_delivery(&self.pool, msg_id, endpoint_id).await
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>> {
        messages::list_message_deliveries(&self.pool, app_id, msg_id, page).await
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Message)>> {
        messages::list_endpoint_deliveries(&self.pool, app_id, endpoint_id, filter, page).await
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        messages::list_attempts(&self.pool, app_id, filter, page).await
    }

    async fn get_attempt(
        &self,
        app_id: &str,
        msg_id: &str,
        attempt_id: &str,
    ) -> StoreResult<Option<Attempt>> {
        messages::get_attempt(&self.pool, app_id, msg_id, attempt_id).await
    }

    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        redelivery::endpoint_recent(&self.pool, endpoint_ids, recent).await
    }

    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        redelivery::message_delivery_counts(&self.pool, msg_ids).await
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts> {
        redelivery::endpoint_stats(&self.pool, app_id, endpoint_id, since, until).await
    }

    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64> {
        redelivery::requeue(&self.pool, app_id, endpoint_id, filter, now, dry_run).await
    }

    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        redelivery::replay_missing(&self.pool, endpoint, since, until, now).await
    }

    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        retention::expunge_message(&self.pool, app_id, msg_id).await
    }

    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        retention::expunge_attempt(&self.pool, app_id, msg_id, attempt_id).await
    }

    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        retention::expunge_app_content(&self.pool, app_id).await
    }

    async fn expunge_expired(&self, now: Timestamp, attempts_before: Timestamp) -> StoreResult<(u64, u64)> {
        retention::expunge_expired(&self.pool, now, attempts_before).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        dispatch::claim_due(&self.pool, now, lease, limit, skip_endpoints).await
    }

    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        dispatch::next_due(&self.pool, skip_endpoints).await
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        dispatch::release(&self.pool, keys, due).await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        dispatch::release_all(&self.pool, owner).await
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        dispatch::renew_leases(&self.pool, owner, keys, until).await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        self.recorder.record(record).await
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        dispatch::count_pending(&self.pool).await
    }
}
