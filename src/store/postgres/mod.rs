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

mod charts;
mod dispatch;
mod event_types;
mod flow;
mod ingest;
mod messages;
mod notify;
mod ordering;
mod recorder;
mod redelivery;
mod retention;
mod rows;
mod schema;
mod sql;
mod statistics;
mod tasks;
mod tenants;

pub use messages::APPS_WITH_ENDPOINTS;
pub use retention::ERASE_EXPIRED;
pub use statistics::{LOOK_LOCK as STATISTICS_LOCK, look as look_at_young_tables};

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::sealing::Keyring;
use super::{StoreEvent, StoreResult};

/// Connections per node unless told otherwise: enough for the dispatcher,
/// the API and the listener's neighbours without crowding a server shared
/// by several nodes (PostgreSQL's default limit is 100).
const DEFAULT_MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
    events: broadcast::Sender<StoreEvent>,
    /// The notification listener, stopped with the store.
    listener: AbortHandle,
    /// Keeps planner statistics fresh while the tables are young; stopped
    /// with the store (see [`statistics`]).
    statistics: AbortHandle,
    /// Records attempts in batches; its task ends with the store.
    recorder: recorder::Recorder,
    /// Stores plain messages in batches; its task ends with the store.
    ingest: ingest::Ingest,
    /// Seals and opens endpoint secrets (`store::sealing`).
    keys: Arc<Keyring>,
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
        let keys = Arc::new(Keyring::none());
        let recorder = recorder::Recorder::start(pool.clone(), Arc::clone(&keys));
        let ingest = ingest::Ingest::start(pool.clone(), Arc::clone(&keys));
        let statistics = statistics::start(pool.clone());
        Ok(PgStore { pool, events, listener, statistics, recorder, ingest, keys })
    }

    /// Seal endpoint secrets with `keys` from now on (and open them).
    pub fn with_keys(mut self, keys: Arc<Keyring>) -> PgStore {
        // The recorder opens them too (a new head goes out from it): a new
        // one takes over before anything was recorded.
        self.recorder = recorder::Recorder::start(self.pool.clone(), Arc::clone(&keys));
        self.ingest = ingest::Ingest::start(self.pool.clone(), Arc::clone(&keys));
        self.keys = keys;
        self
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.statistics.abort();
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
