//! The things Hookline stores: applications, endpoints, messages, deliveries
//! (one message × one endpoint) and attempts (one HTTP request of a delivery).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::ordering::OnFailure;
use super::retry::RetryPolicy;
use super::signing::SecretKind;
use super::time::Timestamp;

pub type Metadata = BTreeMap<String, String>;

/// A patch field: `Some` replaces the value, `None` leaves it.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
pub type Headers = BTreeMap<String, String>;

/// Custom headers whose values are credentials, by name: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, and any name containing `secret`,
/// `token`, `api-key`, `apikey`, `password` or `signature` (any case). Their
/// values are never shown by the API and are encrypted at rest with the
/// main key, like signing secrets.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "authorization" | "proxy-authorization" | "cookie")
        || ["secret", "token", "api-key", "apikey", "password", "signature"].iter().any(|w| n.contains(w))
}
pub type NameSet = BTreeSet<String>;

/// A set of names as the API takes it: a JSON array whose items are all
/// different (a repeated item is an error, so the count a client sent is
/// the count checked against the limits), or `null`.
pub fn unique_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NameSet>, D::Error> {
    let Some(items) = <Option<Vec<String>> as serde::Deserialize>::deserialize(d)? else {
        return Ok(None);
    };
    let mut set = NameSet::new();
    for item in items {
        if set.contains(&item) {
            return Err(serde::de::Error::custom(format!("'{item}' is repeated")));
        }
        set.insert(item);
    }
    Ok(Some(set))
}

/// [`unique_names`] for PATCH fields: absent is `None`, `null` `Some(None)`.
pub fn patch_unique_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<NameSet>>, D::Error> {
    unique_names(d).map(Some)
}

/// A tenant: one of our user's customers.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub metadata: Metadata,
    pub throttle_rate: Option<u16>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Fields of an application that callers set (create, PUT).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppSpec {
    pub uid: Option<String>,
    pub name: String,
    pub metadata: Metadata,
    pub throttle_rate: Option<u16>,
}

/// A partial update (PATCH): `None` leaves a field alone; for nullable fields
/// `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppPatch {
    pub uid: Option<Option<String>>,
    pub name: Option<String>,
    pub metadata: Option<Metadata>,
    pub throttle_rate: Option<Option<u16>>,
}

impl AppPatch {
    /// A PUT is a patch that sets every field.
    pub fn replace_all(spec: AppSpec) -> Self {
        AppPatch {
            uid: Some(spec.uid),
            name: Some(spec.name),
            metadata: Some(spec.metadata),
            throttle_rate: Some(spec.throttle_rate),
        }
    }

    pub fn apply(self, app: &mut App, now: Timestamp) {
        set(&mut app.uid, self.uid);
        set(&mut app.name, self.name);
        set(&mut app.metadata, self.metadata);
        set(&mut app.throttle_rate, self.throttle_rate);
        app.updated_at = now;
    }
}

/// A URL of an application that receives messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub app_id: String,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub disabled: bool,
    /// Event types it wants; `None` means all.
    pub event_types: Option<NameSet>,
    /// Channels it listens to; `None` means all messages.
    pub channels: Option<NameSet>,
    pub metadata: Metadata,
    /// Extra headers sent with every request.
    pub headers: Headers,
    /// Messages per second at most (`None`: the application's, else no limit).
    pub throttle_rate: Option<u16>,
    /// Requests in flight at once at most (`None`: the server's default).
    pub max_in_flight: Option<u16>,
    /// Every message in acceptance order, as if all had one ordering key.
    pub fifo: bool,
    /// What an ordering key does when its head fails for good.
    pub ordering_on_failure: OnFailure,
    /// Signing secret: `whsec_…` (HMAC) or `whsk_…` (ed25519).
    pub secret: String,
    /// Secrets replaced by a rotation, still signing until they expire.
    pub old_secrets: Vec<OldSecret>,
    /// `None` falls back to the server default.
    pub retry_policy: Option<RetryPolicy>,
    /// Start of the current run of failed attempts (auto-disable).
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When it was last disabled (by hand or automatically); kept when it
    /// is enabled again, so what it missed meanwhile can be offered. The
    /// stores' triggers keep it whatever path disables the endpoint.
    pub disabled_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OldSecret {
    pub secret: String,
    pub expires_at: Timestamp,
}

impl Endpoint {
    /// The secrets that sign a request sent at `now`: the current one, then
    /// rotated-out ones still in their grace period.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&str> {
        let old = self.old_secrets.iter().filter(|o| o.expires_at > now).map(|o| o.secret.as_str());
        std::iter::once(self.secret.as_str()).chain(old).collect()
    }
}

