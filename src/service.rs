//! The operations Hookline offers, over the store and the dispatcher.
//!
//! The API and the dashboard both call these; neither talks to a store
//! implementation or the dispatcher on its own for anything with a side
//! effect. Ids, timestamps and secrets are made here, so the store only
//! persists what it is given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::dispatch::Dispatcher;
use crate::domain::id;
use crate::domain::model::{
    App, AppPatch, AppSpec, Endpoint, EndpointPatch, EndpointSpec, Message, NewMessage, Scope,
};
use crate::domain::signing;
use crate::domain::time::Timestamp;
use crate::store::{CreateMessage, DeliveryTask, SharedStore, Store, StoreError, StoreResult};

pub struct Service {
    pub store: SharedStore,
    pub dispatcher: Dispatcher,
    pub clock: SharedClock,
    /// Token hash → scope, for tokens seen valid. Tokens are never revoked
    /// without a restart yet, so entries never go stale.
    tokens: Mutex<HashMap<String, Scope>>,
}

/// API tokens are `hl_` followed by 40 random alphanumerics (~238 bits).
pub fn generate_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
    format!("hl_{body}")
}

/// Create and store a token with `scope`; usable without a running server.
pub async fn create_token(store: &dyn Store, scope: &Scope, now: Timestamp) -> StoreResult<String> {
    let token = generate_token();
    store.insert_token(&token_hash(&token), scope, now).await?;
    Ok(token)
}

fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Service {
    pub fn new(store: SharedStore, dispatcher: Dispatcher, clock: SharedClock) -> Self {
        Service { store, dispatcher, clock, tokens: Mutex::new(HashMap::new()) }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // --- tokens ---

    /// Store a token (its hash) with a scope.
    pub async fn add_token(&self, token: &str, scope: &Scope) -> StoreResult<()> {
        self.store.insert_token(&token_hash(token), scope, self.now()).await
    }

    /// A new random token with `scope`; the only time it is ever shown.
    pub async fn create_token(&self, scope: &Scope) -> StoreResult<String> {
        create_token(&*self.store, scope, self.now()).await
    }

    /// Make sure `token` is a valid admin token (for `--admin-token`).
    pub async fn ensure_admin_token(&self, token: &str) -> StoreResult<()> {
        match self.store.find_token(&token_hash(token)).await? {
            Some(Scope::Admin) => Ok(()),
            Some(Scope::App(_)) => {
                Err(StoreError::Conflict("that token is scoped to one application".into()))
            }
            None => self.add_token(token, &Scope::Admin).await,
        }
    }

    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Scope>> {
        let hash = token_hash(token);
        if let Some(scope) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&hash) {
            return Ok(Some(scope.clone()));
        }
        let found = self.store.find_token(&hash).await?;
        if let Some(scope) = &found {
            self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, scope.clone());
        }
        Ok(found)
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

    pub async fn create_app(&self, spec: AppSpec) -> StoreResult<App> {
        let app = self.new_app(spec);
        self.store.insert_app(&app).await?;
        Ok(app)
    }

    pub async fn update_app(&self, app_id: &str, patch: AppPatch) -> StoreResult<App> {
        self.store.update_app(app_id, patch, self.now()).await
    }

    pub async fn delete_app(&self, app: &App) -> StoreResult<()> {
        let endpoints = self.all_endpoint_ids(&app.id).await?;
        self.store.delete_app(&app.id).await?;
        for ep in endpoints {
            self.dispatcher.endpoint_stopped(&ep);
        }
        Ok(())
    }

    async fn all_endpoint_ids(&self, app_id: &str) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut page = crate::store::PageRequest::first(250, crate::store::Order::Ascending);
        loop {
            let p = self.store.list_endpoints(app_id, &page).await?;
            ids.extend(p.items.iter().map(|e| e.id.clone()));
            match (p.more, ids.last()) {
                (true, Some(last)) => page.cursor = Some(crate::store::Cursor::After(last.clone())),
                _ => return Ok(ids),
            }
        }
    }

    // --- endpoints ---

    pub async fn create_endpoint(&self, app_id: &str, spec: EndpointSpec) -> StoreResult<Endpoint> {
        let now = self.now();
        let secret = match spec.secret {
            Some(s) => s,
            None => signing::generate_secret(),
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
            secret,
            retry_policy: spec.retry_policy,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_endpoint(&ep).await?;
        Ok(ep)
    }

    pub async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> StoreResult<Endpoint> {
        let ep = self.store.update_endpoint(app_id, id, patch, self.now()).await?;
        if ep.disabled {
            self.dispatcher.endpoint_stopped(&ep.id);
        }
        Ok(ep)
    }

    pub async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        self.store.delete_endpoint(app_id, id).await?;
        self.dispatcher.endpoint_stopped(id);
        Ok(())
    }

    // --- messages ---

    /// Store a message durably, then start delivering it. Returns once it
    /// is committed; the attempts happen in the background.
    pub async fn create_message(&self, app_ref: &str, new: NewMessage) -> StoreResult<Arc<Message>> {
        let now = self.now();
        let new_app = new.create_app.map(|spec| {
            let mut app = self.new_app(spec);
            // Svix: the path's identifier becomes the new application's uid.
            if app.uid.is_none() && !id::has_prefix(app_ref, id::APP) {
                app.uid = Some(app_ref.to_owned());
            }
            app
        });
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
        };
        let req = CreateMessage {
            app_ref: app_ref.to_owned(),
            new_app,
            message,
            lease: Some(self.dispatcher.fresh_lease()),
        };
        let created = self.store.create_message(req).await?;
        if created.leased {
            let tasks = created
                .endpoints
                .iter()
                .map(|ep| DeliveryTask { message: Arc::clone(&created.message), endpoint: Arc::clone(ep) })
                .collect();
            self.dispatcher.offer(tasks).await;
        } else if let Some(at) = created.message.deliver_at {
            self.dispatcher.wake_at(at);
        }
        Ok(created.message)
    }

    /// Send `msg` to `ep` once more, now, as a manual attempt. Works for
    /// failed and succeeded deliveries alike and leaves the retry schedule
    /// alone.
    pub fn resend(&self, msg: Message, ep: Endpoint) -> StoreResult<()> {
        if ep.disabled {
            return Err(StoreError::Conflict("the endpoint is disabled; enable it to resend".into()));
        }
        if msg.payload.is_none() {
            return Err(StoreError::Conflict(
                "the message's payload was expunged; it cannot be resent".into(),
            ));
        }
        self.dispatcher.resend(DeliveryTask { message: Arc::new(msg), endpoint: Arc::new(ep) });
        Ok(())
    }
}
