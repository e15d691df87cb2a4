//! The simulated disk: the real [`SqliteStore`] behind a wrapper that, by
//! the seed, fails calls either before reaching the store (nothing
//! written) or after it (written, but the caller sees an error, like a
//! reply lost on the way back). It implements [`DispatchStore`], and
//! ingest as `MessageStore::create_message`, so the simulation's node calls
//! it as the dispatcher and the service call the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::time::Timestamp;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    AttemptEffects, AttemptRecord, CreateMessage, CreatedMessage, DeliveryKey, DeliveryTask, DispatchStore,
    Lease, MessageStore, StoreError, StoreResult,
};

/// When an injected failure strikes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum When {
    Before,
    After,
}

pub struct FaultyStore {
    inner: Arc<SqliteStore>,
    /// Chance of a failure per call (half before, half after).
    rate: f64,
    state: Mutex<FaultState>,
}

struct FaultState {
    rng: StdRng,
    /// Failures injected, by call and when.
    injected: BTreeMap<String, u64>,
    /// Calls made, by name.
    calls: BTreeMap<&'static str, u64>,
}

impl FaultyStore {
    /// `rate`: the chance that a call fails (0 for none).
    pub fn new(inner: Arc<SqliteStore>, seed: u64, rate: f64) -> Self {
        let state = FaultState {
            rng: StdRng::seed_from_u64(seed),
            injected: BTreeMap::new(),
            calls: BTreeMap::new(),
        };
        FaultyStore { inner, rate, state: Mutex::new(state) }
    }

    /// The store itself, for the simulation's own reads and the operator's
    /// changes (never failed).
    pub fn inner(&self) -> &Arc<SqliteStore> {
        &self.inner
    }

    /// After a crash: the store reopened from its file.
    pub fn reopen(&mut self, inner: Arc<SqliteStore>) {
        self.inner = inner;
    }

    /// Ingest, as the service calls it (`MessageStore::create_message`).
    pub async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        self.faulty("create_message", self.inner.create_message(req)).await
    }

    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.lock().injected.clone()
    }

    /// Calls the node made, by name.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this call fails, and when. Drawn when the call is first
    /// polled: the node polls its calls in a fixed order.
    fn draw(&self, call: &'static str) -> Option<When> {
        let mut s = self.lock();
        *s.calls.entry(call).or_default() += 1;
        if self.rate <= 0.0 {
            return None;
        }
        let u: f64 = s.rng.random();
        let when = if u < self.rate / 2.0 {
            When::Before
        } else if u < self.rate {
            When::After
        } else {
            return None;
        };
        let name = format!("store: {call} failed {}", if when == When::Before { "before" } else { "after" });
        *s.injected.entry(name).or_default() += 1;
        Some(when)
    }

    async fn faulty<T, F>(&self, call: &'static str, work: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = StoreResult<T>>,
    {
        let when = self.draw(call);
        if when == Some(When::Before) {
            return Err(injected(call, "before"));
        }
        let result = work.await;
        match when {
            Some(_) => result.and(Err(injected(call, "after"))),
            None => result,
        }
    }
}

fn injected(call: &str, when: &str) -> StoreError {
    StoreError::Backend(format!("injected failure of {call}, {when} the store"))
}

#[async_trait]
impl DispatchStore for FaultyStore {
    async fn claim_due(
        &self,
        now: Timestamp,
        lease: &Lease,
        limit: usize,
        skip_endpoints: &[String],
    ) -> StoreResult<Vec<DeliveryTask>> {
        self.faulty("claim_due", self.inner.claim_due(now, lease, limit, skip_endpoints)).await
    }

    async fn next_due(&self, now: Timestamp, skip_endpoints: &[String]) -> StoreResult<Option<Timestamp>> {
        self.faulty("next_due", self.inner.next_due(now, skip_endpoints)).await
    }

    async fn release(&self, keys: &[DeliveryKey], due: Timestamp) -> StoreResult<()> {
        self.faulty("release", self.inner.release(keys, due)).await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        self.faulty("release_all", self.inner.release_all(owner)).await
    }

    async fn renew_leases(&self, owner: &str, keys: &[DeliveryKey], until: Timestamp) -> StoreResult<u64> {
        self.faulty("renew_leases", self.inner.renew_leases(owner, keys, until)).await
    }

    async fn record_attempt(&self, record: AttemptRecord) -> StoreResult<AttemptEffects> {
        self.faulty("record_attempt", self.inner.record_attempt(record)).await
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        self.inner.count_pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TenantStore;

    #[tokio::test]
    async fn failures_strike_before_or_after_the_store_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let faulty = FaultyStore::new(Arc::clone(&store), 7, 1.0);
        let (mut before, mut after) = (0, 0);
        for _ in 0..40 {
            let err = faulty.release_all(None).await.unwrap_err().to_string();
            if err.contains("before") {
                before += 1;
            } else {
                assert!(err.contains("after"), "{err}");
                after += 1;
            }
        }
        assert!(before > 0 && after > 0);
        let counts = faulty.injected();
        assert_eq!(counts.values().sum::<u64>(), 40);
        assert_eq!(counts.get("store: release_all failed before").copied().unwrap_or(0), before);
        // A rate of 0 never fails; the inner store is the same database.
        let clean = FaultyStore::new(store, 7, 0.0);
        assert_eq!(clean.count_pending().await.unwrap(), 0);
        assert!(!clean.inner().has_admin_token().await.unwrap());
    }
}
