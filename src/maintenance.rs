//! Background upkeep: retention, and the metrics exporter's housekeeping.
//! (The load gauges `/metrics` shows are read at scrape time, in the API.)
//!
//! Retention runs on the injected clock, so tests can move a manual clock
//! past the retention age and watch payloads, then records, disappear. It
//! has two ages: payloads and response bodies are erased after
//! `retention`; settled messages with their deliveries and attempts are
//! deleted after `record_retention`, so the database stops growing once
//! retention deletes as much as comes in. Both work in small batches, each
//! its own store transaction (on SQLite its own writer job, so ingest is
//! served between them).

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::dispatch::Dispatcher;
use crate::domain::attempt_stats;
use crate::domain::time::Timestamp;
use crate::store::{SharedStore, Sweep};
use crate::telemetry;

/// Longest pause between retention runs (on the injected clock); shorter
/// retentions run more often (a tenth of the shorter one, at least a second).
const RETENTION_EVERY_MAX: Duration = Duration::from_secs(60);
/// The pause after a run that found work: what became old meanwhile goes a
/// little at a time. (Measured in the 30-minute soak at 2,339 messages/s:
/// a run every 30 s deleted 70,000 messages in one burst of writer jobs,
/// and ingest's p99 tripled while it ran.)
const RETENTION_CATCH_UP: Duration = Duration::from_secs(1);
/// Batches of each kind one run makes at most (what is left waits for the
/// next run; a batch is the store's `retention_batch`, 25 to 500 rows):
/// at one run a second while there is work, 50,000 messages a second or more.
const RETENTION_BATCHES: usize = 2_000;
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
    /// Settled messages older than this go, with their deliveries and
    /// attempts (at least `retention`).
    pub record_retention: Duration,
}

/// What one retention run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionRun {
    pub payloads: u64,
    pub bodies: u64,
    pub messages: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

impl Maintenance {
    pub fn spawn(self, tasks: &TaskTracker, shutdown: watch::Receiver<bool>) {
        tasks.spawn(self.clone().retention_loop(shutdown.clone()));
        tasks.spawn(Self::upkeep_loop(shutdown));
    }

    /// How long between retention runs.
    pub fn retention_every(&self) -> Duration {
        (self.retention.min(self.record_retention) / 10).clamp(Duration::from_secs(1), RETENTION_EVERY_MAX)
    }

    /// Erase and delete what is past retention at `now`. Record retention
    /// continues from `sweep_from` (where the last run stopped, if it
    /// stopped early) and leaves there where the next should continue.
    /// The charts' minutes older than their longest window, or than the
    /// record retention if that is shorter, go too.
    pub async fn run_retention(&self, now: Timestamp, sweep_from: &mut Option<String>) -> RetentionRun {
        let mut run = RetentionRun::default();
        let charts_before = now.minus(attempt_stats::KEPT.min(self.record_retention));
        let batch = self.store.retention_batch();
        if let Err(e) = self.store.prune_attempt_stats(charts_before).await {
            tracing::error!(error = %e, "pruning chart minutes failed");
        }
        for _ in 0..RETENTION_BATCHES {
            match self.store.expunge_expired(now, now.minus(self.retention), batch).await {
                Ok((payloads, bodies)) => {
                    (run.payloads, run.bodies) = (run.payloads + payloads, run.bodies + bodies);
                    if payloads < batch as u64 && bodies < batch as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention failed");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        let before = now.minus(self.record_retention);
        for _ in 0..RETENTION_BATCHES {
            match self.store.delete_settled(before, sweep_from.take(), batch).await {
                Ok(Sweep { messages, deliveries, attempts, next, .. }) => {
                    run.messages += messages;
                    run.deliveries += deliveries;
                    run.attempts += attempts;
                    *sweep_from = next;
                    if sweep_from.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "record retention failed");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        telemetry::retention(run.payloads, run.bodies, run.messages, run.deliveries, run.attempts);
        if run != RetentionRun::default() {
            tracing::info!(
                payloads = run.payloads,
                response_bodies = run.bodies,
                messages = run.messages,
                deliveries = run.deliveries,
                attempts = run.attempts,
                "retention erased content and deleted records"
            );
        }
        run
    }

    async fn retention_loop(self, mut shutdown: watch::Receiver<bool>) {
        let mut sweep_from = None;
        loop {
            // The next run is due an interval after *this* run's time: if
            // the clock jumped meanwhile, it is due at once, not skipped.
            let now = self.clock.now();
            let run = self.run_retention(now, &mut sweep_from).await;
            let busy = run != RetentionRun::default() || sweep_from.is_some();
            let every = self.retention_every();
            let next = now.plus(if busy { RETENTION_CATCH_UP.min(every) } else { every });
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
