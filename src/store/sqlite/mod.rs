//! The embedded store: SQLite in WAL mode under the data directory.
//!
//! Writes go through one thread with group commit ([`writer`]); reads run on
//! a small pool of connections in tokio's blocking pool, in parallel with the
//! writer (WAL readers never block it). `synchronous=FULL` makes every commit
//! durable against power loss, not only against a crashed process.

mod charts;
mod dispatch;
mod event_types;
mod flow;
mod messages;
mod ordering;
mod redelivery;
mod retention;
mod rows;
mod schema;
mod sql;
mod tasks;
mod tenants;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use self::writer::{Guard, Writer};
use super::sealing::Keyring;
use super::{StoreError, StoreResult};

const DB_FILE: &str = "hookline.db";
const MAX_READERS: usize = 8;

pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Only touched by writer jobs, so the lock is never contended.
    cache: Arc<Mutex<messages::IngestCache>>,
    /// Seals and opens endpoint secrets (`store::sealing`).
    keys: Arc<Keyring>,
}

impl SqliteStore {
    /// Open (creating if needed) the database in `dir` and migrate it, with
    /// no main key.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with_keys(dir, Arc::new(Keyring::none()))
    }

    /// Open the database in `dir`, sealing secrets with `keys`. The
    /// directory is made private to this user (0700) and the database
    /// files are created 0600.
    pub fn open_with_keys(dir: &Path, keys: Arc<Keyring>) -> StoreResult<Self> {
        private_dir(dir)?;
        let path = dir.join(DB_FILE);
        private_file(&path)?;
        let mut conn = open_connection(&path)?;
        schema::migrate(&mut conn)?;
        let cache = Arc::new(Mutex::new(messages::IngestCache::new(Arc::clone(&keys))));
        let dropped = Arc::clone(&cache);
        let on_abort = Box::new(move || dropped.lock().unwrap_or_else(|e| e.into_inner()).clear());
        let writer = Writer::start(conn, open_connection(&path)?, on_abort)?;
        let readers =
            Arc::new(Readers { path, idle: Mutex::new(Vec::new()), permits: Semaphore::new(MAX_READERS) });
        Ok(SqliteStore { writer, readers, cache, keys })
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

/// Create `dir` if needed, owner-only (0700): it holds the database, which
/// holds message payloads and, without a main key, endpoint secrets.
fn private_dir(dir: &Path) -> StoreResult<()> {
    let failed = |e: std::io::Error| StoreError::Backend(format!("cannot create {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// The database file is owner-only (0600); SQLite gives its WAL and
/// shared-memory files the database file's permissions.
fn private_file(path: &Path) -> StoreResult<()> {
    let failed = |e: std::io::Error| StoreError::Backend(format!("cannot create {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options.open(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    #[cfg(not(unix))]
    options.open(path).map_err(failed)?;
    Ok(())
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
