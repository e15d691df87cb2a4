//! What one finished attempt asks the store to record: the `Attempt` row,
//! the outcome by the endpoint's policy, what the answer steers (410,
//! `webhook-delivery`, `Retry-After`), what it says about the receiver's
//! load, and the lease for an ordering key's next message.
//!
//! Pure: the dispatcher passes a random jitter draw and a fresh attempt id;
//! the deterministic simulation (`crate::sim`) passes seeded ones, so both
//! record attempts through exactly this code.

use super::DispatchConfig;
use super::sender::Sent;
use crate::domain::delivery::Outcome;
use crate::domain::flow::Signal;
use crate::domain::model::{Attempt, Trigger};
use crate::domain::ordering;
use crate::domain::retry::RetryPolicy;
use crate::domain::steering::Steering;
use crate::domain::time::Timestamp;
use crate::store::{AttemptRecord, DeliveryTask, Lease};

/// The policy an attempt to the task's endpoint follows.
pub fn policy(task: &DeliveryTask, cfg: &DispatchConfig) -> RetryPolicy {
    task.endpoint.retry_policy.clone().unwrap_or_else(|| cfg.default_policy.clone())
}

/// One attempt as made: what was sent, why, and when.
pub struct Finished<'a> {
    pub task: &'a DeliveryTask,
    pub trigger: Trigger,
    /// The policy it was made under ([`policy`]).
    pub policy: RetryPolicy,
    pub sent: Sent,
    pub started: Timestamp,
    pub finished_at: Timestamp,
}

/// Where the record's random parts come from.
pub struct Draws {
    /// The new attempt's id (`atmpt_…`).
    pub attempt_id: String,
    /// Uniform in [0, 1): spreads the next retry by ± `cfg.jitter`.
    pub jitter: f64,
}

/// The record of a finished attempt. `sending_rate` is how fast this node
/// has been starting attempts to the endpoint (see `Lanes::sending_rate`);
/// `queued_behind`: attempts wait in the endpoint's lane for this one's
/// slot.
pub fn record_for(
    done: Finished<'_>,
    cfg: &DispatchConfig,
    draws: Draws,
    sending_rate: f64,
    queued_behind: bool,
) -> AttemptRecord {
    let Finished { task, trigger, policy, sent, started, finished_at } = done;
    let outcome = Outcome::classify(&policy, sent.status);
    let steering = Steering::from_response(
        sent.status,
        sent.retry_after.as_deref(),
        sent.directive.as_deref(),
        finished_at,
    );
    let attempt = Attempt {
        id: draws.attempt_id,
        msg_id: task.message.id.clone(),
        endpoint_id: task.endpoint.id.clone(),
        app_id: task.message.app_id.clone(),
        url: task.endpoint.url.clone(),
        status: outcome.attempt_status(),
        status_code: sent.status.unwrap_or(0),
        response: sent.body,
        duration_ms: sent.duration_ms,
        trigger,
        error: sent.error,
        created_at: started,
    };
    let signal =
        Signal::classify(outcome == Outcome::Delivered, sent.status, steering.retry_after, finished_at);
    AttemptRecord {
        attempt,
        outcome,
        policy,
        finished_at,
        steering,
        jitter: cfg.jitter * (draws.jitter * 2.0 - 1.0),
        auto_disable_after: cfg.auto_disable_after,
        signal,
        sending_rate,
        paced: task.paced,
        lease: Some(lease(cfg, finished_at)),
        awaited: queued_behind
            || ordering::key_for(task.message.ordering_key.as_deref(), task.endpoint.fifo).is_some(),
    }
}

/// The lease this node puts on deliveries it will send from `now`.
pub fn lease(cfg: &DispatchConfig, now: Timestamp) -> Lease {
    Lease { owner: cfg.node_id.clone(), until: now.plus(cfg.lease) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::fixtures;
    use crate::domain::model::Endpoint;

    /// Whether anything waits for the record's commit: a queue in the
    /// endpoint's lane, or the next message of its ordering key (a message
    /// key, or the endpoint's FIFO key).
    #[test]
    fn a_record_is_awaited_by_a_lane_queue_or_an_ordering_key() {
        let awaited = |key: Option<&str>, fifo: bool, queued_behind: bool| {
            let mut message = fixtures::message("msg_1");
            message.ordering_key = key.map(str::to_owned);
            let endpoint = Endpoint { fifo, ..fixtures::endpoint("ep_1") };
            let task =
                DeliveryTask { message: Arc::new(message), endpoint: Arc::new(endpoint), paced: false };
            let at = Timestamp::from_millis(1_000);
            let sent = Sent {
                status: Some(200),
                body: String::new(),
                error: None,
                duration_ms: 1,
                retry_after: None,
                directive: None,
            };
            let done = Finished {
                task: &task,
                trigger: Trigger::Scheduled,
                policy: RetryPolicy::default(),
                sent,
                started: at,
                finished_at: at,
            };
            let draws = Draws { attempt_id: "atmpt_1".into(), jitter: 0.5 };
            record_for(done, &DispatchConfig::default(), draws, 0.0, queued_behind).awaited
        };
        assert!(!awaited(None, false, false), "plain traffic with an empty lane: nobody waits");
        assert!(awaited(None, false, true), "attempts queued behind it wait for its slot");
        assert!(awaited(Some("user-1"), false, false), "its key's next message waits for it");
        assert!(awaited(None, true, false), "a FIFO endpoint's next message waits for it");
    }
}