/// Replace the secret; the current one keeps signing until `old_valid_until`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rotation {
    pub new_secret: String,
    pub old_valid_until: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSpec {
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub disabled: bool,
    pub event_types: Option<NameSet>,
    pub channels: Option<NameSet>,
    pub metadata: Metadata,
    pub headers: Headers,
    pub throttle_rate: Option<u16>,
    pub max_in_flight: Option<u16>,
    pub fifo: bool,
    pub ordering_on_failure: OnFailure,
    /// `None` generates a fresh secret of `secret_kind`.
    pub secret: Option<String>,
    pub secret_kind: SecretKind,
    pub retry_policy: Option<RetryPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointPatch {
    pub uid: Option<Option<String>>,
    pub url: Option<String>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
    pub event_types: Option<Option<NameSet>>,
    pub channels: Option<Option<NameSet>>,
    pub metadata: Option<Metadata>,
    pub headers: Option<Headers>,
    pub throttle_rate: Option<Option<u16>>,
    pub max_in_flight: Option<Option<u16>>,
    pub fifo: Option<bool>,
    pub ordering_on_failure: Option<OnFailure>,
    pub retry_policy: Option<Option<RetryPolicy>>,
    pub rotate: Option<Rotation>,
    /// Forget when it was last disabled (`disabled_at`): what it missed
    /// meanwhile is no longer offered.
    pub forget_disabled: bool,
}

impl EndpointPatch {
    /// A PUT: every field the update body carries is replaced. Headers and
    /// the secret are not part of Svix's update body, so they are kept; so
    /// are Hookline's extensions (flow and ordering), which an SDK that does
    /// not know them must not reset: the API sets them when the body has them.
    pub fn replace_all(spec: EndpointSpec) -> Self {
        EndpointPatch {
            uid: Some(spec.uid),
            url: Some(spec.url),
            description: Some(spec.description),
            disabled: Some(spec.disabled),
            event_types: Some(spec.event_types),
            channels: Some(spec.channels),
            metadata: Some(spec.metadata),
            headers: None,
            throttle_rate: Some(spec.throttle_rate),
            max_in_flight: None,
            fifo: None,
            ordering_on_failure: None,
            retry_policy: Some(spec.retry_policy),
            rotate: None,
            forget_disabled: false,
        }
    }

    pub fn apply(self, ep: &mut Endpoint, now: Timestamp) {
        set(&mut ep.uid, self.uid);
        set(&mut ep.url, self.url);
        set(&mut ep.description, self.description);
        if self.disabled == Some(true) && !ep.disabled {
            ep.disabled_at = Some(now);
        } else if self.forget_disabled {
            ep.disabled_at = None;
        }
        set(&mut ep.disabled, self.disabled);
        set(&mut ep.event_types, self.event_types);
        set(&mut ep.channels, self.channels);
        set(&mut ep.metadata, self.metadata);
        set(&mut ep.headers, self.headers);
        set(&mut ep.throttle_rate, self.throttle_rate);
        set(&mut ep.max_in_flight, self.max_in_flight);
        set(&mut ep.fifo, self.fifo);
        set(&mut ep.ordering_on_failure, self.ordering_on_failure);
        set(&mut ep.retry_policy, self.retry_policy);
        if self.disabled == Some(false) {
            // Re-enabled: the failure streak starts afresh.
            ep.failing_since = None;
        }
        ep.old_secrets.retain(|o| o.expires_at > now);
        if let Some(r) = self.rotate {
            let old = std::mem::replace(&mut ep.secret, r.new_secret);
            ep.old_secrets.insert(0, OldSecret { secret: old, expires_at: r.old_valid_until });
        }
        ep.updated_at = now;
    }
}

/// One event sent to an application.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: String,
    pub app_id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<NameSet>,
    pub tags: Option<NameSet>,
    /// The payload's JSON bytes exactly as received; `None` once expunged.
    pub payload: Option<Bytes>,
    pub created_at: Timestamp,
    /// Delayed delivery: the first attempt is not made before this time.
    pub deliver_at: Option<Timestamp>,
    /// When the payload is expunged (retention).
    pub expires_at: Option<Timestamp>,
    /// Messages with the same key reach each endpoint in acceptance order.
    pub ordering_key: Option<String>,
    /// The trace its attempts join (W3C trace context), if it was created
    /// in one.
    pub trace: Option<TraceContext>,
}

