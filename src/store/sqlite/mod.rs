//! The embedded store: SQLite in WAL mode under the data directory.
//!
//! Writes go through one thread with group commit ([`writer`]); reads run on
//! a small pool of connections in tokio's blocking pool, in parallel with the
//! writer (WAL readers never block it). `synchronous=FULL` makes every commit
//! durable against power loss, not only against a crashed process.

mod dispatch;
mod event_types;
mod messages;
mod redelivery;
mod retention;
mod rows;
mod schema;
mod sql;
mod tasks;
mod tenants;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use self::writer::{Guard, Writer};
use super::{
    AppFilter, AttemptEffects, AttemptFilter, AttemptRecord, CreateMessage, CreatedMessage, DeliveryFilter,
    DeliveryKey, DeliveryTask, IdempotencyBegin, Lease, MessageFilter, Page, PageRequest, RequeueFilter,
    Store, StoreError, StoreResult, StoredResponse,
};
use crate::domain::model::{
    App, AppPatch, AppSummary, Attempt, Delivery, DeliveryCounts, Endpoint, EndpointPatch, EventType,
    EventTypePatch, Message, Scope, Task,
};
use crate::domain::time::Timestamp;

const DB_FILE: &str = "hookline.db";
const MAX_READERS: usize = 8;

pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Only touched by writer jobs, so the lock is never contended.
    cache: Arc<Mutex<messages::IngestCache>>,
}

