//! The single writer thread, with group commit.
//!
//! SQLite allows one writer at a time and each commit costs an fsync (about
//! 0.2 ms here). So every write runs on one dedicated thread that drains all
//! queued jobs, runs each inside its own SAVEPOINT (a failing job rolls back
//! alone), and commits them together: one fsync for the whole batch. Replies
//! are sent only after the COMMIT has returned, so a caller that hears `Ok`
//! knows its data is durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// Most jobs committed together; bounds latency of a batch.
const MAX_BATCH: usize = 1024;
/// Queue depth before async callers wait (backpressure).
const QUEUE: usize = 8192;

trait Job: Send {
    fn run(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(work) = self.work.take() {
            self.result = Some(in_savepoint(conn, work));
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let out = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("job not run".into()))),
            Err(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(out);
    }
}

fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    conn.execute_batch("SAVEPOINT job")?;
    let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("write job panicked".into())));
    if result.is_ok() {
        conn.execute_batch("RELEASE job")?;
    } else {
        conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    result
}

#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        thread::Builder::new().name("sqlite-writer".into()).spawn(move || writer_loop(conn, rx))?;
        Ok(Writer { queue: tx })
    }

    /// Run `work` in the next group commit; resolves once it is durable.
    pub async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob { work: Some(work), result: None, reply });
        self.queue.send(job).await.map_err(|_| StoreError::Backend("writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Backend("writer has stopped".into()))?
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = run_batch(&conn, &mut batch);
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = batch.len(), "sqlite batch failed");
        }
        for job in batch.drain(..) {
            job.finish(commit.clone());
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        job.run(conn);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.to_string());
    }
    Ok(())
}
