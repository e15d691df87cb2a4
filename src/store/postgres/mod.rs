//! The shared store: PostgreSQL, for several Hookline nodes on one database.
//!
//! SKELETON: being filled in (issue 6).

use std::collections::HashMap;

use async_trait::async_trait;

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

pub struct PgStore {}

impl PgStore {
    /// Connect to `url` (`postgres://…`), bring the schema up to date and
    /// start listening for other nodes' notifications.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let _ = url;
        todo!()
    }

    pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        let _ = (url, max_connections);
        todo!()
    }
}

pub async fn migrate(url: &str) -> StoreResult<usize> {
    let _ = url;
    todo!()
}

#[async_trait]
impl Store for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        todo!()
    }

    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        todo!()
    }

    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>> {
        todo!()
    }

    async fn delete_token(&self, hash: &str) -> StoreResult<bool> {
        todo!()
    }

    async fn has_admin_token(&self) -> StoreResult<bool> {
        todo!()
    }

    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()> {
        todo!()
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        todo!()
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>> {
        todo!()
    }

    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType> {
        todo!()
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        todo!()
    }

    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        todo!()
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        todo!()
    }

    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>> {
        todo!()
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin> {
        todo!()
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        todo!()
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        todo!()
    }

    async fn insert_app(&self, app: &App) -> StoreResult<()> {
        todo!()
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>> {
        todo!()
    }

    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>> {
        todo!()
    }

    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
        todo!()
    }

    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
        todo!()
    }

    async fn delete_app(&self, id: &str) -> StoreResult<()> {
        todo!()
    }

    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        todo!()
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        todo!()
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        todo!()
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint> {
        todo!()
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        todo!()
    }

    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        todo!()
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        todo!()
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        todo!()
    }

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>> {
        todo!()
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>> {
        todo!()
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Message)>> {
        todo!()
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        todo!()
    }

    async fn get_attempt(&self, app_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>> {
        todo!()
    }

    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        todo!()
    }

    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        todo!()
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts> {
        todo!()
    }

    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64> {
        todo!()
    }

    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        todo!()
    }

    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        todo!()
    }

    async fn expunge_attempt(&self, app_id: &str, attempt_id: &str) -> StoreResult<()> {
        todo!()
    }

    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        todo!()
    }

    async fn expunge_expired(&self, now: Timestamp, attempts_before: Timestamp) -> StoreResult<(u64, u64)> {
        todo!()
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        todo!()
    }

    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        todo!()
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        todo!()
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        todo!()
    }

    async fn renew_leases(&self, owner: &str, until: Timestamp) -> StoreResult<u64> {
        todo!()
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        todo!()
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        todo!()
    }
}
