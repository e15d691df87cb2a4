//! Test-only builders for domain values.

use bytes::Bytes;

use super::model::{Endpoint, Message};
use super::time::Timestamp;

/// An enabled endpoint with no filters.
pub fn endpoint(id: &str) -> Endpoint {
    let t0 = Timestamp::from_millis(0);
    Endpoint {
        id: id.into(),
        app_id: "app_1".into(),
        uid: None,
        url: "https://example.com/hook".into(),
        description: String::new(),
        disabled: false,
        event_types: None,
        channels: None,
        metadata: Default::default(),
        headers: Default::default(),
        throttle_rate: None,
        max_in_flight: None,
        fifo: false,
        ordering_on_failure: Default::default(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        old_secrets: Vec::new(),
        retry_policy: None,
        failing_since: None,
        created_at: t0,
        updated_at: t0,
        disabled_at: None,
    }
}

pub fn message(id: &str) -> Message {
    Message {
        id: id.into(),
        app_id: "app_1".into(),
        event_type: "test.event".into(),
        event_id: None,
        channels: None,
        tags: None,
        payload: Some(Bytes::from_static(b"{}")),
        created_at: Timestamp::from_millis(0),
        deliver_at: None,
        expires_at: None,
        ordering_key: None,
        trace: None,
    }
}
