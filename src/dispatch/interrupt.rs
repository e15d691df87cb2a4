//! Ending attempts that outlive the shutdown grace period. Each is cut off
//! and recorded like any failed attempt (no status, "interrupted by
//! shutdown"), so the attempt log shows what the receiver saw: a request
//! that was sent and never finished. The delivery is retried on its
//! schedule, by this node after a restart or by another node.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::sender::Sent;

/// The error text of an attempt cut off by shutdown.
pub const INTERRUPTED: &str = "interrupted by shutdown before a response arrived";

/// How long interrupted attempts get to be recorded before the process goes
/// on stopping without them (their leases then cover them).
pub const RECORD_WAIT: Duration = Duration::from_secs(5);

/// `send`, unless `interrupt` turns true first.
pub async fn unless_interrupted(send: impl Future<Output = Sent>, interrupt: &watch::Sender<bool>) -> Sent {
    let timer = Instant::now();
    let mut interrupted = interrupt.subscribe();
    tokio::select! {
        sent = send => sent,
        _ = interrupted.wait_for(|i| *i) => Sent {
            error: Some(INTERRUPTED.into()),
            duration_ms: timer.elapsed().as_millis() as i64,
            ..Sent::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_cut_off_says_so() {
        let interrupt = watch::Sender::new(false);
        let pending = std::future::pending::<Sent>();
        let (sent, ()) = tokio::join!(unless_interrupted(pending, &interrupt), async {
            tokio::task::yield_now().await;
            interrupt.send_replace(true);
        });
        assert_eq!(sent.status, None);
        assert_eq!(sent.error.as_deref(), Some(INTERRUPTED));
    }

    #[tokio::test]
    async fn an_attempt_that_finishes_is_left_alone() {
        let interrupt = watch::Sender::new(false);
        let done = async { Sent { status: Some(200), ..Sent::default() } };
        assert_eq!(unless_interrupted(done, &interrupt).await.status, Some(200));
    }
}
