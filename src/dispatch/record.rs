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
/// has been starting attempts to the endpoint (see `Lanes::sending_rate`).
pub fn record_for(
    done: Finished<'_>,
    cfg: &DispatchConfig,
    draws: Draws,
    sending_rate: f64,
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
    }
}

/// The lease this node puts on deliveries it will send from `now`.
pub fn lease(cfg: &DispatchConfig, now: Timestamp) -> Lease {
    Lease { owner: cfg.node_id.clone(), until: now.plus(cfg.lease) }
}
