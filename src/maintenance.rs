//! Background upkeep: retention, and the metrics exporter's housekeeping.
//! (The load gauges `/metrics` shows are read at scrape time, in the API.)
//!
//! Retention runs on the injected clock, so tests can move a manual clock
//! past the retention age and watch payloads disappear.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::dispatch::Dispatcher;
use crate::domain::attempt_stats;
use crate::domain::time::Timestamp;
use crate::store::SharedStore;
use crate::telemetry;

/// How often retention runs (on the injected clock).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the exporter's housekeeping runs (wall clock).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Maintenance {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub dispatcher: Dispatcher,
    /// Response bodies older than this are erased (payloads carry their own
    /// expiry, set when the message is accepted).
    pub retention: Duration,
}

impl Maintenance {
    pub fn spawn(self, tasks: &TaskTracker, shutdown: watch::Receiver<bool>) {
        tasks.spawn(self.clone().retention_loop(shutdown.clone()));
        tasks.spawn(Self::upkeep_loop(shutdown));
    }

    /// Erase what is past retention at `now`; returns (payloads, bodies).
    /// The charts' minutes older than their longest window go too.
    pub async fn run_retention(&self, now: Timestamp) -> (u64, u64) {
        if let Err(e) = self.store.prune_attempt_stats(now.minus(attempt_stats::KEPT)).await {
            tracing::error!(error = %e, "pruning chart minutes failed");
        }
        match self.store.expunge_expired(now, now.minus(self.retention)).await {
            Ok(counts) => {
                if counts != (0, 0) {
                    tracing::info!(
                        payloads = counts.0,
                        response_bodies = counts.1,
                        "retention expunged content"
                    );
                }
                counts
            }
            Err(e) => {
                tracing::error!(error = %e, "retention failed");
                (0, 0)
            }
        }
    }

    async fn retention_loop(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            // The next run is due an interval after *this* run's time: if
            // the clock jumped meanwhile, it is due at once, not skipped.
            let now = self.clock.now();
            self.run_retention(now).await;
            let next = now.plus(RETENTION_EVERY);
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn upkeep_loop(mut shutdown: watch::Receiver<bool>) {
        loop {
            telemetry::upkeep();
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
