//! The operations Hookline offers, over the store and the dispatcher.
//!
//! The API and the dashboard both call these; neither talks to a store
//! implementation or the dispatcher on its own for anything with a side
//! effect. Ids, timestamps and secrets are made here, so the store only
//! persists what it is given.
//!
//! When the service does not do what was asked, it says why in a
//! [`ServiceError`]: a business rule refused (`Refused`, e.g. the endpoint
//! is disabled), nothing by that name exists (`NotFound`), or the store
//! failed or refused (`Store`, e.g. a uid already taken).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::dispatch::Dispatcher;
use crate::domain::model::{
    App, AppPatch, AppSpec, DeliveryStatus, Endpoint, EndpointPatch, EndpointSpec, EventType, EventTypePatch,
    Message, NameSet, NewMessage, Rotation, Scope, Task,
};
use crate::domain::signing::{self, SecretKind};
use crate::domain::time::Timestamp;
use crate::domain::{id, ordering};
use crate::operational::{self, Emitter};
use crate::store::{
    AppFilter, BlockedKey, CreateMessage, Cursor, DeliveryTask, FlowView, IdempotencyBegin, MessageFilter,
    Order, Page, PageRequest, RequeueFilter, SharedStore, Store, StoreError, StoreResult, StoredResponse,
};
use crate::telemetry;
use crate::traces;

/// Why the service did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A business rule says no (the endpoint is disabled, the payload was
    /// expunged, …); the text says which, for the caller. The API answers
    /// 409.
    #[error("{0}")]
    Refused(String),
    /// What the request names does not exist (also when the store says so).
    #[error("not found")]
    NotFound,
    /// A field's value is not acceptable here (the API answers 422 naming
    /// `field`), e.g. an endpoint URL whose host is a blocked IP address.
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    /// The store failed, or refused because of what it holds (a uid or an
    /// event id already taken: `StoreError::Conflict`).
    #[error(transparent)]
    Store(StoreError),
}

impl ServiceError {
    fn refused(why: &str) -> Self {
        ServiceError::Refused(why.to_owned())
    }
}

/// A store's "not found" becomes the service's, so callers have one
/// variant to match.
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::NotFound,
            other => ServiceError::Store(other),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Default payload retention (a message may ask for less).
    pub retention: Duration,
    /// How long a rotated-out secret keeps signing.
    pub rotation_grace: Duration,
    /// Lifetime of app-portal tokens unless the request sets `expiry`.
    pub portal_token_ttl: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            retention: Duration::from_secs(90 * 24 * 3600),
            rotation_grace: Duration::from_secs(24 * 3600),
            portal_token_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Messages one recover sends at most (as Svix does), and how many it
/// reads from the store at a time.
pub const RECOVER_LIMIT: usize = 10_000;
const RECOVER_BATCH: usize = 250;
/// Names no endpoint: a message created "for" it gets no delivery.
const NO_ENDPOINT: &str = "";
/// Messages erased per store write when erasing by tag.
const ERASE_BATCH: usize = 500;

/// How long a validated token is trusted from memory before the store is
/// asked again (bounds how long a revoked token keeps working elsewhere).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Distinct tokens remembered at most (then the cache starts over).
const TOKEN_CACHE_MAX: usize = 10_000;

pub struct Service {
    pub store: SharedStore,
    pub dispatcher: Dispatcher,
    pub clock: SharedClock,
    pub cfg: ServiceConfig,
    events: Emitter,
    /// Token → (scope, trusted until).
    tokens: Mutex<HashMap<String, (Scope, Timestamp)>>,
}

/// API tokens are `hl_` followed by 40 random alphanumerics (~238 bits).
pub fn generate_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
    format!("hl_{body}")
}

/// Create and store a token with `scope`; usable without a running server.
pub async fn create_token(
    store: &dyn Store,
    scope: &Scope,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<String> {
    let token = generate_token();
    store.insert_token(&token_hash(&token), scope, expires_at, now).await?;
    Ok(token)
}

pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A message the service accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub message: Arc<Message>,
    /// It was accepted earlier under the same idempotency key; nothing new
    /// was stored or sent.
    pub replayed: bool,
}

/// Which deliveries a bulk replay sends again.
#[derive(Clone, Debug, Default)]
pub struct ReplayRequest {
    pub filter: RequeueFilter,
    pub dry_run: bool,
}

/// What an endpoint enabled again missed while it was disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    /// When it was disabled.
    pub since: Timestamp,
    /// How many messages it would be sent (of those looked at).
    pub count: u64,
    /// More messages than the cap allowed to look at: `count` is a floor.
    pub more: bool,
}

