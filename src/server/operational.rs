//! Operational webhooks, wired: the events that `dispatch` and `service`
//! drop into the [`Emitter`](crate::operational::Emitter) are sent here as
//! ordinary messages of the reserved application, and
//! `--operational-webhook-url` subscribes an endpoint to them.
//!
//! Sending goes through the [`Service`], so it lives with the wiring rather
//! than in [`crate::operational`], which the service itself uses.

use std::sync::Weak;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::domain::model::{AppSpec, EndpointSpec, NewMessage};
use crate::operational::{APP_UID, Event};
use crate::service::{Service, ServiceError, ServiceResult};
use crate::store::StoreError;

/// At most this many queued events share one look-up of the operational
/// application: creating 10,000 endpoints at once queues 10,000 events,
/// and with no operational endpoint configured each of them would
/// otherwise cost a store read for nothing.
const BATCH: usize = 256;

/// Turn events into messages of the operational application, until
/// `drained` says nothing emits any more (or the service is gone); then
/// what is already queued is sent and the task ends.
pub(super) async fn forward(
    mut rx: mpsc::UnboundedReceiver<Event>,
    service: Weak<Service>,
    mut drained: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            // The emitters live as long as the service, so the channel
            // never closes on its own during shutdown.
            _ = drained.wait_for(|d| *d) => rx.try_recv().ok(),
        };
        let Some(event) = event else { break };
        let mut events = vec![event];
        while events.len() < BATCH
            && let Ok(event) = rx.try_recv()
        {
            events.push(event);
        }
        let Some(service) = service.upgrade() else { break };
        if let Err(e) = send(&service, events).await {
            tracing::warn!(error = %e, "could not queue an operational webhook");
        }
    }
}

/// One message of the operational application per event, in order; none
/// when no operational endpoint was ever configured. Fails only when the
/// application cannot be read; an event that cannot be queued is logged
/// and the others still go.
async fn send(service: &Service, events: Vec<Event>) -> ServiceResult<()> {
    let Some(app) = service.store.get_app(APP_UID).await? else {
        return Ok(()); // no operational endpoints configured
    };
    for event in events {
        if app.id == event.app_id {
            continue;
        }
        let payload =
            json!({"type": event.kind, "timestamp": service.now().to_rfc3339(), "data": event.data});
        let new = NewMessage {
            event_type: event.kind.to_owned(),
            event_id: None,
            channels: None,
            tags: None,
            payload: Bytes::from(payload.to_string()),
            deliver_at: None,
            create_app: None,
            retention: None,
            ordering_key: None,
            trace: None,
        };
        if let Err(e) = service.create_message(&app.id, new, None).await {
            tracing::warn!(error = %e, kind = event.kind, "could not queue an operational webhook");
        }
    }
    Ok(())
}

/// The operational-webhook application, with an endpoint for `url`.
pub(super) async fn ensure_endpoint(service: &Service, url: &str) -> anyhow::Result<()> {
    let app = match service.store.get_app(APP_UID).await? {
        Some(app) => app,
        None => {
            let spec = AppSpec {
                uid: Some(APP_UID.into()),
                name: "Hookline operational webhooks".into(),
                ..Default::default()
            };
            match service.create_app(spec).await {
                Ok(app) => app,
                // Another node starting at the same time created it.
                Err(ServiceError::Store(StoreError::Conflict(_))) => {
                    service.store.get_app(APP_UID).await?.context("operational application vanished")?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !service.all_endpoints(&app.id).await?.iter().any(|e| e.url == url) {
        // A uid derived from the URL: nodes starting together on one
        // database create one endpoint between them, not one each.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(url.as_bytes());
        let uid = format!("op-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
        let spec = EndpointSpec { uid: Some(uid), url: url.to_owned(), ..Default::default() };
        match service.create_endpoint(&app.id, spec).await {
            Ok(ep) => tracing::info!(endpoint_id = %ep.id, url, "operational webhook endpoint created"),
            Err(ServiceError::Store(StoreError::Conflict(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
