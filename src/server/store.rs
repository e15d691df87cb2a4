//! The store a server runs on: opening it, and following what other nodes
//! sharing it do.

use std::fs::File;
use std::sync::{Arc, Weak};

use anyhow::Context;
use tokio::sync::{broadcast, watch};

use crate::config::ServerConfig;
use crate::service::Service;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SharedStore, StoreEvent};

/// Open the store the configuration names. The embedded store belongs to
/// this process alone: leases left over are from a previous run and are
/// released. On PostgreSQL they may belong to live nodes, so they are left
/// to be renewed or to expire.
pub(super) async fn open_store(cfg: &ServerConfig) -> anyhow::Result<(SharedStore, Option<File>)> {
    if let Some(db) = &cfg.database {
        let store =
            PgStore::connect_with(&db.url, db.pool).await.context("cannot open the PostgreSQL store")?;
        return Ok((Arc::new(store.with_keys(Arc::clone(&cfg.keys))), None));
    }
    let lock = lock_data_dir(cfg)?;
    let store: SharedStore = Arc::new(SqliteStore::open_with_keys(&cfg.data_dir, Arc::clone(&cfg.keys))?);
    let released = store.release_all(None).await?;
    if released > 0 {
        tracing::info!(released, "resuming deliveries that were in flight at the last stop");
    }
    Ok((store, Some(lock)))
}

/// React to what other nodes sharing the store did: look for newly due
/// work, forget cached tokens.
pub(super) async fn follow_store(
    mut events: broadcast::Receiver<StoreEvent>,
    service: Weak<Service>,
    mut drained: watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            // Nothing left to wake or invalidate.
            _ = drained.wait_for(|d| *d) => break,
        };
        let event = match received {
            Ok(event) => event,
            // Missed some: assume the worst of what they could have said.
            Err(broadcast::error::RecvError::Lagged(_)) => StoreEvent::Changed,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Some(service) = service.upgrade() else { break };
        match event {
            StoreEvent::Due { at, endpoints } => service.dispatcher.wake_for(at, endpoints.as_deref()),
            StoreEvent::Changed => service.forget_cached(),
        }
    }
}

/// Take the data directory for this process alone. Two servers on one
/// SQLite file would both dispatch the same deliveries.
fn lock_data_dir(cfg: &ServerConfig) -> anyhow::Result<File> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("serve.lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!("another hookline is already serving from {}", cfg.data_dir.display())
    })?;
    Ok(file)
}