impl Service {
    pub fn new(
        store: SharedStore,
        dispatcher: Dispatcher,
        clock: SharedClock,
        cfg: ServiceConfig,
        events: Emitter,
    ) -> Self {
        Service { store, dispatcher, clock, cfg, events, tokens: Mutex::new(HashMap::new()) }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // --- tokens ---

    /// A new random token with `scope`; the only time it is ever shown.
    pub async fn create_token(&self, scope: &Scope, ttl: Option<Duration>) -> ServiceResult<String> {
        let now = self.now();
        Ok(create_token(&*self.store, scope, ttl.map(|d| now.plus(d)), now).await?)
    }

    /// Make sure `token` is a valid admin token (for `--admin-token`).
    pub async fn ensure_admin_token(&self, token: &str) -> ServiceResult<()> {
        let hash = token_hash(token);
        match self.store.find_token(&hash, self.now()).await? {
            Some(Scope::Admin) => Ok(()),
            Some(Scope::App(_)) => Err(ServiceError::refused("that token is scoped to one application")),
            None => match self.store.insert_token(&hash, &Scope::Admin, None, self.now()).await {
                // Another node sharing the database inserted it first.
                Err(StoreError::Conflict(_)) if self.store.find_token(&hash, self.now()).await?.is_some() => {
                    Ok(())
                }
                other => Ok(other?),
            },
        }
    }

    /// The scope of a valid token. Valid tokens are remembered (by their
    /// text, in memory) for [`TOKEN_CACHE_TTL`], so the common case costs a
    /// map lookup rather than a hash and a store read.
    pub async fn authenticate(&self, token: &str) -> ServiceResult<Option<Scope>> {
        let now = self.now();
        if let Some((scope, until)) = self.lock_tokens().get(token)
            && *until > now
        {
            return Ok(Some(scope.clone()));
        }
        let found = self.store.find_token(&token_hash(token), now).await?;
        let mut cache = self.lock_tokens();
        if cache.len() >= TOKEN_CACHE_MAX {
            cache.clear();
        }
        match &found {
            Some(scope) => {
                cache.insert(token.to_owned(), (scope.clone(), now.plus(TOKEN_CACHE_TTL)));
            }
            None => {
                cache.remove(token);
            }
        }
        Ok(found)
    }

    /// Another node changed tokens or configuration: cached answers may be
    /// stale (a revoked token must stop working everywhere).
    pub fn forget_cached(&self) {
        self.lock_tokens().clear();
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Scope, Timestamp)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Invalidate the token the caller used (app-scoped tokens only: an
    /// admin locking itself out by accident helps nobody).
    pub async fn logout(&self, token: &str, scope: &Scope) -> ServiceResult<()> {
        if *scope == Scope::Admin {
            return Err(ServiceError::refused("admin tokens cannot log out; only app-portal tokens can"));
        }
        self.lock_tokens().remove(token);
        self.store.delete_token(&token_hash(token)).await?;
        Ok(())
    }

    /// End a dashboard session: its token stops working at once.
    pub async fn end_session(&self, token: &str) -> ServiceResult<()> {
        self.lock_tokens().remove(token);
        self.store.delete_token(&token_hash(token)).await?;
        Ok(())
    }

    /// Svix's expire-all: every token scoped to the application stops
    /// working `after` from now (at once by default). Returns how many.
    pub async fn expire_app_tokens(&self, app: &App, after: Option<Duration>) -> ServiceResult<u64> {
        let at = self.now().plus(after.unwrap_or_default());
        let n = self.store.expire_app_tokens(&app.id, at).await?;
        // Tokens trusted from memory must be asked about again.
        self.forget_cached();
        Ok(n)
    }

    /// A token and URL giving access to one application only (app portal).
    pub async fn app_portal_access(&self, app: &App, ttl: Option<Duration>) -> ServiceResult<String> {
        self.create_token(&Scope::App(app.id.clone()), Some(ttl.unwrap_or(self.cfg.portal_token_ttl))).await
    }

    // --- applications ---

    fn new_app(&self, spec: AppSpec) -> App {
        let now = self.now();
        App {
            id: id::new_id(id::APP, now),
            uid: spec.uid,
            name: spec.name,
            metadata: spec.metadata,
            throttle_rate: spec.throttle_rate,
            created_at: now,
            updated_at: now,
        }
    }

    pub async fn create_app(&self, spec: AppSpec) -> ServiceResult<App> {
        let app = self.new_app(spec);
        self.store.insert_app(&app).await?;
        Ok(app)
    }

    pub async fn update_app(&self, app_id: &str, patch: AppPatch) -> ServiceResult<App> {
        Ok(self.store.update_app(app_id, patch, self.now()).await?)
    }

    pub async fn delete_app(&self, app: &App) -> ServiceResult<()> {
        let endpoints = self.all_endpoints(&app.id).await?;
        self.store.delete_app(&app.id).await?;
        for ep in endpoints {
            self.dispatcher.endpoint_stopped(&ep.id);
            self.events.emit(operational::endpoint_event("endpoint.deleted", &ep));
        }
        Ok(())
    }

    pub async fn all_endpoints(&self, app_id: &str) -> ServiceResult<Vec<Endpoint>> {
        let mut all = Vec::new();
        let mut page = PageRequest::first(250, Order::Ascending);
        loop {
            let p = self.store.list_endpoints(app_id, &page).await?;
            all.extend(p.items);
            match (p.more, all.last()) {
                (true, Some(last)) => page.cursor = Some(Cursor::After(last.id.clone())),
                _ => return Ok(all),
            }
        }
    }

    // --- endpoints ---

    /// Svix refuses an endpoint whose filter names an event type that does
    /// not exist or is archived: a typo would silently filter everything out.
    pub async fn check_event_types(&self, names: Option<&NameSet>) -> ServiceResult<()> {
        let mut unknown = Vec::new();
        for name in names.into_iter().flatten() {
            match self.store.get_event_type(name).await? {
                Some(et) if !et.archived => {}
                _ => unknown.push(name.as_str()),
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        Err(ServiceError::Invalid {
            field: "filterTypes",
            why: format!("The following event types don't exist: {}", unknown.join(", ")),
        })
    }

    /// An endpoint URL whose host is a blocked IP literal is refused now,
    /// rather than failing every attempt later.
    fn check_target(&self, url: &str) -> ServiceResult<()> {
        match crate::dispatch::ssrf::literal_refusal(self.dispatcher.targets(), url) {
            Some(why) => Err(ServiceError::Invalid { field: "url", why }),
            None => Ok(()),
        }
    }

    pub async fn create_endpoint(&self, app_id: &str, spec: EndpointSpec) -> ServiceResult<Endpoint> {
        self.check_target(&spec.url)?;
        let now = self.now();
        let secret = match spec.secret {
            Some(s) => s,
            None => signing::generate_secret(spec.secret_kind),
        };
        let ep = Endpoint {
            id: id::new_id(id::ENDPOINT, now),
            app_id: app_id.to_owned(),
            uid: spec.uid,
            url: spec.url,
            description: spec.description,
            disabled: spec.disabled,
            event_types: spec.event_types,
            channels: spec.channels,
            metadata: spec.metadata,
            headers: spec.headers,
            throttle_rate: spec.throttle_rate,
            max_in_flight: spec.max_in_flight,
            fifo: spec.fifo,
            ordering_on_failure: spec.ordering_on_failure,
            secret,
            old_secrets: Vec::new(),
            retry_policy: spec.retry_policy,
            failing_since: None,
            created_at: now,
            updated_at: now,
            // As the store's trigger records it.
            disabled_at: spec.disabled.then_some(now),
        };
        self.store.insert_endpoint(&ep).await?;
        self.events.emit(operational::endpoint_event("endpoint.created", &ep));
        Ok(ep)
    }

    pub async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> ServiceResult<Endpoint> {
        if let Some(url) = &patch.url {
            self.check_target(url)?;
        }
        let ep = self.store.update_endpoint(app_id, id, patch, self.now()).await?;
        if ep.disabled {
            self.dispatcher.endpoint_stopped(&ep.id);
        }
        self.events.emit(operational::endpoint_event("endpoint.updated", &ep));
        Ok(ep)
    }

    pub async fn delete_endpoint(&self, app_id: &str, id: &str) -> ServiceResult<()> {
        let ep = self.store.get_endpoint(app_id, id).await?.ok_or(ServiceError::NotFound)?;
        self.store.delete_endpoint(app_id, &ep.id).await?;
        self.dispatcher.endpoint_stopped(&ep.id);
        self.events.emit(operational::endpoint_event("endpoint.deleted", &ep));
        Ok(())
    }

    /// Replace the endpoint's secret with `key` (or a fresh one of `kind`,
    /// by default the current secret's kind); the old secret keeps signing
    /// for the grace period, so receivers can switch without losing a message.
    pub async fn rotate_secret(
        &self,
        ep: &Endpoint,
        key: Option<String>,
        kind: Option<SecretKind>,
        grace: Option<Duration>,
    ) -> ServiceResult<Endpoint> {
        let now = self.now();
        let new_secret =
            key.unwrap_or_else(|| signing::generate_secret(kind.unwrap_or(signing::kind_of(&ep.secret))));
        let rotation =
            Rotation { new_secret, old_valid_until: now.plus(grace.unwrap_or(self.cfg.rotation_grace)) };
        let patch = EndpointPatch { rotate: Some(rotation), ..Default::default() };
        Ok(self.store.update_endpoint(&ep.app_id, &ep.id, patch, now).await?)
    }

    // --- messages ---

    /// Store a message durably, then start delivering it. Returns once it
    /// is committed; the attempts happen in the background. With an
    /// idempotency key, a repeat within 24 h returns the first message.
    pub async fn create_message(
        &self,
        app_ref: &str,
        new: NewMessage,
        idempotency_key: Option<String>,
    ) -> ServiceResult<Accepted> {
        self.insert_message(app_ref, new, idempotency_key, None).await
    }

    /// Store a message without delivering it to anyone: history brought
    /// over by `hookline import`, to read and to replay or resend on
    /// purpose, never sent again by itself.
    pub async fn import_message(&self, app_ref: &str, new: NewMessage) -> ServiceResult<Accepted> {
        self.insert_message(app_ref, new, None, Some(NO_ENDPOINT.to_owned())).await
    }

    async fn insert_message(
        &self,
        app_ref: &str,
        new: NewMessage,
        idempotency_key: Option<String>,
        only_endpoint: Option<String>,
    ) -> ServiceResult<Accepted> {
        let now = self.now();
        let new_app = new.create_app.map(|spec| {
            let mut app = self.new_app(spec);
            // Svix: the path's identifier becomes the new application's uid.
            if app.uid.is_none() && !id::has_prefix(app_ref, id::APP) {
                app.uid = Some(app_ref.to_owned());
            }
            app
        });
        // A path that is neither an id nor a valid uid names nothing that
        // could be created (not found, rather than an application with a
        // uid the API refuses everywhere else).
        let new_app = new_app.filter(|app| {
            app.uid.as_deref().is_none_or(|uid| {
                crate::domain::validate::name(uid, crate::domain::validate::UID_MAX).is_ok()
            })
        });
        let retention = new.retention.unwrap_or(self.cfg.retention).min(self.cfg.retention);
        let message = Message {
            id: id::new_id(id::MESSAGE, now),
            app_id: String::new(),
            event_type: new.event_type,
            event_id: new.event_id,
            channels: new.channels,
            tags: new.tags,
            payload: Some(new.payload),
            created_at: now,
            deliver_at: new.deliver_at.filter(|t| *t > now),
            expires_at: Some(now.plus(retention)),
            ordering_key: new.ordering_key,
            trace: new.trace,
        };
        let busy = self.dispatcher.busy_endpoints();
        let req = CreateMessage {
            app_ref: app_ref.to_owned(),
            new_app,
            message,
            lease: Some(self.dispatcher.fresh_lease()),
            only_endpoint,
            idempotency_key,
            busy_endpoints: busy.clone(),
        };
        let span = traces::spans::ingest(app_ref, &req.message.event_type);
        let created = self.store.create_message(req).instrument(span.clone()).await?;
        traces::spans::ingested(&span, &created.message.id, created.endpoints.len());
        if created.existing {
            return Ok(Accepted { message: created.message, replayed: true });
        }
        telemetry::message_ingested();
        // Deliveries left for a claim wake the scheduler, unless they only
        // wait for full lanes here (a lane that frees up wakes it). Usually
        // no lane is full and nothing more is looked at.
        let waiting_here = |e: &Arc<Endpoint>| {
            !busy.contains(&e.id) && !created.send_now.iter().any(|t| t.endpoint.id == e.id)
        };
        if let Some(at) = created.wake
            && (busy.is_empty() || at > now || created.endpoints.iter().any(waiting_here))
        {
            self.dispatcher.wake_at(at);
        }
        if !created.send_now.is_empty() {
            self.dispatcher.offer(created.send_now).await;
        }
        Ok(Accepted { message: created.message, replayed: false })
    }

    /// Send `msg` to `ep` once more, now, as a manual attempt. Works for
    /// failed and succeeded deliveries alike and leaves the retry schedule
    /// alone. It goes at once, whatever the endpoint's throttle says, but
    /// counts against it; and outside any ordering key's order.
    pub async fn resend(&self, msg: Message, ep: Endpoint) -> ServiceResult<()> {
        if ep.disabled {
            return Err(ServiceError::refused("the endpoint is disabled; enable it to resend"));
        }
        if msg.payload.is_none() {
            return Err(ServiceError::refused("the message's payload was expunged; it cannot be resent"));
        }
        self.store.charge(&ep.id, self.now()).await?;
        self.dispatcher.resend(DeliveryTask { message: Arc::new(msg), endpoint: Arc::new(ep), paced: false });
        Ok(())
    }

    /// Send an example of `event_type` to this endpoint only. The payload is
    /// the event type's schema example `example_index` if it has one, else
    /// `payload`, else a placeholder saying it is an example.
    pub async fn send_example(
        &self,
        ep: &Endpoint,
        event_type: &str,
        example_index: usize,
        payload: Option<serde_json::Value>,
    ) -> ServiceResult<Arc<Message>> {
        if ep.disabled {
            return Err(ServiceError::refused("the endpoint is disabled"));
        }
        let et = self.store.get_event_type(event_type).await?;
        let example = et
            .as_ref()
            .and_then(|et| et.schemas.as_ref())
            .and_then(|schemas| schema_example(schemas, example_index));
        let body = example.or(payload).unwrap_or_else(
            || json!({"message": format!("This is an example {event_type} event sent by Hookline.")}),
        );
        let new = NewMessage {
            event_type: event_type.to_owned(),
            event_id: None,
            channels: None,
            tags: None,
            payload: Bytes::from(body.to_string()),
            deliver_at: None,
            create_app: None,
            retention: None,
            ordering_key: None,
            trace: traces::context::current(),
        };
        Ok(self.insert_message(&ep.app_id, new, None, Some(ep.id.clone())).await?.message)
    }

    // --- sending again, in bulk ---

    async fn record_task(&self, kind: &str, data: serde_json::Value) -> ServiceResult<Task> {
        let now = self.now();
        let task = Task {
            id: id::new_id(id::TASK, now),
            kind: kind.to_owned(),
            status: "finished".into(),
            data,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_task(&task).await?;
        Ok(task)
    }

    fn check_enabled(ep: &Endpoint) -> ServiceResult<()> {
        if ep.disabled {
            return Err(ServiceError::refused("the endpoint is disabled; enable it first"));
        }
        Ok(())
    }

    /// Send again, now and as manual attempts, every message of the
    /// endpoint in [since, until) whose latest attempt failed: those settled
    /// as failed and those still waiting for a retry (a success cancels the
    /// retry), not those that have succeeded since. The schedule is left
    /// alone, as for any manual attempt. At most [`RECOVER_LIMIT`] messages
    /// per recover; the task's data says whether more were left.
    pub async fn recover(
        &self,
        ep: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> ServiceResult<Task> {
        Self::check_enabled(ep)?;
        let endpoint = Arc::new(ep.clone());
        let mut page = PageRequest::first(RECOVER_BATCH, Order::Ascending);
        let mut count = 0usize;
        // A manual attempt is outside any ordering key's order, so ordered
        // deliveries that have settled as failed re-enter their key's order
        // instead (a failing head still waiting for a retry is its key's
        // head: a manual attempt of it keeps the order).
        let mut reordered = Vec::new();
        let more = loop {
            let found = self.store.recoverable(&ep.app_id, &ep.id, since, until, &page).await?;
            let last = found.items.last().map(|m| m.id.clone());
            for message in found.items {
                count += 1;
                if ordering::key_for(message.ordering_key.as_deref(), ep.fifo).is_some()
                    && self
                        .store
                        .get_delivery(&message.id, &ep.id)
                        .await?
                        .is_some_and(|d| d.status == DeliveryStatus::Fail)
                {
                    reordered.push(message.id);
                    continue;
                }
                let task = DeliveryTask {
                    message: Arc::new(message),
                    endpoint: Arc::clone(&endpoint),
                    paced: false,
                };
                self.dispatcher.resend(task);
            }
            match last {
                Some(last) if found.more && count < RECOVER_LIMIT => page.cursor = Some(Cursor::After(last)),
                _ => break found.more,
            }
        };
        if !reordered.is_empty() {
            let filter = RequeueFilter {
                since: Timestamp::from_millis(0),
                statuses: Some(vec![DeliveryStatus::Fail]),
                msg_ids: Some(reordered),
                ..Default::default()
            };
            let now = self.now();
            self.store.requeue(&ep.app_id, &ep.id, &filter, now, false).await?;
            self.dispatcher.wake_at(now);
        }
        self.record_task("endpoint.recover", json!({"count": count, "more": more})).await
    }

    /// Send the endpoint what it never received in [since, until): messages
    /// it would have wanted but has no delivery for (created before it
    /// existed, or while it was disabled); with `dry_run`, only count them.
    /// They go through the endpoint's flow like any other delivery.
    pub async fn replay_missing(
        &self,
        ep: &Endpoint,
        since: Timestamp,
        until: Option<Timestamp>,
        dry_run: bool,
    ) -> ServiceResult<Task> {
        Self::check_enabled(ep)?;
        let now = self.now();
        let count = if dry_run {
            self.store.count_missing(ep, since, until, None).await?.0
        } else {
            let n = self.store.replay_missing(ep, since, until, now).await?;
            self.dispatcher.wake_at(now);
            n
        };
        self.record_task("endpoint.replay", json!({"count": count, "dryRun": dry_run})).await
    }

    /// An endpoint enabled again after being disabled: what it missed
    /// meanwhile that replay-missing would send now (nothing once they are
    /// sent), looking at no more than `cap` messages. `None` while it is
    /// disabled, if it never was, or if it missed nothing.
    pub async fn missed_while_disabled(
        &self,
        ep: &Endpoint,
        cap: Option<usize>,
    ) -> ServiceResult<Option<Missed>> {
        let Some(since) = ep.disabled_at.filter(|_| !ep.disabled) else { return Ok(None) };
        let (count, more) = self.store.count_missing(ep, since, None, cap).await?;
        Ok((count > 0 || more).then_some(Missed { since, count, more }))
    }

    /// Send again every settled delivery matching the filter; with
    /// `dry_run`, only count them. Returns the task (its data carries the
    /// count) and the count.
    pub async fn bulk_replay(&self, ep: &Endpoint, req: &ReplayRequest) -> ServiceResult<(Task, u64)> {
        Self::check_enabled(ep)?;
        let now = self.now();
        let count = self.store.requeue(&ep.app_id, &ep.id, &req.filter, now, req.dry_run).await?;
        if !req.dry_run {
            self.dispatcher.wake_at(now);
        }
        let task =
            self.record_task("endpoint.bulk-replay", json!({"count": count, "dryRun": req.dry_run})).await?;
        Ok((task, count))
    }

    // --- flow control and ordering ---

    /// The endpoint's flow as the store has it, and how many attempts to it
    /// run on this node now (`maxInFlight` bounds those per node).
    pub async fn endpoint_flow(&self, ep: &Endpoint) -> ServiceResult<(FlowView, usize)> {
        let view = self.store.endpoint_flow(&ep.id, self.now()).await?;
        Ok((view, self.dispatcher.in_flight_to(&ep.id)))
    }

    /// The endpoint's ordering keys blocked behind a head that failed for
    /// good (`orderingOnFailure: "block"`).
    pub async fn blocked_keys(&self, ep: &Endpoint, page: &PageRequest) -> ServiceResult<Page<BlockedKey>> {
        Ok(self.store.blocked_keys(&ep.id, page).await?)
    }

    /// Let a blocked key move on: its failed head stays failed (it can be
    /// resent by hand, outside the order), the next message goes now.
    pub async fn skip_blocked_key(&self, ep: &Endpoint, key: &str) -> ServiceResult<()> {
        let now = self.now();
        if self.store.skip_blocked(&ep.id, key, now).await?.is_some() {
            self.dispatcher.wake_at(now);
        }
        Ok(())
    }

    // --- content erasure ---

    /// Erase the message's payload, now.
    pub async fn expunge_message(&self, app_id: &str, msg_id: &str) -> ServiceResult<()> {
        Ok(self.store.expunge_message(app_id, msg_id).await?)
    }

    /// Erase the attempt's response body, now.
    pub async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> ServiceResult<()> {
        Ok(self.store.expunge_attempt(app_id, msg_id, attempt_id).await?)
    }

    /// Erase the payloads and response bodies of every message tagged `tag`,
    /// in one application or (admin) in all of them. The messages stay,
    /// with their tags, so the log shows what was erased; the task says when
    /// and how many. Works a page of messages at a time, so other writes go
    /// on meanwhile.
    pub async fn expunge_by_tag(&self, app: Option<&App>, tag: &str) -> ServiceResult<Task> {
        let apps = match app {
            Some(app) => vec![app.id.clone()],
            None => self.all_app_ids().await?,
        };
        let filter = MessageFilter { tag: Some(tag.to_owned()), ..Default::default() };
        let (mut messages, mut payloads, mut responses) = (0u64, 0u64, 0u64);
        for app_id in &apps {
            let mut page = PageRequest::first(ERASE_BATCH, Order::Ascending);
            loop {
                let found = self.store.list_messages(app_id, &filter, &page).await?;
                let ids: Vec<String> = found.items.into_iter().map(|m| m.id).collect();
                let (p, r) = self.store.expunge_messages(app_id, &ids).await?;
                (messages, payloads, responses) = (messages + ids.len() as u64, payloads + p, responses + r);
                match ids.last() {
                    Some(last) if found.more => page.cursor = Some(Cursor::After(last.clone())),
                    _ => break,
                }
            }
        }
        let scope = app.map_or(Value::Null, |a| json!(a.id));
        let data = json!({"tag": tag, "appId": scope, "count": messages, "messages": messages,
            "payloads": payloads, "responses": responses});
        self.record_task("application.purge_content", data).await
    }

    async fn all_app_ids(&self) -> ServiceResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut page = PageRequest::first(250, Order::Ascending);
        loop {
            let p = self.store.list_apps(&AppFilter::default(), &page).await?;
            ids.extend(p.items.into_iter().map(|a| a.id));
            match (p.more, ids.last()) {
                (true, Some(last)) => page.cursor = Some(Cursor::After(last.clone())),
                _ => return Ok(ids),
            }
        }
    }

    // --- statistics ---

    /// Svix's app usage statistics: messages per application created in
    /// [since, until), for the given applications (ids or uids) or all of
    /// them, as a finished task. Returns the task and the names that did not
    /// resolve.
    pub async fn app_usage_stats(
        &self,
        since: Timestamp,
        until: Timestamp,
        apps: Option<Vec<String>>,
    ) -> ServiceResult<(Task, Vec<String>)> {
        let (mut ids, mut unresolved) = (Vec::new(), Vec::new());
        match apps {
            None => ids = self.all_app_ids().await?,
            Some(refs) => {
                for r in refs {
                    match self.store.get_app(&r).await? {
                        Some(app) => ids.push(app.id),
                        None => unresolved.push(r),
                    }
                }
            }
        }
        // `after` is exclusive; since is not.
        let filter = MessageFilter {
            after: Some(since.minus(Duration::from_millis(1))),
            before: Some(until),
            ..Default::default()
        };
        let mut stats = Vec::new();
        for id in ids {
            let n = self.store.count_messages(&id, &filter).await?;
            stats.push(json!({"appId": id, "messageCount": n}));
        }
        let data = json!({"since": since.to_rfc3339(), "until": until.to_rfc3339(), "apps": stats,
            "unresolvedAppIds": unresolved});
        Ok((self.record_task("application.stats", data).await?, unresolved))
    }

    /// Svix's event type aggregation: the event types the endpoints of all
    /// applications subscribe to, as a finished task.
    pub async fn aggregate_event_types(&self) -> ServiceResult<Task> {
        let mut names = NameSet::new();
        for app_id in self.all_app_ids().await? {
            for ep in self.all_endpoints(&app_id).await? {
                names.extend(ep.event_types.into_iter().flatten());
            }
        }
        self.record_task("event-type.aggregate", json!({"eventTypes": names})).await
    }

    /// Erase every payload and response body of the application, now.
    pub async fn expunge_app(&self, app: &App) -> ServiceResult<Task> {
        let count = self.store.expunge_app_content(&app.id).await?;
        self.record_task("application.purge_content", json!({"messages": count})).await
    }

    // --- idempotency keys (the API's `idempotency-key` layer) ---

    /// Claim `key` (already scoped to the caller and the path) for a request
    /// that started at `now`; a request that dies mid-way holds it until
    /// `lock_until`. Says whether to run the request or replay a response.
    pub async fn idempotency_begin(
        &self,
        key: &str,
        now: Timestamp,
        lock_until: Timestamp,
    ) -> ServiceResult<IdempotencyBegin> {
        Ok(self.store.idempotency_begin(key, now, lock_until).await?)
    }

    /// The request under `key` succeeded: repeats get `response` until
    /// `expires_at`.
    pub async fn idempotency_finish(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: Timestamp,
    ) -> ServiceResult<()> {
        Ok(self.store.idempotency_finish(key, response, expires_at).await?)
    }

    /// The request under `key` did not succeed: free the key for a retry.
    pub async fn idempotency_abort(&self, key: &str) -> ServiceResult<()> {
        Ok(self.store.idempotency_abort(key).await?)
    }

    // --- event types ---

    pub async fn create_event_type(&self, mut et: EventType) -> ServiceResult<EventType> {
        let now = self.now();
        et.created_at = now;
        et.updated_at = now;
        self.store.insert_event_type(&et).await?;
        Ok(et)
    }

    pub async fn update_event_type(&self, name: &str, patch: EventTypePatch) -> ServiceResult<EventType> {
        Ok(self.store.update_event_type(name, patch, self.now()).await?)
    }

    /// Create or update each event type (bringing archived ones back);
    /// with `replace_all`, archive the ones not listed. Returns the names
    /// of those that changed (or would, on a `dry_run`).
    pub async fn import_event_types(
        &self,
        types: Vec<EventType>,
        replace_all: bool,
        dry_run: bool,
    ) -> ServiceResult<Vec<String>> {
        let mut modified = Vec::new();
        let listed: NameSet = types.iter().map(|t| t.name.clone()).collect();
        for et in types {
            let current = self.store.get_event_type(&et.name).await?;
            let same = current.as_ref().is_some_and(|c| {
                (
                    c.description.as_str(),
                    c.archived,
                    c.deprecated,
                    &c.schemas,
                    &c.group_name,
                    &c.feature_flags,
                ) == (
                    et.description.as_str(),
                    false,
                    et.deprecated,
                    &et.schemas,
                    &et.group_name,
                    &et.feature_flags,
                )
            });
            if same {
                continue;
            }
            modified.push(et.name.clone());
            if dry_run {
                continue;
            }
            match current {
                None => {
                    self.create_event_type(et).await?;
                }
                Some(_) => {
                    let patch = EventTypePatch {
                        description: Some(et.description),
                        archived: Some(false),
                        deprecated: Some(et.deprecated),
                        schemas: Some(et.schemas),
                        group_name: Some(et.group_name),
                        feature_flags: Some(et.feature_flags),
                    };
                    self.update_event_type(&et.name, patch).await?;
                }
            }
        }
        if replace_all {
            for et in self.all_event_types(false).await? {
                if listed.contains(&et.name) {
                    continue;
                }
                modified.push(et.name.clone());
                if !dry_run {
                    self.delete_event_type(&et.name, false).await?;
                }
            }
        }
        Ok(modified)
    }

    /// Every event type, by name.
    pub async fn all_event_types(&self, include_archived: bool) -> ServiceResult<Vec<EventType>> {
        let mut all: Vec<EventType> = Vec::new();
        let mut page = PageRequest::first(250, Order::Ascending);
        loop {
            let p = self.store.list_event_types(include_archived, &page).await?;
            all.extend(p.items);
            match (p.more, all.last()) {
                (true, Some(last)) => page.cursor = Some(Cursor::After(last.name.clone())),
                _ => return Ok(all),
            }
        }
    }

    /// Archive (hide, keep) or, with `expunge`, delete for good.
    pub async fn delete_event_type(&self, name: &str, expunge: bool) -> ServiceResult<()> {
        if expunge {
            return Ok(self.store.delete_event_type(name).await?);
        }
        let patch = EventTypePatch { archived: Some(true), ..Default::default() };
        self.update_event_type(name, patch).await.map(|_| ())
    }
}

/// `schemas` is `{"<version>": {…, "examples": [...]}}`; take the newest
/// version's example at `index`.
fn schema_example(schemas: &serde_json::Value, index: usize) -> Option<serde_json::Value> {
    let versions = schemas.as_object()?;
    let newest = versions.keys().max_by_key(|k| k.parse::<u64>().unwrap_or(0))?;
    versions[newest].get("examples")?.get(index).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_come_from_the_newest_schema_version() {
        let schemas = json!({
            "1": {"type": "object", "examples": [{"v": 1}]},
            "2": {"type": "object", "examples": [{"v": 2}, {"v": 22}]},
        });
        assert_eq!(schema_example(&schemas, 0), Some(json!({"v": 2})));
        assert_eq!(schema_example(&schemas, 1), Some(json!({"v": 22})));
        assert_eq!(schema_example(&schemas, 5), None);
        assert_eq!(schema_example(&json!({"1": {"type": "object"}}), 0), None);
    }

    #[test]
    fn errors_read_as_the_store_errors_they_replace() {
        // The dashboard shows these texts as they are.
        let why = "the endpoint is disabled";
        assert_eq!(ServiceError::refused(why).to_string(), why);
        assert!(matches!(ServiceError::from(StoreError::NotFound), ServiceError::NotFound));
        assert_eq!(ServiceError::NotFound.to_string(), StoreError::NotFound.to_string());
        assert_eq!(ServiceError::from(StoreError::Conflict("uid taken".into())).to_string(), "uid taken");
        let failed = ServiceError::from(StoreError::Backend("disk full".into()));
        assert_eq!(failed.to_string(), "storage failure: disk full");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        assert!(a.starts_with("hl_") && a.len() == 43);
        assert_ne!(a, generate_token());
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&generate_token()));
    }
}
