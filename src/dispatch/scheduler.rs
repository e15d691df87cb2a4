//! The scheduler: claims deliveries as they fall due.
//!
//! It never scans the table: it asks the store for the earliest `due_at`
//! (an index lookup), sleeps until then on the injected clock, and is woken
//! early by hints when something new becomes due sooner. A slow real-time
//! poll is the safety net for work that arrives without a hint (another
//! process writing to the same database).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument;

use super::Inner;
use super::lanes::QueuedAttempt;
use crate::domain::model::Trigger;
use crate::traces;

const SAFETY_POLL: Duration = Duration::from_secs(5);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

pub(super) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Hints from here on must wake us: we are about to recompute.
        inner.planned_wake.store(i64::MAX, Ordering::Release);
        let skip = inner.lock_lanes().full_endpoints();
        let now = inner.clock.now();
        let span = traces::spans::claim(inner.cfg.claim_batch);
        let lease = inner.lease(now);
        let claim = inner.store.claim_due(now, &lease, inner.cfg.claim_batch, &skip);
        let claimed = match claim.instrument(span.clone()).await {
            Ok(tasks) => {
                traces::spans::claimed(&span, tasks.len());
                tasks
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming due deliveries failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let full_batch = claimed.len() >= inner.cfg.claim_batch;
        // Only a full batch's endpoints are looked at below.
        let filled: Vec<String> =
            if full_batch { claimed.iter().map(|t| t.endpoint.id.clone()).collect() } else { Vec::new() };
        if !claimed.is_empty() {
            tracing::debug!(count = claimed.len(), "claimed due deliveries");
            let busy = inner.admit_all(
                claimed.into_iter().map(|task| QueuedAttempt { task, trigger: Trigger::Scheduled }),
            );
            inner.give_back(busy).await;
        }
        // A full batch may have left more: claim again at once, unless the
        // batch only filled lanes. Then the next claim would skip them by
        // walking their whole backlog, to find work that has woken the
        // scheduler already when it became due (ingest, releases and
        // retries wake it for lanes with room; a lane that frees up does).
        if full_batch && !inner.lock_lanes().all_full(filled.iter().map(String::as_str)) {
            tokio::task::yield_now().await;
            continue;
        }

        // The lanes this claim filled are skipped too.
        let skip = inner.lock_lanes().full_endpoints();
        let next = match inner.store.next_due(now, &skip).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "reading the next due time failed");
                None
            }
        };
        inner.planned_wake.store(next.map_or(i64::MAX, |t| t.as_millis()), Ordering::Release);
        let sleep = next.map(|t| inner.clock.sleep_until(t));
        tokio::select! {
            _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(SAFETY_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}
