//! Time, injected.
//!
//! Everything that reads the time or waits for it goes through a [`Clock`].
//! Production uses [`SystemClock`]; tests use [`ManualClock`], which only
//! moves when told to, so a 28-hour retry schedule runs in milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::domain::time::Timestamp;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time, waiting with tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp::from_millis(ms)
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = deadline.since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that stands still until [`ManualClock::advance`] or
/// [`ManualClock::set`] moves it; sleepers wake when it passes their deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { now: Arc::new(watch::Sender::new(start)) }
    }

    /// Starts at the current wall-clock time, so signatures made with it
    /// still pass receivers' timestamp tolerance until it is advanced.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|t| *t = t.plus(d));
    }

    /// Move to `t`; never moves backwards.
    pub fn set(&self, t: Timestamp) {
        self.now.send_modify(|now| *now = (*now).max(t));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, then every change.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let sleeper = tokio::spawn(clock.sleep_until(Timestamp::from_millis(5_000)));
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
        assert_eq!(clock.now(), Timestamp::from_millis(5_000));
    }

    #[tokio::test]
    async fn manual_clock_never_goes_back_and_past_deadlines_resolve_at_once() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        clock.set(Timestamp::from_millis(5));
        assert_eq!(clock.now(), Timestamp::from_millis(10));
        clock.sleep_until(Timestamp::from_millis(1)).await;
    }
}
