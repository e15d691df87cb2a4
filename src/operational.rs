//! Operational webhooks: events about Hookline's own work (an endpoint was
//! disabled, a message ran out of retries, endpoints were created, changed
//! or deleted), sent to the operators' endpoints.
//!
//! They are ordinary messages of a reserved application (uid
//! [`APP_UID`]), so they are signed, retried and logged like any other.
//! Operators add endpoints to it through `/api/v1/operational-webhook/endpoint`
//! (the Svix SDK's `operational_webhook_endpoint`), `--operational-webhook-url`,
//! or the application's own endpoint routes. Until then events are dropped.
//!
//! This module only describes events and collects them; it depends on
//! nothing but `domain`, so the dispatcher and the service can emit. The
//! server's wiring (`server/operational.rs`) takes them from the channel
//! and sends them through the service.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::domain::model::{Attempt, Endpoint, Message};
use crate::domain::time::Timestamp;

/// The reserved application that carries operational webhooks.
pub const APP_UID: &str = "hookline-operational";

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Svix's operational event type, e.g. `endpoint.disabled`.
    pub kind: &'static str,
    /// The application the event is about (events about the operational
    /// application itself are not sent, to avoid feedback loops).
    pub app_id: String,
    pub data: Value,
}

pub fn endpoint_event(kind: &'static str, ep: &Endpoint) -> Event {
    Event {
        kind,
        app_id: ep.app_id.clone(),
        data: json!({"appId": ep.app_id, "endpointId": ep.id, "endpointUid": ep.uid}),
    }
}

pub fn endpoint_disabled(ep: &Endpoint, failing_since: Option<Timestamp>, automatic: bool) -> Event {
    Event {
        kind: "endpoint.disabled",
        app_id: ep.app_id.clone(),
        data: json!({
            "appId": ep.app_id,
            "endpointId": ep.id,
            "endpointUid": ep.uid,
            "failSince": failing_since.map(Timestamp::to_rfc3339),
            "trigger": if automatic { "automatic" } else { "receiver" },
        }),
    }
}

pub fn attempt_event(kind: &'static str, msg: &Message, attempt: &Attempt) -> Event {
    Event {
        kind,
        app_id: msg.app_id.clone(),
        data: json!({
            "appId": msg.app_id,
            "msgId": msg.id,
            "msgEventId": msg.event_id,
            "endpointId": attempt.endpoint_id,
            "lastAttempt": {
                "id": attempt.id,
                "responseStatusCode": attempt.status_code,
                "timestamp": attempt.created_at.to_rfc3339(),
            },
        }),
    }
}

/// Where events are dropped off; cheap to clone, never blocks.
#[derive(Clone, Debug, Default)]
pub struct Emitter {
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl Emitter {
    pub fn channel() -> (Emitter, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Emitter { tx: Some(tx) }, rx)
    }

    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}