impl SqliteStore {
    /// Open (creating if needed) the database in `dir` and migrate it.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let mut conn = open_connection(&path)?;
        schema::migrate(&mut conn)?;
        let cache: Arc<Mutex<messages::IngestCache>> = Arc::default();
        let dropped = Arc::clone(&cache);
        let on_abort = Box::new(move || dropped.lock().unwrap_or_else(|e| e.into_inner()).clear());
        let writer = Writer::start(conn, open_connection(&path)?, on_abort)?;
        let readers =
            Arc::new(Readers { path, idle: Mutex::new(Vec::new()), permits: Semaphore::new(MAX_READERS) });
        Ok(SqliteStore { writer, readers, cache })
    }

    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.run(Guard::Savepoint, work).await
    }

    /// A hot-path write that makes all its checks before its first write
    /// (see [`Guard::ChecksFirst`]).
    async fn write_checked_first<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.run(Guard::ChecksFirst, work).await
    }

    /// A write that changes applications or endpoints: the ingest cache is
    /// cleared in the same writer job.
    async fn write_config<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let cache = Arc::clone(&self.cache);
        self.writer
            .run(Guard::Savepoint, move |c| {
                cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
                work(c)
            })
            .await
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run(work).await
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("cannot enable WAL (journal_mode={mode})")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    async fn run<T, F>(self: &Arc<Self>, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|e| StoreError::Backend(e.to_string()))?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = this.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = open_connection(&this.path)?;
                    c.pragma_update(None, "query_only", true)?;
                    c
                }
            };
            let result = work(&conn);
            this.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (hash, scope) = (hash.to_owned(), scope.clone());
        self.write(move |c| tenants::insert_token(c, &hash, &scope, expires_at, now)).await
    }

    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>> {
        let hash = hash.to_owned();
        self.read(move |c| tenants::find_token(c, &hash, now)).await
    }

    async fn delete_token(&self, hash: &str) -> StoreResult<bool> {
        let hash = hash.to_owned();
        self.write(move |c| tenants::delete_token(c, &hash)).await
    }

    async fn has_admin_token(&self) -> StoreResult<bool> {
        self.read(tenants::has_admin_token).await
    }

    async fn insert_event_type(&self, et: &EventType) -> StoreResult<()> {
        let et = et.clone();
        self.write(move |c| event_types::insert(c, &et)).await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |c| event_types::get(c, &name)).await
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: &PageRequest,
    ) -> StoreResult<Page<EventType>> {
        let page = page.clone();
        self.read(move |c| event_types::list(c, include_archived, &page)).await
    }

    async fn update_event_type(
        &self,
        name: &str,
        patch: EventTypePatch,
        now: Timestamp,
    ) -> StoreResult<EventType> {
        let name = name.to_owned();
        self.write(move |c| event_types::update(c, &name, patch, now)).await
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| event_types::delete(c, &name)).await
    }

    async fn insert_task(&self, task: &Task) -> StoreResult<()> {
        let task = task.clone();
        self.write(move |c| tasks::insert(c, &task)).await
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        self.read(move |c| tasks::get(c, &id)).await
    }

    async fn list_tasks(&self, page: &PageRequest) -> StoreResult<Page<Task>> {
        let page = page.clone();
        self.read(move |c| tasks::list(c, &page)).await
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> StoreResult<IdempotencyBegin> {
        let key = key.to_owned();
        self.write(move |c| tasks::idempotency_begin(c, &key, now, lock_until)).await
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let (key, response) = (key.to_owned(), response.clone());
        self.write(move |c| tasks::idempotency_finish(c, &key, &response, expires_at)).await
    }

    async fn idempotency_abort(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |c| tasks::idempotency_abort(c, &key)).await
    }

    async fn insert_app(&self, app: &App) -> StoreResult<()> {
        let app = app.clone();
        self.write_config(move |c| tenants::insert_app(c, &app)).await
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>> {
        let key = id_or_uid.to_owned();
        self.read(move |c| tenants::get_app(c, &key)).await
    }

    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |c| tenants::list_apps(c, &filter, &page)).await
    }

    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
        let ids = app_ids.to_vec();
        self.read(move |c| tenants::app_summaries(c, &ids, cap)).await
    }

    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
        let id = id.to_owned();
        self.write_config(move |c| tenants::update_app(c, &id, patch, now)).await
    }

    async fn delete_app(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write_config(move |c| tenants::delete_app(c, &id)).await
    }

    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        let ep = ep.clone();
        self.write_config(move |c| tenants::insert_endpoint(c, &ep)).await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let (app_id, key) = (app_id.to_owned(), id_or_uid.to_owned());
        self.read(move |c| tenants::get_endpoint(c, &app_id, &key)).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        let (app_id, page) = (app_id.to_owned(), page.clone());
        self.read(move |c| tenants::list_endpoints(c, &app_id, &page)).await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.write_config(move |c| tenants::update_endpoint(c, &app_id, &id, patch, now)).await
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.write_config(move |c| tenants::delete_endpoint(c, &app_id, &id)).await
    }

    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        let cache = Arc::clone(&self.cache);
        self.write_checked_first(move |c| messages::create_message(c, req, &cache)).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        let (app_id, key) = (app_id.to_owned(), id_or_event_id.to_owned());
        self.read(move |c| messages::get_message(c, &app_id, &key)).await
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let (app_id, filter, page) = (app_id.to_owned(), filter.clone(), page.clone());
        self.read(move |c| messages::list_messages(c, &app_id, &filter, &page)).await
    }

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>> {
        let (msg_id, endpoint_id) = (msg_id.to_owned(), endpoint_id.to_owned());
        self.read(move |c| messages::get_delivery(c, &msg_id, &endpoint_id)).await
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>> {
        let (app_id, msg_id, page) = (app_id.to_owned(), msg_id.to_owned(), page.clone());
        self.read(move |c| messages::list_message_deliveries(c, &app_id, &msg_id, &page)).await
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Message)>> {
        let (app_id, endpoint_id) = (app_id.to_owned(), endpoint_id.to_owned());
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |c| messages::list_endpoint_deliveries(c, &app_id, &endpoint_id, &filter, &page)).await
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let (app_id, filter, page) = (app_id.to_owned(), filter.clone(), page.clone());
        self.read(move |c| messages::list_attempts(c, &app_id, &filter, &page)).await
    }

    async fn get_attempt(
        &self,
        app_id: &str,
        msg_id: &str,
        attempt_id: &str,
    ) -> StoreResult<Option<Attempt>> {
        let (app_id, msg_id, attempt_id) = (app_id.to_owned(), msg_id.to_owned(), attempt_id.to_owned());
        self.read(move |c| messages::get_attempt(c, &app_id, &msg_id, &attempt_id)).await
    }

    async fn endpoint_recent(
        &self,
        endpoint_ids: &[String],
        recent: usize,
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        let ids = endpoint_ids.to_vec();
        self.read(move |c| redelivery::endpoint_recent(c, &ids, recent)).await
    }

    async fn message_delivery_counts(
        &self,
        msg_ids: &[String],
    ) -> StoreResult<HashMap<String, DeliveryCounts>> {
        let ids = msg_ids.to_vec();
        self.read(move |c| redelivery::message_delivery_counts(c, &ids)).await
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> StoreResult<DeliveryCounts> {
        let (app_id, endpoint_id) = (app_id.to_owned(), endpoint_id.to_owned());
        self.read(move |c| redelivery::endpoint_stats(c, &app_id, &endpoint_id, since, until)).await
    }

    async fn requeue(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &RequeueFilter,
        now: Timestamp,
        dry_run: bool,
    ) -> StoreResult<u64> {
        let (app_id, endpoint_id, filter) = (app_id.to_owned(), endpoint_id.to_owned(), filter.clone());
        self.write(move |c| redelivery::requeue(c, &app_id, &endpoint_id, &filter, now, dry_run)).await
    }

    async fn replay_missing(
        &self,
        endpoint: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let endpoint = endpoint.clone();
        self.write(move |c| redelivery::replay_missing(c, &endpoint, since, until, now)).await
    }

    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        let (app_id, msg_id) = (app_id.to_owned(), msg_id.to_owned());
        self.write(move |c| retention::expunge_message(c, &app_id, &msg_id)).await
    }

    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let (app_id, msg_id, attempt_id) = (app_id.to_owned(), msg_id.to_owned(), attempt_id.to_owned());
        self.write(move |c| retention::expunge_attempt(c, &app_id, &msg_id, &attempt_id)).await
    }

    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        let app_id = app_id.to_owned();
        self.write(move |c| retention::expunge_app_content(c, &app_id)).await
    }

    async fn expunge_expired(&self, now: Timestamp, attempts_before: Timestamp) -> StoreResult<(u64, u64)> {
        self.write(move |c| retention::expunge_expired(c, now, attempts_before)).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        let (lease, skip) = (lease.clone(), skip_endpoints.to_vec());
        self.write(move |c| dispatch::claim_due(c, now, &lease, limit, &skip)).await
    }

    async fn next_due(&self, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        let skip = skip_endpoints.to_vec();
        self.read(move |c| dispatch::next_due(c, &skip)).await
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.write(move |c| dispatch::release(c, &keys, due)).await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let owner = owner.map(str::to_owned);
        self.write(move |c| dispatch::release_all(c, owner.as_deref())).await
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        let (owner, keys) = (owner.to_owned(), keys.to_vec());
        self.write(move |c| dispatch::renew_leases(c, &owner, &keys, until)).await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        let cache = Arc::clone(&self.cache);
        self.write_checked_first(move |c| {
            let effects = dispatch::record_attempt(c, record)?;
            if effects.endpoint_disabled.is_some() {
                cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            Ok(effects)
        })
        .await
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        self.read(dispatch::count_pending).await
    }
}
