//! The single writer thread, with group commit.
//!
//! SQLite allows one writer at a time and each commit costs an fsync (about
//! 0.2 ms here). So every write runs on one dedicated thread that drains all
//! queued jobs, runs each inside its own SAVEPOINT (a failing job rolls back
//! alone), and commits them together: one fsync for the whole batch. Replies
//! are sent only after the COMMIT has returned, so a caller that hears `Ok`
//! knows its data is durable.
//!
//! Checkpoints (copying the WAL back into the database file, with its own
//! fsync) run on a second thread and connection, so commits rarely wait
//! behind one. A background checkpoint can never let the WAL start over
//! while the writer keeps appending, though, so once the WAL is long the
//! writer finishes the job itself between two batches: by then nearly every
//! frame is copied, and that short checkpoint lets the next batch restart
//! the WAL from its beginning.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::charts;
use crate::store::{StoreError, StoreResult};

/// Most jobs committed together; bounds latency of a batch.
const MAX_BATCH: usize = 1024;
/// Queue depth before async callers wait (backpressure).
const QUEUE: usize = 8192;
/// The writer's page cache, in KiB (SQLite's default is 2 MiB). Writes
/// spread over many endpoints touch a different page of each per-endpoint
/// index every time, and retention deletes at the old end of every B-tree
/// while ingest inserts at the new one: with 2 MiB most of those pages were
/// read again from the file. Measured (`hookline bench tenants --messages
/// 20000`): the writer's CPU per delivery 194 → 148 µs.
const CACHE_KIB: i64 = 64 * 1024;

/// How a job is kept from leaving half its writes behind when it fails.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Guard {
    /// Inside its own SAVEPOINT: an error rolls back this job alone.
    Savepoint,
    /// No savepoint. For hot jobs that make every check (not found,
    /// conflict) before their first write, so an error after that can only
    /// come from SQLite itself, and then the whole batch is rolled back and
    /// every caller in it told so. A savepoint costs a copy of each page the
    /// job touches (the statement journal): about a sixth of the writer's
    /// time on the ingest and attempt paths.
    ChecksFirst,
}

/// A write job waiting for the writer thread, whatever its result type.
trait PendingWrite: Send {
    /// Run the work; `false` when the batch must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

/// One caller's write job: its work, how it is guarded, and where its result goes.
struct WriteRequest<T, F> {
    work: Option<F>,
    guard: Guard,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> PendingWrite for WriteRequest<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return true };
        let result = match self.guard {
            Guard::Savepoint => in_savepoint(conn, work),
            Guard::ChecksFirst => catch_panic(conn, work),
        };
        let intact = self.guard == Guard::Savepoint || !matches!(result, Err(StoreError::Backend(_)));
        self.result = Some(result);
        intact
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let out = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("job not run".into()))),
            Err(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(out);
    }
}

fn catch_panic<T>(conn: &Connection, work: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("write job panicked".into())))
}

fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    // Cached statements: parsing these per job cost more than many jobs' own SQL.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = catch_panic(conn, work);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result
}

#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn PendingWrite>>,
}

impl Writer {
    /// Start the writer on `conn`, and the checkpointer on `checkpoints`
    /// (a second connection to the same database).
    /// `on_abort` runs on the writer thread after a batch was rolled back
    /// (to drop caches that may hold what the batch wrote).
    pub fn start(
        conn: Connection,
        checkpoints: Connection,
        on_abort: Box<dyn Fn() + Send>,
    ) -> StoreResult<Writer> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // At most this much WAL is kept on disk once it has started over.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let wal = Arc::new(WalState::default());
        let watched = Arc::downgrade(&wal);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Backend(format!("cannot start {name} thread: {e}")))
        };
        spawn("sqlite-writer", Box::new(move || writer_loop(conn, rx, wal, on_abort)))?;
        spawn("sqlite-checkpoint", Box::new(move || checkpoint_loop(checkpoints, watched)))?;
        Ok(Writer { queue: tx })
    }

    /// Run `work` in the next group commit; resolves once it is durable.
    pub async fn run<T, F>(&self, guard: Guard, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(WriteRequest { work: Some(work), guard, result: None, reply });
        self.queue.send(job).await.map_err(|_| StoreError::Backend("writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Backend("writer has stopped".into()))?
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn PendingWrite>>,
    wal: Arc<WalState>,
    on_abort: Box<dyn Fn() + Send>,
) {
    let mut batch: Vec<Box<dyn PendingWrite>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = run_batch(&conn, &mut batch);
        match &commit {
            Ok(()) => {
                wal.commits.fetch_add(1, Ordering::Relaxed);
                if wal.frames.load(Ordering::Relaxed) >= RESTART_FRAMES {
                    wal.frames.store(0, Ordering::Relaxed);
                    if let Err(e) = checkpoint(&conn) {
                        tracing::warn!(error = %e, "sqlite checkpoint in the writer failed");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "sqlite batch failed");
                on_abort();
            }
        }
        for job in batch.drain(..) {
            job.finish(commit.clone());
        }
    }
}

/// One transaction for the whole batch. Jobs may leave summary writes to
/// its end (the chart counts, see `charts::count_attempt`): they are
/// written just before COMMIT, or forgotten with the batch.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn PendingWrite>]) -> Result<(), String> {
    let rollback = |why: String| {
        let _ = conn.execute_batch("ROLLBACK");
        charts::forget_counts();
        Err(why)
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        charts::forget_counts();
        return Err(e.to_string());
    }
    for job in batch.iter_mut() {
        if !job.run(conn) {
            return rollback("a write failed part-way; the batch was rolled back".into());
        }
    }
    if let Err(e) = charts::flush_counts(conn) {
        return rollback(format!("writing the chart counts failed: {e}"));
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        return rollback(e.to_string());
    }
    Ok(())
}

/// How often the checkpointer looks for new commits. Often, so that each
/// checkpoint is small: its fsync of the database file shares the disk with
/// the writer's WAL fsyncs, and a large one shows up in every commit's tail
/// latency (p99 at 1,000 messages/s: 200 ms here gave 1.38 ms, 20 ms gave
/// 1.27 ms, 2 s gave 30 ms; see BENCHMARKS.md).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);
/// WAL length (pages) at which the writer checkpoints itself so that the
/// WAL can start over: 4,096 pages is 16 MiB.
const RESTART_FRAMES: u64 = 4096;

/// What the writer and the checkpointer share.
#[derive(Default)]
struct WalState {
    /// Batches committed so far.
    commits: AtomicU64,
    /// Frames in the WAL at the last background checkpoint.
    frames: AtomicU64,
}

/// A PASSIVE checkpoint (never blocks the writer or readers); returns the
/// number of frames in the WAL.
fn checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)).map(|n| n.max(0) as u64)
}

/// Copy committed WAL frames into the database file while the writer goes
/// on. Ends when the writer thread has stopped.
fn checkpoint_loop(conn: Connection, wal: Weak<WalState>) {
    let mut seen = 0;
    loop {
        thread::sleep(CHECKPOINT_EVERY);
        let Some(wal) = wal.upgrade() else { return };
        let now = wal.commits.load(Ordering::Relaxed);
        if now == seen {
            continue;
        }
        seen = now;
        match checkpoint(&conn) {
            Ok(frames) => wal.frames.store(frames, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed; will retry"),
        }
    }
}