impl Message {
    /// When its first attempt is due: its delay, never before it was created.
    pub fn first_attempt_at(&self) -> Timestamp {
        self.deliver_at.unwrap_or(self.created_at).max(self.created_at)
    }
}

/// A W3C trace context as carried by the `traceparent` and `tracestate`
/// headers, already checked (see `crate::traces`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<NameSet>,
    pub tags: Option<NameSet>,
    pub payload: Bytes,
    pub deliver_at: Option<Timestamp>,
    /// Create this application if the path's id/uid does not exist yet.
    pub create_app: Option<AppSpec>,
    /// Keep the payload this long (default: the server's retention).
    pub retention: Option<std::time::Duration>,
    pub ordering_key: Option<String>,
    /// The trace context of the request that created it.
    pub trace: Option<TraceContext>,
}

/// Status of a delivery, numbered as Svix's `MessageStatus`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Success = 0,
    Pending = 1,
    Fail = 2,
    Sending = 3,
}

impl DeliveryStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => DeliveryStatus::Success,
            1 => DeliveryStatus::Pending,
            2 => DeliveryStatus::Fail,
            3 => DeliveryStatus::Sending,
            _ => return None,
        })
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Success => "success",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Fail => "fail",
            DeliveryStatus::Sending => "sending",
        }
    }
}

/// Why an attempt was made, numbered as Svix's `MessageAttemptTriggerType`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    Scheduled = 0,
    Manual = 1,
}

impl Trigger {
    pub fn from_code(code: i64) -> Self {
        if code == 1 { Trigger::Manual } else { Trigger::Scheduled }
    }

    pub fn code(self) -> i64 {
        self as i64
    }
}

/// One message × one endpoint, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    /// `Sending` is reported while a dispatcher holds a lease on it.
    pub status: DeliveryStatus,
    /// Scheduled attempts made so far (manual ones are not counted).
    pub attempts: u32,
    pub next_attempt: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// Every attempt, manual ones included.
    pub total_attempts: u32,
    /// Status code of the latest attempt (0: no response).
    pub last_code: Option<u16>,
    pub last_attempt_at: Option<Timestamp>,
    /// Held back by ordering: the message of its key it waits for.
    pub waiting_for: Option<String>,
}

/// One HTTP request of a delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    pub url: String,
    /// `Success` or `Fail`.
    pub status: DeliveryStatus,
    /// 0 when there was no HTTP response.
    pub status_code: u16,
    /// The first 64 KiB of the response body (lossy UTF-8).
    pub response: String,
    pub duration_ms: i64,
    pub trigger: Trigger,
    /// Timeouts, connection and TLS failures, refused targets.
    pub error: Option<String>,
    pub created_at: Timestamp,
}

/// Who is calling the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every application.
    Admin,
    /// One application, by id.
    App(String),
}

impl Scope {
    pub fn allows_app(&self, app_id: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::App(id) => id == app_id,
        }
    }
}

/// A kind of event, for the catalogue and endpoint filters.
#[derive(Clone, Debug, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    /// Archived types are hidden from listings unless asked for.
    pub archived: bool,
    pub deprecated: bool,
    /// JSON Schemas by version (`{"1": {…}}`), with optional `examples`.
    pub schemas: Option<serde_json::Value>,
    pub group_name: Option<String>,
    pub feature_flags: Option<NameSet>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventTypePatch {
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    pub schemas: Option<Option<serde_json::Value>>,
    pub group_name: Option<Option<String>>,
    pub feature_flags: Option<Option<NameSet>>,
}

impl EventTypePatch {
    pub fn apply(self, et: &mut EventType, now: Timestamp) {
        set(&mut et.description, self.description);
        set(&mut et.archived, self.archived);
        set(&mut et.deprecated, self.deprecated);
        set(&mut et.schemas, self.schemas);
        set(&mut et.group_name, self.group_name);
        set(&mut et.feature_flags, self.feature_flags);
        et.updated_at = now;
    }
}

/// A bulk operation (recover, replay, purge), recorded for its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    /// Svix's task type, e.g. `endpoint.recover`.
    pub kind: String,
    /// `running`, `finished` or `failed`.
    pub status: String,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What the applications list shows about each application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppSummary {
    pub endpoints: u64,
    /// Messages, counted up to a cap (see `Store::app_summaries`).
    pub messages: u64,
    pub last_message_at: Option<Timestamp>,
}

/// Deliveries of one endpoint, counted by status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub success: u64,
    pub pending: u64,
    pub sending: u64,
    pub fail: u64,
}
